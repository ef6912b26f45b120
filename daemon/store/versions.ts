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
import { tenantOfStoreKey } from '../../protocol/tenant-keys.js'
import { randomBytes } from 'node:crypto'
import type { Config } from '../config/config.js'
import { BoundedMap } from '../../protocol/bounded.js'

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

  /**
   * `wallMs` is the wall clock in Unix ms (Date.now by default; injected by tests). `tiebreak`
   * (0..255) is random by default.
   */
  constructor(wallMs: () => number = Date.now, tiebreak = randomBytes(1)[0]!) {
    if (!(Number.isInteger(tiebreak) && tiebreak >= 0 && tiebreak < 1 << TIEBREAK_BITS)) throw new RangeError(`tiebreak must be an integer 0..255, got ${tiebreak}`)
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
    const [wall, logical] = parts(v)
    if (wall > this.#wall || (wall === this.#wall && logical > this.#logical)) {
      this.#wall = wall
      this.#logical = logical
    }
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
export const VERSION_MAX = 2n ** 64n - 1n

/**
 * Whether `v` can be a version made by a clock: a u64 whose wall part is below the top of its
 * 48 bits (a clock saturates there, so only a forgery or corruption reaches it).
 */
export function validVersion(v: bigint): boolean {
  return typeof v === 'bigint' && v >= 0n && v <= VERSION_MAX && v >> BigInt(LOW_BITS) < BigInt(WALL_MAX)
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

/** Longest backoff between two tries of a copy, in ms (replication.ts uses it). */
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
  /** Peer writes refused: not newer than the entry or tombstone held, or below the floor. */
  staleWrites: number
  /** Peer writes refused because their version is out of range (`validVersion`). */
  badVersions: number
  /** Entries evicted early (LRU, before their TTL) whose version raised the floor. */
  evictionsFloored: number
}

/**
 * Deleted keys and the version of their delete, each kept for `lifetimeMs` (on the store's
 * monotonic clock), at most `max` of them.
 *
 * Every tombstone lives equally long, so insertion order is expiry order: the Map's first entry
 * is the first to go. When the bound is hit, the oldest tombstone goes early, and its version
 * raises a floor that holds until that tombstone would have expired: meanwhile a peer write for a
 * key with no live entry and no tombstone is applied only when its version is above the floor.
 * So an early eviction never lets a deleted session come back; what it costs is that older
 * copies and fills of other keys are refused for at most one lifetime (a GET then misses and the
 * application makes a new session), and it is counted.
 */

export class Tombstones {
  readonly lifetimeMs: number
  readonly max: number
  readonly counters: TombstoneCounters = { tombstonesEvictedEarly: 0, staleWrites: 0, badVersions: 0, evictionsFloored: 0 }
  readonly #now: () => number
  readonly #map: BoundedMap<string, { version: bigint; expires: number }>
  /**
   * The floor of each tenant's keys (protocol/tenant-keys.ts; '' the default tenant), and until
   * when it holds: one tenant's evictions and deletes never make another's fills refused.
   */
  readonly #floors = new Map<string, { floor: bigint; until: number }>()

  /**
   * The tenants whose keys have floors of their own (a store with tenantQuotas); every other key,
   * and every key of a store without tenants, is under the default tenant's (''), so the floors
   * are as many as the tenants, whatever keys peers send.
   */
  readonly #tenants: ReadonlySet<string>

  constructor(o: { lifetimeMs: number; max: number; now: () => number; tenants?: Iterable<string> }) {
    this.#tenants = new Set(o.tenants ?? [])
    if (!(Number.isSafeInteger(o.max) && o.max >= 0)) throw new TypeError(`maxTombstones must be a non-negative integer, got ${o.max}`)
    if (!(Number.isFinite(o.lifetimeMs) && o.lifetimeMs >= 0)) throw new TypeError(`tombstoneLifetimeMs must be a non-negative number of ms, got ${o.lifetimeMs}`)
    this.lifetimeMs = o.lifetimeMs
    this.max = o.max
    this.#now = o.now
    // With no room for tombstones (max 0) nothing is ever added: each delete raises the floor alone.
    this.#map = new BoundedMap(Math.max(1, o.max), (key, t) => {
      this.counters.tombstonesEvictedEarly++
      this.#raiseFloor(this.#tenantOf(key), t.version, t.expires)
    })
  }

  /** False (counted as badVersions) for a peer's version outside what a clock makes: a forgery, never stored. */
  admits(version: bigint): boolean {
    if (validVersion(version)) return true
    this.counters.badVersions++
    return false
  }

  get size(): number {
    return this.#map.size
  }

  /** The version of the key's live tombstone, or undefined. */
  get(key: string): bigint | undefined {
    const t = this.#map.get(key)
    if (t === undefined) return undefined
    if (this.#now() > t.expires) {
      this.#map.delete(key)
      return undefined
    }
    return t.version
  }

  /** The version below which a peer's write of `key` (of its tenant) without entry or tombstone is refused. */
  floor(key = ''): bigint {
    const tenant = this.#tenantOf(key)
    const f = this.#floors.get(tenant)
    if (f === undefined) return NO_VERSION
    if (this.#now() > f.until) {
      this.#floors.delete(tenant)
      return NO_VERSION
    }
    return f.floor
  }

  /** Records a delete (re-recording a key restarts its lifetime). */
  add(key: string, version: bigint): void {
    this.#map.delete(key)
    this.purge()
    if (this.max === 0) return this.#raiseFloor(this.#tenantOf(key), version, this.#now() + this.lifetimeMs)
    this.#map.set(key, { version, expires: this.#now() + this.lifetimeMs })
  }

  /**
   * An entry at `version` was evicted before its TTL (memory pressure): a delayed older copy of
   * it must not bring back a value that a newer write replaced, so older peer writes of keys
   * without entry or tombstone are refused for one tombstone lifetime, as after an early
   * tombstone eviction.
   */
  evicted(version: bigint, key = ''): void {
    this.counters.evictionsFloored++
    this.#raiseFloor(this.#tenantOf(key), version, this.#now() + this.lifetimeMs)
  }

  /** The tenant whose floor a key is under: its namespace, or '' (the default tenant, malformed keys, no tenants). */
  #tenantOf(key: string): string {
    if (this.#tenants.size === 0) return ''
    const t = tenantOfStoreKey(key)
    return t !== undefined && this.#tenants.has(t) ? t : ''
  }

  /** The key was written again (its version is newer than the tombstone's): forget the delete. */
  remove(key: string): void {
    this.#map.delete(key)
  }

  /** Drops expired tombstones (oldest first, so this stops at the first one still alive). */
  purge(): void {
    const now = this.#now()
    for (const [k, t] of this.#map) {
      if (now <= t.expires) break
      this.#map.delete(k)
    }
  }

  clear(): void {
    this.#map.clear()
  }

  #raiseFloor(tenant: string, version: bigint, until: number): void {
    const f = this.#floors.get(tenant)
    if (f === undefined || this.#now() > f.until) {
      this.#floors.set(tenant, { floor: version, until })
      return
    }
    if (version > f.floor) f.floor = version
    if (until > f.until) f.until = until
  }
}

/**
 * The version rule for a peer's write of `key` at `version` (`value` undefined: a delete), given
 * the live entry held (if any) and the tombstones: whether it is applied. A write of a key with
 * neither entry nor tombstone is applied above the floor (see `Tombstones`); a delete of such a
 * key is always recorded, since a tombstone only ever refuses.
 */
export function peerWins(tombstones: Tombstones, key: string, version: bigint, value: Buffer | undefined, held: { version: bigint; value: Buffer } | undefined): boolean {
  if (held !== undefined) return newer(version, value, held.version, held.value)
  const t = tombstones.get(key)
  if (t !== undefined) return newer(version, value, t, undefined)
  return value === undefined || version > tombstones.floor(key)
}
