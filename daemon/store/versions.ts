/**
 * Versions of stored sessions, and tombstones of deleted ones.
 *
 * Every write gets a version from a hybrid logical clock (HLC), 64 bits:
 *
 *    63                           16 15        8 7          0
 *   +-------------------------------+-----------+------------+
 *   | wall clock, Unix ms (48 bits) | logical   | tiebreak   |
 *   +-------------------------------+-----------+------------+
 *
 * The wall part follows the host's clock (Date.now), so versions made after a restart are newer
 * than those made before it as long as the wall clock did not go back. The logical part orders
 * writes within one ms, and events that follow a peer's version that is ahead of our clock: on
 * every version received from a peer the clock moves past it, so a write here is always newer
 * than any write this host has seen. When the logical part overflows (256 writes in one ms) the
 * wall part is borrowed from: the clock runs ahead of the wall clock by a few ms under bursts,
 * and falls back in step when the burst ends.
 *
 * The tiebreak byte is random per daemon start, so two daemons writing the same key in the same
 * ms with the same logical part make equal versions only 1 time in 256. For that case the rule
 * still has one answer on every host (`newer` below): equal versions with different values are
 * ordered by their value bytes, and a delete wins over a value. Every host that sees both writes
 * keeps the same one.
 *
 * A write from a peer (copy, fill, handoff) is applied only when its version is newer than what
 * the store holds for the key: a live entry or a tombstone. A tombstone (key -> version of the
 * delete) is kept for `lifetimeMs`, derived from the config (see `tombstoneLifetimeMs`), and the
 * number of tombstones is bounded; see `Tombstones` for what happens when the bound is hit.
 */
import { MAX_TENANT_NAME_BYTES, TENANT_MARKER, tenantOfStoreKey } from '../../protocol/tenant-keys.js'
import { randomBytes } from 'node:crypto'
import type { Config } from '../config/config.js'
import { BoundedMap } from '../../protocol/bounded.js'
import { VERSION_MAX } from '../../protocol/wire/constants.js'

/** Bits of the logical counter and of the tiebreak, below the 48-bit wall clock. */
const LOGICAL_BITS = 8
const TIEBREAK_BITS = 8
const LOW_BITS = LOGICAL_BITS + TIEBREAK_BITS
const LOGICAL_MAX = (1 << LOGICAL_BITS) - 1
const WALL_MAX = 2 ** 48 - 1

/** A version older than every version a clock makes: what the store holds for an unknown key. */
export const NO_VERSION = 0n

/** Splits a version into its wall ms and logical counter (the tiebreak is dropped). */
function parts(v: bigint): [wall: number, logical: number] {
  return [Number(v >> BigInt(LOW_BITS)), Number((v >> BigInt(TIEBREAK_BITS)) & BigInt(LOGICAL_MAX))]
}

export class Hlc {
  readonly #wallMs: () => number
  readonly #tiebreak: number
  #wall = 0
  #logical = 0
  /** `#wall` shifted into place, made once per ms rather than once per write. */
  #wallBits = 0n
  #wallBitsOf = -1
  #observed = NO_VERSION

  /**
   * `wallMs` is the wall clock in Unix ms (Date.now by default; injected by tests). `tiebreak`
   * (0..255) is random by default.
   */
  constructor(wallMs: () => number = Date.now, tiebreak = randomBytes(1)[0]!) {
    if (!(Number.isInteger(tiebreak) && tiebreak >= 0 && tiebreak < 1 << TIEBREAK_BITS))
      throw new RangeError(`tiebreak must be an integer 0..255, got ${tiebreak}`)
    this.#wallMs = wallMs
    this.#tiebreak = tiebreak
  }

  /** A new version, newer than every version this clock made or observed. */
  next(): bigint {
    const wall = Math.min(WALL_MAX, Math.floor(this.#wallMs()))
    if (wall > this.#wall) {
      this.#wall = wall
      this.#logical = 0
    } else this.#tick()
    return this.#encode()
  }

  /**
   * The version of a peer's write that was applied here: later versions made here will be newer
   * than it. Only applied writes are observed (a refused one must not move the clock), and a
   * version outside `validVersion` is ignored: one forged far-future version would otherwise pin
   * every later write here at the top of the range.
   */
  observe(v: bigint): void {
    if (!validVersion(v)) return
    if (v > this.#observed) this.#observed = v
    const [wall, logical] = parts(v)
    if (wall > this.#wall || (wall === this.#wall && logical > this.#logical)) {
      this.#wall = wall
      this.#logical = logical
    }
  }

  /** The newest peer version observed (NO_VERSION before the first): every copy taken in so far is at most this. */
  get observed(): bigint {
    return this.#observed
  }

  #tick(): void {
    if (this.#logical < LOGICAL_MAX) this.#logical++
    else if (this.#wall < WALL_MAX) {
      this.#wall++
      this.#logical = 0
    }
    // At the very top (year 10889) the clock saturates rather than wrap past 64 bits.
  }

  #encode(): bigint {
    if (this.#wallBitsOf !== this.#wall) {
      this.#wallBits = BigInt(this.#wall) << BigInt(LOW_BITS)
      this.#wallBitsOf = this.#wall
    }
    return this.#wallBits | BigInt((this.#logical << TIEBREAK_BITS) | this.#tiebreak)
  }
}

/** Largest value a version's 64 bits hold. */
export { VERSION_MAX }

/**
 * Whether `v` can be a version made by a clock: a u64 whose wall part is below the top of its
 * 48 bits (a clock saturates there, so only a forgery or corruption reaches it).
 */
export function validVersion(v: bigint): boolean {
  return typeof v === 'bigint' && v >= 0n && v <= VERSION_MAX && v >> BigInt(LOW_BITS) < BigInt(WALL_MAX)
}

/** The oldest version a clock makes at wall-clock `ms` (Unix ms): every version made later on that clock is above it. */
export function versionAtWallMs(ms: number): bigint {
  return BigInt(Math.min(WALL_MAX, Math.max(0, Math.floor(ms)))) << BigInt(LOW_BITS)
}

/** The wall-clock part of a version, in Unix ms (for people and logs). */
export function versionWallMs(v: bigint): number {
  return parts(v)[0]
}

/**
 * Whether a peer's write (`version`, `value`; undefined value: a delete) beats what is held
 * (`heldVersion`, `heldValue`; undefined: a tombstone or nothing). Newer versions win; for equal
 * versions, a delete beats a value and otherwise the larger value bytes win, so every host picks
 * the same one. An identical write does not beat itself.
 */
export function newer(version: bigint, value: Buffer | undefined, heldVersion: bigint, heldValue: Buffer | undefined): boolean {
  if (version !== heldVersion) return version > heldVersion
  if (value === undefined) return heldValue !== undefined
  if (heldValue === undefined) return false
  return Buffer.compare(value, heldValue) > 0
}

/** Longest backoff between two tries of a copy, in ms (replication/outbox.ts uses it). */
export const MAX_COPY_BACKOFF_MS = 2000

/**
 * How long after its first send a copy can still be sent again, in ms: the sum of its waits for
 * an ACK (`ackTimeoutMs` doubling, at most MAX_COPY_BACKOFF_MS each) over the first try and every
 * retry.
 */
export function copyRetrySpanMs(ackTimeoutMs: number, retries: number): number {
  let span = 0
  for (let i = 0; i <= retries; i++) span += Math.min(ackTimeoutMs * 2 ** i, MAX_COPY_BACKOFF_MS)
  return span
}

/**
 * How long a tombstone must live so that no copy of the deleted value can still arrive, in ms.
 *
 * A datagram is accepted while its send time is within `replayWindowMs` of the receiver's clock.
 * A copy that could bring the value back was sent before the delete reached its sender; its
 * sender may have kept retrying it for up to the retry span after the delete was made (it holds
 * the value until the INVALIDATE arrives); and the sender's clock may run ahead of ours by up to
 * the replay window (a larger skew makes every datagram stale). So a copy that the transport
 * still accepts was sent at most replay window + retry span after the delete, and is accepted at
 * most one replay window (plus skew, up to another) after that.
 */
export function tombstoneLifetimeMs(o: Pick<Config, 'replayWindowMs' | 'replicationAckTimeoutMs' | 'replicationRetries'>): number {
  return 2 * o.replayWindowMs + copyRetrySpanMs(o.replicationAckTimeoutMs, o.replicationRetries)
}

export interface TombstoneCounters {
  /** Tombstones dropped because the count bound was hit before their lifetime ended. */
  tombstonesEvictedEarly: number
  /**
   * Tombstones of deletes of keys this host held nothing of, dropped early because that table was
   * full (a flood of deletes of unknown keys): no floor raised (see `Tombstones`).
   */
  unheldTombstonesDropped: number
  /** Peer writes refused: not newer than the entry or tombstone held, or below the floor. */
  staleWrites: number
  /** Peer writes refused because their version is out of range (`validVersion`). */
  badVersions: number
  /** Entries evicted early (LRU, before their TTL) whose version raised their bucket's floor. */
  evictionsFloored: number
}

/**
 * Floors are kept per tenant and, within a tenant, per bucket of its keys, not one for the store:
 * a raise refuses older writes of the keys of one bucket of one tenant (1 in FLOOR_BUCKETS of its
 * keys), so a flood of early evictions must cover every bucket of a tenant before every fill of
 * that tenant is refused, and never touches another tenant's. 2^16 buckets: 1 MiB per tenant of
 * the store, allocated on the tenant's first raise.
 */
export const FLOOR_BUCKETS = 1 << 16

/**
 * Deleted keys and the version of their delete, each kept for `lifetimeMs` (on the store's
 * monotonic clock), at most `max` of them.
 *
 * Every tombstone lives equally long, so insertion order is expiry order: the Map's first entry
 * is the first to go. When the bound is hit, the oldest tombstone goes early, and its version
 * raises the floor of its key's bucket (one of FLOOR_BUCKETS of the key's tenant, by a hash
 * seeded per store) until that tombstone would have expired: meanwhile a peer write for a key of that bucket with no live
 * entry and no tombstone is applied only when its version is above the floor. So an early
 * eviction never lets a deleted session come back; what it costs is that older copies and fills
 * of the other keys of its bucket are refused for at most one lifetime (a GET then misses and the
 * application makes a new session), and it is counted.
 *
 * A delete of a key this host holds nothing of (no live entry, no tombstone) is kept apart, in a
 * table of its own with the same bound, and when that one is full its oldest simply goes: no
 * floor. Such a tombstone guards only against a copy of the key that crossed the delete in
 * flight; a flood of deletes of keys nobody held (issue 21 point 5: 6,000 `delete rnd-...` lines
 * through memcache raised the one floor of every host and stopped every fill for a lifetime) now
 * pushes out only tombstones of its own kind and refuses nothing. What that gives up, and only
 * past `max` such deletes within one lifetime: a copy of a key deleted here while held nowhere
 * here, in flight when its delete came, that arrives after `max` more such deletes, is stored
 * (`unheldTombstonesDropped` counts the drops).
 *
 * The two tables are shared by the store's tenants (docs/tenants.md); what one tenant's deletes
 * can do to another's tombstones is push them out early, and an early push-out of a held one
 * raises a floor of the tombstone's own tenant and bucket only.
 */
export class Tombstones {
  readonly lifetimeMs: number
  readonly max: number
  readonly counters: TombstoneCounters = {
    tombstonesEvictedEarly: 0,
    unheldTombstonesDropped: 0,
    staleWrites: 0,
    badVersions: 0,
    evictionsFloored: 0,
  }
  readonly #monotonicMs: () => number
  readonly #map: BoundedMap<string, { version: bigint; expires: number }>
  /** Tombstones of deletes of keys held nothing of here: their early drop raises no floor. */
  readonly #unheld: BoundedMap<string, { version: bigint; expires: number }>
  readonly #seed: number
  /**
   * The floors of each tenant's keys (protocol/tenant-keys.ts; '' the default tenant), one per
   * bucket, allocated on the tenant's first raise: one tenant's evictions and deletes never make
   * another's fills refused, and within a tenant a raise floors one bucket only.
   */
  readonly #floors = new Map<string, { floors: BigUint64Array; untils: Float64Array }>()
  /**
   * The tenants whose keys have floors of their own (a store with tenantQuotas); every other key,
   * and every key of a store without tenants, is under the default tenant's (''), so the floor
   * tables are at most as many as the tenants, whatever keys peers send.
   */
  readonly #tenants: ReadonlySet<string>

  constructor(o: { lifetimeMs: number; max: number; monotonicMs: () => number; seed?: number; tenants?: Iterable<string> }) {
    this.#tenants = new Set(o.tenants ?? [])
    if (!(Number.isSafeInteger(o.max) && o.max >= 0)) throw new TypeError(`maxTombstones must be a non-negative integer, got ${o.max}`)
    if (!(Number.isFinite(o.lifetimeMs) && o.lifetimeMs >= 0))
      throw new TypeError(`tombstoneLifetimeMs must be a non-negative number of ms, got ${o.lifetimeMs}`)
    this.lifetimeMs = o.lifetimeMs
    this.max = o.max
    this.#monotonicMs = o.monotonicMs
    this.#seed = o.seed ?? randomBytes(4).readUInt32LE(0)
    // With no room for tombstones (max 0) nothing is ever added: each delete raises its floor alone.
    this.#map = new BoundedMap(Math.max(1, o.max), (key, t) => {
      this.counters.tombstonesEvictedEarly++
      this.#raiseFloor(key, t.version, t.expires)
    })
    this.#unheld = new BoundedMap(Math.max(1, o.max), () => {
      this.counters.unheldTombstonesDropped++
    })
  }

  /** False (counted as badVersions) for a peer's version outside what a clock makes: a forgery, never stored. */
  admits(version: bigint): boolean {
    if (validVersion(version)) return true
    this.counters.badVersions++
    return false
  }

  get size(): number {
    return this.#map.size + this.#unheld.size
  }

  /** The version of the key's live tombstone, or undefined. */
  get(key: string): bigint | undefined {
    return this.#live(this.#map, key) ?? this.#live(this.#unheld, key)
  }

  #live(map: BoundedMap<string, { version: bigint; expires: number }>, key: string): bigint | undefined {
    const t = map.get(key)
    if (t === undefined) return undefined
    if (this.#monotonicMs() > t.expires) {
      map.delete(key)
      return undefined
    }
    return t.version
  }

  /**
   * The bucket of FLOOR_BUCKETS that `key` falls in (seeded per store, so no one can aim at one),
   * among its tenant's: a hash of the key after its tenant prefix, so the same client key of two
   * tenants is in the same bucket of each one's floors (tests see the tenants kept apart).
   */
  bucket(key: string): number {
    let start = 0
    if (key.charCodeAt(0) === TENANT_MARKER) {
      const end = key.indexOf('\u0000', 1)
      if (end >= 2 && end <= MAX_TENANT_NAME_BYTES + 1) start = end + 1
    }
    let h = this.#seed ^ (key.length - start)
    for (let i = start; i < key.length; i++) {
      h = Math.imul(h ^ key.charCodeAt(i), 0x5bd1e995)
      h ^= h >>> 15
    }
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b)
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35)
    return (h ^ (h >>> 16)) & (FLOOR_BUCKETS - 1)
  }

  /**
   * The version below which a peer's write of `key`, held without entry or tombstone, is refused:
   * the floor of its bucket among its tenant's.
   */
  floor(key: string): bigint {
    const f = this.#floors.get(this.#tenantOf(key))
    if (f === undefined) return NO_VERSION
    const b = this.bucket(key)
    return this.#monotonicMs() > f.untils[b]! ? NO_VERSION : f.floors[b]!
  }

  /**
   * Records a delete (re-recording a key restarts its lifetime). `held`: the key had a live entry
   * here when deleted; a delete of a key with neither entry nor tombstone here goes to the table
   * of unheld deletes (see the class comment).
   */
  add(key: string, version: bigint, held = true): void {
    const wasHeld = held || this.#live(this.#map, key) !== undefined
    this.#map.delete(key)
    this.#unheld.delete(key)
    this.purge()
    const expires = this.#monotonicMs() + this.lifetimeMs
    if (this.max === 0) return this.#raiseFloor(key, version, expires)
    if (wasHeld) this.#map.set(key, { version, expires })
    else this.#unheld.set(key, { version, expires })
  }

  /**
   * An entry of `key` at `version` was evicted before its TTL (memory pressure): a delayed older
   * copy of it must not bring back a value that a newer write replaced, so older peer writes of
   * the keys of its bucket (of its tenant) without entry or tombstone are refused for one
   * tombstone lifetime, as after an early tombstone eviction.
   */
  evicted(key: string, version: bigint): void {
    this.counters.evictionsFloored++
    this.#raiseFloor(key, version, this.#monotonicMs() + this.lifetimeMs)
  }

  /** The tenant whose floors a key is under: its namespace, or '' (the default tenant, malformed keys, no tenants). */
  #tenantOf(key: string): string {
    if (this.#tenants.size === 0) return ''
    const t = tenantOfStoreKey(key)
    return t !== undefined && this.#tenants.has(t) ? t : ''
  }

  /** The key was written again (its version is newer than the tombstone's): forget the delete. */
  remove(key: string): void {
    this.#map.delete(key)
    this.#unheld.delete(key)
  }

  /** Drops expired tombstones (oldest first, so this stops at the first one still alive). */
  purge(): void {
    const now = this.#monotonicMs()
    for (const map of [this.#map, this.#unheld]) {
      for (const [k, t] of map) {
        if (now <= t.expires) break
        map.delete(k)
      }
    }
  }

  clear(): void {
    this.#map.clear()
    this.#unheld.clear()
  }

  #raiseFloor(key: string, version: bigint, until: number): void {
    const tenant = this.#tenantOf(key)
    let f = this.#floors.get(tenant)
    if (f === undefined)
      this.#floors.set(tenant, (f = { floors: new BigUint64Array(FLOOR_BUCKETS), untils: new Float64Array(FLOOR_BUCKETS).fill(-Infinity) }))
    const b = this.bucket(key)
    if (this.#monotonicMs() > f.untils[b]!) f.floors[b] = NO_VERSION
    if (version > f.floors[b]!) f.floors[b] = version
    if (until > f.untils[b]!) f.untils[b] = until
  }
}

/**
 * The version rule for a peer's write of `key` at `version` (`value` undefined: a delete), given
 * the live entry held (if any) and the tombstones: whether it is applied. A write of a key with
 * neither entry nor tombstone is applied above the floor (see `Tombstones`); a delete of such a
 * key is always recorded, since a tombstone only ever refuses.
 */
export function peerWins(
  tombstones: Tombstones,
  key: string,
  version: bigint,
  value: Buffer | undefined,
  held: { version: bigint; value: Buffer } | undefined,
): boolean {
  if (held !== undefined) return newer(version, value, held.version, held.value)
  const t = tombstones.get(key)
  if (t !== undefined) return newer(version, value, t, undefined)
  return value === undefined || version > tombstones.floor(key)
}
