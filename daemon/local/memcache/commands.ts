/**
 * The memcache commands, shared by the text, binary and meta protocols: each says what happened
 * as a neutral outcome (STORED, EXISTS, ...) and each protocol words it its own way. The
 * semantics follow memcached 1.6 (do_store_item, do_add_delta): cas on every storage command,
 * append/prepend keeping the old flags and expiry, incr/decr on a decimal value (padded in place
 * as memcached rewrites it), exptime rules of `ttlFor`.
 *
 * A command that needs the key's current value (add, cas, replace, append, prepend, incr, touch)
 * first copies it here when another host may hold it (a remote lookup within the front end's
 * share, `maxRemoteLookups`), then decides. Writes go through the store and the cluster's
 * `stored`/`deleted` hooks, so every write kind replicates like an API SET; a write's promise
 * settles when its copies are acknowledged.
 */
import type { ClusterHooks } from '../../cluster/hooks.js'
import type { Log } from '../../host/log.js'
import { StoreError, type SessionStore } from '../../store/session-store.js'
import { RELATIVE_LIMIT_S, numericValue } from './numbers.js'

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
  log: Log
  now?: () => number
  counters: CommandCounters
}

export class MemcacheCommands {
  readonly maxValueBytes: number
  readonly #o: CommandOptions
  readonly #c: CommandCounters
  readonly #now: () => number
  #flushTimer: NodeJS.Timeout | undefined
  /** Remote lookups waiting for the front end's share, in order. */
  #waiting: (() => void)[] = []

  constructor(o: CommandOptions) {
    this.#o = o
    this.#c = o.counters
    this.#now = o.now ?? Date.now
    this.maxValueBytes = o.store.options.maxValueBytes
  }

  get db(): SessionStore {
    return this.#o.store
  }

  now(): number {
    return this.#now()
  }

  /**
   * Runs one command. A store error becomes `fail`'s reply (each protocol words it); anything
   * else is a bug, logged (no key or value) and answered, so that no client request can stop the
   * daemon.
   */
  guard<R>(run: () => R | Promise<R>, fail: (err: StoreError | undefined) => R): R | Promise<R> {
    const onError = (err: unknown): R => {
      this.#c.errors++
      if (err instanceof StoreError) return fail(err)
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
    this.#o.cluster()?.flush()
  }

  /** TTL in ms for a memcached exptime, or -1 when the item is already expired. */
  ttlFor(exptime: number): number {
    // No expiry, within the store's cap (maxTtlMs).
    if (exptime === 0) return this.#o.store.options.maxTtlMs
    if (exptime < 0) return -1
    if (exptime <= RELATIVE_LIMIT_S) return exptime * 1000
    const ms = exptime * 1000 - this.#now()
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
      const p = cluster.lookup(key)
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

  /** Stores locally and tells the cluster, like an API SET (so every write kind replicates). Resolves the new version. */
  write(key: string, value: Buffer, ttlMs: number, flags: number): Result<bigint> {
    const store = this.#o.store
    store.set(key, value, ttlMs, flags)
    const version = store.version(key)
    const copied = this.#o.cluster()?.stored(key)
    return copied ? copied.then(() => version) : version
  }

  /** Deletes here and everywhere (another host may hold a copy). */
  remove(key: string): boolean {
    const had = this.#o.store.delete(key)
    this.#o.cluster()?.deleted(key)
    return had
  }

  /**
   * set/add/replace/append/prepend, with memcached's cas: a `cas` given (text `cas`, a binary
   * request's non-zero cas, meta's C) stores only while the entry still has that version, for
   * every mode. Resolves the outcome and, when stored, the new version.
   */
  store(mode: StoreMode, key: string, flags: number, exptime: number, data: Buffer, cas?: bigint): Result<{ outcome: Outcome; cas?: bigint }> {
    const store = this.#o.store
    const set = (): Result<{ outcome: Outcome; cas?: bigint }> => {
      const ttl = this.ttlFor(exptime)
      if (ttl < 0) {
        // memcached accepts an already-expired item: the key reads as absent, everywhere.
        this.remove(key)
        return { outcome: 'STORED' }
      }
      return after(this.write(key, data, ttl, flags), (v) => ({ outcome: 'STORED' as Outcome, cas: v }))
    }
    if (mode === 'set' && cas === undefined) return set()
    return this.then(key, () => {
      const old = store.peek(key)
      if (cas !== undefined) {
        if (!old) {
          this.#c.casMisses++
          return { outcome: 'NOT_FOUND' as Outcome }
        }
        // Every write, local or from a peer, gives the entry a new version.
        if (old.version !== cas) {
          this.#c.casBadval++
          return { outcome: 'EXISTS' as Outcome }
        }
        this.#c.casHits++
      }
      if (mode === 'set') return set()
      if (mode === 'add') return old && cas === undefined ? { outcome: 'NOT_STORED' as Outcome } : set()
      if (mode === 'replace') return old ? set() : { outcome: 'NOT_STORED' as Outcome }
      // append/prepend keep the old flags and expiry, as memcached does.
      if (!old) return { outcome: 'NOT_STORED' as Outcome }
      if (old.value.length + data.length > this.maxValueBytes) return { outcome: 'TOO_LARGE' as Outcome }
      const joined = Buffer.concat(mode === 'append' ? [old.value, data] : [data, old.value])
      try {
        return after(this.write(key, joined, store.remainingTtl(key), old.flags), (v) => ({ outcome: 'STORED' as Outcome, cas: v }))
      } finally {
        joined.fill(0)
      }
    })
  }

  /**
   * incr/decr as memcached: unsigned 64-bit, incr wraps, decr stops at 0. On a miss, `create`
   * stores its initial value (binary incr with an expiration other than 0xffffffff, meta's N).
   */
  delta(key: string, incr: boolean, delta: bigint, create?: { initial: bigint; exptime: number }, cas?: bigint): Result<{ outcome: Outcome; value?: bigint; cas?: bigint }> {
    const store = this.#o.store
    const c = this.#c
    return this.then(key, () => {
      const old = store.peek(key)
      if (!old) {
        if (!create) {
          if (incr) c.incrMisses++
          else c.decrMisses++
          return { outcome: 'NOT_FOUND' as Outcome }
        }
        const ttl = this.ttlFor(create.exptime)
        if (ttl < 0) return { outcome: 'NOT_STORED' as Outcome }
        const value = Buffer.from(String(create.initial), 'latin1')
        return after(this.write(key, value, ttl, 0), (v) => ({ outcome: 'STORED' as Outcome, value: create.initial, cas: v }))
      }
      if (cas !== undefined && old.version !== cas) return { outcome: 'EXISTS' as Outcome }
      const n = numericValue(old.value)
      if (n === undefined) return { outcome: 'NON_NUMERIC' as Outcome }
      if (incr) c.incrHits++
      else c.decrHits++
      const next = incr ? BigInt.asUintN(64, n + delta) : n < delta ? 0n : n - delta
      // memcached rewrites a number in place when it fits, padding it with spaces to the old length.
      const value = Buffer.from(String(next).padEnd(old.value.length, ' '), 'latin1')
      // The reply does not wait for the copies, as before: an incr answers its number at once.
      const v = this.write(key, value, store.remainingTtl(key), old.flags)
      return { outcome: 'STORED' as Outcome, value: next, ...(typeof v === 'bigint' ? { cas: v } : { cas: store.version(key) }) }
    })
  }

  /** delete, with memcached's optional cas (binary, meta's C). */
  delete(key: string, cas?: bigint): Result<Outcome> {
    const c = this.#c
    const del = (): Outcome => {
      if (this.remove(key)) {
        c.deleteHits++
        return 'DELETED'
      }
      c.deleteMisses++
      return 'NOT_FOUND'
    }
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
    return this.then(key, () => {
      const store = this.#o.store
      const ttl = this.ttlFor(exptime)
      const old = store.peek(key)
      if (!old) {
        c.touchMisses++
        return { outcome: 'NOT_FOUND' as Outcome }
      }
      c.touchHits++
      if (ttl < 0) {
        this.remove(key)
        return { outcome: 'TOUCHED' as Outcome, flags: old.flags, cas: old.version }
      }
      const flags = old.flags
      if (!store.touch(key, ttl)) return { outcome: 'NOT_FOUND' as Outcome }
      // The copies on other hosts get the new expiry too.
      this.#o.cluster()?.stored(key)
      return { outcome: 'TOUCHED' as Outcome, flags, cas: store.version(key) }
    })
  }

  /** gat's touch of a key it just read (held here now, remote ones included); memcached's rules. */
  touchHeld(key: string, exptime: number): void {
    this.#c.cmdTouch++
    const ttl = this.ttlFor(exptime)
    if (ttl < 0) this.remove(key)
    else if (this.#o.store.touch(key, ttl)) this.#o.cluster()?.stored(key)
  }

  /** memcached's flush_all: this host's store, now or after `delay` (memcached's exptime rules). */
  flushAll(delay: number): void {
    this.#c.cmdFlush++
    clearTimeout(this.#flushTimer)
    this.#flushTimer = undefined
    const ms = delay > 0 ? this.ttlFor(delay) : -1
    if (ms <= 0) this.#o.store.flush()
    else {
      this.#flushTimer = setTimeout(() => this.#o.store.flush(), ms)
      this.#flushTimer.unref()
    }
  }

  close(): void {
    clearTimeout(this.#flushTimer)
  }
}

/** `f` of a value now or once it settles. */
export function after<T, U>(r: Result<T>, f: (v: T) => U): Result<U> {
  return r instanceof Promise ? r.then(f) : f(r)
}
