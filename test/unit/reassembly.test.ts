import t from 'tap'
import { ByteBudget, CHUNK_OVERHEAD_BYTES, INDEX_SLOT_BYTES, Reassembly } from '../../daemon/cluster/reassembly.js'

const chunk = (
  index: number,
  data: string,
  over: Partial<{ totalLen: number; count: number; flags: number; ttlMs: number; version: bigint }> = {},
) => ({ totalLen: 6, count: 3, flags: 0, ttlMs: 1000, version: 7n, index, chunk: Buffer.from(data), ...over })
const opened = (r: ReturnType<typeof Reassembly.open>): Reassembly => {
  if (typeof r === 'string') throw new Error(r)
  return r
}
const per = (n: number) => n + CHUNK_OVERHEAD_BYTES
const index = 3 * INDEX_SLOT_BYTES

t.test('chunks in any order join into the value; the budget bounds what is held', async (t) => {
  const budget = new ByteBudget(index + 2 * per(2) + 1)
  const r = opened(Reassembly.open(chunk(2, 'ef'), budget, 3))
  t.equal(budget.used, index, 'the index is charged up front, by the declared count')
  t.equal(r.add(chunk(2, 'ef', { ttlMs: 900 })), 'added')
  t.equal(r.add(chunk(2, 'ef')), 'duplicate')
  t.equal(r.add(chunk(0, 'ab', { count: 4 })), 'inconsistent')
  t.equal(r.add(chunk(0, 'ab', { version: 8n })), 'inconsistent', 'chunks of another version of the value')
  t.equal(r.add(chunk(0, 'ab')), 'added')
  t.equal(r.add(chunk(1, 'cd')), 'over-budget', 'the third chunk does not fit')
  t.equal(budget.used, index + 2 * per(2))
  budget.max += per(2)
  t.equal(r.add(chunk(1, 'cd')), 'added')
  t.ok(r.complete)
  t.equal(r.ttlMs, 900, 'the smallest TTL of any chunk')
  t.same(r.join(), Buffer.from('abcdef'))
  r.release()
  t.equal(budget.used, 0, 'released bytes go back to the budget')
  r.release()
  t.equal(budget.used, 0, 'release is idempotent')
})

t.test('sizes that do not add up give no value', async (t) => {
  const r = opened(Reassembly.open(chunk(0, 'a', { count: 2 }), new ByteBudget(1000), 2))
  r.add(chunk(0, 'a', { count: 2 }))
  r.add(chunk(1, 'b', { count: 2 }))
  t.ok(r.complete)
  t.equal(r.join(), undefined, '2 bytes where 6 were announced')
})

t.test('a count beyond what a legal sender needs, or an index beyond the budget, opens nothing', async (t) => {
  const budget = new ByteBudget(1000)
  t.equal(Reassembly.open(chunk(0, 'a', { totalLen: 65535, count: 65535 }), budget, 360), 'too-many-chunks')
  t.equal(
    Reassembly.open(chunk(0, 'a', { totalLen: 60_000, count: 200 }), budget, 360),
    'over-budget',
    '200 index slots exceed a 1000-byte budget',
  )
  t.equal(budget.used, 0, 'nothing charged for what was refused')
})
