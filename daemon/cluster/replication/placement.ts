/**
 * Placement: which members own a key (rendezvous hashing over the live membership), the
 * re-placement scan that pushes keys to owners that are new after a membership change, the
 * copies owed to members in probation (sent once they are trusted), and which keys a clean
 * shutdown hands to the owners that remain.
 */
import { owners } from '../rendezvous.js'
import type { SessionStore } from '../../store/session-store.js'
import type { Clock, TimerHandle } from '../clock.js'
import type { Outbox } from './outbox.js'
import type { ReplicaPeers, ReplicationContext, ReplicationCounters, ReplicationOptions } from './types.js'

/** Keys re-placed per turn of the event loop during a scan. */
const SCAN_SLICE = 2000

export class Placement {
  readonly counters: ReplicationCounters
  readonly #o: ReplicationOptions
  readonly #store: SessionStore
  readonly #peers: ReplicaPeers
  readonly #clock: Clock
  readonly #outbox: Outbox
  readonly #seeds = new Map<string, number>()
  /** Push to all (replicationFactor 0): every trusted member owns every key. */
  readonly #all: boolean
  /** Membership as of the last change seen, and as of the last scan (what copies were placed under). */
  #lastMembers: string[] = []
  #scanBase: string[] | undefined
  #scanTimer: TimerHandle | undefined
  /** A scan is under way (in slices); a change meanwhile starts another after it. */
  #scanning = false
  #scanAgain = false
  /** Bumped to abandon a scan under way (handoff, close). */
  #scanGen = 0
  /**
   * Keys stored here whose copy is owed to a member in probation (an owner once trusted), by
   * member: sent when it is trusted, and counted as pending meanwhile, so a write made while a
   * peer rejoins is never reported as replicated before it is.
   */
  #owed = new Map<string, Set<string>>()
  #owedCount = 0
  #closed = false

  constructor(cx: ReplicationContext, outbox: Outbox) {
    this.counters = cx.counters
    this.#o = cx.o
    this.#all = cx.o.replicationFactor === 0
    this.#store = cx.store
    this.#peers = cx.peers
    this.#clock = cx.clock
    this.#outbox = outbox
  }

  /** Copies owed to members in probation, not yet queued. */
  get owedCount(): number {
    return this.#owedCount
  }

  /** A re-placement scan is scheduled or running. */
  get scanPending(): boolean {
    return !!this.#scanTimer || this.#scanning
  }

  /** Whether sessions are copied to other hosts at all (replicationFactor 1: no). */
  get #replicates(): boolean {
    return this.#o.replicationFactor !== 1
  }

  /** The owners of `key` among `members`, ranked. */
  owners(key: string, members: string[]): string[] {
    // Push to all: every member, still ranked, so a lookup's first owner spreads over the fleet.
    return owners(key, members, this.#all ? members.length : this.#o.replicationFactor, this.#seeds)
  }

  /** The owners of `key` among the live members and this host. */
  ownersOf(key: string): string[] {
    return this.owners(key, [this.#peers.selfId, ...this.#peers.aliveIds()])
  }

  /** Notes the copies of `key` that members in probation will be owed once trusted (see #owed). */
  oweToProbation(key: string, targets: string[]): void {
    const waiting = this.#peers.probationIds()
    if (waiting.length === 0) return
    const later = this.owners(key, [this.#peers.selfId, ...this.#peers.aliveIds(), ...waiting])
    for (const id of later) {
      if (targets.includes(id) || !waiting.includes(id)) continue
      let keys = this.#owed.get(id)
      if (!keys) this.#owed.set(id, (keys = new Set()))
      if (keys.has(key)) continue
      // Paid into the queue, which holds maxReplicationQueue jobs: more owed would be dropped
      // then, so they are dropped (counted) now, and a member kept in probation while writes go
      // on costs bounded memory.
      if (this.#owedCount >= this.#o.maxReplicationQueue) {
        this.counters.copiesDropped++
        continue
      }
      keys.add(key)
      this.#owedCount++
      this.counters.copiesOwed++
    }
  }

  /**
   * Pays what members in probation were owed: copies to those now trusted (even where this host
   * is no owner any more, which the re-placement scan skips), nothing to those gone.
   */
  #payOwed(): void {
    if (this.#owed.size === 0) return
    const trusted = new Set(this.#peers.aliveIds())
    const waiting = new Set(this.#peers.probationIds())
    for (const [id, keys] of this.#owed) {
      if (waiting.has(id)) continue
      this.#owed.delete(id)
      this.#owedCount -= keys.size
      if (trusted.has(id)) for (const key of keys) this.#outbox.enqueue(key, id, false)
    }
    this.#outbox.pump()
  }

  /** A deleted key is owed to no one any more: it leaves #owed rather than sitting there pending. */
  forgetOwed(key: string): void {
    for (const keys of this.#owed.values()) if (keys.delete(key)) this.#owedCount--
  }

  /**
   * Membership changed: re-place keys shortly (a burst of changes is one scan). The view before the
   * change is taken now, so keys written after it are not mistaken for keys placed under it.
   * (A host that just started holds almost nothing while it discovers the members, so its first
   * scans are nearly free; skipping them instead would strand keys it co-owns with a newcomer.)
   */
  membersChanged(): void {
    const self = this.#peers.selfId
    const previous = this.#lastMembers.length ? this.#lastMembers : [self]
    this.#lastMembers = [self, ...this.#peers.aliveIds()].sort()
    this.#pruneSeeds()
    this.#payOwed()
    if (!this.#replicates || this.#closed) return
    this.#scanBase ??= previous
    if (this.#scanning) {
      this.#scanAgain = true
      return
    }
    this.#scanTimer ??= this.#clock.setTimeout(() => {
      this.#scanTimer = undefined
      this.#rescan()
    }, 10)
  }

  /** Seeds only of the members in the views still in use: forged members that came and went leave none behind. */
  #pruneSeeds(): void {
    const keep = new Set([...this.#lastMembers, ...(this.#scanBase ?? [])])
    for (const id of this.#seeds.keys()) if (!keep.has(id)) this.#seeds.delete(id)
  }

  /**
   * Re-places every stored key under the new membership, SCAN_SLICE keys at a time with the event
   * loop in between: 200k keys against hundreds of members is seconds of hashing, and GETs, ACKs
   * and heartbeats must keep being served meanwhile.
   */
  #rescan(): void {
    const self = this.#peers.selfId
    const now = this.#lastMembers
    const before = this.#scanBase ?? now
    this.#scanBase = undefined
    this.#scanning = true
    this.counters.replacementScans++
    const keys = this.#store.keys()
    const gen = ++this.#scanGen
    // Push to all: every host that stays holds every key, and the one ranked first for the key
    // among them fills the newcomers (the others would send the same copy again). A departure
    // gives no member a key it lacked, so it costs nothing.
    const stayed = this.#all ? before.filter((id) => now.includes(id)) : []
    const gained = this.#all ? now.filter((id) => !before.includes(id)) : []
    if (this.#all && gained.length === 0) {
      this.#scanning = false
      this.#pruneSeeds()
      this.#outbox.pump()
      return
    }
    let i = 0
    const slice = () => {
      if (this.#closed || gen !== this.#scanGen) return
      for (const end = Math.min(keys.length, i + SCAN_SLICE); i < end; i++) {
        const key = keys[i]!
        if (this.#all) {
          if (owners(key, stayed, 1, this.#seeds)[0] !== self) continue
          for (const id of gained) {
            if (id === self) continue
            this.counters.replacements++
            this.#outbox.enqueue(key, id, false)
          }
          continue
        }
        const next = this.owners(key, now)
        if (!next.includes(self)) continue
        const prev = this.owners(key, before)
        for (const id of next) {
          if (id !== self && !prev.includes(id)) {
            this.counters.replacements++
            this.#outbox.enqueue(key, id, false)
          }
        }
      }
      this.#outbox.pump()
      if (i < keys.length) {
        this.#clock.setImmediate(slice)
        return
      }
      this.#scanning = false
      this.#pruneSeeds()
      if (this.#scanAgain) {
        this.#scanAgain = false
        this.#rescan()
      } else this.#outbox.pump()
    }
    slice()
  }

  /**
   * Before leaving: the scan under way is abandoned, and every key this host owns is queued for
   * the owners that remain, so no session falls below R copies. False when there is nothing to
   * hand off (then nothing is queued and there is nothing to wait for).
   */
  handOff(): boolean {
    this.#clock.clearTimeout(this.#scanTimer)
    this.#scanTimer = undefined
    this.#scanning = false
    this.#scanAgain = false
    this.#scanGen++
    const self = this.#peers.selfId
    const others = this.#peers.aliveIds()
    // Push to all: the members that remain own every key already and were pushed each one when it
    // was written (or, joining later, filled by the re-placement scan): no owner is new.
    if (!this.#replicates || this.#all || others.length === 0) return false
    for (const [key] of this.#store.entries()) {
      if (!this.owners(key, [self, ...others]).includes(self)) continue
      for (const id of this.owners(key, others)) this.#outbox.enqueue(key, id, true)
    }
    return true
  }

  /** No scan runs and nothing is owed any more (close). */
  close(): void {
    this.#closed = true
    this.#clock.clearTimeout(this.#scanTimer)
    this.#owed.clear()
    this.#owedCount = 0
  }
}
