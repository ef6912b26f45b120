/**
 * What both store engines share: their options, counters and entry type, the one admission check,
 * and the interface the rest of the daemon uses (`SessionStore`). The engines: `CompactStore`
 * (compact-store.ts, the default) and `LruStore` (lru-store.ts, the lru-cache package).
 */
import type { Hlc, TombstoneCounters } from './versions.js'
import { defaults, pickConfig, type Config } from '../config/config.js'
import { DEFAULT_TENANT, tenantOfStoreKey } from '../../protocol/tenant-keys.js'
import { StatecastError, type CodeOf } from '../../protocol/errors.js'

export { NO_VERSION } from './versions.js'

/**
 * What one entry costs beyond its key and value bytes: the LRU's index slots, the Map entry, the
 * Buffer object and the key string's header. Measured with `npm run bench` (memory case).
 */
export const ENTRY_OVERHEAD_BYTES = 160

/** The config keys the store takes (unit and default: FIELDS in config/config.ts). */
const STORE_KEYS = ['maxBytes', 'maxValueBytes', 'defaultTtlMs', 'maxTtlMs', 'maxTombstones'] as const

export interface StoreOptions extends Pick<Config, (typeof STORE_KEYS)[number]> {
  /** Monotonic clock in ms; injected by tests so that TTLs pass without sleeping. */
  monotonicMs?: () => number
  /**
   * How long a deleted key's tombstone is kept, in ms. Default 60000; the daemon derives it from
   * its config (`tombstoneLifetimeMs` in versions.ts), so that no copy can outlive it.
   */
  tombstoneLifetimeMs: number
  /** The clock that versions every write (versions.ts); each store makes its own by default. */
  clock?: Hlc
  /**
   * Each tenant's share of maxBytes (protocol/tenant-keys.ts names a key's tenant), in bytes; the
   * default tenant is ''. A write evicts only entries of its own tenant, and a key of a tenant not
   * listed is refused. Default: the default tenant alone, with all of maxBytes.
   */
  tenantQuotas?: ReadonlyMap<string, number>
}

/**
 * The quotas a store keeps: the option, or the default tenant with all of maxBytes. Without the
 * option every key is the default tenant's, those starting with the marker byte included.
 */
export function quotasOf(o: StoreOptions): ReadonlyMap<string, number> {
  const q = o.tenantQuotas ?? new Map([[DEFAULT_TENANT, o.maxBytes]])
  let sum = 0
  for (const v of q.values()) sum += v
  if (sum > o.maxBytes) throw new TypeError(`tenantQuotas add up to ${sum} bytes, more than maxBytes (${o.maxBytes})`)
  return q
}

/**
 * The tenant of a key about to be stored with `size` bytes; throws StoreError TOO_LARGE when the
 * store has no share for it (not a tenant of this host) or the entry exceeds the tenant's share.
 */
export function tenantFor(quotas: ReadonlyMap<string, number>, key: string, size: number): string {
  const tenant = quotas.size === 1 && quotas.has(DEFAULT_TENANT) ? DEFAULT_TENANT : tenantOfStoreKey(key)
  const quota = tenant === undefined ? undefined : quotas.get(tenant)
  if (quota === undefined) throw new StoreError('TOO_LARGE', 'the key names no tenant of this host')
  if (size > quota) throw new StoreError('TOO_LARGE', `entry of ${size} bytes exceeds the tenant's ${quota} bytes`)
  return tenant!
}

/** One tenant's part of a store. */
export interface TenantUsage {
  entries: number
  bytes: number
  maxBytes: number
}

/** The config's defaults, for a store made without a config (tests, bench). */
export const STORE_DEFAULTS: StoreOptions = { ...pickConfig(defaults(), STORE_KEYS), tombstoneLifetimeMs: 60_000 }

export interface StoreCounters {
  hits: number
  misses: number
  sets: number
  deletes: number
  touches: number
  evictions: number
  expirations: number
}

export interface StoreStats extends StoreCounters, TombstoneCounters {
  entries: number
  bytes: number
  maxBytes: number
  /** Deleted keys remembered with the version of their delete. */
  tombstones: number
}

/**
 * A stored value with memcached's opaque client flags (0 for values stored through the API) and
 * its version (versions.ts): unique per write of the key, newer for every later write, so it can
 * serve as memcached's `cas` value. A TOUCH is a write: it gives the entry a new version.
 */
export interface StoreEntry {
  value: Buffer
  flags: number
  version: bigint
}

export class StoreError extends StatecastError<CodeOf<'StoreError'>> {
  constructor(code: CodeOf<'StoreError'>, message: string) {
    super(code, message)
    this.name = 'StoreError'
  }
}

/** The TTL an entry gets for a requested TTL: 0 means the default; longer than the cap is capped. */
export function effectiveTtl(o: StoreOptions, ttlMs: number): number {
  if (!Number.isFinite(ttlMs) || ttlMs < 0) throw new StoreError('BAD_TTL', `TTL must be a non-negative number of ms, got ${ttlMs}`)
  if (ttlMs === 0) return o.defaultTtlMs
  return Math.min(Math.ceil(ttlMs), o.maxTtlMs)
}

/** Checks a new entry against the store's limits (both engines); returns its TTL. Never partial. */
export function admit(o: StoreOptions, key: string, value: Buffer, ttlMs: number): number {
  if (value.length > o.maxValueBytes) throw new StoreError('TOO_LARGE', `value is ${value.length} bytes, at most ${o.maxValueBytes}`)
  const ttl = effectiveTtl(o, ttlMs)
  const size = key.length + value.length + ENTRY_OVERHEAD_BYTES
  if (size > o.maxBytes) throw new StoreError('TOO_LARGE', `entry of ${size} bytes exceeds the store's ${o.maxBytes} bytes`)
  return ttl
}

/**
 * What the daemon needs of a store; both engines implement it: `CompactStore` (the default:
 * slab-backed, about 100 bytes per entry beyond key and value) and `LruStore` (lru-cache, about 360).
 */
export interface SessionStore {
  readonly options: Readonly<StoreOptions>
  readonly counters: StoreCounters
  /** The TTL an entry gets for a requested TTL: 0 means the default; longer than the cap is capped. */
  effectiveTtl(ttlMs: number): number
  /** The stored entry (the store's own buffer: copy before yielding), or undefined. */
  get(key: string): StoreEntry | undefined
  /** Like get, without touching recency or counters (used to answer peers and list keys). */
  peek(key: string): StoreEntry | undefined
  /** Remaining TTL in ms (at least 1) of a live entry, or 0 when absent. */
  remainingTtl(key: string): number
  has(key: string): boolean
  /** Stores a copy of `value` under a new version. Throws StoreError TOO_LARGE or BAD_TTL; never stores part of it. */
  set(key: string, value: Buffer, ttlMs?: number, flags?: number): void
  /**
   * A peer's write (a copy, a fill, a handoff) at `version`: stored only when newer than the live
   * entry or tombstone held for the key (versions.ts, `newer`); false when refused as stale.
   * Throws StoreError like `set`.
   */
  setFromPeer(key: string, value: Buffer, ttlMs: number, flags: number, version: bigint): boolean
  /** Deletes the key under a new version, leaving a tombstone (also when absent). True when it was live. */
  delete(key: string): boolean
  /** A peer's delete at `version`: applied (tombstone kept) unless what is held is newer; false when refused. */
  deleteFromPeer(key: string, version: bigint): boolean
  /** The version of the key's live entry, else of its tombstone, else NO_VERSION. */
  version(key: string): bigint
  /** Gives a live entry a new TTL from now. False when absent. */
  touch(key: string, ttlMs: number): boolean
  /** Up to `limit` live keys starting with `prefix`, most recently used first. */
  keys(prefix?: string, limit?: number): string[]
  /** Every live entry with its remaining TTL in ms; the values are the store's own buffers. */
  entries(): Generator<[key: string, entry: StoreEntry, ttlMs: number]>
  /** Drops every entry (zero-filling each) and every tombstone. Returns how many entries there were. */
  flush(): number
  /** Drops every entry of one tenant (zero-filling each); tombstones stay. Returns how many there were. */
  flushTenant(tenant: string): number
  /** A tenant's entries, bytes and share; undefined for a tenant the store has no share for. */
  usage(tenant: string): TenantUsage | undefined
  /** Drops expired entries now instead of when next touched, so their secrets are wiped promptly; and expired tombstones. */
  purgeStale(): void
  /**
   * The newest version of a peer's write this store took in (NO_VERSION before the first): every
   * copy, fill or delete applied from a peer so far is at most this.
   */
  newestPeerVersion(): bigint
  /**
   * Drops (zero-filling each) every live entry whose version is below `version`, leaving no
   * tombstone: the entry is forgotten here, not deleted, so a copy of it from a peer is taken
   * again. Used when a host comes back from a partition (cluster.ts). Returns how many went.
   */
  forgetOlderThan(version: bigint): number
  readonly size: number
  readonly bytes: number
  stats(): StoreStats
}
