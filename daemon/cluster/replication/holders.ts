/**
 * Holders: which members may hold a copy of a key besides its owners (they fetched it here, or a
 * copy went between them and here), so that an overwrite or delete reaches them. Pure bookkeeping
 * with an injected clock: no sockets.
 */

/** One member may take at most 1/HOLDER_SHARE of maxHolderRecords (issue 21 finding 6: junk writes from one host cannot fill the table). */
export const HOLDER_SHARE = 4

/**
 * Which members may hold a copy of a key besides its owners: those that fetched it from this host
 * and those a copy went to or came from. Each is kept for the copy's remaining TTL (it cannot
 * be served longer), and at most `max` (key, member) records are held: beyond that new ones are
 * not kept and counted, since dropping old ones would silently forget live copies.
 */
export class Holders {
  readonly #max: number
  /** Records one member may take (the Replicator gives each a quarter of the table, so one host's junk writes cannot fill it). */
  readonly #maxPerMember: number
  readonly #monotonicMs: () => number
  readonly #byKey = new Map<string, { ids: Set<string>; expiresAt: number }>()
  readonly #perMember = new Map<string, number>()
  #records = 0
  /** Until when a refused record's copy may still be live (the clock's ms): see overflowed. */
  #overflowUntil = -Infinity
  readonly counters: { holdersRecorded: number; holdersUnrecorded: number }

  constructor(
    max: number,
    counters = { holdersRecorded: 0, holdersUnrecorded: 0 },
    monotonicMs: () => number = () => performance.now(),
    maxPerMember = max,
  ) {
    this.#max = max
    this.#maxPerMember = Math.max(1, maxPerMember)
    this.counters = counters
    this.#monotonicMs = monotonicMs
  }

  /**
   * True while a copy whose holder was not recorded (table or member share full) may still be
   * live: an overwrite or delete then also goes to the whole group (INVALIDATE), never silent.
   */
  get overflowed(): boolean {
    return this.#monotonicMs() < this.#overflowUntil
  }

  /** (key, member) records held for `id`. */
  heldBy(id: string): number {
    return this.#perMember.get(id) ?? 0
  }

  /** The holders of `key` whose copies may still be live, still remembered (an overwrite updates them). */
  ids(key: string): string[] {
    const held = this.#byKey.get(key)
    return held && held.expiresAt > this.#monotonicMs() ? [...held.ids] : []
  }

  #forgetKey(key: string, held: { ids: Set<string> }): void {
    this.#byKey.delete(key)
    this.#records -= held.ids.size
    for (const id of held.ids) {
      const n = (this.#perMember.get(id) ?? 1) - 1
      if (n > 0) this.#perMember.set(id, n)
      else this.#perMember.delete(id)
    }
  }

  /** (key, member) records held. */
  get size(): number {
    return this.#records
  }

  record(key: string, id: string, ttlMs: number): void {
    if (ttlMs <= 0) return
    const expiresAt = this.#monotonicMs() + ttlMs
    const held = this.#byKey.get(key)
    if (held?.ids.has(id)) {
      held.expiresAt = Math.max(held.expiresAt, expiresAt)
      return
    }
    if (this.#records >= this.#max || this.heldBy(id) >= this.#maxPerMember) {
      this.counters.holdersUnrecorded++
      this.#overflowUntil = Math.max(this.#overflowUntil, expiresAt)
      return
    }
    if (held) {
      held.ids.add(id)
      held.expiresAt = Math.max(held.expiresAt, expiresAt)
    } else this.#byKey.set(key, { ids: new Set([id]), expiresAt })
    this.#records++
    this.#perMember.set(id, this.heldBy(id) + 1)
    this.counters.holdersRecorded++
  }

  /** The holders of `key` whose copies may still be live, forgotten here: a delete goes to them once. */
  take(key: string): string[] {
    const held = this.#byKey.get(key)
    if (!held) return []
    this.#forgetKey(key, held)
    return held.expiresAt > this.#monotonicMs() ? [...held.ids] : []
  }

  /** Forgets records whose copies have expired. */
  sweep(): void {
    const now = this.#monotonicMs()
    for (const [key, held] of this.#byKey) {
      if (held.expiresAt <= now) this.#forgetKey(key, held)
    }
  }
}
