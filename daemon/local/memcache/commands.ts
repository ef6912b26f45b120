/**
 * The memcache commands, shared by the text, binary and meta protocols: each says what happened
 * as a neutral outcome (STORED, EXISTS, ...) and each protocol words it its own way. The
 * semantics follow memcached 1.6 (do_store_item, do_add_delta): cas on every storage command,
 * append/prepend keeping the old flags and expiry, incr/decr on a decimal value (padded in place
 * as memcached rewrites it), exptime rules of `ttlFor`.
 *
 * Every write goes through the write path all front ends share (session-ops.ts: set, delete,
 * touch, and add/replace/cas/append/prepend/incr/decr through store/conditional.ts), so a
 * memcache write does to the store and the cluster exactly what an API write does; a write's
 * promise settles when its copies let it. A command that needs the key's current value first
 * copies it here when another host may hold it, within the front end's share of remote lookups
 * (`maxRemoteLookups`). What the shared path has no operation for is composed here from it, in
 * one turn once the key is here: cas on append/prepend/delete/incr (binary and meta), incr's
 * initial value on a miss (binary, meta's N/J), and the new version (the cas unique) an answer
 * reports.
 */
import type { ClusterHooks } from '../../cluster/hooks.js'
import type { Log } from '../../host/log.js'
import { StoreError, type SessionStore } from '../../store/session-store.js'
import { setLongTimeout, type LongTimeout } from '../long-timeout.js'
import { CondKind, CondOutcome, DecisionError, SessionOps, type CondOp, type CondResult } from '../session-ops.js'
import { RELATIVE_LIMIT_S } from './numbers.js'

/** What a command may come to. The protocols word each: text STORED, binary status 0, meta HD. */
export type Outcome = 'STORED' | 'NOT_STORED' | 'EXISTS' | 'NOT_FOUND' | 'DELETED' | 'TOUCHED' | 'NON_NUMERIC' | 'TOO_LARGE'
/** A command's answer now, or once the cluster has answered. */
export type Result<T> = T | Promise<T>
export type StoreMode = 'set' | 'add' | 'replace' | 'append' | 'prepend'

/** A value as a get answers it: a copy (the caller wipes it once written), its flags, its version (the cas unique). */
export type Held = { value: Buffer; flags: number; version: bigint }
/** A read started ahead of its turn: `remote` settles when a remote lookup has copied the value here. */
export type Fetch = { key: string; remote?: Promise<void>; done?: boolean; found?: Held }

/** Counters of the commands, beside the connection counters (MemcacheCounters). */
export interface CommandCounters {
  getHits: number
  getMisses: number
  remoteHits: number
  errors: number
  /** Lookups, share: see MemcacheCounters. */
  remoteLookups: number
  lookupsWaiting: number
  lookupsQueued: number
  cmdTouch: number
  touchHits: number
  touchMisses: number
  cmdFlush: number
  deleteHits: number
  deleteMisses: number
  incrHits: number
  incrMisses: number
  decrHits: number
  decrMisses: number
  casHits: number
  casMisses: number
  casBadval: number
}

export interface CommandOptions {
  store: SessionStore
  cluster: () => ClusterHooks | undefined
  maxRemoteLookups: number
  /** How long a remote lookup waits for owners that have not answered (`memcacheLookupTimeoutMs`). */
  lookupTimeoutMs: number
  log: Log
  wallMs?: () => number
  counters: CommandCounters
}

export class MemcacheCommands {
  readonly maxValueBytes: number
  readonly #o: CommandOptions
  readonly #c: CommandCounters
  readonly #wallMs: () => number
  #flushTimer: LongTimeout | undefined
  /** Remote lookups waiting for the front end's share, in order. */
  #waiting: (() => void)[] = []
  /** The write path every front end shares; its fetches keep within this front end's lookup share. */
  readonly #ops: SessionOps

  constructor(o: CommandOptions) {
    this.#o = o
    this.#c = o.counters
    this.#wallMs = o.wallMs ?? Date.now
    this.maxValueBytes = o.store.options.maxValueBytes
    this.#ops = new SessionOps({ store: o.store, cluster: o.cluster, fetch: (key) => this.#lookup(key, () => false) })
  }

  get db(): SessionStore {
    return this.#o.store
  }

  wallMs(): number {
    return this.#wallMs()
  }

  /**
   * Runs one command. A store error becomes `fail`'s reply (each protocol words it); anything
   * else is a bug, logged (no key or value) and answered, so that no client request can stop the
   * daemon.
   */
  guard<R>(run: () => R | Promise<R>, fail: (err: StoreError | DecisionError | undefined) => R): R | Promise<R> {
    const onError = (err: unknown): R => {
      this.#c.errors++
      if (err instanceof StoreError || err instanceof DecisionError) return fail(err)
      this.#o.log.error({ err: (err as Error)?.name, code: (err as { code?: unknown })?.code }, 'memcache command failed')
      return fail(undefined)
    }
    try {
      const r = run()
      return r instanceof Promise ? r.catch(onError) : r
    } catch (err) {
      return onError(err)
    }
  }

  /** Sends what the cluster queued for its peers in this turn (hooks.ts: flush). */
  flushPeers(): void {
    this.#ops.flush()
  }

  /** TTL in ms for a memcached exptime, or -1 when the item is already expired. */
  ttlFor(exptime: number): number {
    // No expiry, within the store's cap (maxTtlMs).
    if (exptime === 0) return this.#o.store.options.maxTtlMs
    if (exptime < 0) return -1
    if (exptime <= RELATIVE_LIMIT_S) return exptime * 1000
    const ms = exptime * 1000 - this.#wallMs()
    return ms > 0 ? ms : -1
  }

  /** A key's remaining TTL in seconds as memcached reports it: -1 when it never expires (exptime 0). */
  ttlSeconds(key: string): number {
    const ms = this.#o.store.remainingTtl(key)
    if (ms <= 0) return -1
    // Stored with exptime 0: the store's cap; memcached says "no expiry".
    if (ms > this.#o.store.options.maxTtlMs - 1000) return -1
    return Math.ceil(ms / 1000)
  }

  /** Whether reading `key` needs a remote lookup (another host may hold it). */
  needsLookup(key: string): boolean {
    return this.#o.cluster() !== undefined && !this.#o.store.has(key)
  }

  /**
   * A remote lookup within the front end's share: started now when fewer than `maxRemoteLookups`
   * are in flight, else queued in order. `gone` says the asking connection closed meanwhile, so a
   * queued lookup nobody waits for is never sent.
   */
  #lookup(key: string, gone: () => boolean): Promise<Awaited<ReturnType<ClusterHooks['lookup']>>> {
    const c = this.#c
    const start = (): ReturnType<ClusterHooks['lookup']> => {
      const cluster = this.#o.cluster()
      if (!cluster || gone()) {
        this.#nextLookup()
        return Promise.resolve(undefined)
      }
      c.remoteLookups++
      const p = cluster.lookup(key, this.#o.lookupTimeoutMs)
      void p.then(
        () => this.#lookupDone(),
        () => this.#lookupDone(),
      )
      return p
    }
    if (c.remoteLookups < this.#o.maxRemoteLookups && this.#waiting.length === 0) return start()
    c.lookupsQueued++
    c.lookupsWaiting++
    return new Promise((resolve, reject) => this.#waiting.push(() => start().then(resolve, reject)))
  }

  #lookupDone(): void {
    this.#c.remoteLookups--
    this.#nextLookup()
  }

  #nextLookup(): void {
    while (this.#c.remoteLookups < this.#o.maxRemoteLookups) {
      const next = this.#waiting.shift()
      if (!next) return
      this.#c.lookupsWaiting--
      next()
    }
  }

  /** Starts a remote lookup for a key this host lacks; the value is read when its turn comes. */
  prefetch(key: string, gone: () => boolean = () => false): Fetch {
    const f: Fetch = { key }
    if (!this.needsLookup(key)) return f
    f.remote = this.#lookup(key, gone).then(
      (r) => {
        f.done = true
        if (r) {
          this.#c.remoteHits++
          // Our own copy: the lookup's buffer may be shared with other waiters (an API GET of the
          // same key), and ours is wiped once written.
          f.found = { value: Buffer.from(r.value), flags: r.flags, version: r.version }
        } else this.#c.getMisses++
      },
      () => {
        f.done = true
        this.#c.getMisses++
      },
    )
    return f
  }

  /** The value of a fetch whose turn came: the remote copy, or a copy of the local entry. */
  take(f: Fetch): Held | undefined {
    return f.remote ? f.found : this.localGet(f.key)
  }

  /** A copy of a local entry (the store may reuse its memory before the socket has sent it). */
  localGet(key: string): Held | undefined {
    const e = this.#o.store.get(key)
    if (!e) {
      this.#c.getMisses++
      return undefined
    }
    this.#c.getHits++
    return { value: Buffer.from(e.value), flags: e.flags, version: e.version }
  }

  /** Resolves once a key held by another host is copied here; undefined when there is no need. */
  #fetchFirst(key: string): Promise<void> | undefined {
    if (!this.needsLookup(key)) return undefined
    return this.#lookup(key, () => false).then(
      () => undefined,
      () => undefined,
    )
  }

  /** Runs `op` once the key's current value is here (fetched from another host if need be). */
  then<T>(key: string, op: () => Result<T>): Result<T> {
    const p = this.#fetchFirst(key)
    return p ? p.then(op) : op()
  }

  /** Stores through the shared write path. Resolves the new version (the cas unique). */
  write(key: string, value: Buffer, ttlMs: number, flags: number): Result<bigint> {
    const done = this.#ops.set(key, value, ttlMs, flags)
    const version = this.#o.store.version(key)
    return done ? done.then(() => version) : version
  }

  /** Deletes here and everywhere (another host may hold a copy). True when this host held it. */
  remove(key: string): Result<boolean> {
    return this.#ops.delete(key)
  }

  /**
   * set/add/replace/append/prepend, with memcached's cas: a `cas` given (text `cas`, a binary
   * request's non-zero cas, meta's C) stores only while the entry still has that version, for
   * every mode (memcached turns any storage command with a cas into a cas). Resolves the outcome
   * and, when stored, the new version.
   */
  store(
    mode: StoreMode,
    key: string,
    flags: number,
    exptime: number,
    data: Buffer,
    cas?: bigint,
  ): Result<{ outcome: Outcome; cas?: bigint }> {
    const ttlMs = this.ttlFor(exptime)
    const version = (): bigint | undefined => {
      const v = this.#o.store.version(key)
      return this.#o.store.has(key) ? v : undefined
    }
    if (mode === 'set' && cas === undefined) return after(this.#ops.set(key, data, ttlMs, flags), () => withCas('STORED', version()))
    let op: CondOp
    if (cas !== undefined && mode !== 'append' && mode !== 'prepend') op = { kind: CondKind.CAS, value: data, ttlMs, flags, unique: cas }
    else if (mode === 'add') op = { kind: CondKind.ADD, value: data, ttlMs, flags }
    else if (mode === 'replace') op = { kind: CondKind.REPLACE, value: data, ttlMs, flags }
    else op = { kind: mode === 'append' ? CondKind.APPEND : CondKind.PREPEND, value: data }
    const run = (): Result<{ outcome: Outcome; cas?: bigint }> => {
      // cas of an append/prepend: checked in the same turn as the write (the key is here now).
      if (cas !== undefined && (mode === 'append' || mode === 'prepend')) {
        const old = this.#o.store.peek(key)
        if (!old) return this.#casCount({ outcome: 'NOT_FOUND' })
        if (old.version !== cas) return this.#casCount({ outcome: 'EXISTS' })
      }
      const r = this.#ops.conditional(key, op)
      // The version right after the write, before a later command can change it.
      const v = r instanceof Promise ? version() : undefined
      return after(r, (x) => {
        const o = condOutcome(x)
        // Decided at a peer: the version it stored the write at (this host holds that copy).
        const out = o === 'STORED' ? withCas(o, x.version ?? v ?? version()) : { outcome: o }
        return cas !== undefined ? this.#casCount(out) : out
      })
    }
    return cas !== undefined && (mode === 'append' || mode === 'prepend') ? this.then(key, run) : run()
  }

  #casCount<T extends { outcome: Outcome }>(r: T): T {
    if (r.outcome === 'STORED') this.#c.casHits++
    else if (r.outcome === 'NOT_FOUND') this.#c.casMisses++
    else if (r.outcome === 'EXISTS') this.#c.casBadval++
    return r
  }

  /**
   * incr/decr as memcached: unsigned 64-bit, incr wraps, decr stops at 0. On a miss, `create`
   * stores its initial value (binary incr with an expiration other than 0xffffffff, meta's N).
   */
  delta(
    key: string,
    incr: boolean,
    delta: bigint,
    create?: { initial: bigint; exptime: number },
    cas?: bigint,
  ): Result<{ outcome: Outcome; value?: bigint; cas?: bigint }> {
    const c = this.#c
    const store = this.#o.store
    const count = (o: Outcome) => {
      if (o === 'STORED') incr ? c.incrHits++ : c.decrHits++
      else if (o === 'NOT_FOUND') incr ? c.incrMisses++ : c.decrMisses++
    }
    const run = (): Result<{ outcome: Outcome; value?: bigint; cas?: bigint }> => {
      const old = store.peek(key)
      if (!old && create) {
        const ttl = this.ttlFor(create.exptime)
        if (ttl < 0) return { outcome: 'NOT_STORED' }
        const r = this.#ops.conditional(key, {
          kind: CondKind.ADD,
          value: Buffer.from(String(create.initial), 'latin1'),
          ttlMs: ttl,
          flags: 0,
        })
        const v = store.version(key)
        return after(r, (x) =>
          x.outcome === CondOutcome.STORED
            ? { outcome: 'STORED' as Outcome, value: create.initial, cas: x.version ?? v }
            : { outcome: condOutcome(x) },
        )
      }
      if (old && cas !== undefined && old.version !== cas) return { outcome: 'EXISTS' }
      const r = this.#ops.conditional(key, { kind: incr ? CondKind.INCR : CondKind.DECR, delta })
      const v = store.version(key)
      return after(r, (x) => {
        const o = condOutcome(x)
        count(o)
        return o === 'STORED' ? { outcome: o, ...(x.number !== undefined ? { value: x.number } : {}), cas: x.version ?? v } : { outcome: o }
      })
    }
    // The key is fetched first when held elsewhere, so that the miss, cas and create checks see it.
    return this.then(key, run)
  }

  /** delete, with memcached's optional cas (binary, meta's C). */
  delete(key: string, cas?: bigint): Result<Outcome> {
    const c = this.#c
    const del = (): Result<Outcome> =>
      after(this.#ops.delete(key), (had): Outcome => {
        if (had) c.deleteHits++
        else c.deleteMisses++
        return had ? 'DELETED' : 'NOT_FOUND'
      })
    if (cas === undefined) return del()
    return this.then(key, () => {
      const old = this.#o.store.peek(key)
      if (!old) return del()
      return old.version === cas ? del() : 'EXISTS'
    })
  }

  /** touch: a new expiry for a live entry, here and on its copies. Resolves its flags and new version. */
  touch(key: string, exptime: number): Result<{ outcome: Outcome; flags?: number; cas?: bigint }> {
    const c = this.#c
    c.cmdTouch++
    const store = this.#o.store
    return this.then(key, () => {
      const old = store.peek(key)
      const flags = old?.flags ?? 0
      const r = this.#ops.touch(key, this.ttlFor(exptime))
      const v = store.has(key) ? store.version(key) : old?.version
      return after(r, (ok) => {
        if (ok) c.touchHits++
        else c.touchMisses++
        return ok ? { outcome: 'TOUCHED' as Outcome, flags, ...(v !== undefined ? { cas: v } : {}) } : { outcome: 'NOT_FOUND' as Outcome }
      })
    })
  }

  /** gat's touch of a key it just read (held here now, remote ones included); memcached's rules. */
  touchHeld(key: string, exptime: number): void {
    this.#c.cmdTouch++
    void this.#ops.touchHeld(key, this.ttlFor(exptime))
  }

  /** memcached's flush_all: this host's store, now or after `delay` (memcached's exptime rules). */
  flushAll(delay: number): void {
    this.#c.cmdFlush++
    this.#flushTimer?.cancel()
    this.#flushTimer = undefined
    const ms = delay > 0 ? this.ttlFor(delay) : -1
    if (ms <= 0) this.#o.store.flush()
    // Past 24.8 days setTimeout would fire at once: long-timeout.ts waits in steps.
    else this.#flushTimer = setLongTimeout(() => this.#o.store.flush(), ms)
  }

  close(): void {
    this.#flushTimer?.cancel()
  }
}

/** `f` of a value now or once it settles. */
export function after<T, U>(r: Result<T>, f: (v: T) => U): Result<U> {
  return r instanceof Promise ? r.then(f) : f(r)
}

function withCas(outcome: Outcome, cas: bigint | undefined): { outcome: Outcome; cas?: bigint } {
  return cas === undefined ? { outcome } : { outcome, cas }
}

/** The shared path's outcome in this front end's words. */
function condOutcome(r: CondResult): Outcome {
  switch (r.outcome) {
    case CondOutcome.STORED:
      return 'STORED'
    case CondOutcome.NOT_STORED:
      return 'NOT_STORED'
    case CondOutcome.NOT_FOUND:
      return 'NOT_FOUND'
    case CondOutcome.EXISTS:
      return 'EXISTS'
    case CondOutcome.NOT_NUMERIC:
      return 'NON_NUMERIC'
    default:
      return 'TOO_LARGE'
  }
}
