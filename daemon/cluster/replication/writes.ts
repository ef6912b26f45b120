/**
 * The writer's side: a SET or DELETE made here leaves for the key's owners and the holders
 * remembered here (awaited: the write is answered once each acknowledged, or at its deadline),
 * and a delete applied from a peer is passed on to the holders remembered here.
 */
import type { SessionStore } from '../../store/session-store.js'
import type { CopyWaiter, Deadlines } from './deadlines.js'
import type { GroupInvalidation } from './fallback.js'
import type { Holders } from './holders.js'
import type { Outbox } from './outbox.js'
import type { Placement } from './placement.js'
import type { Reach } from './reach.js'
import type { ReplicaPeers, ReplicationContext, ReplicationCounters, ReplicationOptions } from './types.js'

/** The parts a write goes through. */
export interface WriteParts {
  holders: Holders
  outbox: Outbox
  placement: Placement
  deadlines: Deadlines
  fallback: GroupInvalidation
  /** Copies kept reachable through departures (reach.ts); none without copies or with push to all. */
  reach: Reach | undefined
}

/** Bytes of a value per extra ACK timeout its awaited copies may take (see `stored`). */
export const COPY_STEP_BYTES = 64 * 1024
export class Writes {
  readonly counters: ReplicationCounters
  readonly #o: ReplicationOptions
  readonly #store: SessionStore
  readonly #peers: ReplicaPeers
  readonly #holders: Holders
  readonly #outbox: Outbox
  readonly #placement: Placement
  readonly #deadlines: Deadlines
  readonly #fallback: GroupInvalidation
  readonly #reach: Reach | undefined
  #closed = false

  constructor(cx: ReplicationContext, parts: WriteParts) {
    this.counters = cx.counters
    this.#o = cx.o
    this.#store = cx.store
    this.#peers = cx.peers
    this.#holders = parts.holders
    this.#outbox = parts.outbox
    this.#placement = parts.placement
    this.#deadlines = parts.deadlines
    this.#fallback = parts.fallback
    this.#reach = parts.reach
  }

  /** Whether sessions are copied to other hosts at all (replicationFactor 1: no). */
  get #replicates(): boolean {
    return this.#o.replicationFactor !== 1
  }

  /**
   * An application stored `key` here: its copies leave now, before the SET is answered, so they
   * are in the owners' sockets ahead of any LOOKUP a reader can send once it has the answer. They
   * pass the window of copies in flight (that bounds re-placement and handoff, whose copies no
   * reader waits for) and any job for the same key and owner still waiting behind it.
   *
   * A reader asks the owners only, and a host that holds a copy serves it: so the SET is answered
   * when every owner and every holder remembered here has acknowledged its copy (below), or after
   * three ACK timeouts at most. Returns that wait, if any: it resolves false when the deadline
   * passed with no target's acknowledgement (no other host is known to hold the new entry; a
   * conditional write's decider answers "outcome unknown" then, decisions.ts).
   */
  stored(key: string): Promise<boolean> | undefined {
    if (!this.#replicates || this.#closed) return undefined
    const self = this.#peers.selfId
    const targets = this.#placement.owners(key, [self, ...this.#peers.aliveIds()])
    // The owners, and the holders remembered here (they fetched the key here, or a copy went
    // between them and here): each gets the new entry as an awaited copy, and the SET is answered
    // once every one acknowledged (an owner acknowledges only after the holders it knows did), so
    // no host that holds a copy serves the old value once the SET is answered.
    const to = new Set(targets)
    for (const id of this.#holders.ids(key)) if (this.#peers.addressOf(id)) to.add(id)
    to.delete(self)
    const below = this.#store.version(key) - 1n
    this.#fallback.ifOverflowed(key, below)
    this.#reach?.wrote(key, targets, this.#store.remainingTtl(key))
    // While membership changes, hosts may hold a copy that no record here or at the owners leads
    // to: a member that owned or held the key left lately (reach.ts), or members are in probation
    // here (a host that just started or restarted with a new id holds its own writes, and one
    // that trusts no one yet copies to no one). The group is told too, once the targets hold the
    // new entry (earlier, owners could drop the old one before taking the new); a host that drops
    // it then reads through the members in change (membership.ts: readOwners).
    const departed = (this.#reach?.invalidates(key) ?? false) || this.#peers.probationIds().length > 0
    if (to.size === 0) {
      if (departed) this.#fallback.send(key, below, 'invalidationsMembership')
      this.#placement.oweToProbation(key, targets)
      return undefined
    }
    let waiter: CopyWaiter | undefined
    let late = false
    let acked = true
    // A large value goes in many chunks and is acknowledged once reassembled: its deadline grows
    // by one ACK timeout per COPY_STEP_BYTES (1 MiB: 16 more), so a copy that is arriving is not
    // taken for a silent target (and a conditional write's decider does not answer "unknown").
    const bytes = this.#store.peek(key)?.value.length ?? 0
    const ms = (3 + Math.floor(bytes / COPY_STEP_BYTES)) * this.#o.replicationAckTimeoutMs
    const wait = new Promise<boolean>((resolve) => {
      waiter = this.#deadlines.waiter(
        to.size,
        ms,
        () => {
          if (departed && !late) this.#fallback.send(key, below, 'invalidationsMembership')
          resolve(acked)
        },
        // A target silent past the deadline (dead, not declared so yet) may hold the old value,
        // and hosts that fetched it there are reached only through it: the group drops it first.
        (n) => {
          late = true
          acked = n > 0
          this.#fallback.send(key, below, 'invalidationsUnacked')
        },
      )
    })
    this.counters.setsAwaitingCopy++
    for (const id of to) this.#outbox.awaitedCopy(key, id, waiter!)
    this.#placement.oweToProbation(key, targets)
    return wait
  }

  /**
   * This host deleted `key` at `version` (or applied a peer's delete, coming from `from`): the
   * delete goes, acknowledged, to the owners and to the holders remembered here. With `from`
   * only the holders: the deleter reaches the owners itself. Returns the hosts it goes to.
   */
  deleted(key: string, version: bigint, from?: string, waiter?: CopyWaiter): number {
    const self = this.#peers.selfId
    this.#placement.forgetOwed(key)
    const to = new Set(from === undefined ? this.#placement.ownersOf(key) : [])
    for (const id of this.#holders.take(key)) to.add(id)
    to.delete(self)
    if (from !== undefined) to.delete(from)
    this.#fallback.ifOverflowed(key, version)
    this.#reach?.forget(key)
    // As a SET's (stored()), but at once: a read meanwhile may miss, the delete being under way.
    if (this.#reach?.invalidates(key) || (from === undefined && this.#peers.probationIds().length > 0))
      this.#fallback.send(key, version, 'invalidationsMembership')
    for (const id of to) this.#outbox.startDelete(key, id, version, waiter)
    return to.size
  }

  /**
   * An application deleted `key` here at `version`: the delete goes, awaited, to the owners and
   * the holders remembered here; the promise settles once each acknowledged (each after the
   * holders it knows did), or at the deadline a SET has.
   */
  deletedAwaited(key: string, version: bigint): Promise<void> | undefined {
    if (!this.#replicates || this.#closed) return undefined
    let resolveAll!: () => void
    const wait = new Promise<void>((resolve) => (resolveAll = resolve))
    const n = this.#deleteTargets(key).length
    if (n === 0) {
      this.deleted(key, version)
      return undefined
    }
    // As a SET's (stored()): a target silent past the deadline may hold the value still.
    const waiter = this.#deadlines.waiter(n, 3 * this.#o.replicationAckTimeoutMs, resolveAll, () =>
      this.#fallback.send(key, version, 'invalidationsUnacked'),
    )
    this.deleted(key, version, undefined, waiter)
    return wait
  }

  /** Where an application's delete of `key` goes (without forgetting the holders). */
  #deleteTargets(key: string): string[] {
    const to = new Set(this.#placement.ownersOf(key))
    for (const id of this.#holders.ids(key)) to.add(id)
    to.delete(this.#peers.selfId)
    return [...to]
  }

  /** No write waits for copies any more (close). */
  close(): void {
    this.#closed = true
  }
}
