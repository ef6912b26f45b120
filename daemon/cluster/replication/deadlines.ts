/**
 * Deadlines of writes waiting for acknowledgements: a CopyWaiter is settled by the jobs it was
 * handed to or by its deadline, whichever is first; all deadlines share one timer.
 */
import type { Clock, TimerHandle } from '../clock.js'

/** A retransmit or deadline timer that fires this close before a due time (ms) settles it then: no second wakeup for a fraction of a ms. */
export const DUE_SLACK_MS = 1

/** A write answered once the jobs it waits for settled (each calls resolve once), or at its deadline. */
export interface CopyWaiter {
  resolve(): void
  /** The deadline passed first. */
  expire(): void
  settled: boolean
  at: number
}

/**
 * Deadlines of waiters, in lanes of equal duration (so each lane is in deadline order), under one
 * timer for the earliest head: no timer per write, as the retransmits have none per job.
 */
export class Deadlines {
  readonly #clock: Clock
  readonly #lanes = new Map<number, CopyWaiter[]>()
  #timer: TimerHandle | undefined
  #timerAt = Infinity

  constructor(clock: Clock) {
    this.#clock = clock
  }

  /**
   * A waiter settled by `count` resolves (one per job it was handed to), or `ms` from now,
   * whichever is first; `late` runs when the deadline came first, told how many resolves had
   * come. Settles once.
   */
  waiter(count: number, ms: number, done: () => void, late?: (acked: number) => void): CopyWaiter {
    let left = count
    const w: CopyWaiter = {
      settled: false,
      at: this.#clock.now() + ms,
      resolve: () => {
        if (--left > 0 || w.settled) return
        w.settled = true
        done()
      },
      expire: () => {
        if (w.settled) return
        w.settled = true
        late?.(count - left)
        done()
      },
    }
    if (count <= 0) {
      w.settled = true
      done()
      return w
    }
    let lane = this.#lanes.get(ms)
    if (!lane) this.#lanes.set(ms, (lane = []))
    lane.push(w)
    if (w.at < this.#timerAt) this.#arm(w.at)
    return w
  }

  #arm(at: number): void {
    this.#clock.clearTimeout(this.#timer)
    this.#timerAt = at
    this.#timer = this.#clock.setTimeout(() => this.#fire(), Math.max(0, at - this.#clock.now()))
  }

  #fire(): void {
    this.#timer = undefined
    this.#timerAt = Infinity
    const now = this.#clock.now()
    let next = Infinity
    for (const lane of this.#lanes.values()) {
      while (lane.length > 0 && (lane[0]!.settled || lane[0]!.at <= now + DUE_SLACK_MS)) lane.shift()!.expire()
      if (lane.length > 0 && lane[0]!.at < next) next = lane[0]!.at
    }
    if (next < Infinity) this.#arm(next)
  }

  /** Every waiter is answered now (close). */
  close(): void {
    this.#clock.clearTimeout(this.#timer)
    this.#timer = undefined
    this.#timerAt = Infinity
    for (const lane of this.#lanes.values()) for (const w of lane.splice(0)) w.expire()
  }
}
