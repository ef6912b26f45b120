import t from 'tap'
import { Reloads } from '../../daemon/host/reloads.js'

t.test('a reload asked for during a reload runs once more after it; many such requests fold into one', async (t) => {
  const gates: (() => void)[] = []
  const seen: number[] = []
  let config = 1
  const r = new Reloads(async () => {
    seen.push(config)
    await new Promise<void>((resolve) => gates.push(resolve))
  })
  r.request()
  t.equal(r.runs, 1, 'the first runs at once')
  config = 2
  r.request()
  r.request()
  r.request()
  t.equal(r.runs, 1, 'the others wait for it')
  gates.shift()!()
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(r.runs, 2, 'one more run after it')
  t.same(seen, [1, 2], 'which sees what was written meanwhile')
  gates.shift()!()
  await r.idle()
  t.equal(r.runs, 2, 'and no third')
  r.request()
  gates.shift()!()
  await r.idle()
  t.equal(r.runs, 3, 'a request when idle runs at once')
})

t.test('a failing reload does not stop the next', async (t) => {
  let n = 0
  const r = new Reloads(async () => {
    n++
    throw new Error('boom')
  })
  r.request()
  await r.idle()
  r.request()
  await r.idle()
  t.equal(n, 2)
})
