/**
 * Where the local front ends (local/: the API socket, the memcache front end) meet the cluster:
 * the only file of cluster/ that local/ imports. The cluster implements it; a daemon with no peers
 * has none.
 */
import type { CondOp } from '../store/conditional.js'
import type { Decision } from './decisions.js'

export { DecisionError, type Decision } from './decisions.js'

export interface ClusterHooks {
  /**
   * Decides a conditional write at the key's decider (here or a peer: decisions.ts); the local
   * store holds the result when it resolves. Rejects with DecisionError when the outcome is unknown.
   */
  decide(key: string, op: CondOp): Promise<Decision>
  /**
   * Asks the peers for `key`; resolves the value (already stored locally) and its TTL, or undefined.
   * `timeoutMs` (default `lookupTimeoutMs`) is how long owners that have not answered are waited for.
   */
  lookup(key: string, timeoutMs?: number): Promise<{ value: Buffer; ttlMs: number; flags: number; version: bigint } | undefined>
  /**
   * A key was stored locally by an application; its copies are sent before this returns. A promise:
   * answer the write when it settles (every owner, and every holder of a copy it knows of, holds
   * the new entry, or its deadline passed).
   */
  stored(key: string): Promise<void> | undefined
  /**
   * A key was deleted locally by an application. A promise, as stored(): answer the delete when
   * it settles (the owners and the holders they know have dropped their copies, or its deadline).
   */
  deleted(key: string): Promise<void> | undefined
  /**
   * Sends now what the cluster queued for its peers in this turn (it goes at the turn's end
   * anyway, one datagram per peer). The front ends call it right before they write their
   * replies: a write's copies must be on their way before the application hears it is done,
   * or a read on another host right after could miss them.
   */
  flush(): void
  /** Members as shown by `statecast peers`. */
  peers(): unknown[]
}
