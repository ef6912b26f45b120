/**
 * One decision point per key for conditional writes (add, replace, cas, append, prepend, incr,
 * decr): the key's decider decides them one at a time, so that across the fleet they behave as on
 * one memcached: one `add` wins, no increment is lost, one `cas` per unique value succeeds.
 *
 * Who decides: a host decides a key (its own operation or a peer's DECIDE) only when no other host
 * may be deciding it (membership.ts: decidesHere): it has listened long enough to know every live
 * member, and it is the key's first owner under its live view L (every live member, trusted or in
 * probation, and itself), hence under every view another host may hold meanwhile. Two hosts that
 * know each other cannot both pass. Elsewhere, and while no host passes (a member just joined and
 * is still listening), an operation waits: it is sent to the host first in the asker's L, which
 * refuses (NOT_DECIDER, nothing applied, the refusal remembered so that a late copy of that
 * DECIDE is refused too) when it may not decide; the asker waits a little and asks again with a
 * fresh request id, until the decision deadline. The check is made again right before the write,
 * after any fetch: a member heard meanwhile stops this host at once.
 *
 * On the decider: operations on one key run in order (a promise chain per key: a fetch of a key
 * held only elsewhere is async, and the next operation must see the previous one's write). The
 * write goes out as every write does (replication's `stored`: copies to the owners) and the
 * outcome is given once the copies let it (as a SET's answer waits).
 *
 * Elsewhere: DECIDE to the decider, retransmitted with the same request id (to that host only)
 * until DECIDED comes back or the deadline passes. The decider remembers each outcome by (sender, request id) for
 * REMEMBER_MS and answers a repeat with it, never applying an operation twice. The asker keeps
 * the decided result as a copy (at the decider's version) when it is one of the key's owners,
 * else drops its older copy, and answers its client. When no answer
 * comes in time, or the decider dies or leaves meanwhile, the operation fails with DecisionError
 * OUTCOME_UNKNOWN: it may or may not have been applied, and the client is told so, never a
 * success that another host may also have given.
 *
 * Limits: a DECIDE travels in one datagram; an operation whose value does not fit fails with
 * DecisionError TOO_LARGE_TO_FORWARD on a host that is not the decider. A DECIDED whose result
 * does not fit (a large append) carries no value: the asker drops its own older copy and reads
 * the key from the owners next time.
 */
import { DecideRefusal, DecidedWrote, MsgType, type Message } from '../../protocol/wire.js'
import { BoundedMap } from '../../protocol/bounded.js'
import { StatecastError } from '../../protocol/errors.js'
import { CondKind, CondOutcome, applyConditional, type CondOp, type CondResult } from '../store/conditional.js'
import { StoreError, type SessionStore } from '../store/session-store.js'
import type { Clock, TimerHandle } from './clock.js'
import type { PeerTransport } from './peer-transport.js'
import type { Membership } from './membership.js'

type Decide = Extract<Message, { type: typeof MsgType.DECIDE }>
type Decided = Extract<Message, { type: typeof MsgType.DECIDED }>

/** Stable codes of a conditional write that could not be decided. */
export type DecisionErrorCode = 'OUTCOME_UNKNOWN' | 'TOO_LARGE_TO_FORWARD'

/** A conditional write whose outcome this host cannot give (front ends: memcache `SERVER_ERROR outcome unknown`). */
export class DecisionError extends StatecastError<DecisionErrorCode> {
  constructor(code: DecisionErrorCode, message: string) {
    super(code, message)
    this.name = 'DecisionError'
  }
}

/** A decided operation as the caller sees it: the outcome, and the version the write was stored at. */
export interface Decision extends CondResult {
  version?: bigint
}

export interface DecisionCounters {
  /** Conditional writes this host decided as the decider (its own and its peers'). */
  decisionsLocal: number
  /** Conditional writes this host sent to their decider. */
  decisionsRemote: number
  /** DECIDEs sent again for want of an answer. */
  decisionsRetransmitted: number
  /** Conditional writes that ended in DecisionError OUTCOME_UNKNOWN here. */
  decisionsFailed: number
  /** DECIDEs received again and answered from memory (or while still deciding), not applied again. */
  decisionRepeats: number
  /** DECIDEs refused here (another host may decide the key, or this one is still listening), and refusals this host received. */
  decisionsRefused: number
  /** DECIDEDs that matched no operation in flight (late, or repeated). */
  decidedUnmatched: number
  /** Conditional writes that had to wait because no host could decide their key yet (refused, or this host still listening). */
  decisionsWaited: number
  /** Of those, the ones that still ended in OUTCOME_UNKNOWN. */
  decisionsWaitedFailed: number
  /** Time those writes spent from their first wait to their answer, summed (ms). */
  decisionWaitMs: number
  /** The longest such time (ms). */
  decisionWaitMaxMs: number
  /** Decisions put off because the fetch of a key this host lacked ended at its deadline, not in every owner's MISS. */
  decisionFetchesUnsure: number
  /** Peers' DECIDEs dropped unapplied: too many queued for the key or in all (the asker retransmits). */
  decisionsShed: number
  /** Decisions applied here whose copy no other host acknowledged in time: answered OUTCOME_UNKNOWN. */
  decisionsUnheld: number
}

/** What decisions need from the rest of the cluster. */
export interface DecisionDeps {
  transport: PeerTransport
  store: SessionStore
  membership: Membership
  clock: Clock
  /** The owners of a key, best first, this host included (replication's placement). */
  ownersOf: (key: string) => string[]
  /** Fetches a key this host lacks from the peers (stored here when found); `sure`: a miss is every asked member's MISS, not a deadline. */
  fetch: (key: string) => Promise<{ found: unknown; sure: boolean }>
  /** A local write to copy to the owners (replication's `stored`): answer once it settles. */
  stored: (key: string) => Promise<boolean> | undefined
  /** A local delete to send to the hosts that may hold a copy. */
  deleted: (key: string) => Promise<void> | undefined
  /** Remembers `id` as a holder of `key` (it keeps the decided value): later writes update it. */
  recordHolder: (key: string, id: string, ttlMs: number) => void
  /**
   * This host kept `from`'s decided value of `key` as a copy (replication's `fetched`): where the
   * copy came from, so that it re-attaches to the owners when the decider departs (reach.ts).
   */
  fetched: (key: string, from: string, ttlMs: number) => void
}

export interface DecisionOptions {
  /** How long an asker waits for DECIDED before OUTCOME_UNKNOWN (ms). */
  deadlineMs: number
  /** First retransmit interval (ms); doubled up to RETRANSMIT_MAX_MS. */
  retransmitMs: number
  /**
   * How old a datagram the transport still takes (`replayWindowMs`): outcomes are remembered at
   * least this long, so a DECIDE held back by an attacker on the path and delivered late is
   * answered from memory, never applied twice. Default 0.
   */
  replayWindowMs?: number
}

/** How long a decider remembers an outcome for repeats (ms): past any asker's deadline. */
export const REMEMBER_MS = 10_000
/** Most outcomes remembered at once. */
const MAX_REMEMBERED = 65_536
/** Most operations one host has in flight to deciders. */
const MAX_PENDING = 16_384
/**
 * Decisions one key may have queued here (its chain), and in all: beyond them a DECIDE is dropped
 * unanswered and unremembered (nothing applied), so the asker's retransmit may be taken later or
 * its deadline ends it with OUTCOME_UNKNOWN. Bounds what a flood of DECIDEs can hold here.
 */
const MAX_QUEUED_PER_KEY = 64
const MAX_QUEUED = 16_384
const RETRANSMIT_MAX_MS = 200
/** While no host may decide a key (refused, or still listening), the first wait before asking again (ms); doubled up to WAIT_MAX_MS. */
const WAIT_FIRST_MS = 10
const WAIT_MAX_MS = 100
/** Refused DECIDEs remembered (by sender and request id), so a late copy of one is refused again. */
const MAX_REFUSALS = 16_384

/** One conditional write of this host's, from decide() until its answer. */
interface Pending {
  key: string
  op: CondOp
  /** The DECIDE in flight (0: none): sent to `decider` alone, however often retransmitted. */
  reqId: number
  decider: string
  deadline: number
  interval: number
  timer: TimerHandle | undefined
  /** Being decided here (in the key's chain): it ends by itself. */
  local: boolean
  /** Sent to a decider at least once (counted once in decisionsRemote). */
  sent: boolean
  /** The next wait while no host may decide the key (ms), and when the first one began. */
  backoff: number
  waitedFrom: number | undefined
  resolve: (d: Decision) => void
  reject: (e: Error) => void
}

/** #decideHere's answer when this host may not decide the key (any more): nothing was applied. */
const NOT_HERE = Symbol('not the decider')

interface Remembered {
  at: number
  answer: Decided | undefined
}

export class Decisions {
  readonly counters: DecisionCounters = {
    decisionsLocal: 0,
    decisionsRemote: 0,
    decisionsRetransmitted: 0,
    decisionsFailed: 0,
    decisionRepeats: 0,
    decisionsRefused: 0,
    decidedUnmatched: 0,
    decisionsShed: 0,
    decisionsWaited: 0,
    decisionsWaitedFailed: 0,
    decisionWaitMs: 0,
    decisionWaitMaxMs: 0,
    decisionFetchesUnsure: 0,
    decisionsUnheld: 0,
  }
  readonly #d: DecisionDeps
  readonly #o: DecisionOptions
  /** Per key: the tail of its chain of decisions on this host. */
  readonly #chains = new Map<string, Promise<unknown>>()
  /** This host's conditional writes in progress, and those of them with a DECIDE in flight (by request id). */
  readonly #ops = new Set<Pending>()
  readonly #pending = new Map<number, Pending>()
  readonly #remembered = new BoundedMap<string, Remembered>(MAX_REMEMBERED)
  /** Peers' DECIDEs refused here (sender:reqId): never decided later, whenever a copy arrives. */
  readonly #refused = new BoundedMap<string, true>(MAX_REFUSALS)
  /** Peers' decisions queued here per key (and in all), for the bounds above. */
  readonly #queued = new Map<string, number>()
  #queuedAll = 0
  /** How long an outcome is remembered: past every asker's deadline, so a retransmit never applies twice. */
  readonly #rememberMs: number
  #nextReqId = 1
  #closed = false
  /**
   * Bumped when a partition heals here (healed()): the keys this host holds may have been decided
   * by the others meanwhile. A key is re-read from its owners before this host's first decision
   * of it since (#verified holds the epoch each key was last read at).
   */
  #epoch = 0
  readonly #verified = new BoundedMap<string, number>(MAX_REMEMBERED)

  constructor(o: DecisionOptions, deps: DecisionDeps) {
    this.#o = o
    this.#d = deps
    this.#rememberMs = Math.max(o.deadlineMs, o.replayWindowMs ?? 0) + REMEMBER_MS
  }

  /** Conditional writes of this host's not yet answered. */
  get pending(): number {
    return this.#ops.size
  }

  /** The host that decides `key` as far as this host can tell: the first in its live view (membership.ts: deciderOf). */
  deciderOf(key: string): string {
    return this.#d.membership.deciderOf(key)
  }

  /** True when this host alone may decide `key` now. */
  #mayDecide(key: string): boolean {
    return !this.#closed && this.#d.membership.decidesHere(key)
  }

  /** Decides `op` on `key`: here when this host may, else at the host it believes decides, waiting while none may. */
  decide(key: string, op: CondOp): Promise<Decision> {
    if (this.#closed || this.#ops.size >= MAX_PENDING) {
      this.counters.decisionsFailed++
      return Promise.reject(new DecisionError('OUTCOME_UNKNOWN', 'outcome unknown'))
    }
    return new Promise<Decision>((resolve, reject) => {
      const p: Pending = {
        key,
        op,
        reqId: 0,
        decider: '',
        deadline: this.#d.clock.now() + this.#o.deadlineMs,
        interval: this.#o.retransmitMs,
        timer: undefined,
        local: false,
        sent: false,
        backoff: WAIT_FIRST_MS,
        waitedFrom: undefined,
        resolve,
        reject,
      }
      this.#ops.add(p)
      this.#next(p)
    })
  }

  /** One more try at `p`: decided here, sent to the decider (a fresh request id), or a wait. */
  #next(p: Pending): void {
    p.timer = undefined
    if (this.#closed || this.#d.clock.now() >= p.deadline) return this.#fail(p)
    const decider = this.deciderOf(p.key)
    const self = this.#d.membership.selfId
    if (decider === self) {
      if (!this.#mayDecide(p.key)) return this.#wait(p)
      this.counters.decisionsLocal++
      p.local = true
      this.#serial(p.key, () => this.#decideHere(p.key, p.op)).then(
        (r) => {
          p.local = false
          if (r === NOT_HERE) this.#wait(p)
          else this.#done(p, r)
        },
        (e: unknown) => {
          p.local = false
          if (e instanceof DecisionError) this.counters.decisionsFailed++
          this.#done(p, undefined, e as Error)
        },
      )
      return
    }
    // A silent decider (dead to other hosts soon, maybe): wait for it to be heard or dropped
    // rather than send what might be applied by a host about to vanish.
    if (this.#d.membership.suspect(decider)) return this.#wait(p)
    this.#ask(p, decider)
  }

  /** No host may decide `p`'s key now: ask again after a short wait (doubling), within the deadline. */
  #wait(p: Pending): void {
    const now = this.#d.clock.now()
    p.waitedFrom ??= now
    const left = p.deadline - now
    if (left <= 0 || this.#closed) return this.#fail(p)
    p.timer = this.#d.clock.setTimeout(() => this.#next(p), Math.min(p.backoff, left))
    p.backoff = Math.min(WAIT_MAX_MS, p.backoff * 2)
  }

  /** `p` is answered (or failed): counted, and its caller told. */
  #done(p: Pending, d: Decision | undefined, err?: Error): void {
    this.#endAttempt(p)
    this.#d.clock.clearTimeout(p.timer)
    p.timer = undefined
    if (!this.#ops.delete(p)) return
    if (p.waitedFrom !== undefined) {
      const waited = this.#d.clock.now() - p.waitedFrom
      this.counters.decisionsWaited++
      this.counters.decisionWaitMs += waited
      this.counters.decisionWaitMaxMs = Math.max(this.counters.decisionWaitMaxMs, waited)
      if (err instanceof DecisionError && err.code === 'OUTCOME_UNKNOWN') this.counters.decisionsWaitedFailed++
    }
    if (err) p.reject(err)
    else p.resolve(d!)
  }

  /** Runs `fn` after every decision on `key` queued before it. */
  #serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#chains.get(key) ?? Promise.resolve()
    const run = prev.then(fn, fn)
    const tail = run.then(
      () => undefined,
      () => undefined,
    )
    this.#chains.set(key, tail)
    void tail.then(() => {
      if (this.#chains.get(key) === tail) this.#chains.delete(key)
    })
    return run
  }

  async #decideHere(key: string, op: CondOp): Promise<Decision | typeof NOT_HERE> {
    const store = this.#d.store
    // Checked when its turn comes (a member may have been heard since it was queued) and again
    // right before the write, in the same turn as it: what is applied here is decided here alone.
    if (!this.#mayDecide(key)) return NOT_HERE
    // A key held only elsewhere (this host just became its decider) is fetched first, so that
    // an `add` of a key that exists fails and an incr counts from its value.
    // After a heal, a key held here may be older than what the others decided while this host was
    // away (its own copy, written here while cut off, outlived the heal): it is read from the
    // owners first, and the newer version kept (the store refuses an older copy).
    const epoch = this.#epoch
    const reread = epoch > 0 && store.has(key) && this.#verified.get(key) !== epoch
    if (!store.has(key) || reread) {
      const got = await this.#d.fetch(key).catch(() => ({ found: undefined, sure: false }))
      if (!this.#mayDecide(key)) return NOT_HERE
      // Not found only because an owner did not answer in time (a loaded or dying host): it may
      // hold the key, so nothing is decided on that; the operation waits and is tried again.
      if (!got.found && !got.sure && (reread || !store.has(key))) {
        this.counters.decisionFetchesUnsure++
        return NOT_HERE
      }
      if (epoch > 0) this.#verified.set(key, epoch)
    }
    const r = applyConditional(store, key, op)
    if (r.wrote === 'delete') {
      // An already expired conditional write deletes: answered, like a DELETE, once copies are gone.
      const gone = this.#d.deleted(key)
      this.#d.transport.flush()
      if (gone) await gone
    } else if (r.wrote === 'set') {
      const copied = this.#d.stored(key)
      // flush: the copies leave now, not at the end of this turn, so the wait is one round trip.
      this.#d.transport.flush()
      // No other host acknowledged the copy in time (this host cut off, say): the next decider
      // may never see this outcome and decide the key again from the previous value, so it is
      // not given as a success. It stays applied here, and its copies are still retried.
      const held = copied ? await copied : true
      if (!held) {
        this.counters.decisionsUnheld++
        throw new DecisionError('OUTCOME_UNKNOWN', 'outcome unknown: no other host acknowledged the decided write')
      }
    }
    return r.wrote ? { ...r, version: store.version(key) } : r
  }

  // ---- the asking side ----

  /** Sends `p` to `decider` under a fresh request id (one request id never goes to two hosts). */
  #ask(p: Pending, decider: string): void {
    const m = this.#message(p)
    if (!this.#d.transport.fits(m))
      return this.#done(p, undefined, new DecisionError('TOO_LARGE_TO_FORWARD', 'value too large to forward to the decider'))
    if (!p.sent) this.counters.decisionsRemote++
    p.sent = true
    let reqId = this.#nextReqId
    while (this.#pending.has(reqId)) reqId = (reqId + 1) >>> 0 || 1
    this.#nextReqId = (reqId + 1) >>> 0 || 1
    p.reqId = reqId
    p.decider = decider
    p.interval = this.#o.retransmitMs
    this.#pending.set(reqId, p)
    this.#send(p)
    this.#arm(p, p.interval)
  }

  #message(p: Pending): Decide {
    const op = p.op
    return {
      type: MsgType.DECIDE,
      reqId: p.reqId,
      kind: op.kind,
      flags: 'flags' in op ? op.flags : 0,
      ttlMs: 'ttlMs' in op ? op.ttlMs : 0,
      unique: op.kind === CondKind.CAS ? op.unique : 0n,
      delta: 'delta' in op ? op.delta : 0n,
      key: Buffer.from(p.key, 'latin1'),
      value: 'value' in op ? op.value : Buffer.alloc(0),
    }
  }

  #send(p: Pending): void {
    const to = this.#d.membership.addressOf(p.decider)
    if (to) this.#d.transport.sendTo(to, p.decider, this.#message(p))
    this.#d.transport.flush()
  }

  #arm(p: Pending, delay: number): void {
    const left = p.deadline - this.#d.clock.now()
    if (left <= 0) return this.#fail(p)
    p.timer = this.#d.clock.setTimeout(
      () => {
        p.timer = undefined
        if (this.#d.clock.now() >= p.deadline) return this.#fail(p)
        this.counters.decisionsRetransmitted++
        this.#send(p)
        p.interval = Math.min(RETRANSMIT_MAX_MS, p.interval * 2)
        this.#arm(p, p.interval)
      },
      Math.min(delay, left),
    )
  }

  /** The DECIDE in flight for `p` is over (answered or refused): no more retransmits of it. */
  #endAttempt(p: Pending): void {
    if (p.reqId === 0) return
    this.#d.clock.clearTimeout(p.timer)
    p.timer = undefined
    this.#pending.delete(p.reqId)
    p.reqId = 0
  }

  #fail(p: Pending): void {
    if (!this.#ops.has(p)) return
    this.counters.decisionsFailed++
    this.#done(p, undefined, new DecisionError('OUTCOME_UNKNOWN', 'outcome unknown'))
  }

  /** The answer to one of our DECIDEs: stored here as a copy, then given to the caller. */
  onDecided(sender: string, m: Decided): void {
    const p = this.#pending.get(m.reqId)
    if (!p || p.decider !== sender || m.key.toString('latin1') !== p.key) {
      this.counters.decidedUnmatched++
      return
    }
    if (m.outcome === 0) {
      if (m.wrote === DecideRefusal.NOT_DECIDER) {
        // It may not decide the key now (our views differ, or it is still listening): nothing
        // was applied there, and it refuses this request id for good. Ask whoever our view names
        // now, at once if that changed, else after a short wait; either way under a new id.
        this.counters.decisionsRefused++
        this.#endAttempt(p)
        if (this.deciderOf(p.key) !== sender) {
          p.waitedFrom ??= this.#d.clock.now()
          return this.#next(p)
        }
        return this.#wait(p)
      }
      if (m.wrote === DecideRefusal.OUTCOME_UNKNOWN) return this.#fail(p)
      const code = m.wrote === DecideRefusal.BAD_TTL ? 'BAD_TTL' : 'TOO_LARGE'
      this.#done(p, undefined, new StoreError(code, code === 'BAD_TTL' ? 'bad TTL' : 'object too large for cache'))
      return
    }
    this.#endAttempt(p)
    const key = p.key
    const store = this.#d.store
    try {
      // Kept here as a copy: the decider remembers this host as a holder of the key when it sends
      // the value, so every later write reaches this copy before it is answered (no stale copy).
      // Too large to carry: what this host holds, older than the decided version, is dropped, so
      // the next read here asks the owners.
      if (m.wrote === DecidedWrote.SET) {
        if (store.setFromPeer(key, m.value, m.ttlMs, m.flags, m.version)) this.#d.fetched(key, sender, m.ttlMs)
      } else if (m.wrote === DecidedWrote.DELETE) store.deleteFromPeer(key, m.version)
      else if ((m.wrote === DecidedWrote.SET || m.wrote === DecidedWrote.SET_OMITTED) && m.version > 0n)
        store.deleteFromPeer(key, m.version - 1n)
    } catch {
      // This host's store refused the copy (its own limits): the decision stands; reads go to the owners.
    }
    const d: Decision = { outcome: m.outcome as Decision['outcome'] }
    if (m.wrote === DecidedWrote.SET || m.wrote === DecidedWrote.SET_OMITTED) d.wrote = 'set'
    else if (m.wrote === DecidedWrote.DELETE) d.wrote = 'delete'
    if (m.wrote !== DecidedWrote.NOTHING) d.version = m.version
    if ((p.op.kind === CondKind.INCR || p.op.kind === CondKind.DECR) && m.outcome === CondOutcome.STORED) d.number = m.number
    this.#done(p, d)
  }

  /**
   * A partition healed here (membership.ts: onPartitionHealed): the others may have decided keys
   * this host holds while it was cut off, so each is re-read from its owners before it is next
   * decided here.
   */
  healed(): void {
    this.#epoch++
    this.#verified.clear()
  }

  /** A decider that died or left: what was asked of it may or may not be applied. */
  membersChanged(): void {
    for (const p of [...this.#pending.values()]) if (!this.#d.membership.members.has(p.decider)) this.#fail(p)
  }

  // ---- the deciding side ----

  /** A peer's DECIDE (from a trusted member): decided here once, however often it arrives. */
  onDecide(sender: string, m: Decide): void {
    const to = this.#d.membership.addressOf(sender)
    if (!to) return
    const key = m.key.toString('latin1')
    const id = `${sender}:${m.reqId}`
    const now = this.#d.clock.now()
    const seen = this.#remembered.get(id)
    if (seen && (seen.answer === undefined || now - seen.at <= this.#rememberMs)) {
      this.counters.decisionRepeats++
      // Still deciding: its answer goes out when done. Decided: the same answer again.
      if (seen.answer) this.#reply(to, sender, seen.answer)
      return
    }
    const answer = (a: Decided) => {
      const r = this.#remembered.get(id)
      if (r) r.answer = a
      this.#reply(to, sender, a)
    }
    const refuse = (why: number) => answer(this.#decided(m, 0, why, 0, 0, 0n, 0n, Buffer.alloc(0)))
    // Not the decider (now): refused, and this request id refused for good (a copy of it that
    // arrives later, once this host decides the key, must not be applied: the asker has gone on
    // under a new id, perhaps to another host).
    const notHere = () => {
      this.counters.decisionsRefused++
      this.#refused.set(id, true)
      this.#reply(to, sender, this.#decided(m, 0, DecideRefusal.NOT_DECIDER, 0, 0, 0n, 0n, Buffer.alloc(0)))
    }
    if (this.#refused.has(id)) {
      this.counters.decisionRepeats++
      return notHere()
    }
    if (!this.#mayDecide(key)) return notHere()
    const op = opOf(m)
    if (!op) return
    this.#sweepRemembered(now)
    const queued = this.#queued.get(key) ?? 0
    if (queued >= MAX_QUEUED_PER_KEY || this.#queuedAll >= MAX_QUEUED || this.#remembered.size >= MAX_REMEMBERED) {
      this.counters.decisionsShed++
      return
    }
    this.#queued.set(key, queued + 1)
    this.#queuedAll++
    const dequeue = () => {
      this.#queuedAll--
      const n = (this.#queued.get(key) ?? 1) - 1
      if (n > 0) this.#queued.set(key, n)
      else this.#queued.delete(key)
    }
    this.#remembered.delete(id)
    this.#remembered.set(id, { at: now, answer: undefined })
    this.counters.decisionsLocal++
    const decided = this.#serial(key, () => this.#decideHere(key, op))
    decided.then(dequeue, dequeue)
    decided.then(
      (r) => {
        if (r === NOT_HERE) {
          this.#remembered.delete(id)
          return notHere()
        }
        const store = this.#d.store
        const e = r.wrote === 'set' ? store.peek(key) : undefined
        const version = r.version ?? 0n
        const number = r.number ?? 0n
        if (r.wrote === 'delete') return answer(this.#decided(m, r.outcome, DecidedWrote.DELETE, 0, 0, version, number, Buffer.alloc(0)))
        if (!e || e.version !== version)
          // Written and already changed again (or gone): the asker takes the newer copy from the owners.
          return answer(
            this.#decided(m, r.outcome, r.wrote ? DecidedWrote.SET_OMITTED : DecidedWrote.NOTHING, 0, 0, version, number, Buffer.alloc(0)),
          )
        const full = this.#decided(m, r.outcome, DecidedWrote.SET, e.flags, store.remainingTtl(key), version, number, e.value)
        if (this.#d.transport.fits(full)) {
          // The asker keeps the value as a copy: as a holder, every later write reaches it.
          this.#d.recordHolder(key, sender, full.ttlMs)
          return answer({ ...full, value: Buffer.from(e.value) })
        }
        answer(this.#decided(m, r.outcome, DecidedWrote.SET_OMITTED, 0, 0, version, number, Buffer.alloc(0)))
      },
      (err: unknown) => {
        if (err instanceof StoreError) refuse(err.code === 'BAD_TTL' ? DecideRefusal.BAD_TTL : DecideRefusal.TOO_LARGE)
        // Applied here but held nowhere else: remembered (a repeat gets the same answer, never a
        // second application) and answered as unknown.
        else if (err instanceof DecisionError) refuse(DecideRefusal.OUTCOME_UNKNOWN)
        else this.#remembered.delete(id)
      },
    )
  }

  #decided(
    m: Decide,
    outcome: number,
    wrote: number,
    flags: number,
    ttlMs: number,
    version: bigint,
    number: bigint,
    value: Buffer,
  ): Decided {
    return { type: MsgType.DECIDED, reqId: m.reqId, outcome, wrote, flags, ttlMs, version, number, key: Buffer.from(m.key), value }
  }

  /** Also while stopping: refusals send askers elsewhere, and decisions made before the stop are answered. */
  #reply(to: ReturnType<Membership['addressOf']> & object, sender: string, a: Decided): void {
    this.#d.transport.sendTo(to, sender, a)
    this.#d.transport.flush()
  }

  #sweepRemembered(now: number): void {
    // Oldest first (insertion order): stop at the first one still fresh.
    // Still deciding: kept whatever its age (a repeat must find it).
    for (const [id, r] of this.#remembered) {
      if (r.answer === undefined) continue
      if (now - r.at <= this.#rememberMs) break
      this.#remembered.delete(id)
    }
  }

  /**
   * The daemon stops: nothing more is decided here (peers' DECIDEs are refused, so their askers
   * go to the next decider once they hear LEAVE), and this host's own operations not being
   * decided here fail. Idempotent.
   */
  close(): void {
    this.#closed = true
    for (const p of [...this.#ops]) if (!p.local) this.#fail(p)
  }

  /** Resolves once every decision under way here is answered (its copies made), or after `maxMs`. */
  async idle(maxMs: number): Promise<void> {
    let timer: TimerHandle | undefined
    const late = new Promise<void>((resolve) => (timer = this.#d.clock.setTimeout(resolve, maxMs)))
    await Promise.race([Promise.all([...this.#chains.values()]), late])
    this.#d.clock.clearTimeout(timer)
  }
}

/** The operation a DECIDE names, or undefined for an unknown kind (dropped). */
function opOf(m: Decide): CondOp | undefined {
  const value = Buffer.from(m.value)
  switch (m.kind) {
    case CondKind.ADD:
    case CondKind.REPLACE:
      return { kind: m.kind, value, ttlMs: m.ttlMs, flags: m.flags }
    case CondKind.CAS:
      return { kind: CondKind.CAS, value, ttlMs: m.ttlMs, flags: m.flags, unique: m.unique }
    case CondKind.APPEND:
    case CondKind.PREPEND:
      return { kind: m.kind, value }
    case CondKind.INCR:
    case CondKind.DECR:
      return { kind: m.kind, delta: m.delta }
    default:
      return undefined
  }
}
