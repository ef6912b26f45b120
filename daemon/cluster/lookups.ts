/**
 * Remote lookups, both sides: a local miss asks the key's owners (or the group), the first complete
 * HIT wins; and the LOOKUPs other hosts send here are answered from the store (answer()).
 *
 * One in-flight entry per key (concurrent GETs share it), one timer per entry that drives the
 * bounded retransmits and the deadline, and one settle path for hit, all-missed, deadline, shed
 * and close. A LOOKUP is retransmitted with the same request id, so chunks of a large value that
 * arrived in earlier rounds are kept and only the gaps need to arrive later.
 *
 * A reply is taken only when it names the lookup's request id, echoes its nonce (random per lookup)
 * and carries the digest of its key: request ids repeat across daemons and restarts, so a HIT meant
 * for another lookup (a replay, or a late answer to an earlier daemon's lookup) never fills this one.
 */
import crypto from 'node:crypto'
import {
  MIN_DATAGRAM_BYTES,
  MsgType,
  NONCE_BYTES,
  NO_RECEIVER,
  hitChunkBytes,
  keyDigest,
  maxChunkCount,
  type Address,
  type Message,
} from '../../protocol/wire.js'
import { nextId } from '../../protocol/ids.js'
import { StatecastError } from '../../protocol/errors.js'
import { BoundedMap } from '../../protocol/bounded.js'
import type { SessionStore } from '../store/session-store.js'
import type { Config } from '../config/config.js'
import type { PeerTransport } from './peer-transport.js'
import { systemClock, type Clock, type TimerHandle } from './clock.js'
import { ByteBudget, Reassembly } from './reassembly.js'
import { HedgeDelay } from './hedge.js'
import type { Membership } from './membership.js'
import type { Incoming } from './transport.js'

/** The config keys lookups take (unit and default: FIELDS in config/config.ts). */
export type LookupOptions = Pick<
  Config,
  | 'lookupTimeoutMs'
  | 'lookupRetries'
  | 'lookupHedgeMs'
  | 'maxInflightLookups'
  | 'maxReassemblyBytes'
  | 'maxValueBytes'
  | 'maxDatagramBytes'
  | 'replicationFactor'
>

/** The answering side's counters (LOOKUPs from other hosts); the cluster core reports them with its own. */
export interface AnswerCounters {
  lookupsAnswered: number
  hitsSent: number
  missesSent: number
  /** LOOKUPs from senders that are not members (no announced address to answer at). */
  lookupsFromStrangers: number
  /** LOOKUPs for keys we do not hold and do not own: no reply needed. */
  missesWithheld: number
  chunksSent: number
  /** LOOKUPs from members still in probation: not answered (no reflection to an unproven address). */
  lookupsFromUntrusted: number
  /** LOOKUPs of a key this member already asked for in this turn (one BATCH): not answered again. */
  lookupsRepeated: number
  /** HITs not sent: the asker's HIT byte budget was spent (HIT_BUDGET_*). */
  hitsOverBudget: number
}

/** Most owners a LOOKUP names (its count is a u8). */
const MAX_LOOKUP_EXPECT = 255

/**
 * HIT bytes one member may be sent: a bucket of HIT_BUDGET_VALUES values of maxValueBytes (at
 * least HIT_BUDGET_MIN_BYTES), refilled at HIT_BUDGET_BYTES_PER_S. A LOOKUP is about 60 bytes and
 * its HIT up to maxValueBytes: without a bound, a key holder's one BATCH of 40 LOOKUPs had 4.1 MB
 * sent to an address it announced. Honest fills from one host to one owner stay far below the rate.
 */
export const HIT_BUDGET_VALUES = 4
export const HIT_BUDGET_MIN_BYTES = 1024 * 1024
export const HIT_BUDGET_BYTES_PER_S = 8 * 1024 * 1024

/**
 * A value in chunks takes longer to arrive than one datagram: once its first chunk is here, each
 * LARGE_VALUE_STEP_BYTES of it adds one lookupTimeoutMs to the lookup's deadline (1 MiB: 64
 * deadlines, 3.2 s at the default; measured on a 2-core machine at load 15, 1 MiB took 0.1 to
 * 1.7 s to arrive), and while its chunks keep arriving the LOOKUP is not sent again (a retransmit
 * has the holder send every chunk anew).
 */
export const LARGE_VALUE_STEP_BYTES = 16 * 1024

/** Longest wait between a patient lookup's retransmits once it outlived `lookupTimeoutMs` (ms). */
export const PATIENT_RETRANSMIT_MS = 200

export interface LookupCounters {
  /** Remote lookups started (coalesced GETs count once). */
  lookups: number
  /** GETs that joined a lookup already in flight for the same key. */
  coalesced: number
  lookupDatagrams: number
  remoteHits: number
  /** "Not found" because every live member answered MISS (before the deadline). */
  remoteMisses: number
  /** "Not found" at the deadline. */
  timeouts: number
  /** "Not found" at once: the in-flight table was full. */
  shed: number
  /** "Not found" at once: no live member to ask. */
  alone: number
  chunksReceived: number
  reassemblyDropped: number
  /** HIT/MISS datagrams for a lookup that had already finished (another holder was faster). */
  lateReplies: number
  /**
   * HITs not stored: older than what this host holds for the key. A tombstone answers the GET
   * "not found"; a newer live entry (a SET that landed meanwhile) answers with itself.
   */
  staleHits: number
  /** MISS datagrams received: per lookup, at most replicationFactor with replication on. */
  missesReceived: number
  /** LOOKUP rounds sent straight to the key's owners instead of the group. */
  directLookups: number
  /** First rounds that went on to the other owners (the first was slow or missed). */
  hedged: number
  /** Lookups started while membership was changing: every candidate owner asked at once, no hedge. */
  lookupsWidened: number
}

/** A remote lookup's result: a copy of the value, its remaining TTL, flags and version (versions.ts). */
export type Found = { value: Buffer; ttlMs: number; flags: number; version: bigint } | undefined

/** A lookup that cannot be asked: the LOOKUP for this key would not fit in maxDatagramBytes. */
export class LookupError extends StatecastError<'DATAGRAM_TOO_LARGE'> {
  constructor(message: string) {
    super('DATAGRAM_TOO_LARGE', message)
    this.name = 'LookupError'
  }
}

interface Inflight {
  key: string
  keyBytes: Buffer
  reqId: number
  nonce: Buffer
  digest: Buffer
  /** `sure`: a "not found" came from the MISSes of every member asked, not from the deadline, shedding or a stop. */
  waiters: ((f: Found, sure: boolean) => void)[]
  missed: Set<string>
  /** Members whose MISS settles "not found"; undefined: every live member's. */
  expected: string[] | undefined
  /** Membership was changing when it started: every candidate owner is asked at once (no hedge). */
  changing: boolean
  /** When the last chunk of a value arrived (the clock's monotonic ms; -Infinity: none). */
  chunkAt: number
  expectBytes: Buffer[]
  parts: Map<string, Reassembly>
  deadline: number
  startedAt: number
  timer: TimerHandle | undefined
  /** Owners not asked yet in this round (hedging); asked when the hedge delay passes or one misses. */
  unasked: string[]
  /** The owner asked first, until its reply is timed for the hedge delay; when it was asked. */
  firstOwner: string | undefined
  askedAt: number
  /** When this round's retransmit is due (the clock's monotonic ms). */
  roundEnd: number
  rounds: number
}

/**
 * What lookups read of membership (membership.ts): the live members, the owners a reader asks
 * (readOwners: under every view hosts may hold while membership changes), their addresses,
 * whether the member list is complete yet, and, to answer, who asked and from where.
 */
export type LookupPeers = Pick<Membership, 'liveIds' | 'readOwners' | 'addressOf' | 'settled' | 'complete' | 'members' | 'fromOwnAddress'>

/** Records that a member fetched a key here (replication/holders.ts: Holders), so a delete reaches its copy. */
export interface HolderLog {
  record(key: string, id: string, ttlMs: number): void
  /** A fetch answered by `from` stored `key` here: `from` recorded this host as a holder (reach.ts). */
  fetched?(key: string, from: string, ttlMs: number): void
}

export class Lookups {
  readonly counters: LookupCounters = {
    lookups: 0,
    coalesced: 0,
    lookupDatagrams: 0,
    remoteHits: 0,
    remoteMisses: 0,
    timeouts: 0,
    shed: 0,
    alone: 0,
    chunksReceived: 0,
    reassemblyDropped: 0,
    lateReplies: 0,
    staleHits: 0,
    missesReceived: 0,
    directLookups: 0,
    hedged: 0,
    lookupsWidened: 0,
  }
  #byKey = new Map<string, Inflight>()
  #byReq = new Map<number, Inflight>()
  /** Request ids of recently finished lookups, so late answers are told apart from unsolicited ones. */
  #recent = new Uint32Array(256)
  #recentAt = 0
  #nextReq = 1
  #closed = false
  readonly #hedge: HedgeDelay
  /** Lookups settled before their first owner answered (the hedge won): its late reply is still timed. */
  #untimed = new BoundedMap<number, { firstOwner: string | undefined; askedAt: number }>(256)
  readonly #o: LookupOptions
  readonly #budget: ByteBudget
  readonly #t: PeerTransport
  readonly #store: SessionStore
  readonly #peers: LookupPeers
  readonly #clock: Clock
  /** Counts HIT/MISS that answer no lookup in flight (the transport's drop counter). */
  readonly #unsolicited: () => void
  readonly #holders: HolderLog
  readonly answers: AnswerCounters
  readonly #chunkBytes: number
  /** `member\0key` of the LOOKUPs answered in this turn of the event loop (one BATCH is one turn). */
  #answeredThisTurn = new Set<string>()
  #answeredReset = false
  /** When this turn's first LOOKUP was answered: budgets refill between turns, not while one turn's HITs are being sealed and sent. */
  #turnAt = 0
  /** HIT bytes each member may still be sent, and when its bucket was last filled. */
  #budgets = new Map<string, { bytes: number; at: number }>()
  readonly #budgetCap: number

  constructor(
    o: LookupOptions,
    transport: PeerTransport,
    store: SessionStore,
    peers: LookupPeers,
    clock: Clock = systemClock,
    holders: HolderLog = { record() {} },
    answers?: AnswerCounters,
  ) {
    this.#o = o
    this.#holders = holders
    this.answers = answers ?? {
      lookupsAnswered: 0,
      hitsSent: 0,
      missesSent: 0,
      lookupsFromStrangers: 0,
      missesWithheld: 0,
      chunksSent: 0,
      lookupsFromUntrusted: 0,
      lookupsRepeated: 0,
      hitsOverBudget: 0,
    }
    this.#chunkBytes = hitChunkBytes(o.maxDatagramBytes)
    this.#budgetCap = Math.max(HIT_BUDGET_MIN_BYTES, HIT_BUDGET_VALUES * o.maxValueBytes)
    this.#budget = new ByteBudget(o.maxReassemblyBytes)
    // Past the retransmit interval a hedge is moot: the next round asks every owner anyway.
    this.#hedge = new HedgeDelay({ floorMs: o.lookupHedgeMs, ceilingMs: o.lookupTimeoutMs / (o.lookupRetries + 1) })
    this.#t = transport
    this.#store = store
    this.#peers = peers
    this.#clock = clock
    this.#unsolicited = () => transport.counters.dropped.unsolicited++
  }

  /** A HIT or MISS for no lookup in flight: late (recently finished) or unsolicited (dropped). */
  #stray(reqId: number): void {
    if (this.#recent.includes(reqId)) this.counters.lateReplies++
    else this.#unsolicited()
  }

  /** Called with each finished lookup's duration (seconds) and outcome, for latency histograms. */
  observe: (seconds: number, outcome: 'hit' | 'miss' | 'timeout') => void = () => {}

  get inflight(): number {
    return this.#byKey.size
  }

  /** How long a fill now waits for its first owner before asking the others, in ms. */
  get hedgeDelayMs(): number {
    return Math.round(this.#hedge.ms * 1000) / 1000
  }

  /**
   * Looks `key` up on its owners. `timeoutMs` (at least, and by default, `lookupTimeoutMs`) is how
   * long owners that have not answered are waited for; a lookup joined by a more patient caller
   * waits as long as that one asks.
   */
  lookup(key: string, timeoutMs = this.#o.lookupTimeoutMs): Promise<Found> {
    return this.fetch(key, timeoutMs).then((r) => r.found)
  }

  /**
   * As lookup, and whether a "not found" is sure: every member asked answered MISS (or this host
   * is alone), rather than the deadline passing, the lookup being shed or the daemon stopping. A
   * conditional write's decider (decisions.ts) does not decide on an unsure miss.
   */
  fetch(key: string, timeoutMs = this.#o.lookupTimeoutMs): Promise<{ found: Found; sure: boolean }> {
    const patience = Math.max(this.#o.lookupTimeoutMs, timeoutMs)
    const existing = this.#byKey.get(key)
    if (existing) {
      this.counters.coalesced++
      existing.deadline = Math.max(existing.deadline, existing.startedAt + patience)
      return new Promise((resolve) => existing.waiters.push((found, sure) => resolve({ found, sure })))
    }
    if (this.#closed) return Promise.resolve({ found: undefined, sure: false })
    if (this.#byKey.size >= this.#o.maxInflightLookups) {
      this.counters.shed++
      return Promise.resolve({ found: undefined, sure: false })
    }
    if (this.#peers.settled() && this.#peers.liveIds().length === 0) {
      this.counters.alone++
      return Promise.resolve({ found: undefined, sure: true })
    }
    const { expected, changing } = this.#expectedFor(key)
    if (changing) this.counters.lookupsWidened++
    const keyBytes = Buffer.from(key, 'latin1')
    const expectBytes = (expected ?? []).map((id) => Buffer.from(id, 'hex'))
    const nonce = crypto.randomBytes(NONCE_BYTES)
    if (!this.#t.fits({ type: MsgType.LOOKUP, reqId: 0, nonce, reply: this.#t.replyAddress, expect: expectBytes, key: keyBytes })) {
      this.#t.counters.oversizeNotSent++
      return Promise.reject(new LookupError(`a LOOKUP for a ${keyBytes.length}-byte key does not fit in maxDatagramBytes`))
    }
    this.counters.lookups++
    const reqId = this.#nextReq
    this.#nextReq = nextId(reqId)
    const f: Inflight = {
      key,
      keyBytes,
      reqId,
      nonce,
      digest: keyDigest(keyBytes),
      waiters: [],
      missed: new Set(),
      expected,
      changing,
      chunkAt: -Infinity,
      expectBytes,
      parts: new Map(),
      deadline: this.#clock.now() + patience,
      startedAt: this.#clock.now(),
      timer: undefined,
      unasked: [],
      firstOwner: undefined,
      askedAt: 0,
      roundEnd: 0,
      rounds: 0,
    }
    this.#byKey.set(key, f)
    this.#byReq.set(reqId, f)
    const p = new Promise<{ found: Found; sure: boolean }>((resolve) => f.waiters.push((found, sure) => resolve({ found, sure })))
    this.#send(f)
    return p
  }

  /**
   * The members whose MISSes settle "not found" for `key` (they are named in the LOOKUP and asked
   * directly), or undefined to ask the group and wait for every live member's: with no
   * replication (a key may be on any host), and until the member list is complete (a daemon that
   * just started knows only some members, so naming owners among them could miss the one holding
   * the key). With copies on R owners, only they need to answer: replies stay constant with fleet
   * size; while membership changes, the owners under every view hosts may hold (readOwners).
   * Push to all names every member when the list fits one LOOKUP (at most 255 ids, within
   * maxDatagramBytes); beyond that it names none: the same hosts, since all own every key.
   */
  #expectedFor(key: string): { expected: string[] | undefined; changing: boolean } {
    if (this.#o.replicationFactor === 1) return { expected: undefined, changing: false }
    if (!this.#peers.complete()) return { expected: undefined, changing: true }
    const { ids, changing } = this.#peers.readOwners(key)
    if (this.#o.replicationFactor !== 0) return { expected: ids, changing }
    if (ids.length > MAX_LOOKUP_EXPECT) return { expected: undefined, changing }
    const expect = ids.map(() => NO_RECEIVER)
    const fits = this.#t.fits({
      type: MsgType.LOOKUP,
      reqId: 0,
      nonce: NO_RECEIVER,
      reply: this.#t.replyAddress,
      expect,
      key: Buffer.from(key, 'latin1'),
    })
    return { expected: fits ? ids : undefined, changing }
  }

  #send(f: Inflight): void {
    const now = this.#clock.now()
    const interval = this.#interval(f, now)
    // Owners known: ask them directly, so a lookup wakes R hosts, not the whole segment. The last
    // try (and any owner without a known address) goes to the group, which reaches every holder.
    const last = now + interval >= f.deadline - 0.5
    const owners = f.expected && !last ? f.expected : undefined
    f.roundEnd = now + Math.max(0, Math.min(interval, f.deadline - now))
    f.unasked = []
    // The first round asks the first owner alone: one LOOKUP and one reply per fill in the common
    // case; the other owners are asked after the hedge delay, or at once if the first one misses.
    // Hedging needs every owner's address now: one without a known address means the group.
    const delay = this.#hedge.ms
    const hedge =
      f.rounds === 0 &&
      !f.changing &&
      owners !== undefined &&
      owners.length > 1 &&
      this.#o.lookupHedgeMs > 0 &&
      now + delay < f.roundEnd &&
      owners.every((id) => this.#peers.addressOf(id) !== undefined)
    // The first owner's reply is timed whether or not this round hedges, so a delay that grew
    // to the ceiling (no hedging) can come down again.
    if (f.rounds === 0 && owners !== undefined && owners.length > 1 && this.#o.lookupHedgeMs > 0) {
      f.firstOwner = owners[0]
      f.askedAt = now
    }
    f.rounds++
    if (owners && owners.length > 0 && this.#sendToOwners(f, hedge ? owners.slice(0, 1) : owners)) {
      this.counters.directLookups++
      if (hedge) {
        f.unasked = owners.slice(1)
        f.timer = this.#clock.setTimeout(() => this.#askRest(f), delay)
        return
      }
    } else {
      this.counters.lookupDatagrams++
      this.#t.sendGroup(this.#lookupMsg(f))
    }
    f.timer = this.#clock.setTimeout(() => this.#tick(f), f.roundEnd - now)
  }

  #lookupMsg(f: Inflight): Message {
    return { type: MsgType.LOOKUP, reqId: f.reqId, nonce: f.nonce, reply: this.#t.replyAddress, expect: f.expectBytes, key: f.keyBytes }
  }

  /** Sends this round's LOOKUP to `owners`, sealed once; false (nothing sent) if one has no known address. */
  #sendToOwners(f: Inflight, owners: string[]): boolean {
    const to = this.#targets(owners)
    if (!to) return false
    this.counters.lookupDatagrams += to.length
    this.#t.sendToEach(to, this.#lookupMsg(f))
    return true
  }

  /** The owners with their addresses, or undefined when one has no known address. */
  #targets(ids: string[]): { id: string; address: Address }[] | undefined {
    const out: { id: string; address: Address }[] = []
    for (const id of ids) {
      const address = this.#peers.addressOf(id)
      if (!address) return undefined
      out.push({ id, address })
    }
    return out
  }

  /** The hedge: the owners not asked yet in this round are asked now. */
  #askRest(f: Inflight): void {
    if (f.unasked.length === 0 || this.#byReq.get(f.reqId) !== f) return
    this.#clock.clearTimeout(f.timer)
    const rest = f.unasked
    f.unasked = []
    this.counters.hedged++
    const to = this.#targets(rest)
    if (to) {
      this.counters.lookupDatagrams += to.length
      this.#t.sendToEach(to, this.#lookupMsg(f))
    } else {
      // An owner's address went away meanwhile (it left or died): the group reaches any holder.
      this.counters.lookupDatagrams++
      this.#t.sendGroup(this.#lookupMsg(f))
    }
    f.timer = this.#clock.setTimeout(() => this.#tick(f), Math.max(0, f.roundEnd - this.#clock.now()))
  }

  /**
   * How long a round waits before the next retransmit: `lookupTimeoutMs / (lookupRetries + 1)`,
   * and once a patient lookup (memcache) outlives `lookupTimeoutMs`, half the time it has waited,
   * at most PATIENT_RETRANSMIT_MS: owners slow on a loaded host are not sent more for it.
   */
  #interval(f: Inflight, now: number): number {
    const base = this.#o.lookupTimeoutMs / (this.#o.lookupRetries + 1)
    const waited = now - f.startedAt
    if (waited < this.#o.lookupTimeoutMs) return base
    return Math.max(base, Math.min(PATIENT_RETRANSMIT_MS, waited / 2))
  }

  #tick(f: Inflight): void {
    f.timer = undefined
    const now = this.#clock.now()
    const interval = this.#interval(f, now)
    // A value still arriving in chunks: no retransmit (it would have every chunk sent again, and
    // a loaded receiver that falls behind would be sent more) until they stop for half a deadline.
    const stall = Math.max(interval, this.#o.lookupTimeoutMs / 2)
    if (now < f.deadline - 0.5 && now - f.chunkAt < stall) {
      f.roundEnd = Math.min(f.deadline, f.chunkAt + stall)
      f.timer = this.#clock.setTimeout(() => this.#tick(f), Math.max(1, f.roundEnd - now))
      return
    }
    if (now >= f.deadline - 0.5) {
      this.counters.timeouts++
      this.#settle(f, undefined, false)
    } else this.#send(f)
  }

  #settle(f: Inflight, found: Found, sure = true): void {
    if (this.#byKey.get(f.key) !== f) return
    this.#clock.clearTimeout(f.timer)
    this.observe((this.#clock.now() - f.startedAt) / 1000, found ? 'hit' : this.#clock.now() >= f.deadline - 0.5 ? 'timeout' : 'miss')
    this.#byKey.delete(f.key)
    this.#byReq.delete(f.reqId)
    this.#recent[this.#recentAt++ & 255] = f.reqId
    if (f.firstOwner !== undefined) {
      this.#untimed.set(f.reqId, { firstOwner: f.firstOwner, askedAt: f.askedAt })
    }
    for (const r of f.parts.values()) r.release()
    f.parts.clear()
    for (const w of f.waiters) w(found, sure)
  }

  /** The lookup a HIT or MISS answers, if it is bound to one in flight (reqId, nonce and key digest). */
  #boundTo(m: { reqId: number; nonce: Buffer; digest: Buffer }): Inflight | undefined {
    const f = this.#byReq.get(m.reqId)
    if (!f) {
      this.#stray(m.reqId)
      return undefined
    }
    if (!m.nonce.equals(f.nonce) || !m.digest.equals(f.digest)) {
      this.#t.counters.dropped.mismatched++
      return undefined
    }
    return f
  }

  /** Feeds the hedge delay with the reply time of the owner a lookup asked first, once per lookup. */
  #timeFirstReply(sender: string, reqId: number): void {
    const f = this.#byReq.get(reqId)
    const asked = f?.firstOwner !== undefined ? f : this.#untimed.get(reqId)
    if (asked?.firstOwner !== sender) return
    this.#hedge.observe(this.#clock.now() - asked.askedAt)
    asked.firstOwner = undefined
    if (asked !== f) this.#untimed.delete(reqId)
  }

  /** A HIT chunk from `sender`. */
  onHit(sender: string, m: Extract<Message, { type: typeof MsgType.HIT }>): void {
    this.#timeFirstReply(sender, m.reqId)
    const f = this.#boundTo(m)
    if (!f) return
    this.counters.chunksReceived++
    if (m.totalLen > this.#o.maxValueBytes) {
      this.counters.reassemblyDropped++
      return
    }
    if (m.count === 1) {
      if (m.chunk.length !== m.totalLen) {
        this.counters.reassemblyDropped++
        return
      }
      return this.#complete(f, m.chunk, m.ttlMs, m.flags, m.version, sender)
    }
    let r = f.parts.get(sender)
    f.chunkAt = this.#clock.now()
    if (!r) {
      // The deadline scales with the value's size (LARGE_VALUE_STEP_BYTES).
      const steps = Math.ceil(m.totalLen / LARGE_VALUE_STEP_BYTES)
      f.deadline = Math.max(f.deadline, f.startedAt + steps * this.#o.lookupTimeoutMs)
      const opened = Reassembly.open(m, this.#budget, maxChunkCount(m.totalLen, hitChunkBytes(MIN_DATAGRAM_BYTES)), this.#clock.now())
      if (typeof opened === 'string') {
        this.counters.reassemblyDropped++
        return
      }
      r = opened
      f.parts.set(sender, r)
    }
    const added = r.add(m)
    if (added === 'over-budget') this.counters.reassemblyDropped++
    if (added !== 'added' || !r.complete) return
    f.parts.delete(sender)
    const value = r.join()
    r.release()
    if (!value) {
      this.counters.reassemblyDropped++
      return
    }
    this.#complete(f, value, r.ttlMs, r.flags, r.version, sender)
    value.fill(0)
  }

  #complete(f: Inflight, value: Buffer, ttlMs: number, flags: number, version: bigint, from: string): void {
    if (ttlMs <= 0) return
    // The local copy keeps the remaining TTL and the version of the copy it came from.
    let stored = true
    try {
      stored = this.#store.setFromPeer(f.key, value, ttlMs, flags, version)
      if (stored) this.#holders.fetched?.(f.key, from, ttlMs)
    } catch {
      /* too large for this host's limits: serve it, do not keep it */
    }
    if (!stored) {
      // What this host holds is newer: a later SET (serve that) or a delete (serve nothing).
      this.counters.staleHits++
      const mine = this.#store.peek(f.key)
      const left = mine ? this.#store.remainingTtl(f.key) : 0
      return this.#settle(
        f,
        mine && left > 0 ? { value: Buffer.from(mine.value), ttlMs: left, flags: mine.flags, version: mine.version } : undefined,
      )
    }
    this.counters.remoteHits++
    this.#settle(f, { value: Buffer.from(value), ttlMs, flags, version })
  }

  /** A MISS from `sender`: when every live member has missed, "not found" now. */
  onMiss(sender: string, m: Extract<Message, { type: typeof MsgType.MISS }>): void {
    this.counters.missesReceived++
    this.#timeFirstReply(sender, m.reqId)
    const f = this.#boundTo(m)
    if (!f) return
    f.missed.add(sender)
    if (f.unasked.length > 0) this.#askRest(f)
    this.#checkAllMissed(f)
  }

  #checkAllMissed(f: Inflight): void {
    const alive = this.#peers.liveIds()
    // With owners named, their MISSes settle it (an owner that died since counts as missed);
    // without, every live member's must.
    const done = f.expected
      ? f.expected.every((id) => f.missed.has(id) || !alive.includes(id))
      : alive.length > 0 && alive.every((id) => f.missed.has(id))
    if (done && f.parts.size === 0) {
      this.counters.remoteMisses++
      this.#settle(f, undefined)
    }
  }

  /** Membership shrank: lookups waiting only on the departed can finish now. */
  membersChanged(): void {
    for (const f of [...this.#byKey.values()]) if (f.missed.size > 0) this.#checkAllMissed(f)
  }

  /**
   * A LOOKUP from `sender`. Answers go to the address the asker announced as a member, never to
   * one a datagram names: a LOOKUP from a sender not (yet) a member is left unanswered (it asks
   * again, or its next heartbeat makes it one). Each (member, key) is answered once per turn of
   * the event loop, which holds one BATCH, and HITs to one member stay within its byte budget
   * (HIT_BUDGET_*): a key holder's small datagram cannot have megabytes sent to an address.
   */
  answer(msg: Extract<Message, { type: typeof MsgType.LOOKUP }>, sender: string, rinfo: Incoming['rinfo']): void {
    const c = this.answers
    const asker = this.#peers.members.get(sender)
    const to = this.#peers.addressOf(sender)
    if (!asker || !to) {
      c.lookupsFromStrangers++
      return
    }
    // Nor to a member in probation whose LOOKUP did not come from the address it announced: that
    // address is not yet proven to be its own, and a HIT of a large value is many times the
    // LOOKUP's size (a reflector). A daemon sends everything from its announced unicast socket, so a
    // genuine newcomer (a restarted host) is answered at once.
    if (!asker.trusted && !this.#peers.fromOwnAddress(asker, rinfo)) {
      c.lookupsFromUntrusted++
      return
    }
    const key = msg.key.toString('latin1')
    const once = `${sender}\0${key}`
    if (this.#answeredThisTurn.has(once)) {
      c.lookupsRepeated++
      return
    }
    this.#answeredThisTurn.add(once)
    if (!this.#answeredReset) {
      this.#answeredReset = true
      this.#turnAt = this.#clock.now()
      this.#clock.setImmediate(() => {
        this.#answeredReset = false
        this.#answeredThisTurn.clear()
      })
    }
    c.lookupsAnswered++
    const binding = { reqId: msg.reqId, nonce: msg.nonce, digest: keyDigest(msg.key) }
    const entry = this.#store.peek(key)
    const ttlMs = entry === undefined ? 0 : this.#store.remainingTtl(key)
    if (entry === undefined || ttlMs <= 0) {
      // Named owners answer MISS; others, holding nothing, stay silent. No names: everyone answers.
      if (msg.expect.length > 0 && !msg.expect.some((id) => id.equals(this.#t.nodeId))) {
        c.missesWithheld++
        return
      }
      c.missesSent++
      this.#t.sendTo(to, sender, { type: MsgType.MISS, ...binding })
      return
    }
    const { value, flags, version } = entry
    if (!this.#spend(sender, value.length)) {
      // Unanswered, not MISS: the asker's retransmit, once the budget refilled, is answered.
      c.hitsOverBudget++
      return
    }
    c.hitsSent++
    // The asker will hold a copy for up to ttlMs: a delete that reaches this host goes on to it.
    this.#holders.record(key, sender, ttlMs)
    const count = Math.max(1, Math.ceil(value.length / this.#chunkBytes))
    for (let i = 0; i < count; i++) {
      // The transport encodes (copies) the chunk when it is queued, so a view into the store's buffer is safe here.
      const chunk = value.subarray(i * this.#chunkBytes, (i + 1) * this.#chunkBytes)
      this.#t.sendTo(to, sender, { type: MsgType.HIT, ...binding, ttlMs, flags, totalLen: value.length, index: i, count, version, chunk })
    }
    c.chunksSent += count
  }

  /** Takes `bytes` from `member`'s HIT budget; false (nothing taken) when it does not hold them. */
  #spend(member: string, bytes: number): boolean {
    const now = this.#turnAt
    let b = this.#budgets.get(member)
    if (!b) {
      // Members come and go (restarts bring new ids): buckets of the gone are forgotten.
      if (this.#budgets.size >= 4096) for (const [id] of this.#budgets) if (!this.#peers.members.has(id)) this.#budgets.delete(id)
      this.#budgets.set(member, (b = { bytes: this.#budgetCap, at: now }))
    }
    b.bytes = Math.min(this.#budgetCap, b.bytes + ((now - b.at) * HIT_BUDGET_BYTES_PER_S) / 1000)
    b.at = now
    if (b.bytes < bytes) return false
    b.bytes -= bytes
    return true
  }

  /** Answers every waiter "not found" and refuses new lookups. */
  close(): void {
    this.#closed = true
    for (const f of [...this.#byKey.values()]) this.#settle(f, undefined, false)
  }
}
