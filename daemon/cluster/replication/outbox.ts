/**
 * The sending side of copies and deletes: the queue of jobs (one per kind, key and target), the
 * window of jobs in flight, their retransmits with backoff under one timer, and the ACK or ACKS
 * that settles each. A job's waiters (writes answered once it is acknowledged) are resolved here
 * when it settles or is given up.
 */
import { MsgType, replicateChunkBytes } from '../../../protocol/wire.js'
import { nextId } from '../../../protocol/ids.js'
import type { SessionStore } from '../../store/session-store.js'
import type { PeerTransport } from '../peer-transport.js'
import type { Clock, TimerHandle } from '../clock.js'
import { MAX_COPY_BACKOFF_MS } from '../../store/versions.js'
import { DUE_SLACK_MS, type CopyWaiter } from './deadlines.js'
import type { Holders } from './holders.js'
import type { ReplicaPeers, ReplicationContext, ReplicationCounters, ReplicationOptions } from './types.js'

export interface Job {
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

/** A job not sent yet: no id, no attempt, in no lane. */
function unsent(kind: Job['kind'], key: string, to: string, version: bigint, handoff: boolean): Job {
  return { kind, key, to, version, replId: 0, attempts: 0, due: 0, lane: undefined, handoff, sentAt: 0 }
}

/** Retries back off up to this, in ms (shared with the tombstone lifetime's derivation). */
const MAX_BACKOFF_MS = MAX_COPY_BACKOFF_MS
/**
 * SETs one copy job answers when acknowledged: a flood of writes of one key folds into one job, and
 * the SETs beyond these wait their deadline instead (so the job's list stays small).
 */
const MAX_WAITERS_PER_COPY = 64

export class Outbox {
  readonly counters: ReplicationCounters
  readonly #o: ReplicationOptions
  readonly #t: PeerTransport
  readonly #store: SessionStore
  readonly #peers: ReplicaPeers
  readonly #clock: Clock
  readonly #holders: Holders
  /** Called after each pump: the Replicator answers whenIdle() once nothing is pending. */
  readonly #pumped: () => void
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
  /** Copies in flight by (target, key): a SET of a key whose copy is still unacknowledged queues behind it. */
  #copyInflight = new Map<string, Job>()
  #nextId = 1
  #closed = false

  constructor(cx: ReplicationContext, holders: Holders, pumped: () => void) {
    this.counters = cx.counters
    this.#o = cx.o
    this.#t = cx.t
    this.#store = cx.store
    this.#peers = cx.peers
    this.#clock = cx.clock
    this.#holders = holders
    this.#pumped = pumped
  }

  /** Called with the time from first send to ACK of each copy (seconds), for a histogram. */
  observeAck: (seconds: number) => void = () => {}

  /** Jobs queued, not yet sent. */
  get queued(): number {
    return this.#queue.length
  }

  /** Jobs sent and awaiting their ACK. */
  get inflight(): number {
    return this.#inflight.size
  }

  /**
   * A SET's copy of `key` to `id`, sent now and awaited by `waiter` (see Replicator.stored). A copy
   * of this key to this target still unacknowledged: the new entry goes as a job of its own, sent at
   * once while the in-flight window has room; once the window is full, further writes of the key
   * fold into the job still waiting (one per target, not one per write). The SET waits on the job
   * that carries its entry, whichever it is.
   */
  awaitedCopy(key: string, id: string, waiter: CopyWaiter): void {
    if (this.#copyInflight.has(`${id}\0${key}`)) {
      this.enqueue(key, id, false, 'copy', 0n, waiter, true)
      return
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
      waiter.resolve()
      return
    }
    const waiters = [...(replaced?.waiters ?? []), waiter].slice(-MAX_WAITERS_PER_COPY)
    this.#startAwaitedCopy(key, id, waiters)
  }

  /** An awaited copy passed on to a holder (see Receiver): behind the copy of the key still in flight to it, if any, else at once. */
  forwardCopy(key: string, id: string, waiter: CopyWaiter): void {
    if (this.#copyInflight.has(`${id}\0${key}`)) this.enqueue(key, id, false, 'copy', 0n, waiter, true)
    else this.#startAwaitedCopy(key, id, [waiter])
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
  startDelete(key: string, to: string, version: bigint, waiter?: CopyWaiter): void {
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
    this.#start({ ...unsent('delete', key, to, version, false), ...(waiters.length ? { waiters, awaited: true } : {}) })
  }

  /** Queues a job behind the in-flight window (re-placement, handoff, owed copies), or folds it into the one still waiting for the same slot. */
  enqueue(key: string, to: string, handoff: boolean, kind: Job['kind'] = 'copy', version = 0n, waiter?: CopyWaiter, awaited = false): void {
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
      ...unsent(kind, key, to, version, handoff),
      ...(waiter ? { waiters: [waiter] } : {}),
      ...(awaited ? { awaited } : {}),
    }
    if (kind === 'delete') this.counters.deletesQueued++
    this.#queue.push(job)
    this.#waiting.set(slot, job)
    this.pump()
  }

  /** Sends queued jobs while the in-flight window has room. */
  pump(): void {
    while (this.#inflight.size < this.#o.maxReplicationInflight && this.#queue.length > 0) {
      const job = this.#queue.shift()!
      const slot = `${job.kind}\0${job.to}\0${job.key}`
      // Not in its slot any more: a SET's copy to the same owner went ahead of it (stored()).
      if (this.#waiting.get(slot) !== job) continue
      this.#waiting.delete(slot)
      this.#start(job)
    }
    this.#pumped()
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
      this.#holders.record(job.key, job.to, ttlMs)
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
      this.pump()
      return
    }
    job.attempts++
    if (job.kind === 'delete') this.counters.deletesRetried++
    else this.counters.copiesRetried++
    if (!this.#send(job)) {
      this.#done(job)
      this.pump()
    }
  }

  /** An ACK from `sender`: it settles the copy or delete only if that went to `sender`. */
  onAck(sender: string, replId: number): void {
    this.counters.acksReceived++
    if (!this.#settle(sender, replId)) this.counters.acksUnmatched++
    this.pump()
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
    this.pump()
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

  /** Sends the key's current entry to `to` now as an awaited copy (REPLICATE_AWAITED) that `waiters` wait on. */
  #startAwaitedCopy(key: string, to: string, waiters: CopyWaiter[]): void {
    this.#start({ ...unsent('copy', key, to, 0n, false), waiters, awaited: true })
  }

  /** Every job is dropped and its waiters answered (close). */
  close(): void {
    this.#closed = true
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
    this.#queue = []
    this.#waiting.clear()
  }
}
