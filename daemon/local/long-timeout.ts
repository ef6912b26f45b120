/**
 * A timer for delays longer than Node's timers take. setTimeout keeps its delay in a signed 32-bit
 * number of ms: anything above 2^31 - 1 ms (24.8 days) is replaced by 1 ms, with only a warning.
 * memcached's `flush_all DELAY` takes relative seconds up to 30 days, or a Unix time past that, so
 * `flush_all 2592000` flushed at once (issue 21 point 14). This one waits in steps of at most
 * MAX_TIMER_MS, each time against the monotonic clock, until the whole delay has passed.
 */

/** The longest delay setTimeout honours, in ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1

export interface LongTimeout {
  /** Stops it; idempotent. */
  cancel(): void
}

/**
 * Calls `fn` once, `ms` ms from now (at once, synchronously, for 0 or less; never for Infinity or
 * NaN). The timer does not hold the process open. `monotonicMs` (the monotonic clock, in ms)
 * and `maxStepMs` (at most MAX_TIMER_MS) are for tests.
 */
export function setLongTimeout(fn: () => void, ms: number, o: { monotonicMs?: () => number; maxStepMs?: number } = {}): LongTimeout {
  const now = o.monotonicMs ?? (() => performance.now())
  const step = Math.min(o.maxStepMs ?? MAX_TIMER_MS, MAX_TIMER_MS)
  let timer: NodeJS.Timeout | undefined
  let done = Number.isNaN(ms) || ms === Infinity
  const due = now() + Math.max(0, ms)
  const arm = () => {
    if (done) return
    const left = due - now()
    if (left <= 0) {
      done = true
      timer = undefined
      fn()
      return
    }
    timer = setTimeout(arm, Math.min(Math.ceil(left), step))
    timer.unref()
  }
  arm()
  return {
    cancel() {
      done = true
      clearTimeout(timer)
      timer = undefined
    },
  }
}
