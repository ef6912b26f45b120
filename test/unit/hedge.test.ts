import t from 'tap'
import { HedgeDelay } from '../../daemon/cluster/hedge.js'

t.test('starts at the floor, follows the 95th percentile of recent replies, bounded', async (t) => {
  const h = new HedgeDelay({ floorMs: 1, ceilingMs: 8, window: 100 })
  t.equal(h.ms, 1, 'the floor before any reply')
  // 95 replies of 2 ms and 5 of 4 ms: the 95th percentile is 2 ms.
  for (let i = 0; i < 95; i++) h.observe(2)
  for (let i = 0; i < 5; i++) h.observe(4)
  t.equal(h.ms, 2)
  // A slower network: the window fills with 3 ms replies, and one in ten takes 6 ms.
  for (let i = 0; i < 100; i++) h.observe(i % 10 === 0 ? 6 : 3)
  t.equal(h.ms, 6, 'the slow tenth is above the 95th percentile')
  for (let i = 0; i < 100; i++) h.observe(50)
  t.equal(h.ms, 8, 'never above the ceiling')
  for (let i = 0; i < 100; i++) h.observe(0.1)
  t.equal(h.ms, 1, 'never below the floor')
})

t.test('the first replies move it at once; then it is recomputed every 16', async (t) => {
  const h = new HedgeDelay({ floorMs: 1, ceilingMs: 20 })
  h.observe(5)
  t.equal(h.ms, 5, 'one reply of 5 ms: 5 ms')
  for (let i = 0; i < 14; i++) h.observe(5)
  t.equal(h.ms, 5)
  // Window of 256: 15 old samples of 5 ms, then 241 of 3 ms push them out of the 95th percentile.
  for (let i = 0; i < 256; i++) h.observe(3)
  t.equal(h.ms, 3)
})

t.test('ignores what is not a duration; a ceiling under the floor is the floor', async (t) => {
  const h = new HedgeDelay({ floorMs: 2, ceilingMs: 1 })
  h.observe(Number.NaN)
  h.observe(-1)
  t.equal(h.ms, 2)
  h.observe(10)
  t.equal(h.ms, 2)
})
