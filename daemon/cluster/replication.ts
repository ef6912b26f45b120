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
 */
import {
  MIN_DATAGRAM_BYTES,
  MsgType,
  acksPerDatagram,
  maxChunkCount,
  replicateChunkBytes,
  type Address,
  type Message,
} from '../../protocol/wire.js'
import { nextId } from '../../protocol/ids.js'
import { owners } from './rendezvous.js'
import type { SessionStore } from '../store/session-store.js'
import type { Config } from '../config/config.js'
import type { PeerTransport } from './peer-transport.js'
import { systemClock, type Clock, type TimerHandle } from './clock.js'
import { ByteBudget, Reassembly } from './reassembly.js'
import { MAX_COPY_BACKOFF_MS } from '../store/versions.js'
import { Reach, type ReachCounters } from './reach.js'

/** The config keys replication takes (unit and default: FIELDS in config/config.ts; the ACK wait doubles up to 2 s). */
export type ReplicationOptions = Pick<
  Config,
  | 'replicationFactor'
  | 'replicationAckTimeoutMs'
  | 'replicationAckDelayMs'
  | 'replicationRetries'
  | 'maxReplicationInflight'
  | 'maxReplicationQueue'
  | 'maxDatagramBytes'
  | 'maxValueBytes'
  | 'maxReassemblyBytes'
  | 'maxHolderRecords'
> &
  Partial<Pick<Config, 'deadAfterMs' | 'heartbeatMs'>>

export interface ReplicationCounters extends ReachCounters {
  copiesPushed: number
  copiesAcked: number
  copiesRetried: number
  copiesFailed: number
  /** Copies not sent: queue full (or maxReplicationQueue copies owed to members in probation), or the target left before its turn. */
  copiesDropped: number
  copiesReceived: number
  /** Copies from senders that are not members: not stored, not acknowledged. */
  copiesRefused: number
  /** Chunked copies not taken in: more chunks than a legal sender uses, the budget, or the sender's share full. */
  copiesUnassembled: number
  /** Copies received but not stored: older than (or the same as) what this host holds for the key. */
  copiesStale: number
  handedOff: number
  /** Copies noted as owed to a member in probation (sent when it is trusted; see #owed). */
  copiesOwed: number
  /** Copies queued because membership changed and a key gained an owner. */
  replacements: number
  replacementScans: number
  /** Jobs not queued because one for the same key and target was still waiting. */
  jobsCoalesced: number
  /** SETs answered only once an owner acknowledged a copy (copies were being lost; stored()). */
  setsAwaitingCopy: number
  /** Deletes queued to one host each (owners and remembered holders). */
  deletesQueued: number
  /** DELETE datagrams sent, retries included. */
  deleteDatagramsSent: number
  /** DELETE datagrams received from members. */
  deleteDatagramsReceived: number
  deletesAcked: number
  deletesRetried: number
  deletesFailed: number
  /** Deletes applied here and passed on to the holders this host remembers. */
  deletesForwarded: number
  /** DELETEs from senders that are not members: not applied, not acknowledged. */
  deletesRefused: number
  holdersRecorded: number
  /** Holders not remembered because maxHolderRecords were held, or the member's share of them. */
  holdersUnrecorded: number
  /** Awaited copies and deletes passed on to the holders remembered here before they were acknowledged. */
  updatesForwarded: number
  /** Group INVALIDATEs sent because holders could not be remembered (table full) or did not acknowledge in time. */
  invalidationsFallback: number
  /** Group INVALIDATEs sent because an application's write reached its deadline before every owner and holder acknowledged. */
  invalidationsUnacked: number
  /** Acknowledgement datagrams sent (ACK or ACKS). */
  acksSent: number
  /** Copies and deletes those acknowledged (more than acksSent when ACKS gathered several). */
  acksCovered: number
  /** Acknowledgement datagrams received from members (ACK or ACKS). */
  acksReceived: number
  /** Acknowledged ids that settled nothing: unknown, settled already, or sent to another member. */
  acksUnmatched: number
  /** ACKS from senders that are not members: not read. */
  acksRefused: number
}

export interface ReplicaPeers {
  selfId: string
  /** Ids of the live members trusted with copies (this host excluded). */
  aliveIds(): string[]
  /** Ids of the live members still in probation: owners once trusted, sent nothing before. */
  probationIds(): string[]
  /** A live member's reply address. */
  addressOf(id: string): Address | undefined
}

interface Job {
  kind: 'copy' | 'delete'
  key: string
  to: string
  /** A delete's version (copies read theirs from the store when sent). */
  version: bigint
  replId: number
  attempts: number
  /** When it is retried unless acknowledged (the clock's monotonic ms), and the lane it waits in. */
  due: number
  lane: Set<Job> | undefined
  handoff: boolean
  sentAt: number
  /** Writes waiting for this job's ACK (or a sibling's) before they are answered. */
  waiters?: CopyWaiter[] | undefined
  /** Sent as REPLICATE_AWAITED or DELETE_AWAITED: its receiver updates the holders it knows first. */
  awaited?: boolean
}

/** A write answered once the jobs it waits for settled (each calls resolve once), or at its deadline. */
interface CopyWaiter {
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
class Deadlines {
  readonly #clock: Clock
  readonly #lanes = new Map<number, CopyWaiter[]>()
  #timer: TimerHandle | undefined
  #timerAt = Infinity

  constructor(clock: Clock) {
    this.#clock = clock
  }

  /**
   * A waiter settled by `count` resolves (one per job it was handed to), or `ms` from now,
   * whichever is first; `late` runs when the deadline came first. Settles once.
   */
  waiter(count: number, ms: number, done: () => void, late?: () => void): CopyWaiter {
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
        late?.()
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

/** Retries back off up to this, in ms (shared with the tombstone lifetime's derivation). */
const MAX_BACKOFF_MS = MAX_COPY_BACKOFF_MS
/** A retransmit timer that fires this close before a job's due time (ms) retries it then: no second wakeup for a fraction of a ms. */
const DUE_SLACK_MS = 1
/** Partly received copies older than this are dropped. */
const REASSEMBLY_TIMEOUT_MS = 5000
/**
 * SETs one copy job answers when acknowledged: a flood of writes of one key folds into one job, and
 * the SETs beyond these wait their deadline instead (so the job's list stays small).
 */
const MAX_WAITERS_PER_COPY = 64
/** One member may take at most 1/HOLDER_SHARE of maxHolderRecords (issue 21 finding 6: junk writes from one host cannot fill the table). */
export const HOLDER_SHARE = 4
/** Keys re-placed per turn of the event loop during a scan. */
const SCAN_SLICE = 2000
/**
 * Chunked copies one sender may have half received here at once; more are dropped unacknowledged
 * (the sender retries after its ACK timeout), so one member cannot take the whole budget.
 */
export const MAX_PARTIAL_COPIES_PER_SENDER = 64

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

  /** The members that hold records here. */
  memberIds(): IterableIterator<string> {
    return this.#perMember.keys()
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
    copiesReattached: 0,
    invalidationsMembership: 0,
    copySourcesUnrecorded: 0,
    acksSent: 0,
    acksCovered: 0,
    acksReceived: 0,
    acksUnmatched: 0,
    acksRefused: 0,
  }
  readonly holders: Holders
  /** Where copies held here came from, and who left lately (reach.ts); undefined without copies or with push to all. */
  readonly reach: Reach | undefined
  readonly #o: ReplicationOptions
  readonly #t: PeerTransport
  readonly #store: SessionStore
  readonly #peers: ReplicaPeers
  readonly #clock: Clock
  readonly #seeds = new Map<string, number>()
  #queue: Job[] = []
  /** The job still waiting in the queue for each (kind, target, key). */
  #waiting = new Map<string, Job>()
  #inflight = new Map<number, Job>()
  /** Jobs awaiting their ACK by retransmit delay (ms), each in send order: its head is due first. */
  #lanes = new Map<number, Set<Job>>()
  #retransmitTimer: TimerHandle | undefined
  /** When #retransmitTimer fires (Infinity: not set). */
  #retransmitAt = Infinity
  readonly #onRetransmit = () => this.#retransmit()
  /** replIds this host owes each sender an acknowledgement for (sent together: #flushAcks). */
  #acksOwed = new Map<string, number[]>()
  #ackTimer: TimerHandle | undefined
  /** #ackTimer is an immediate (awaited acknowledgements owed), not the ACKS delay's timeout. */
  #ackSoon = false
  readonly #flushAll = () => this.#flushAcks()
  readonly #acksPerDatagram: number
  /** Push to all (replicationFactor 0): every trusted member owns every key. */
  readonly #all: boolean
  /** Copies in flight by (target, key): a SET of a key whose copy is still unacknowledged queues behind it. */
  #copyInflight = new Map<string, Job>()
  #nextId = 1
  /** Copies arriving in chunks, by sender and copy id, with the key each is for. */
  #incoming = new Map<string, { key: Buffer; r: Reassembly; sender: string }>()
  /** Half-received copies per sender. */
  #partialBy = new Map<string, number>()
  readonly #budget: ByteBudget
  /** Membership as of the last change seen, and as of the last scan (what copies were placed under). */
  #lastMembers: string[] = []
  #scanBase: string[] | undefined
  #scanTimer: TimerHandle | undefined
  /** A scan is under way (in slices); a change meanwhile starts another after it. */
  #scanning = false
  #scanAgain = false
  /** Bumped to abandon a scan under way (handoff, close). */
  #scanGen = 0
  #idle: (() => void)[] = []
  #closed = false
  readonly #deadlines: Deadlines
  /** Repeats of fallback INVALIDATEs still to send (cleared on close). */
  readonly #timers = new Set<TimerHandle>()
  /**
   * Keys stored here whose copy is owed to a member in probation (an owner once trusted), by
   * member: sent when it is trusted, and counted as pending meanwhile, so a write made while a
   * peer rejoins is never reported as replicated before it is.
   */
  #owed = new Map<string, Set<string>>()
  #owedCount = 0

  constructor(o: ReplicationOptions, transport: PeerTransport, store: SessionStore, peers: ReplicaPeers, clock: Clock = systemClock) {
    this.#o = o
    this.#all = o.replicationFactor === 0
    this.#acksPerDatagram = acksPerDatagram(o.maxDatagramBytes)
    this.#budget = new ByteBudget(o.maxReassemblyBytes)
    this.#t = transport
    this.#store = store
    this.#peers = peers
    this.#clock = clock
    this.#deadlines = new Deadlines(clock)
    this.holders = new Holders(o.maxHolderRecords, this.counters, () => clock.now(), Math.ceil(o.maxHolderRecords / HOLDER_SHARE))
    this.reach = this.#replicates && !this.#all ? this.#newReach() : undefined
  }

  // ---- reach.ts: copies kept reachable through departures (the calls into it are marked "reach") ----

  #newReach(): Reach {
    const peers = this.#peers
    // Other hosts notice a departure up to a couple of heartbeats after this one, then re-attach.
    const heartbeatMs = this.#o.heartbeatMs ?? 1000
    const windowMs = (this.#o.deadAfterMs ?? 3000) + 2 * heartbeatMs
    return new Reach(
      {
        selfId: peers.selfId,
        store: this.#store,
        isMember: (id) => peers.addressOf(id) !== undefined,
        memberIds: () => [...peers.aliveIds(), ...peers.probationIds()],
        ownersAmong: (key, members) => this.#owners(key, members),
        ownersOf: (key) => this.ownersOf(key),
        holdersOf: (key) => this.holders.ids(key),
        holderMembers: () => this.holders.memberIds(),
        copy: (key, to) => this.#enqueue(key, to, false),
        monotonicMs: () => this.#clock.now(),
      },
      { max: this.#o.maxHolderRecords, windowMs },
      this.counters,
    )
  }

  /** reach: a fetch answered by `from` stored `key` here (lookups.ts). */
  fetched(key: string, from: string, ttlMs: number): void {
    this.reach?.copied(key, from, ttlMs)
  }

  /** reach: a write of `key` at `version` also goes to the group when a member that owned or held it left lately. */
  #invalidateIfDeparted(key: string, version: bigint): void {
    if (this.reach?.invalidates(key)) this.#invalidateGroup(key, version, 'invalidationsMembership')
  }

  // ---- end of reach ----

  /** Called with the time from first send to ACK of each copy (seconds), for a histogram. */
  observeAck: (seconds: number) => void = () => {}

  /**
   * Copies queued, awaiting their ACK or owed to members in probation, plus one while a
   * re-placement scan is scheduled or running.
   */
  get pending(): number {
    return this.#queue.length + this.#inflight.size + this.#owedCount + (this.#scanTimer || this.#scanning ? 1 : 0)
  }

  /** Whether sessions are copied to other hosts at all (replicationFactor 1: no). */
  get #replicates(): boolean {
    return this.#o.replicationFactor !== 1
  }

  #owners(key: string, members: string[]): string[] {
    // Push to all: every member, still ranked, so a lookup's first owner spreads over the fleet.
    return owners(key, members, this.#all ? members.length : this.#o.replicationFactor, this.#seeds)
  }

  /** The owners of `key` among the live members and this host. */
  ownersOf(key: string): string[] {
    return this.#owners(key, [this.#peers.selfId, ...this.#peers.aliveIds()])
  }

  /**
   * An application stored `key` here: its copies leave now, before the SET is answered, so they
   * are in the owners' sockets ahead of any LOOKUP a reader can send once it has the answer. They
   * pass the window of copies in flight (that bounds re-placement and handoff, whose copies no
   * reader waits for) and any job for the same key and owner still waiting behind it.
   *
   * A reader asks the owners only, and a host that holds a copy serves it: so the SET is answered
   * when every owner and every holder remembered here has acknowledged its copy (below), or after
   * three ACK timeouts at most. Returns that wait, if any.
   */
  stored(key: string): Promise<void> | undefined {
    if (!this.#replicates || this.#closed) return undefined
    const self = this.#peers.selfId
    const targets = this.#owners(key, [self, ...this.#peers.aliveIds()])
    // The owners, and the holders remembered here (they fetched the key here, or a copy went
    // between them and here): each gets the new entry as an awaited copy, and the SET is answered
    // once every one acknowledged (an owner acknowledges only after the holders it knows did), so
    // no host that holds a copy serves the old value once the SET is answered.
    const to = new Set(targets)
    for (const id of this.holders.ids(key)) if (this.#peers.addressOf(id)) to.add(id)
    to.delete(self)
    const below = this.#store.version(key) - 1n
    this.#fallbackIfOverflowed(key, below)
    this.reach?.wrote(key, targets, this.#store.remainingTtl(key))
    this.#invalidateIfDeparted(key, below)
    if (to.size === 0) {
      this.#oweToProbation(key, targets)
      return undefined
    }
    let waiter: CopyWaiter | undefined
    const wait = new Promise<void>((resolve) => {
      // A target that did not acknowledge by the deadline (dead, not yet declared so) may hold
      // the old value, and hosts that fetched it there are reached through it: the group is
      // told to drop it before the SET is answered.
      waiter = this.#deadlines.waiter(to.size, 3 * this.#o.replicationAckTimeoutMs, resolve, () =>
        this.#invalidateGroup(key, below, 'invalidationsUnacked'),
      )
    })
    this.counters.setsAwaitingCopy++
    for (const id of to) {
      // A copy of this key to this target is still unacknowledged: the new entry goes as a job of
      // its own, sent at once while the in-flight window has room; once the window is full,
      // further writes of the key fold into the job still waiting (one per target, not one per
      // write). The SET waits on the job that carries its entry, whichever it is.
      if (this.#copyInflight.has(`${id}\0${key}`)) {
        this.#enqueue(key, id, false, 'copy', 0n, waiter, true)
        continue
      }
      // The job waiting for this target would send the same entry again later: it is replaced
      // (the SETs waiting on it wait on the new one).
      const replaced = this.#waiting.get(`copy\0${id}\0${key}`)
      if (replaced) {
        this.#waiting.delete(`copy\0${id}\0${key}`)
        this.counters.jobsCoalesced++
      }
      if (this.#queue.length + this.#inflight.size >= this.#o.maxReplicationQueue) {
        this.counters.copiesDropped++
        for (const w of replaced?.waiters ?? []) w.resolve()
        waiter!.resolve()
        continue
      }
      const waiters = [...(replaced?.waiters ?? []), waiter!].slice(-MAX_WAITERS_PER_COPY)
      this.#startAwaitedCopy(key, id, waiters)
    }
    this.#oweToProbation(key, targets)
    return wait
  }

  /**
   * Holders went unrecorded here (Holders.overflowed): an overwrite or delete of any key also goes
   * to the whole group as an INVALIDATE at `version` (a delete's own, or one below a new entry's,
   * so an owner's new copy is never refused for it), three times as cluster.ts sends its own.
   */
  #fallbackIfOverflowed(key: string, version: bigint): void {
    if (this.holders.overflowed) this.#invalidateGroup(key, version)
  }

  #invalidateGroup(
    key: string,
    version: bigint,
    why: 'invalidationsFallback' | 'invalidationsUnacked' | 'invalidationsMembership' = 'invalidationsFallback',
  ): void {
    if (this.#closed || version <= 0n) return
    // invalidationsMembership is counted where the reason is found (reach.ts).
    if (why !== 'invalidationsMembership') this.counters[why]++
    const msg = { type: MsgType.INVALIDATE, version, key: Buffer.from(key, 'latin1') } as const
    this.#t.sendGroup(msg)
    for (const delay of [5, 25]) {
      const t = this.#clock.setTimeout(() => {
        this.#timers.delete(t)
        if (!this.#closed) this.#t.sendGroup(msg)
      }, delay)
      this.#timers.add(t)
    }
  }

  /** Notes the copies of `key` that members in probation will be owed once trusted (see #owed). */
  #oweToProbation(key: string, targets: string[]): void {
    const waiting = this.#peers.probationIds()
    if (waiting.length === 0) return
    const later = this.#owners(key, [this.#peers.selfId, ...this.#peers.aliveIds(), ...waiting])
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
      if (trusted.has(id)) for (const key of keys) this.#enqueue(key, id, false)
    }
    this.#pump()
  }

  /**
   * This host deleted `key` at `version` (or applied a peer's delete, coming from `from`): the
   * delete goes, acknowledged, to the owners and to the holders remembered here. With `from`
   * only the holders: the deleter reaches the owners itself. Returns the hosts it goes to.
   */
  deleted(key: string, version: bigint, from?: string, waiter?: CopyWaiter): number {
    const self = this.#peers.selfId
    // A deleted key is owed to no one any more: it leaves #owed rather than sitting there pending.
    for (const keys of this.#owed.values()) if (keys.delete(key)) this.#owedCount--
    const to = new Set(from === undefined ? this.ownersOf(key) : [])
    for (const id of this.holders.take(key)) to.add(id)
    to.delete(self)
    if (from !== undefined) to.delete(from)
    this.#fallbackIfOverflowed(key, version)
    this.reach?.forget(key)
    this.#invalidateIfDeparted(key, version)
    for (const id of to) this.#startDelete(key, id, version, waiter)
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
      this.#invalidateGroup(key, version, 'invalidationsUnacked'),
    )
    this.deleted(key, version, undefined, waiter)
    return wait
  }

  /** Where an application's delete of `key` goes (without forgetting the holders). */
  #deleteTargets(key: string): string[] {
    const to = new Set(this.ownersOf(key))
    for (const id of this.holders.ids(key)) to.add(id)
    to.delete(this.#peers.selfId)
    return [...to]
  }

  /**
   * A delete leaves at once, past the in-flight window, as a SET's copies do (stored()): that
   * window bounds re-placement and handoff, while the copies SETs start count in it too. Queued
   * behind it, a delete waited for as long as the window stayed full: copies to a member that
   * never acknowledges (a key holder, or a host whose unicast is lost while its heartbeats arrive)
   * each stay in flight through their whole retry schedule, so a few writes a second kept it full
   * and the delete never left, and the deleted session (a single-use ticket) was served elsewhere.
   * Bounded as stored() is: jobs queued and in flight together at most maxReplicationQueue.
   */
  #startDelete(key: string, to: string, version: bigint, waiter?: CopyWaiter): void {
    if (this.#closed) return waiter?.resolve()
    const slot = `delete\0${to}\0${key}`
    // A delete of this key to this target still waiting goes now, as this one, at the newer version.
    const waiting = this.#waiting.get(slot)
    if (waiting) {
      this.#waiting.delete(slot)
      if (waiting.version > version) version = waiting.version
      this.counters.jobsCoalesced++
    } else if (this.#queue.length + this.#inflight.size >= this.#o.maxReplicationQueue) {
      this.counters.copiesDropped++
      return waiter?.resolve()
    }
    this.counters.deletesQueued++
    const waiters = [...(waiting?.waiters ?? []), ...(waiter ? [waiter] : [])].slice(-MAX_WAITERS_PER_COPY)
    this.#start({
      kind: 'delete',
      key,
      to,
      version,
      replId: 0,
      attempts: 0,
      due: 0,
      lane: undefined,
      handoff: false,
      sentAt: 0,
      ...(waiters.length ? { waiters, awaited: true } : {}),
    })
  }

  #enqueue(
    key: string,
    to: string,
    handoff: boolean,
    kind: Job['kind'] = 'copy',
    version = 0n,
    waiter?: CopyWaiter,
    awaited = false,
  ): void {
    if (this.#closed) return waiter?.resolve()
    const slot = `${kind}\0${to}\0${key}`
    const waiting = this.#waiting.get(slot)
    if (waiting) {
      if (waiter && (waiting.waiters?.length ?? 0) < MAX_WAITERS_PER_COPY) (waiting.waiters ??= []).push(waiter)
      waiting.awaited ||= awaited
      // Still unsent: it will carry the newest state, so a flood of writes to one key (touch)
      // costs one job per target, not one per write.
      if (version > waiting.version) waiting.version = version
      waiting.handoff ||= handoff
      this.counters.jobsCoalesced++
      return
    }
    if (this.#queue.length >= this.#o.maxReplicationQueue) {
      this.counters.copiesDropped++
      return waiter?.resolve()
    }
    const job: Job = {
      kind,
      key,
      to,
      version,
      replId: 0,
      attempts: 0,
      due: 0,
      lane: undefined,
      handoff,
      sentAt: 0,
      ...(waiter ? { waiters: [waiter] } : {}),
      ...(awaited ? { awaited } : {}),
    }
    if (kind === 'delete') this.counters.deletesQueued++
    this.#queue.push(job)
    this.#waiting.set(slot, job)
    this.#pump()
  }

  #pump(): void {
    while (this.#inflight.size < this.#o.maxReplicationInflight && this.#queue.length > 0) {
      const job = this.#queue.shift()!
      const slot = `${job.kind}\0${job.to}\0${job.key}`
      // Not in its slot any more: a SET's copy to the same owner went ahead of it (stored()).
      if (this.#waiting.get(slot) !== job) continue
      this.#waiting.delete(slot)
      this.#start(job)
    }
    if (this.pending === 0) for (const w of this.#idle.splice(0)) w()
  }

  /** Sends a job's first datagrams and keeps it until its ACK, the retries, or nothing left to send. */
  #start(job: Job): void {
    job.replId = this.#nextId
    this.#nextId = nextId(this.#nextId)
    if (!this.#send(job)) {
      // Nothing to send (the entry is gone, the target left): no one to wait for.
      for (const w of job.waiters ?? []) w.resolve()
      return
    }
    this.#inflight.set(job.replId, job)
    if (job.kind === 'copy') this.#copyInflight.set(`${job.to}\0${job.key}`, job)
  }

  /** The job leaves the in-flight table (acknowledged, given up, or nothing left to send). */
  #done(job: Job): void {
    // Acknowledged or given up: whoever waited on it waits no longer (a give-up is bounded by
    // the retries; the writer's own deadline is shorter anyway).
    for (const w of job.waiters ?? []) w.resolve()
    job.waiters = undefined
    this.#inflight.delete(job.replId)
    job.lane?.delete(job)
    job.lane = undefined
    const slot = `${job.to}\0${job.key}`
    if (this.#copyInflight.get(slot) === job) this.#copyInflight.delete(slot)
  }

  /** Sends every chunk of the job's value; false when there is nothing (left) to send. */
  #send(job: Job): boolean {
    const to = this.#peers.addressOf(job.to)
    if (job.kind === 'delete') {
      if (!to) {
        // Not a member any more: a host that left or died holds nothing we could reach.
        this.counters.deletesFailed++
        return false
      }
      void this.#t.sendTo(to, job.to, {
        type: job.awaited ? MsgType.DELETE_AWAITED : MsgType.DELETE,
        replId: job.replId,
        version: job.version,
        key: Buffer.from(job.key, 'latin1'),
      })
      this.counters.deleteDatagramsSent++
      if (job.attempts === 0) job.sentAt = this.#clock.now()
      this.#await(job)
      return true
    }
    const entry = this.#store.peek(job.key)
    const ttlMs = entry ? this.#store.remainingTtl(job.key) : 0
    if (!to || !entry || ttlMs <= 0) {
      if (!to) this.counters.copiesDropped++
      return false
    }
    const key = Buffer.from(job.key, 'latin1')
    const chunkBytes = replicateChunkBytes(this.#o.maxDatagramBytes, key.length)
    const { value, flags, version } = entry
    const count = Math.max(1, Math.ceil(value.length / chunkBytes))
    for (let i = 0; i < count; i++) {
      const chunk = value.subarray(i * chunkBytes, (i + 1) * chunkBytes)
      void this.#t.sendTo(to, job.to, {
        type: job.awaited ? MsgType.REPLICATE_AWAITED : MsgType.REPLICATE,
        replId: job.replId,
        ttlMs,
        flags,
        totalLen: value.length,
        index: i,
        count,
        version,
        key,
        chunk,
      })
    }
    if (job.attempts === 0) {
      job.sentAt = this.#clock.now()
      this.counters.copiesPushed++
      if (job.handoff) this.counters.handedOff++
      // The target holds a copy now: a delete made here, or forwarded here, must reach it even
      // if it is no longer an owner by then.
      this.holders.record(job.key, job.to, ttlMs)
    }
    this.#await(job)
    return true
  }

  /** The job waits for its ACK at the end of the lane of its retransmit delay (doubling per attempt, up to MAX_BACKOFF_MS). */
  #await(job: Job): void {
    const delay = Math.min(this.#o.replicationAckTimeoutMs * 2 ** job.attempts, MAX_BACKOFF_MS)
    job.lane?.delete(job)
    let lane = this.#lanes.get(delay)
    if (!lane) this.#lanes.set(delay, (lane = new Set()))
    job.due = this.#clock.now() + delay
    job.lane = lane
    lane.add(job)
    if (job.due < this.#retransmitAt) this.#armRetransmit(job.due)
  }

  #armRetransmit(at: number): void {
    this.#clock.clearTimeout(this.#retransmitTimer)
    this.#retransmitAt = at
    this.#retransmitTimer = this.#clock.setTimeout(this.#onRetransmit, Math.max(0, at - this.#clock.now()))
  }

  /**
   * The retransmit timer: every job due is retried (or given up), then the timer is set for the
   * earliest job left. It is not moved when a job is acknowledged: it then fires for a job that
   * is gone, finds the next head, and sleeps until that one's time (one wakeup per
   * replicationAckTimeoutMs at most, not one clearTimeout per ACK).
   */
  #retransmit(): void {
    this.#retransmitTimer = undefined
    this.#retransmitAt = Infinity
    const now = this.#clock.now()
    const due: Job[] = []
    for (const lane of this.#lanes.values()) {
      for (const job of lane) {
        if (job.due > now + DUE_SLACK_MS) break
        lane.delete(job)
        job.lane = undefined
        due.push(job)
      }
    }
    for (const job of due) this.#timeout(job)
    let next = Infinity
    for (const lane of this.#lanes.values()) {
      for (const job of lane) {
        if (job.due < next) next = job.due
        break
      }
    }
    if (next < this.#retransmitAt) this.#armRetransmit(next)
  }

  #timeout(job: Job): void {
    if (this.#inflight.get(job.replId) !== job) return
    if (job.attempts >= this.#o.replicationRetries) {
      this.#done(job)
      if (job.kind === 'delete') this.counters.deletesFailed++
      else this.counters.copiesFailed++
      this.#pump()
      return
    }
    job.attempts++
    if (job.kind === 'delete') this.counters.deletesRetried++
    else this.counters.copiesRetried++
    if (!this.#send(job)) {
      this.#done(job)
      this.#pump()
    }
  }

  /** An ACK from `sender`: it settles the copy or delete only if that went to `sender`. */
  onAck(sender: string, replId: number): void {
    this.counters.acksReceived++
    if (!this.#settle(sender, replId)) this.counters.acksUnmatched++
    this.#pump()
  }

  /**
   * An ACKS from `sender`: each id settles its copy or delete only if that went to `sender`, as
   * an ACK would; the rest (unknown, repeated, another member's) are counted and settle nothing.
   * A flood costs a map lookup per id, at most one datagram's worth each.
   */
  onAcks(sender: string, replIds: readonly number[]): void {
    if (!this.#peers.addressOf(sender)) {
      this.counters.acksRefused++
      return
    }
    this.counters.acksReceived++
    for (const id of replIds) if (!this.#settle(sender, id)) this.counters.acksUnmatched++
    this.#pump()
  }

  /** Settles the job `replId` if it went to `sender`; false when there is none such. */
  #settle(sender: string, replId: number): boolean {
    const job = this.#inflight.get(replId)
    if (!job || job.to !== sender) return false
    this.#done(job)
    if (job.kind === 'delete') this.counters.deletesAcked++
    else {
      this.counters.copiesAcked++
      this.observeAck((this.#clock.now() - job.sentAt) / 1000)
    }
    return true
  }

  /**
   * Owes `sender` the acknowledgement of `replId`: sent with the others owed to it, in one ACKS,
   * replicationAckDelayMs after the first one owed to anyone (one timer for all senders), or at
   * once when one datagram is full. With a delay of 0, an ACK at once, as before ACKS.
   *
   * What the delay costs: a copy is acknowledged up to replicationAckDelayMs later. An
   * application's SET waits for its ACKs, so its copies (REPLICATE_AWAITED) are acknowledged
   * within the turn instead; the delay applies to the rest (re-placement, handoff, deletes passed
   * on). A retry is sent only replicationAckTimeoutMs (at least 4 times the delay) after a copy.
   * The copy itself is stored on arrival, so a reader asking this owner finds it meanwhile.
   */
  #owe(sender: string, from: Address, replId: number): void {
    if (this.#o.replicationAckDelayMs === 0) {
      void this.#t.sendTo(from, sender, { type: MsgType.ACK, replId })
      this.counters.acksSent++
      this.counters.acksCovered++
      return
    }
    let ids = this.#acksOwed.get(sender)
    if (!ids) this.#acksOwed.set(sender, (ids = []))
    ids.push(replId)
    if (ids.length >= this.#acksPerDatagram) {
      this.#acksOwed.delete(sender)
      this.#sendAcks(sender, ids)
      return
    }
    this.#ackTimer ??= this.#clock.setTimeout(this.#flushAll, this.#o.replicationAckDelayMs)
  }

  /** Sends every acknowledgement owed. */
  #flushAcks(): void {
    if (!this.#ackSoon) this.#clock.clearTimeout(this.#ackTimer)
    this.#ackSoon = false
    this.#ackTimer = undefined
    const owed = this.#acksOwed
    this.#acksOwed = new Map()
    for (const [sender, ids] of owed) this.#sendAcks(sender, ids)
  }

  #sendAcks(sender: string, replIds: number[]): void {
    // At the address the sender announces now: one that left meanwhile is owed nothing.
    const to = this.#peers.addressOf(sender)
    if (!to) return
    void this.#t.sendTo(to, sender, { type: MsgType.ACKS, replIds })
    this.counters.acksSent++
    this.counters.acksCovered += replIds.length
  }

  /**
   * A DELETE from a member: applied unless this host holds something newer, passed on to the
   * holders remembered here when applied (a repeat of one already applied finds its own
   * tombstone and goes no further, so forwarding ends), and acknowledged to the address the
   * sender announced.
   */
  onDelete(sender: string, m: Extract<Message, { type: typeof MsgType.DELETE | typeof MsgType.DELETE_AWAITED }>): void {
    const from = this.#peers.addressOf(sender)
    if (!from) {
      this.counters.deletesRefused++
      return
    }
    this.counters.deleteDatagramsReceived++
    const key = m.key.toString('latin1')
    if (m.type !== MsgType.DELETE_AWAITED) {
      if (this.#store.deleteFromPeer(key, m.version) && this.deleted(key, m.version, sender) > 0) this.counters.deletesForwarded++
      this.#owe(sender, from, m.replId)
      return
    }
    // Awaited: the holders remembered here are reached, acknowledged, before the sender is.
    if (!this.#store.deleteFromPeer(key, m.version)) return this.#ackNow(sender, from, m.replId)
    const to = this.holders.ids(key).filter((id) => id !== sender && id !== this.#peers.selfId && this.#peers.addressOf(id))
    const waiter = this.#forwardWaiter(sender, from, m.replId, to.length, key, m.version)
    if (this.deleted(key, m.version, sender, waiter) > 0) this.counters.deletesForwarded++
  }

  /**
   * Acknowledges an awaited copy or delete without the ACKS delay (its writer is waiting to answer
   * a client): owed with the rest, and sent once the datagrams already read are handled, so a
   * burst still costs one ACKS per sender.
   */
  #ackNow(sender: string, from: Address, replId: number): void {
    if (this.#closed) return
    if (this.#o.replicationAckDelayMs === 0) return this.#owe(sender, from, replId)
    this.#owe(sender, from, replId)
    if (!this.#acksOwed.has(sender) || this.#ackSoon) return
    this.#ackSoon = true
    this.#clock.clearTimeout(this.#ackTimer)
    this.#ackTimer = this.#clock.setImmediate(this.#flushAll)
  }

  /**
   * The wait for `count` holders an awaited update was passed on to: the sender is acknowledged
   * when all did, or after two ACK timeouts (one retry), and then the group is sent an INVALIDATE
   * at `version` so that a holder out of reach does not stay silent with the old value.
   */
  #forwardWaiter(sender: string, from: Address, replId: number, count: number, key: string, version: bigint): CopyWaiter {
    if (count > 0) this.counters.updatesForwarded += count
    return this.#deadlines.waiter(
      count,
      2 * this.#o.replicationAckTimeoutMs,
      () => this.#ackNow(sender, from, replId),
      () => this.#invalidateGroup(key, version),
    )
  }

  /**
   * A copy (or a chunk of one) pushed to us; stored and acknowledged once whole. Only members send
   * copies, and the ACK goes to the address the sender announced, never to a datagram's source: a
   * copy from a sender we do not know as a member is refused (counted), unstored and unanswered.
   */
  onReplicate(sender: string, m: Extract<Message, { type: typeof MsgType.REPLICATE | typeof MsgType.REPLICATE_AWAITED }>): void {
    const from = this.#peers.addressOf(sender)
    if (!from) {
      this.counters.copiesRefused++
      return
    }
    if (m.totalLen > this.#o.maxValueBytes) return
    const ack = (stored: boolean) =>
      m.type === MsgType.REPLICATE_AWAITED
        ? this.#passOn(sender, from, m.replId, m.key, m.version, stored)
        : this.#owe(sender, from, m.replId)
    if (m.count === 1) {
      if (m.chunk.length !== m.totalLen) return
      return ack(this.#accept(sender, m.key, m.chunk, m.ttlMs, m.flags, m.version))
    }
    const id = `${sender}:${m.replId}`
    let inc = this.#incoming.get(id)
    if (!inc) {
      const partial = this.#partialBy.get(sender) ?? 0
      const opened =
        partial < MAX_PARTIAL_COPIES_PER_SENDER
          ? Reassembly.open(
              m,
              this.#budget,
              maxChunkCount(m.totalLen, replicateChunkBytes(MIN_DATAGRAM_BYTES, m.key.length)),
              this.#clock.now(),
            )
          : 'too-many-copies'
      if (typeof opened === 'string') {
        this.counters.copiesUnassembled++
        return
      }
      inc = { key: Buffer.from(m.key), r: opened, sender }
      this.#incoming.set(id, inc)
      this.#partialBy.set(sender, partial + 1)
    }
    if (inc.r.add(m) !== 'added' || !inc.r.complete) return
    const whole = inc.r.join()
    this.#forget(id, inc)
    if (whole) {
      const stored = this.#accept(inc.sender, inc.key, whole, inc.r.ttlMs, inc.r.flags, inc.r.version)
      whole.fill(0)
      ack(stored)
    }
  }

  /**
   * An awaited copy was taken (or refused as not newer): when stored, the new entry goes, awaited,
   * to the holders remembered here but the sender, and the sender is acknowledged once they did
   * (#forwardWaiter); a refused copy changed nothing here and is acknowledged at once. Each hop
   * passes on only what it stored, so the forwarding ends where the newest version already is.
   */
  #passOn(sender: string, from: Address, replId: number, keyBytes: Buffer, version: bigint, stored: boolean): void {
    if (!stored) return this.#ackNow(sender, from, replId)
    const key = keyBytes.toString('latin1')
    this.#fallbackIfOverflowed(key, version - 1n)
    this.#invalidateIfDeparted(key, version - 1n)
    const to = this.holders.ids(key).filter((id) => id !== sender && id !== this.#peers.selfId && this.#peers.addressOf(id))
    const waiter = this.#forwardWaiter(sender, from, replId, to.length, key, version - 1n)
    for (const id of to) {
      if (this.#copyInflight.has(`${id}\0${key}`)) this.#enqueue(key, id, false, 'copy', 0n, waiter, true)
      else this.#startAwaitedCopy(key, id, [waiter])
    }
  }

  /** Sends the key's current entry to `to` now as an awaited copy (REPLICATE_AWAITED) that `waiters` wait on. */
  #startAwaitedCopy(key: string, to: string, waiters: CopyWaiter[]): void {
    this.#start({
      kind: 'copy',
      key,
      to,
      version: 0n,
      replId: 0,
      attempts: 0,
      due: 0,
      lane: undefined,
      handoff: false,
      sentAt: 0,
      waiters,
      awaited: true,
    })
  }

  #forget(id: string, inc: { r: Reassembly; sender: string }): void {
    this.#incoming.delete(id)
    inc.r.release()
    const left = (this.#partialBy.get(inc.sender) ?? 1) - 1
    if (left > 0) this.#partialBy.set(inc.sender, left)
    else this.#partialBy.delete(inc.sender)
  }

  /** Stores a copy received; true when it was stored (newer than what is held). */
  #accept(sender: string, key: Buffer, value: Buffer, ttlMs: number, flags: number, version: bigint): boolean {
    this.counters.copiesReceived++
    if (ttlMs <= 0) return false
    // The sender holds the copy it sent: a delete that reaches this host passes it on there.
    this.holders.record(key.toString('latin1'), sender, ttlMs)
    try {
      if (this.#store.setFromPeer(key.toString('latin1'), value, ttlMs, flags, version)) {
        this.reach?.copied(key.toString('latin1'), sender, ttlMs)
        return true
      }
      this.counters.copiesStale++
    } catch {
      /* beyond this host's limits: not kept */
    }
    return false
  }

  /** Drops copies that stopped arriving half way. Called on every heartbeat. */
  sweep(): void {
    this.holders.sweep()
    this.reach?.sweep()
    const now = this.#clock.now()
    for (const [id, inc] of this.#incoming) {
      if (now - inc.r.startedAt > REASSEMBLY_TIMEOUT_MS) this.#forget(id, inc)
    }
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
    if (!this.#closed) this.reach?.membersChanged()
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
      this.#pump()
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
            this.#enqueue(key, id, false)
          }
          continue
        }
        const next = this.#owners(key, now)
        if (!next.includes(self)) continue
        const prev = this.#owners(key, before)
        for (const id of next) {
          if (id !== self && !prev.includes(id)) {
            this.counters.replacements++
            this.#enqueue(key, id, false)
          }
        }
      }
      this.#pump()
      if (i < keys.length) {
        this.#clock.setImmediate(slice)
        return
      }
      this.#scanning = false
      this.#pruneSeeds()
      if (this.#scanAgain) {
        this.#scanAgain = false
        this.#rescan()
      } else this.#pump()
    }
    slice()
  }

  /**
   * Before leaving: every key this host owns goes to the owners that remain, so no session falls
   * below R copies. Resolves when all are acknowledged or `timeoutMs` passed.
   */
  async handoff(timeoutMs: number): Promise<void> {
    this.#clock.clearTimeout(this.#scanTimer)
    this.#scanTimer = undefined
    this.#scanning = false
    this.#scanAgain = false
    this.#scanGen++
    const self = this.#peers.selfId
    const others = this.#peers.aliveIds()
    // Push to all: the members that remain own every key already and were pushed each one when it
    // was written (or, joining later, filled by the re-placement scan): no owner is new.
    if (!this.#replicates || this.#all || others.length === 0) return
    for (const [key] of this.#store.entries()) {
      if (!this.#owners(key, [self, ...others]).includes(self)) continue
      for (const id of this.#owners(key, others)) this.#enqueue(key, id, true)
    }
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

  close(): void {
    this.#closed = true
    this.#clock.clearTimeout(this.#scanTimer)
    // Acknowledgements owed go now: the senders would otherwise retry copies this host took.
    this.#flushAcks()
    this.#clock.clearTimeout(this.#retransmitTimer)
    this.#retransmitTimer = undefined
    this.#retransmitAt = Infinity
    for (const j of this.#inflight.values()) {
      j.lane = undefined
      for (const w of j.waiters ?? []) w.resolve()
    }
    this.#lanes.clear()
    this.#inflight.clear()
    this.#copyInflight.clear()
    for (const j of this.#queue) for (const w of j.waiters ?? []) w.resolve()
    this.#deadlines.close()
    for (const t of this.#timers) this.#clock.clearTimeout(t)
    this.#timers.clear()
    this.#queue = []
    this.#waiting.clear()
    this.#owed.clear()
    this.#owedCount = 0
    for (const inc of this.#incoming.values()) inc.r.release()
    this.#incoming.clear()
    this.#partialBy.clear()
    for (const w of this.#idle.splice(0)) w()
  }
}
