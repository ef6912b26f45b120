/** A short run of the mutation fuzzer (npm run fuzz runs millions). */
import t from 'tap'
import { fuzz, mutate, prng } from '../helpers/fuzz.js'

t.test('mutated inputs only ever fail with ProtocolError, and what decodes round-trips', async (t) => {
  const res = fuzz(20_000, 12345)
  for (const r of res) {
    t.equal(r.inputs, 20_000, `${r.target}: ${r.inputs} inputs, ${r.decoded} decoded`)
  }
  t.ok(
    res.find((r) => r.target === 'local request')!.decoded > 100,
    'the mutations leave some inputs valid, so decoders are exercised past their first check',
  )
  const sealed = res.find((r) => r.target === 'sealed datagram')!
  t.ok(
    sealed.decoded < sealed.inputs / 100,
    `mangled sealed datagrams do not open (${sealed.decoded} opened: mutations that left the bytes as they were)`,
  )
})

t.test('the mutator is deterministic for a seed', async (t) => {
  const a = prng(7)
  const b = prng(7)
  const seed = Buffer.from('0123456789abcdef')
  t.same(mutate(seed, seed, a), mutate(seed, seed, b))
})
