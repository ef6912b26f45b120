import t from 'tap'
import fc from 'fast-check'
import { BoundedMap, BoundedSet } from '../../protocol/bounded.js'

t.test('BoundedMap: a new key in a full map evicts the oldest, in insertion order', async (t) => {
  const evicted: [string, number][] = []
  const m = new BoundedMap<string, number>(3, (k, v) => evicted.push([k, v]))
  m.set('a', 1).set('b', 2).set('c', 3)
  t.same([...m.keys()], ['a', 'b', 'c'])
  t.same(evicted, [], 'nothing goes while there is room')
  m.set('d', 4)
  t.same(
    [...m.entries()],
    [
      ['b', 2],
      ['c', 3],
      ['d', 4],
    ],
    'the oldest went',
  )
  t.same(evicted, [['a', 1]], 'and was handed to onEvict')
  m.set('b', 20)
  t.same(
    [...m.entries()],
    [
      ['b', 20],
      ['c', 3],
      ['d', 4],
    ],
    'updating a key neither evicts nor reorders',
  )
  m.set('e', 5)
  t.same([...m.keys()], ['c', 'd', 'e'])
  t.same(
    evicted.map(([k]) => k),
    ['a', 'b'],
  )
  m.delete('c')
  m.set('f', 6)
  t.same([...m.keys()], ['d', 'e', 'f'], 'a deleted key makes room without an eviction')
  t.same(
    evicted.map(([k]) => k),
    ['a', 'b'],
    'delete is not an eviction',
  )
})

t.test('BoundedMap: touch makes an entry the newest (least recently used goes first)', async (t) => {
  const m = new BoundedMap<string, number>(3)
  m.set('a', 1).set('b', 2).set('c', 3)
  t.equal(m.touch('a'), true)
  t.equal(m.touch('zz'), false, 'an absent key')
  t.equal(m.has('zz'), false, 'touching does not add')
  m.set('d', 4)
  t.same(
    [...m.entries()],
    [
      ['c', 3],
      ['a', 1],
      ['d', 4],
    ],
    'b, the least recently used, went; a kept its value',
  )
})

t.test('BoundedMap and BoundedSet: the bound must be a whole number of at least one', async (t) => {
  for (const bad of [0, -1, 1.5, NaN, Infinity]) {
    t.throws(() => new BoundedMap(bad), RangeError, `map bound ${bad}`)
    t.throws(() => new BoundedSet(bad), RangeError, `set bound ${bad}`)
  }
  const one = new BoundedMap<number, string>(1)
  one.set(1, 'x').set(2, 'y')
  t.same([...one.entries()], [[2, 'y']], 'a bound of one keeps the newest')
})

t.test('BoundedSet: a new member in a full set evicts the oldest', async (t) => {
  const s = new BoundedSet<string>(2)
  s.add('a').add('b').add('a')
  t.same([...s], ['a', 'b'], 'adding a member again changes nothing')
  s.add('c')
  t.same([...s], ['b', 'c'])
})

t.test('never holds more than its bound, and holds the most recent keys (model)', async (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 8 }),
      fc.array(fc.tuple(fc.constantFrom('set', 'touch', 'delete'), fc.integer({ min: 0, max: 12 })), { maxLength: 200 }),
      (max, ops) => {
        const m = new BoundedMap<number, number>(max)
        const s = new BoundedSet<number>(max)
        // The model: keys in recency order, trimmed from the front.
        let model: number[] = []
        // The set has no touch: insertion order only.
        let setModel: number[] = []
        for (const [op, k] of ops) {
          if (op === 'set') {
            m.set(k, k)
            s.add(k)
            if (!model.includes(k)) model = [...model, k].slice(-max)
            if (!setModel.includes(k)) setModel = [...setModel, k].slice(-max)
          } else if (op === 'touch') {
            m.touch(k)
            if (model.includes(k)) model = [...model.filter((x) => x !== k), k]
          } else {
            m.delete(k)
            s.delete(k)
            model = model.filter((x) => x !== k)
            setModel = setModel.filter((x) => x !== k)
          }
          if (m.size > max || s.size > max) return false
        }
        return JSON.stringify([...m.keys()]) === JSON.stringify(model) && JSON.stringify([...s]) === JSON.stringify(setModel)
      },
    ),
    { numRuns: 500 },
  )
  t.pass('both follow their model and neither outgrows its bound')
})
