/**
 * Replication: every stored session lives on more than one host.
 *
 * The owners of a key are the R members (this host included) ranked highest by rendezvous
 * hashing over the live membership. A SET pushes copies to the owners other than this host;
 * each copy is acknowledged and retried with backoff. When membership changes, every owner of a
 * key pushes it to owners that are new, at a bounded rate (a window of copies in flight). On a
 * clean shutdown, keys this host owns are handed to the owners that remain, within a time bound.
 * A copy keeps the original expiry: it travels with its remaining TTL.
 *
 * Every copy carries the version of the entry it copies (versions.ts), and a receiver stores it
 * only when it is newer than the entry or tombstone it holds for the key: a duplicate push costs a
 * datagram, never correctness, and an older copy (delayed, retried, replayed, or handed off by a
 * host that missed a later SET or DELETE) never rolls a value back or brings a deleted one back.
 * A refused copy is acknowledged all the same: the receiver holds something newer.
 *
 * Deletes travel the same way, as DELETE jobs in the same queue, acknowledged by the same ACK and
 * retried with the same backoff, but only to the hosts that may hold a copy: the key's owners, and
 * the hosts this one remembers as holders (`Holders`: they fetched the key here, or a copy went
 * between them and here). A host that applies a DELETE forwards it to the holders it remembers,
 * so a copy fetched from an owner (or from any holder) is reached in one more acknowledged hop.
 * Forwarding rather than asking the owners for their lists keeps one message, one settle path
 * and no new request state: each hop is delivered or retried by the host that knows the next one.
 *
 * The queue holds at most one job per (kind, key, target): a job still waiting is not queued again
 * (a copy reads the entry when sent, so the newest version goes; a delete keeps the newest version).
 *
 * Acknowledgements are delayed and cumulative: a receiver collects the replIds it owes each sender
 * and sends them in one ACKS datagram replicationAckDelayMs after the first (or at once when one
 * datagram is full), so a burst of copies costs the writer one wakeup, not one per copy. On the
 * sending side one timer serves every job in flight: jobs wait for their ACK in lanes of equal
 * retransmit delay, each in send order (so each lane's head is due first), and the timer is set for
 * the earliest head. No timer or closure per job.
 *
 * With replicationFactor 0 (push to all) every trusted member owns every key: a SET is pushed to
 * each, a GET anywhere is local, and a host that joins is filled by one holder per key.
 *
 * The parts, one concern each, under replication/ (this file composes them and is the one the
 * cluster core and the daemon use):
 * - types.ts: the config keys, counters and membership view every part shares;
 * - holders.ts: which members may hold a copy besides the owners;
 * - placement.ts: owners, the re-placement scan, copies owed to members in probation, handoff;
 * - writes.ts: a SET or DELETE made here leaving for owners and holders, awaited;
 * - outbox.ts: the jobs sent, their window, retransmits and the ACKs that settle them;
 * - deadlines.ts: when a write waiting for acknowledgements is answered anyway;
 * - receive.ts: copies and deletes arriving from members, stored, passed on, acknowledged;
 * - acks.ts: the acknowledgements this host owes, delayed and gathered;
 * - fallback.ts: the group INVALIDATE when holders are unknown or silent;
 * - reach.ts: copies kept reachable by later writes when the member they came from departs.
 */
import type { Message, MsgType } from '../../protocol/wire.js'
import type { SessionStore } from '../store/session-store.js'
import type { PeerTransport } from './peer-transport.js'
import { systemClock, type Clock } from './clock.js'
import { AcksOwed } from './replication/acks.js'
import { Deadlines } from './replication/deadlines.js'
import { GroupInvalidation } from './replication/fallback.js'
import { HOLDER_SHARE, Holders } from './replication/holders.js'
import { Outbox } from './replication/outbox.js'
import { Placement } from './replication/placement.js'
import { Reach } from './replication/reach.js'
import { Receiver } from './replication/receive.js'
import { Writes } from './replication/writes.js'
import type { ReplicaPeers, ReplicationCounters, ReplicationOptions } from './replication/types.js'

export type { ReplicaPeers, ReplicationCounters, ReplicationOptions } from './replication/types.js'
export { HOLDER_SHARE, Holders } from './replication/holders.js'
export { MAX_PARTIAL_COPIES_PER_SENDER } from './replication/receive.js'

export class Replicator {
  readonly counters: ReplicationCounters = {
    copiesPushed: 0,
    copiesAcked: 0,
    copiesRetried: 0,
    copiesFailed: 0,
    copiesDropped: 0,
    copiesReceived: 0,
    copiesRefused: 0,
    copiesUnassembled: 0,
    copiesStale: 0,
    handedOff: 0,
    copiesOwed: 0,
    replacements: 0,
    replacementScans: 0,
    jobsCoalesced: 0,
    setsAwaitingCopy: 0,
    deletesQueued: 0,
    deleteDatagramsSent: 0,
    deleteDatagramsReceived: 0,
    deletesAcked: 0,
    deletesRetried: 0,
    deletesFailed: 0,
    deletesForwarded: 0,
    deletesRefused: 0,
    holdersRecorded: 0,
    holdersUnrecorded: 0,
    updatesForwarded: 0,
    invalidationsFallback: 0,
    invalidationsUnacked: 0,
    invalidationsMembership: 0,
    copiesReattached: 0,
    copySourcesUnrecorded: 0,
    acksSent: 0,
    acksCovered: 0,
    acksReceived: 0,
    acksUnmatched: 0,
    acksRefused: 0,
  }
  readonly holders: Holders
  /** Where copies held here came from, and who left lately (replication/reach.ts); none without copies or with push to all. */
  readonly reach: Reach | undefined
  readonly #outbox: Outbox
  readonly #placement: Placement
  readonly #writes: Writes
  readonly #receiver: Receiver
  readonly #acks: AcksOwed
  readonly #deadlines: Deadlines
  readonly #fallback: GroupInvalidation
  readonly #clock: Clock
  #idle: (() => void)[] = []

  constructor(o: ReplicationOptions, transport: PeerTransport, store: SessionStore, peers: ReplicaPeers, clock: Clock = systemClock) {
    const cx = { o, t: transport, store, peers, clock, counters: this.counters }
    this.#clock = clock
    this.holders = new Holders(o.maxHolderRecords, this.counters, () => clock.now(), Math.ceil(o.maxHolderRecords / HOLDER_SHARE))
    this.#deadlines = new Deadlines(clock)
    this.#fallback = new GroupInvalidation(cx, this.holders)
    this.#acks = new AcksOwed(cx)
    this.#outbox = new Outbox(cx, this.holders, () => {
      if (this.pending === 0) for (const w of this.#idle.splice(0)) w()
    })
    this.#placement = new Placement(cx, this.#outbox)
    this.reach = o.replicationFactor > 1 ? this.#newReach(cx) : undefined
    const parts = { holders: this.holders, outbox: this.#outbox, deadlines: this.#deadlines, fallback: this.#fallback, reach: this.reach }
    this.#writes = new Writes(cx, { ...parts, placement: this.#placement })
    this.#receiver = new Receiver(cx, { ...parts, acks: this.#acks, writes: this.#writes })
  }

  #newReach(cx: { o: ReplicationOptions; store: SessionStore; peers: ReplicaPeers; clock: Clock }): Reach {
    const { o, peers, clock } = cx
    // Other hosts notice a departure up to a couple of heartbeats after this one, then re-attach.
    const windowMs = (o.deadAfterMs ?? 3000) + 2 * (o.heartbeatMs ?? 1000)
    return new Reach(
      {
        selfId: peers.selfId,
        store: cx.store,
        isMember: (id) => peers.addressOf(id) !== undefined,
        memberIds: () => [...peers.aliveIds(), ...peers.probationIds()],
        ownersAmong: (key, members) => this.#placement.owners(key, members),
        ownersOf: (key) => this.#placement.ownersOf(key),
        holdersOf: (key) => this.holders.ids(key),
        holderMembers: () => this.holders.memberIds(),
        copy: (key, to) => this.#outbox.enqueue(key, to, false),
        monotonicMs: () => clock.now(),
      },
      { max: o.maxHolderRecords, windowMs },
      this.counters,
    )
  }

  /** A fetch answered by `from` stored `key` here (lookups.ts): where the copy came from (reach.ts). */
  fetched(key: string, from: string, ttlMs: number): void {
    this.reach?.copied(key, from, ttlMs)
  }

  /** Called with the time from first send to ACK of each copy (seconds), for a histogram. */
  get observeAck(): (seconds: number) => void {
    return this.#outbox.observeAck
  }

  set observeAck(fn: (seconds: number) => void) {
    this.#outbox.observeAck = fn
  }

  /**
   * Copies queued, awaiting their ACK or owed to members in probation, plus one while a
   * re-placement scan is scheduled or running.
   */
  get pending(): number {
    return this.#outbox.queued + this.#outbox.inflight + this.#placement.owedCount + (this.#placement.scanPending ? 1 : 0)
  }

  /** The owners of `key` among the live members and this host. */
  ownersOf(key: string): string[] {
    return this.#placement.ownersOf(key)
  }

  /** An application stored `key` here: see Writes.stored. Returns the wait for its copies, if any. */
  stored(key: string): Promise<boolean> | undefined {
    return this.#writes.stored(key)
  }

  /** This host deleted `key` at `version` (or applied a peer's delete from `from`): see Writes.deleted. */
  deleted(key: string, version: bigint, from?: string): number {
    return this.#writes.deleted(key, version, from)
  }

  /** An application deleted `key` here at `version`: see Writes.deletedAwaited. */
  deletedAwaited(key: string, version: bigint): Promise<void> | undefined {
    return this.#writes.deletedAwaited(key, version)
  }

  /** An ACK from `sender`: it settles the copy or delete only if that went to `sender`. */
  onAck(sender: string, replId: number): void {
    this.#outbox.onAck(sender, replId)
  }

  /** An ACKS from `sender`: see Outbox.onAcks. */
  onAcks(sender: string, replIds: readonly number[]): void {
    this.#outbox.onAcks(sender, replIds)
  }

  /** A copy (or a chunk of one) from a member: see Receiver.onReplicate. */
  onReplicate(sender: string, m: Extract<Message, { type: typeof MsgType.REPLICATE | typeof MsgType.REPLICATE_AWAITED }>): void {
    this.#receiver.onReplicate(sender, m)
  }

  /** A DELETE from a member: see Receiver.onDelete. */
  onDelete(sender: string, m: Extract<Message, { type: typeof MsgType.DELETE | typeof MsgType.DELETE_AWAITED }>): void {
    this.#receiver.onDelete(sender, m)
  }

  /** Forgets expired holders and drops copies that stopped arriving half way. Called on every heartbeat. */
  sweep(): void {
    this.holders.sweep()
    this.reach?.sweep()
    this.#receiver.sweep()
  }

  /** Membership changed: see Placement.membersChanged. */
  membersChanged(): void {
    this.#placement.membersChanged()
    this.reach?.membersChanged()
  }

  /**
   * Before leaving: every key this host owns goes to the owners that remain, so no session falls
   * below R copies. Resolves when all are acknowledged or `timeoutMs` passed.
   */
  async handoff(timeoutMs: number): Promise<void> {
    if (!this.#placement.handOff()) return
    await this.whenIdle(timeoutMs)
  }

  /** Resolves when nothing is queued or in flight, or after `timeoutMs`. */
  whenIdle(timeoutMs: number): Promise<void> {
    if (this.pending === 0) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = this.#clock.setTimeout(resolve, timeoutMs)
      this.#idle.push(() => {
        this.#clock.clearTimeout(timer)
        resolve()
      })
    })
  }

  /**
   * Stops every part. Every flag is raised before any waiter is answered, so that answering one
   * (an awaited update passed on, at its deadline) sends nothing: acknowledgements owed go first
   * (the senders would otherwise retry copies this host took), then the jobs in flight and queued
   * answer their waiters, then the deadlines.
   */
  close(): void {
    this.#writes.close()
    this.#fallback.close()
    this.#placement.close()
    this.#acks.close()
    this.#outbox.close()
    this.#deadlines.close()
    this.#receiver.close()
    for (const w of this.#idle.splice(0)) w()
  }
}
