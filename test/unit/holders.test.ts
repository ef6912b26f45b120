import t from 'tap'
import { Holders } from '../../daemon/cluster/replication.js'

t.test('holders: bounded, counted when full, kept for the copy lifetime, taken once', async (t) => {
  let now = 1000
  const counters = { holdersRecorded: 0, holdersUnrecorded: 0 }
  const h = new Holders(3, counters, () => now)
  h.record('a', 'm1', 500)
  h.record('a', 'm2', 500)
  h.record('a', 'm1', 800) // the same member again: no new record, a longer life
  h.record('b', 'm1', 100)
  t.equal(h.size, 3)
  h.record('c', 'm3', 100)
  h.record('a', 'm4', 100)
  t.equal(h.size, 3, 'never more than the bound')
  t.same(counters, { holdersRecorded: 3, holdersUnrecorded: 2 }, 'records refused at the bound are counted')
  h.record('x', 'm1', 0)
  t.equal(h.size, 3, 'an expired copy is not recorded')

  now += 200 // b's copy has expired
  h.sweep()
  t.equal(h.size, 2, 'the sweep forgets expired copies')
  h.record('c', 'm3', 100)
  t.equal(h.size, 3, 'room again after the sweep')

  t.same(h.take('a').sort(), ['m1', 'm2'])
  t.same(h.take('a'), [], 'a key is taken once')
  t.equal(h.size, 1)
  now += 200
  t.same(h.take('c'), [], 'an expired record is dropped, not returned')
  t.equal(h.size, 0)
})
