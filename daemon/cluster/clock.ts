/**
 * The time the cluster core reads and the timers it sets, in one injected object: the daemon
 * passes `systemClock`; unit tests pass a fake one and move time forward themselves, so the
 * peer protocol's retransmits, deadlines, heartbeats and backoffs run in milliseconds of CPU
 * instead of seconds of waiting (test/helpers/fake-clock.ts).
 */

/** What a timer call returns: only ever handed back to the same clock's clear call. */
export type TimerHandle = unknown

/**
 * Both clocks: `now()` is the monotonic one (what the daemon's other options call `monotonicMs`),
 * `wallMs()` the wall clock (what they call `wallMs`). Never pass one where the other is wanted:
 * monotonic time starts near 0 at process start, wall time is Unix ms and may jump.
 */
export interface Clock {
  /** Monotonic time in ms (performance.now): durations, deadlines, liveness, TTLs. */
  now(): number
  /** Wall-clock time in Unix ms (Date.now): what travels between hosts (send times, versions). */
  wallMs(): number
  setTimeout(fn: () => void, ms: number): TimerHandle
  /** Idempotent; undefined is a no-op, as with the global. */
  clearTimeout(handle: TimerHandle | undefined): void
  /** Runs `fn` after the I/O already waiting: long work in slices that let the daemon serve meanwhile. */
  setImmediate(fn: () => void): TimerHandle
}

/** The host's clocks and Node's timers. */
export const systemClock: Clock = {
  now: () => performance.now(),
  wallMs: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout | undefined),
  setImmediate: (fn) => setImmediate(fn),
}
