import t from 'tap'
import fc from 'fast-check'
import { MAX_JUMP, ReplayGuard, Verdict, WINDOW } from '../../daemon/cluster/replay-window.js'

t.test('new counters pass once, replays fail', async (t) => {
  const g = new ReplayGuard()
  t.equal(g.accept('a', 5), true)
  t.equal(g.accept('a', 5), false)
  t.equal(g.accept('a', 3), true, 'late but unseen')
  t.equal(g.accept('a', 3), false)
  t.equal(g.accept('b', 5), true, 'senders are separate')
  t.equal(g.accept('a', 5 + WINDOW + 10), true)
  t.equal(g.accept('a', 5 + 10), false, 'older than the window')
})

t.test('matches a set-based model', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 3000 }), { maxLength: 500 }), (ctrs) => {
      const g = new ReplayGuard()
      const seen = new Set<number>()
      let highest = -1
      for (const c of ctrs) {
        const expected = !seen.has(c) && (highest < 0 || c > highest - WINDOW)
        if (g.accept('s', c) !== expected) return false
        if (expected) {
          seen.add(c)
          highest = Math.max(highest, c)
        }
      }
      return true
    }),
    { numRuns: 300 },
  )
  t.pass('agrees with the model')
})

t.test('bounded senders', async (t) => {
  const g = new ReplayGuard(2)
  g.accept('a', 1)
  g.accept('b', 1)
  g.accept('c', 1)
  t.equal(g.accept('a', 1), true, 'the least recently heard sender was forgotten')
})

t.test('a counter more than MAX_JUMP ahead of the highest is refused and moves nothing', async (t) => {
  const g = new ReplayGuard()
  t.equal(g.check('a', 10), Verdict.NEW)
  t.equal(g.check('a', 2 ** 53 - 1), Verdict.JUMP, 'the pin')
  t.equal(g.check('a', 11), Verdict.NEW, 'the real next counter still passes')
  t.equal(g.check('a', 11 + MAX_JUMP), Verdict.NEW, 'a jump of exactly MAX_JUMP passes (loss)')
  t.equal(g.check('a', 11), Verdict.REPLAYED)
})
