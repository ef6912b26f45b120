/**
 * The one write path of every front end (the API socket's handler.ts, the memcache front end, and
 * any later one): SET, DELETE, TOUCH and the conditional writes (add, replace, cas, append,
 * prepend, incr, decr) live here once, so the front ends only translate their protocol into these
 * calls and the outcomes back, and cannot diverge in what a write does to the store and the cluster.
 *
 * Every write is made in the store, then told to the cluster (`stored`, `deleted`: copies and
 * deletes to the hosts that may hold the key), and answers through `Done<T>`: a value at once, or a
 * promise when the cluster asks the answer to wait (hooks.ts). A front end must call `flush()`
 * right before it writes (or uncorks) its replies, so a write's datagrams leave before its client
 * hears it is done.
 *
 * TTLs are in ms (0 = the store's default; capped at maxTtlMs); a negative TTL is an already
 * expired write (memcached's past exptimes): it deletes the key, everywhere, and succeeds.
 *
 * Conditional writes read what the key holds first: when this host lacks the key, it is fetched
 * from the peers (`fetch`) before the decision, so that `add` of a key held elsewhere fails.
 * `propagate: false` (the API's NO_PROPAGATE flag) keeps a write on this host.
 *
 * Errors: a value or TTL beyond the store's limits throws StoreError (code TOO_LARGE or BAD_TTL),
 * synchronously, with nothing stored; the front end maps it to its error reply.
 */
import type { ClusterHooks } from '../cluster/hooks.js'
import { applyConditional, type CondOp, type CondResult } from '../store/conditional.js'
import type { SessionStore } from '../store/session-store.js'

export { CondKind, CondOutcome, type CondOp, type CondResult } from '../store/conditional.js'
export { DecisionError } from '../cluster/hooks.js'

/** An answer now, or once the cluster lets the write be answered. */
export type Done<T> = T | Promise<T>

export interface SessionOpsDeps {
  store: SessionStore
  /** The cluster, if this daemon has peers (a function: it may start after the front end). */
  cluster: () => ClusterHooks | undefined
  /**
   * Fetches a key this host lacks from the peers (it is stored here when found) before a
   * read-modify-write decides on it. Default: the cluster's lookup. The memcache front end passes
   * its own, which keeps within its share of the lookup table.
   */
  fetch?: (key: string) => Promise<unknown>
}

export interface WriteOptions {
  /** false: this host only, no copies or deletes to peers (default true). */
  propagate?: boolean
}

const nothing = (): undefined => undefined

export class SessionOps {
  readonly #store: SessionStore
  readonly #cluster: () => ClusterHooks | undefined
  readonly #fetch: ((key: string) => Promise<unknown>) | undefined

  constructor(deps: SessionOpsDeps) {
    this.#store = deps.store
    this.#cluster = deps.cluster
    this.#fetch = deps.fetch
  }

  /** Stores `value` under `key` (flags: memcached's client flags, 0 for the API). */
  set(key: string, value: Buffer, ttlMs: number, flags = 0, o?: WriteOptions): Done<void> {
    if (ttlMs < 0) {
      const removed = this.#remove(key, o)
      return removed instanceof Promise ? removed.then(nothing) : undefined
    }
    this.#store.set(key, value, ttlMs, flags)
    return this.#stored(key, o)
  }

  /** Deletes `key` here and on every host that may hold a copy. True when this host held it. */
  delete(key: string, o?: WriteOptions): Done<boolean> {
    return this.#remove(key, o)
  }

  /**
   * Gives `key` a new TTL from now, here and on the copies (fetched first when held elsewhere).
   * True when the key exists. A negative TTL deletes it (true when it existed).
   */
  touch(key: string, ttlMs: number, o?: WriteOptions): Done<boolean> {
    // Checked before any fetch, as a SET checks it: a bad TTL is the caller's error, not the key's.
    if (ttlMs >= 0) this.#store.effectiveTtl(ttlMs)
    return this.#then(key, o, () => this.touchHeld(key, ttlMs, o))
  }

  /** touch of a key the caller has just read here (gat): no fetch. */
  touchHeld(key: string, ttlMs: number, o?: WriteOptions): Done<boolean> {
    if (ttlMs < 0) return this.#remove(key, o)
    if (!this.#store.touch(key, ttlMs)) return false
    // A touch is a write (a new version): the copies get the new expiry too.
    const copied = this.#stored(key, o)
    return copied ? copied.then(() => true) : true
  }

  /**
   * add, replace, cas, append, prepend, incr, decr: decided on what the key holds, at the key's
   * one decider when this daemon has peers (cluster/decisions.ts), so that two hosts never both
   * win. Rejects with DecisionError (code OUTCOME_UNKNOWN) when the decider cannot be heard from:
   * the write may or may not have been made.
   */
  conditional(key: string, op: CondOp, o?: WriteOptions): Done<CondResult & { version?: bigint }> {
    if ('ttlMs' in op && op.ttlMs >= 0) this.#store.effectiveTtl(op.ttlMs)
    const cluster = this.#cluster()
    if (cluster && o?.propagate !== false) return cluster.decide(key, op)
    return this.#then(key, o, () => {
      const r = applyConditional(this.#store, key, op)
      if (r.wrote === 'delete') {
        const dropped = this.#deleted(key, o)
        if (dropped) return dropped.then(() => r)
      } else if (r.wrote === 'set') {
        const copied = this.#stored(key, o)
        if (copied) return copied.then(() => r)
      }
      return r
    })
  }

  /** Sends the datagrams this turn's writes queued; call it right before writing replies. */
  flush(): void {
    this.#cluster()?.flush()
  }

  #stored(key: string, o: WriteOptions | undefined): Promise<void> | undefined {
    if (o?.propagate === false) return undefined
    return this.#cluster()?.stored(key)
  }

  #deleted(key: string, o: WriteOptions | undefined): Promise<void> | undefined {
    if (o?.propagate === false) return undefined
    return this.#cluster()?.deleted(key)
  }

  #remove(key: string, o: WriteOptions | undefined): Done<boolean> {
    const had = this.#store.delete(key)
    // Everywhere even when this host had no copy: another host may.
    const dropped = this.#deleted(key, o)
    return dropped ? dropped.then(() => had) : had
  }

  /** Runs `op` once a key held only elsewhere is copied here (no wait when held, or alone). */
  #then<T>(key: string, o: WriteOptions | undefined, op: () => Done<T>): Done<T> {
    const cluster = this.#cluster()
    if (!cluster || o?.propagate === false || this.#store.has(key)) return op()
    const fetch = this.#fetch ?? ((k: string) => cluster.lookup(k))
    return fetch(key).then(nothing, nothing).then(op)
  }
}
