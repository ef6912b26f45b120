import t from 'tap'
import { MAX_TIMER_MS, setLongTimeout } from '../../daemon/local/long-timeout.js'

// The timers are unref'd (they must not hold the daemon open): this one holds the test open.
const hold = setInterval(() => {}, 1000)
t.teardown(() => clearInterval(hold))

t.test('a delay longer than one step fires once, not before it is due (issue 21 point 14)', async (t) => {
  const start = performance.now()
  let firedAt = 0
  let calls = 0
  await new Promise<void>((resolve) =>
    setLongTimeout(
      () => {
        calls++
        firedAt = performance.now()
        resolve()
      },
      120,
      { maxStepMs: 10 },
    ),
  )
  t.ok(firedAt - start >= 120, `fired ${(firedAt - start).toFixed(1)} ms after, not before the 120 ms were up`)
  t.equal(calls, 1)
})

t.test('past 24.8 days: no step longer than setTimeout takes, and not at once', async (t) => {
  const thirtyDays = 30 * 86_400_000
  t.ok(thirtyDays > MAX_TIMER_MS, 'the delay memcached allows is beyond setTimeout')
  let fired = false
  let clock = 0
  const timer = setLongTimeout(() => (fired = true), thirtyDays, { monotonicMs: () => clock })
  await new Promise((r) => setImmediate(r))
  t.notOk(fired, 'not fired at once')
  timer.cancel()
  timer.cancel()
  t.pass('cancel is idempotent')
})

t.test('0 or less fires at once; Infinity and NaN never; cancel stops it', async (t) => {
  let n = 0
  setLongTimeout(() => n++, 0)
  setLongTimeout(() => n++, -5)
  t.equal(n, 2, 'synchronously')
  setLongTimeout(() => n++, Infinity)
  setLongTimeout(() => n++, NaN)
  const c = setLongTimeout(() => n++, 5)
  c.cancel()
  await new Promise((r) => setTimeout(r, 30))
  t.equal(n, 2)
})
