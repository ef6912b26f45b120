import t from 'tap'
import { ByteBudget, Reassembly } from '../daemon/reassembly.js'

const chunk = (index: number, data: string, over: Partial<{ totalLen: number; count: number; flags: number; ttlMs: number; version: bigint }> = {}) => ({ totalLen: 6, count: 3, flags: 0, ttlMs: 1000, version: 7n, index, chunk: Buffer.from(data), ...over })

t.test('chunks in any order join into the value; the budget bounds what is held', async (t) => {
  const budget = new ByteBudget(5)
  const r = new Reassembly(chunk(2, 'ef'), budget)
  t.equal(r.add(chunk(2, 'ef', { ttlMs: 900 })), 'added')
  t.equal(r.add(chunk(2, 'ef')), 'duplicate')
  t.equal(r.add(chunk(0, 'ab', { count: 4 })), 'inconsistent')
  t.equal(r.add(chunk(0, 'ab', { version: 8n })), 'inconsistent', 'chunks of another version of the value')
  t.equal(r.add(chunk(0, 'ab')), 'added')
  t.equal(r.add(chunk(1, 'cd')), 'over-budget', '6 bytes do not fit a 5-byte budget')
  t.equal(budget.used, 4)
  budget.max = 6
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
  const r = new Reassembly(chunk(0, 'a', { count: 2 }), new ByteBudget(100))
  r.add(chunk(0, 'a', { count: 2 }))
  r.add(chunk(1, 'b', { count: 2 }))
  t.ok(r.complete)
  t.equal(r.join(), undefined, '2 bytes where 6 were announced')
})
