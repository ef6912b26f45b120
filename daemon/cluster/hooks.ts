/**
 * Where the local front ends (local/: the API socket, the memcache front end) meet the cluster:
 * the only file of cluster/ that local/ imports. The cluster implements it; a daemon with no peers
 * has none.
 */
export interface ClusterHooks {
  /** Asks the peers for `key`; resolves the value (already stored locally) and its TTL, or undefined. */
  lookup(key: string): Promise<{ value: Buffer; ttlMs: number; flags: number; version: bigint } | undefined>
  /** A key was stored locally by an application. */
  stored(key: string): void
  /** A key was deleted locally by an application. */
  deleted(key: string): void
  /** Members as shown by `statecast peers`. */
  peers(): unknown[]
}
