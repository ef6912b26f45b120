/**
 * How long a lookup waits for the first owner before asking the others (the hedge): a high
 * percentile of the first owners' recent reply times, as "The Tail at Scale" advises. A fixed
 * delay shorter than a typical reply asks two owners for most fills (a LOOKUP and a late reply
 * wasted each); one far above the tail leaves a slow owner's fills waiting.
 *
 * Pure: no timers, no clock. The caller feeds reply times in ms.
 */
export interface HedgeDelayOptions {
  /** The delay before any reply was seen, and the lowest it goes, in ms. */
  floorMs: number
  /** The highest it goes, in ms. */
  ceilingMs: number
  /** Reply times kept (the most recent). */
  window?: number
  /** The percentile followed, 0 < q < 1. */
  quantile?: number
}

/** Reply times between two recomputations: the sort of the window runs once per so many samples. */
const RECOMPUTE_EVERY = 16

export class HedgeDelay {
  readonly #floor: number
  readonly #ceiling: number
  readonly #q: number
  readonly #ring: Float64Array
  #n = 0
  #at = 0
  #sinceRecompute = 0
  #delay: number

  constructor(o: HedgeDelayOptions) {
    this.#floor = o.floorMs
    this.#ceiling = Math.max(o.floorMs, o.ceilingMs)
    this.#q = o.quantile ?? 0.95
    this.#ring = new Float64Array(o.window ?? 256)
    this.#delay = this.#floor
  }

  /** The current hedge delay, in ms. */
  get ms(): number {
    return this.#delay
  }

  /** A first owner answered (HIT or MISS) `ms` after it was asked. */
  observe(ms: number): void {
    if (!(ms >= 0)) return
    this.#ring[this.#at] = ms
    this.#at = (this.#at + 1) % this.#ring.length
    if (this.#n < this.#ring.length) this.#n++
    // At first every sample counts: the start value is often far off what this network does.
    if (++this.#sinceRecompute >= RECOMPUTE_EVERY || this.#n < RECOMPUTE_EVERY) this.#recompute()
  }

  #recompute(): void {
    this.#sinceRecompute = 0
    const sorted = this.#ring.slice(0, this.#n).sort()
    const p = sorted[Math.min(this.#n - 1, Math.ceil(this.#q * this.#n) - 1)]!
    this.#delay = Math.min(this.#ceiling, Math.max(this.#floor, p))
  }
}
