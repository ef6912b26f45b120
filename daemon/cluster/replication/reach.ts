/**
 * Keeping every copy reachable by later writes while members leave, die or restart with a new id.
 *
 * A write reaches the hosts that hold a copy through holder records (holders.ts):
 * the host that sent a copy, or answered a fetch, remembers who got it, and passes every later
 * write on to them. Those records live only on the host that made them, so when it goes away the
 * hosts holding copies it gave out are reached by no one, and would serve the old value after a
 * later write. Three things close that, each for its own stretch of time:
 *
 * - Before this host notices the departure, a copy or delete to the departed member is not
 *   acknowledged: the write's deadline passes and the group is sent an INVALIDATE before the write
 *   is answered (writes.ts; a hop's wait for its holders does the same, receive.ts).
 * - Once it left here, for `windowMs` (other hosts notice it up to a couple of heartbeats apart,
 *   and then re-attach, below), a write of a key that the departed member owned or is recorded
 *   here as holding also goes to the group as an INVALIDATE (`invalidates`): a SET's once its
 *   targets acknowledged, just before it is answered (sent earlier, it would drop the old value
 *   on the owners too before they hold the new one, and a read meanwhile would find neither);
 *   a delete's at once.
 * - Each host remembers where each copy it holds came from (its source: the member that sent it
 *   or answered the fetch, which recorded this host as a holder; for a key written here, the first
 *   owner it went to). When that source leaves, dies or is replaced by a new id, and this host is
 *   no owner of the key (owners are written to directly), it sends its copy to the key's owners
 *   (`reattach`): a receiver records its sender as a holder, so later writes reach this host, and
 *   through it the hosts that fetched the key here.
 *
 * Source records are bounded (`max`, kept for the copy's remaining TTL like holder records);
 * while one could not be kept, a departure re-attaches every copy held here that this host does
 * not own, rather than none.
 */
import type { SessionStore } from '../../store/session-store.js'

/** What the replicator gives the reach tracker. */
export interface ReachDeps {
  selfId: string
  store: Pick<SessionStore, 'peek' | 'remainingTtl' | 'entries'>
  /** Whether `id` is still a member here (it has an address). */
  isMember(id: string): boolean
  /** The ids of every member known here now (trusted or not). */
  memberIds(): Iterable<string>
  /** The owners of `key` among `members` (rendezvous, as the replicator places copies). */
  ownersAmong(key: string, members: string[]): string[]
  /** The owners of `key` under this host's view now. */
  ownersOf(key: string): string[]
  /** The holders recorded here for `key` (departed ones included). */
  holdersOf(key: string): string[]
  /** Member ids that hold holder records here. */
  holderMembers(): Iterable<string>
  /** Queues a copy of `key` to `to` (acknowledged, retried: a plain copy job). */
  copy(key: string, to: string): void
  monotonicMs(): number
}

export interface ReachCounters {
  /** Copies sent to a key's owners because the member this host's copy came from left, died or changed id. */
  copiesReattached: number
  /** Sources of copies not remembered because maxHolderRecords were held. */
  copySourcesUnrecorded: number
}

export class Reach {
  readonly counters: ReachCounters
  readonly #d: ReachDeps
  readonly #max: number
  readonly #windowMs: number
  /** Where each copy held here came from, and until when it may live (the clock's ms). */
  readonly #source = new Map<string, { id: string; expiresAt: number }>()
  /** Keys by source, so a departure finds its copies without a scan. */
  readonly #bySource = new Map<string, Set<string>>()
  /** Members that left recently, and when this host noticed (the clock's ms). */
  readonly #departed = new Map<string, number>()
  /** Members known at the last change: the ones gone since are the departures. */
  #known = new Set<string>()
  /** Until when a copy whose source went unrecorded may live (see the file comment). */
  #overflowUntil = -Infinity

  constructor(d: ReachDeps, o: { max: number; windowMs: number }, counters: ReachCounters) {
    this.#d = d
    this.#max = o.max
    this.#windowMs = o.windowMs
    this.counters = counters
  }

  /** Source records held. */
  get size(): number {
    return this.#source.size
  }

  /** A copy of `key` from `from` was stored here (a copy received, a fetch answered). */
  copied(key: string, from: string, ttlMs: number): void {
    if (ttlMs <= 0 || from === this.#d.selfId) return
    const now = this.#d.monotonicMs()
    const had = this.#source.get(key)
    if (had?.id === from) {
      had.expiresAt = now + ttlMs
      return
    }
    if (had) this.#unindex(key, had.id)
    else if (this.#source.size >= this.#max) {
      this.counters.copySourcesUnrecorded++
      this.#overflowUntil = Math.max(this.#overflowUntil, now + ttlMs)
      return
    }
    this.#source.set(key, { id: from, expiresAt: now + ttlMs })
    let keys = this.#bySource.get(from)
    if (!keys) this.#bySource.set(from, (keys = new Set()))
    keys.add(key)
  }

  /** An application wrote `key` here and its copies went to `targets`: the first one records this host. */
  wrote(key: string, targets: Iterable<string>, ttlMs: number): void {
    for (const id of targets) if (id !== this.#d.selfId) return this.copied(key, id, ttlMs)
    this.forget(key)
  }

  /** This host holds no copy of `key` any more (deleted). */
  forget(key: string): void {
    const had = this.#source.get(key)
    if (!had) return
    this.#source.delete(key)
    this.#unindex(key, had.id)
  }

  #unindex(key: string, id: string): void {
    const keys = this.#bySource.get(id)
    if (!keys) return
    keys.delete(key)
    if (keys.size === 0) this.#bySource.delete(id)
  }

  /**
   * Whether a write of `key` must also go to the group as an INVALIDATE: a member that left
   * within windowMs owned it, or is recorded here as holding it, so hosts that hold a copy
   * through it may not be reached (they re-attach once they notice the departure themselves).
   */
  invalidates(key: string): boolean {
    if (this.#departed.size === 0) return false
    const now = this.#d.monotonicMs()
    for (const [id, at] of this.#departed) if (now - at > this.#windowMs) this.#departed.delete(id)
    if (this.#departed.size === 0) return false
    for (const id of this.#d.holdersOf(key)) if (this.#departed.has(id)) return true
    const all = [this.#d.selfId, ...this.#d.memberIds(), ...this.#departed.keys()]
    for (const id of this.#d.ownersAmong(key, all)) if (this.#departed.has(id)) return true
    return false
  }

  /**
   * Membership changed: members gone since the last change are departures (their window opens
   * now), and the copies that came from them and that this host does not own go to the owners.
   */
  membersChanged(): void {
    const now = this.#d.monotonicMs()
    const candidates = new Set([...this.#known, ...this.#bySource.keys(), ...this.#d.holderMembers()])
    const gone: string[] = []
    for (const id of candidates) if (id !== this.#d.selfId && !this.#d.isMember(id)) gone.push(id)
    this.#known = new Set([...this.#d.memberIds(), ...[...candidates].filter((id) => this.#d.isMember(id))])
    if (gone.length === 0) return
    for (const id of gone) this.#departed.set(id, now)
    const keys: string[] = []
    for (const id of gone) {
      const held = this.#bySource.get(id)
      if (!held) continue
      this.#bySource.delete(id)
      for (const key of held) {
        this.#source.delete(key)
        keys.push(key)
      }
    }
    // A source went unrecorded while its copy may still live: every copy held here that this
    // host does not own is re-attached, since any of them may have come from the departed.
    if (now < this.#overflowUntil) for (const [key] of this.#d.store.entries()) if (!this.#source.has(key)) keys.push(key)
    for (const key of keys) this.#reattach(key)
  }

  #reattach(key: string): void {
    const ttlMs = this.#d.store.peek(key) ? this.#d.store.remainingTtl(key) : 0
    if (ttlMs <= 0) return
    const owners = this.#d.ownersOf(key)
    if (owners.includes(this.#d.selfId)) return
    let first = true
    for (const id of owners) {
      this.counters.copiesReattached++
      this.#d.copy(key, id)
      if (first) this.copied(key, id, ttlMs)
      first = false
    }
  }

  /** Forgets sources of copies that have expired. Called on every heartbeat. */
  sweep(): void {
    const now = this.#d.monotonicMs()
    for (const [key, s] of this.#source) {
      if (s.expiresAt > now) continue
      this.#source.delete(key)
      this.#unindex(key, s.id)
    }
    for (const [id, at] of this.#departed) if (now - at > this.#windowMs) this.#departed.delete(id)
  }
}
