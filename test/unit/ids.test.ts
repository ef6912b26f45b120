import t from 'tap'
import fc from 'fast-check'
import { U32_MAX, nextId } from '../../protocol/ids.js'

t.test('ids count up and wrap from 2^32-1 to 1, never to 0', async (t) => {
  t.equal(U32_MAX, 0xffffffff)
  t.equal(nextId(1), 2)
  t.equal(nextId(0xfffffffe), 0xffffffff)
  t.equal(nextId(0xffffffff), 1, 'wraps at the largest u32')
  t.equal(nextId(0), 1, '0 is reserved: the sequence starts at 1')
  t.equal(nextId(-5), 1)
  t.equal(nextId(2 ** 40), 1, 'beyond a u32 (never made here) wraps too')
  t.equal(nextId(NaN), 1)
  let id = 0xfffffffd
  const seen: number[] = []
  for (let i = 0; i < 4; i++) seen.push((id = nextId(id)))
  t.same(seen, [0xfffffffe, 0xffffffff, 1, 2])
})

t.test('every id is a u32 other than 0', async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: -(2 ** 40), max: 2 ** 40 }), (x) => {
      const n = nextId(x)
      return Number.isInteger(n) && n >= 1 && n <= U32_MAX
    }),
    { numRuns: 2000 },
  )
  t.pass('always in 1..2^32-1')
})
