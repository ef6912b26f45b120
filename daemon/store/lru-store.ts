/**
 * The lru-cache store engine (`storeEngine = "lru-cache"`): an LRU bounded by bytes, with a TTL per
 * entry. The default engine is `CompactStore`; both implement `SessionStore` (session-store.ts).
 *
 * Values are session secrets. The store keeps its own copy of every value (callers hand in views
 * into socket buffers), and zero-fills a value the moment the store lets go of it: evicted,
 * expired, overwritten, deleted or flushed. Readers must copy what they return before yielding.
 */
import { LRUCache } from 'lru-cache'
import { Hlc, NO_VERSION, Tombstones, peerWins } from './versions.js'
import {
  ENTRY_OVERHEAD_BYTES,
  STORE_DEFAULTS,
  StoreError,
  admit,
  effectiveTtl,
  quotasOf,
  tenantFor,
  type StoreCounters,
  type StoreEntry,
  type StoreOptions,
  type StoreStats,
  type SessionStore,
  type TenantUsage,
} from './session-store.js'
import { tenantOfStoreKey } from '../../protocol/tenant-keys.js'

export class LruStore implements SessionStore {
  readonly options: Readonly<StoreOptions>
  readonly counters: StoreCounters = { hits: 0, misses: 0, sets: 0, deletes: 0, touches: 0, evictions: 0, expirations: 0 }
  /** One LRU per tenant, bounded by the tenant's share, so a write evicts only its own tenant's entries. */
  readonly #lrus = new Map<string, LRUCache<string, StoreEntry>>()
  readonly #quotas: ReadonlyMap<string, number>
  /** Without tenants, the one LRU that holds every key (those starting with the marker too). */
  readonly #single: LRUCache<string, StoreEntry> | undefined
  readonly #clock: Hlc
  readonly #tombstones: Tombstones

  constructor(options: Partial<StoreOptions> = {}) {
    const o = { ...STORE_DEFAULTS, ...options }
    this.options = o
    this.#clock = o.clock ?? new Hlc()
    this.#tombstones = new Tombstones({
      lifetimeMs: o.tombstoneLifetimeMs,
      max: o.maxTombstones,
      monotonicMs: o.monotonicMs ?? (() => performance.now()),
      tenants: o.tenantQuotas?.keys() ?? [],
    })
    const perf = o.monotonicMs ? { now: o.monotonicMs } : undefined
    this.#quotas = quotasOf(o)
    // A tenant with no share holds nothing (lru-cache needs a positive bound): its writes are refused.
    for (const [tenant, quota] of this.#quotas)
      if (quota > 0)
        this.#lrus.set(
          tenant,
          new LRUCache<string, StoreEntry>({
            maxSize: quota,
            sizeCalculation: (entry, key) => key.length + entry.value.length + ENTRY_OVERHEAD_BYTES,
            ttl: o.defaultTtlMs,
            // TTLs are absolute: reading a session does not extend its life.
            updateAgeOnGet: false,
            allowStale: false,
            // Read the clock on every check: no cached "now" that a timer refreshes (injected clocks
            // would see stale times, and a secret would outlive its TTL by up to the resolution).
            ttlResolution: 0,
            ...(perf ? { perf } : {}),
            dispose: (entry, key, reason) => {
              entry.value.fill(0)
              if (reason === 'evict') {
                this.counters.evictions++
                this.#tombstones.evicted(key, entry.version)
              } else if (reason === 'expire') this.counters.expirations++
            },
          }),
        )
    this.#single = o.tenantQuotas === undefined ? this.#lrus.get('') : undefined
  }

  /** The LRU of the key's tenant, or undefined when the store has no share for it. */
  #of(key: string): LRUCache<string, StoreEntry> | undefined {
    if (this.#single) return this.#single
    const tenant = tenantOfStoreKey(key)
    return tenant === undefined ? undefined : this.#lrus.get(tenant)
  }

  /** The TTL an entry gets for a requested TTL: 0 means the default; longer than the cap is capped. */
  effectiveTtl(ttlMs: number): number {
    return effectiveTtl(this.options, ttlMs)
  }

  /** The stored entry (the store's own buffer: copy before yielding), or undefined. */
  get(key: string): StoreEntry | undefined {
    const e = this.#of(key)?.get(key)
    if (e === undefined) this.counters.misses++
    else this.counters.hits++
    return e
  }

  /** Like get, without touching recency or counters (used to answer peers and list keys). */
  peek(key: string): StoreEntry | undefined {
    return this.#of(key)?.peek(key)
  }

  /** Remaining TTL in ms (at least 1) of a live entry, or 0 when absent. */
  remainingTtl(key: string): number {
    const r = this.#of(key)?.getRemainingTTL(key) ?? 0
    if (r === Infinity) return this.options.maxTtlMs
    return r > 0 ? Math.ceil(r) : 0
  }

  has(key: string): boolean {
    return this.#of(key)?.has(key) ?? false
  }

  /** Stores a copy of `value` under a new version. Throws StoreError TOO_LARGE or BAD_TTL; never stores part of it. */
  set(key: string, value: Buffer, ttlMs = 0, flags = 0): void {
    const ttl = admit(this.options, key, value, ttlMs)
    this.#put(key, value, ttl, flags, this.#clock.next())
  }

  /**
   * A peer's write (a copy, a fill, a handoff) at `version`: stored only when newer than the live
   * entry or tombstone held for the key (versions.ts, `newer`); false when refused as stale.
   * Throws StoreError like `set`.
   */
  setFromPeer(key: string, value: Buffer, ttlMs: number, flags: number, version: bigint): boolean {
    const ttl = admit(this.options, key, value, ttlMs)
    if (!this.#tombstones.admits(version)) return false
    if (!peerWins(this.#tombstones, key, version, value, this.peek(key))) {
      this.#tombstones.counters.staleWrites++
      return false
    }
    this.#put(key, value, ttl, flags, version)
    this.#clock.observe(version)
    return true
  }

  #put(key: string, value: Buffer, ttl: number, flags: number, version: bigint): void {
    const size = key.length + value.length + ENTRY_OVERHEAD_BYTES
    tenantFor(this.#quotas, key, size)
    const lru = this.#of(key)
    if (!lru) throw new StoreError('TOO_LARGE', `entry of ${size} bytes exceeds the tenant's 0 bytes`)
    const copy = Buffer.allocUnsafe(value.length)
    value.copy(copy)
    lru.set(key, { value: copy, flags, version }, { ttl })
    this.#tombstones.remove(key)
    this.counters.sets++
  }

  /** Deletes the key under a new version, leaving a tombstone (also when absent). True when it was live. */
  delete(key: string): boolean {
    const had = this.#of(key)?.delete(key) ?? false
    this.#tombstones.add(key, this.#clock.next(), had)
    if (had) this.counters.deletes++
    return had
  }

  /** A peer's delete at `version`: applied (tombstone kept) unless what is held is newer; false when refused. */
  deleteFromPeer(key: string, version: bigint): boolean {
    if (!this.#tombstones.admits(version)) return false
    if (!peerWins(this.#tombstones, key, version, undefined, this.peek(key))) {
      this.#tombstones.counters.staleWrites++
      return false
    }
    const had = this.#of(key)?.delete(key) ?? false
    if (had) this.counters.deletes++
    this.#tombstones.add(key, version, had)
    this.#clock.observe(version)
    return true
  }

  /** The version of the key's live entry, else of its tombstone, else NO_VERSION. */
  version(key: string): bigint {
    return this.peek(key)?.version ?? this.#tombstones.get(key) ?? NO_VERSION
  }

  /** Gives a live entry a new TTL from now. False when absent. */
  touch(key: string, ttlMs: number): boolean {
    const ttl = this.effectiveTtl(ttlMs)
    const lru = this.#of(key)
    const v = lru?.peek(key)
    if (v === undefined) return false
    // Re-setting the same entry keeps the value (no dispose: lru-cache skips it for the same value).
    v.version = this.#clock.next()
    lru!.set(key, v, { ttl })
    this.counters.touches++
    return true
  }

  /** Up to `limit` live keys starting with `prefix`, most recently used first. */
  keys(prefix = '', limit = Infinity): string[] {
    const out: string[] = []
    if (limit <= 0) return out
    // Tenant by tenant, each most recently used first.
    for (const lru of this.#lrus.values()) {
      for (const k of lru.keys()) {
        if (k.startsWith(prefix) && lru.has(k)) {
          out.push(k)
          if (out.length >= limit) return out
        }
      }
    }
    return out
  }

  /** Every live entry with its remaining TTL; the values are the store's own buffers. */
  *entries(): Generator<[key: string, entry: StoreEntry, ttlMs: number]> {
    for (const k of [...this.#lrus.values()].flatMap((lru) => [...lru.keys()])) {
      const v = this.peek(k)
      const ttl = this.remainingTtl(k)
      if (v !== undefined && ttl > 0) yield [k, v, ttl]
    }
  }

  /** Drops every entry (zero-filling each) and every tombstone. Returns how many entries there were. */
  flush(): number {
    const n = this.size
    for (const lru of this.#lrus.values()) lru.clear()
    this.#tombstones.clear()
    return n
  }

  /** Drops every entry of one tenant (zero-filling each); tombstones stay. Returns how many there were. */
  flushTenant(tenant: string): number {
    const lru = this.#lrus.get(tenant)
    const n = lru?.size ?? 0
    lru?.clear()
    return n
  }

  /** A tenant's entries, bytes and share; undefined for a tenant the store has no share for. */
  usage(tenant: string): TenantUsage | undefined {
    const quota = this.#quotas.get(tenant)
    if (quota === undefined) return undefined
    const lru = this.#lrus.get(tenant)
    return { entries: lru?.size ?? 0, bytes: lru?.calculatedSize ?? 0, maxBytes: quota }
  }

  /** Drops expired entries now instead of when next touched, so their secrets are wiped promptly; and expired tombstones. */
  purgeStale(): void {
    for (const lru of this.#lrus.values()) lru.purgeStale()
    this.#tombstones.purge()
  }

  newestPeerVersion(): bigint {
    return this.#clock.observed
  }

  forgetOlderThan(version: bigint): number {
    let n = 0
    for (const lru of this.#lrus.values()) {
      // Collected first: deleting while lru-cache iterates is not safe.
      const old: string[] = []
      for (const [k, e] of lru.entries()) if (e.version < version) old.push(k)
      for (const k of old) if (lru.delete(k)) n++
    }
    return n
  }

  get size(): number {
    let n = 0
    for (const lru of this.#lrus.values()) n += lru.size
    return n
  }

  get bytes(): number {
    let n = 0
    for (const lru of this.#lrus.values()) n += lru.calculatedSize
    return n
  }

  stats(): StoreStats {
    return {
      ...this.counters,
      ...this.#tombstones.counters,
      entries: this.size,
      bytes: this.bytes,
      maxBytes: this.options.maxBytes,
      tombstones: this.#tombstones.size,
    }
  }
}
