/**
 * A `Clock` (daemon/cluster/clock.ts) whose time moves only when a test says so, on
 * @sinonjs/fake-timers: its timer queue runs due timers in order of due time and then of
 * scheduling (timers set by a timer that runs are run too, when due within the step), and its
 * async tick lets promise callbacks run between timers, which the cluster core relies on (a
 * transport start, a handoff awaiting its ACKs). The fake clock is never installed over the
 * globals: only what is handed this clock sees fake time.
 */
import { createClock } from '@sinonjs/fake-timers'
import type { Clock } from '../../daemon/cluster/clock.js'

/** Where the monotonic clock starts, in ms: a running process's performance.now is never near 0. */
const MONOTONIC_START_MS = 10_000

export interface FakeClock extends Clock {
  /** Moves time forward by `ms`, running every timer that falls due on the way, in order. */
  advance(ms: number): Promise<void>
  /** Timers (and immediates) waiting to run. */
  readonly pending: number
}

/** A fake clock; its wall clock starts at `startWallMs` (Unix ms). */
export function fakeClock(startWallMs = Date.now()): FakeClock {
  const fake = createClock(startWallMs)
  return {
    now: () => fake.now - startWallMs + MONOTONIC_START_MS,
    wallMs: () => fake.now,
    setTimeout: (fn, ms) => fake.setTimeout(fn, ms),
    clearTimeout: (h) => {
      if (h !== undefined) fake.clearTimeout(h as ReturnType<typeof fake.setTimeout>)
    },
    setImmediate: (fn) => fake.setImmediate(fn),
    advance: async (ms) => {
      await fake.tickAsync(ms)
    },
    get pending() {
      return fake.countTimers()
    },
  }
}
