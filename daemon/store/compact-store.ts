/**
 * The host's session store, laid out for memory: the same API and behaviour as `LruStore`
 * (lru-store.ts) at a fraction of its per-entry overhead, and with no JS object per entry for the
 * garbage collector to trace.
 *
 * Layout (a "slot" is an entry's index in the parallel arrays):
 *
 *   slot arrays  typed arrays, grown by doubling       LRU links (prev/next, head = least
 *                                                      recently used; free slots chain through
 *                                                      next), hash chain, key hash, absolute
 *                                                      expiry, flags, chunk (page, offset), key
 *                                                      length, key width, value length
 *   #buckets     Uint32Array, one per slot capacity    first slot of each hash chain
 *   #slab        fixed pages of equal chunks           key bytes, then value bytes, per entry
 *
 * Keys are hashed from their chars with a per-store random seed and compared against the key
 * bytes in the slab, so the store holds no key strings: the caller's string (flat, sliced or
 * concatenated) is not kept. Keys whose chars are all below 256 (latin1, as the daemon makes
 * them) take one byte a char; any other key takes two (UTF-16 code units).
 *
 * Values are session secrets. The store copies every value in, and zero-fills its chunk (key and
 * value) the moment it lets go of it: evicted, expired, overwritten, deleted or flushed. `get`,
 * `peek` and `entries` hand out views into the slab, valid until the entry is released; after
 * that the same bytes may hold another session's value. Readers must copy before yielding.
 */
import { randomBytes } from 'node:crypto'
import {
  ENTRY_OVERHEAD_BYTES,
  STORE_DEFAULTS,
  StoreError,
  admit,
  effectiveTtl,
  quotasOf,
  tenantFor,
  type TenantUsage,
  type StoreCounters,
  type StoreEntry,
  type StoreOptions,
  type StoreStats,
  type SessionStore,
} from './session-store.js'
import { Hlc, NO_VERSION, Tombstones, peerWins } from './versions.js'
import { tenantPrefix } from '../../protocol/tenant-keys.js'

export { ENTRY_OVERHEAD_BYTES, STORE_DEFAULTS, StoreError }
export type { StoreCounters, StoreEntry, StoreOptions, StoreStats }

/** End of a list or chain, and "no page" for an entry with neither key nor value bytes. */
const NIL = 0xffffffff

/** Slots the store starts with; the slot arrays double from here. A power of two. */
const INITIAL_SLOTS = 256

/** Why an entry is released: decides which counter, if any, counts it. */
const Release = { DROP: 0, EVICT: 1, EXPIRE: 2 } as const
type Release = (typeof Release)[keyof typeof Release]

// ---------------------------------------------------------------------------------------------
// Slab: key and value bytes
// ---------------------------------------------------------------------------------------------

/** Size classes step by SMALL_CLASS_STEP bytes up to SMALL_CLASS_LIMIT: 18 + 200 bytes waste 6. */
const STEP_SHIFT = 4
const SMALL_CLASS_STEP = 1 << STEP_SHIFT
const SMALL_CLASS_LIMIT = 1024
/** Above SMALL_CLASS_LIMIT each class is this much larger than the one before (<= 12.5% waste). */
const CLASS_GROWTH = 1.125
/** Largest class; a longer chunk gets a page of exactly its own length. */
const LARGEST_CLASS = 64 * 1024
/** Class index of a chunk's own page. */
const OWN_PAGE = -1
/**
 * Page bytes: at least MIN_PAGE_BYTES and MIN_CHUNKS_PER_PAGE chunks, at most MAX_PAGE_BYTES.
 * Small pages keep the partly used last page of each class cheap; each class has one.
 */
const MIN_PAGE_BYTES = 64 * 1024
const MAX_PAGE_BYTES = 1024 * 1024
const MIN_CHUNKS_PER_PAGE = 16

/** Chunk bytes of each class, ascending. */
const CLASS_BYTES: readonly number[] = (() => {
  const sizes: number[] = []
  for (let s = SMALL_CLASS_STEP; s <= SMALL_CLASS_LIMIT; s += SMALL_CLASS_STEP) sizes.push(s)
  let s = SMALL_CLASS_LIMIT
  while (s < LARGEST_CLASS) {
    s = Math.min(LARGEST_CLASS, Math.ceil((s * CLASS_GROWTH) / SMALL_CLASS_STEP) * SMALL_CLASS_STEP)
    sizes.push(s)
  }
  return sizes
})()

/** Chunks per page of each class; at most 4096 (64 KiB / 16 B), so a Uint16 indexes them. */
const CLASS_CHUNKS: readonly number[] = CLASS_BYTES.map((size) =>
  Math.floor(Math.min(MAX_PAGE_BYTES, Math.max(MIN_PAGE_BYTES, size * MIN_CHUNKS_PER_PAGE)) / size),
)

/** Class of a chunk of `n` bytes (1..LARGEST_CLASS), indexed by ceil(n / SMALL_CLASS_STEP). */
const CLASS_OF: Uint8Array = (() => {
  const t = new Uint8Array(LARGEST_CLASS / SMALL_CLASS_STEP + 1)
  let c = 0
  for (let u = 1; u < t.length; u++) {
    while (CLASS_BYTES[c]! < u * SMALL_CLASS_STEP) c++
    t[u] = c
  }
  return t
})()

interface Page {
  readonly id: number
  /** Size class, or OWN_PAGE. */
  readonly cls: number
  readonly bytes: ArrayBuffer
  readonly buf: Buffer
  /** Chunks in use. */
  live: number
  /** Chunks handed out at least once; the ones above have never been used. */
  bump: number
  /** Released chunks (indexes) waiting for reuse: a stack, `freeTop` high. */
  readonly free: Uint16Array
  freeTop: number
  /** Position in its class's list of pages with room, or -1 when the page is full. */
  roomPos: number
}

/**
 * Pages of equal chunks, one size class per page. Pages are never moved or resized, so a view
 * stays valid until its chunk is released. Each page keeps its own stack of free chunks so that a
 * page whose chunks are all free can be let go: a class keeps at most one empty page, and memory
 * follows the store's contents when the sizes it holds shift.
 */
class Slab {
  /** Offset of the chunk `alloc` returned last. */
  offset = 0
  readonly #pages: (Page | undefined)[] = []
  readonly #freeIds: number[] = []
  /** Per class: ids of its pages with a free chunk; allocation takes the last. */
  readonly #room: number[][] = CLASS_BYTES.map(() => [])

  /** A chunk of `n` (> 0) bytes: returns its page id; its offset is in `offset`. */
  alloc(n: number): number {
    if (n > LARGEST_CLASS) {
      this.offset = 0
      return this.#newPage(OWN_PAGE, n).id
    }
    const cls = CLASS_OF[(n + SMALL_CLASS_STEP - 1) >>> STEP_SHIFT]!
    const room = this.#room[cls]!
    const page = room.length > 0 ? this.#pages[room[room.length - 1]!]! : this.#newPage(cls, 0)
    const chunk = page.freeTop > 0 ? page.free[--page.freeTop]! : page.bump++
    if (++page.live === CLASS_CHUNKS[cls]) {
      // The page is the last of the list: taken from there, or just added.
      room.pop()
      page.roomPos = -1
    }
    this.offset = chunk * CLASS_BYTES[cls]!
    return page.id
  }

  buffer(id: number): Buffer {
    return this.#pages[id]!.buf
  }

  view(id: number, offset: number, len: number): Buffer {
    return Buffer.from(this.#pages[id]!.bytes, offset, len)
  }

  /** Zero-fills the `n` bytes used of a chunk and takes the chunk back. */
  free(id: number, offset: number, n: number): void {
    const page = this.#pages[id]!
    page.buf.fill(0, offset, offset + n)
    if (page.cls === OWN_PAGE) return this.#dropPage(page)
    page.free[page.freeTop++] = offset / CLASS_BYTES[page.cls]!
    page.live--
    const room = this.#room[page.cls]!
    if (page.roomPos < 0) {
      page.roomPos = room.length
      room.push(id)
    }
    if (page.live === 0 && room.length > 1) {
      const last = room.pop()!
      if (last !== id) {
        room[page.roomPos] = last
        this.#pages[last]!.roomPos = page.roomPos
      }
      this.#dropPage(page)
    }
  }

  #newPage(cls: number, ownBytes: number): Page {
    const id = this.#freeIds.length > 0 ? this.#freeIds.pop()! : this.#pages.length
    const chunks = cls === OWN_PAGE ? 0 : CLASS_CHUNKS[cls]!
    const bytes = new ArrayBuffer(cls === OWN_PAGE ? ownBytes : chunks * CLASS_BYTES[cls]!)
    const page: Page = {
      id,
      cls,
      bytes,
      buf: Buffer.from(bytes),
      live: cls === OWN_PAGE ? 1 : 0,
      bump: 0,
      free: new Uint16Array(chunks),
      freeTop: 0,
      roomPos: -1,
    }
    this.#pages[id] = page
    if (cls !== OWN_PAGE) {
      const room = this.#room[cls]!
      page.roomPos = room.length
      room.push(id)
    }
    return page
  }

  #dropPage(page: Page): void {
    this.#pages[page.id] = undefined
    this.#freeIds.push(page.id)
  }
}

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

const EMPTY = Buffer.alloc(0)

export class CompactStore implements SessionStore {
  readonly options: Readonly<StoreOptions>
  readonly counters: StoreCounters = { hits: 0, misses: 0, sets: 0, deletes: 0, touches: 0, evictions: 0, expirations: 0 }
  readonly #monotonicMs: () => number
  readonly #clock: Hlc
  /** Deleted keys (versions.ts); few next to the entries, so a Map. */
  readonly #tombstones: Tombstones
  /** Random per store, so that which keys share a chain cannot be known in advance. */
  readonly #seed = randomBytes(4).readUInt32LE(0)
  #slab = new Slab()
  #capacity = 0
  /** Slots handed out at least once; the ones above have never been used. */
  #used = 0
  /** First free slot below #used; free slots chain through #next. */
  #freeSlot = NIL
  /**
   * Each tenant's least and most recently used slots: one LRU list per tenant, so that a write
   * evicts only its own tenant's entries. Tenant 0 is the default tenant.
   */
  #head: Uint32Array
  #tail: Uint32Array
  /** Each tenant's bytes and share of maxBytes. */
  readonly #tenantBytes: Float64Array
  readonly #tenantEntries: Float64Array
  readonly #quota: number[]
  /** Each tenant's store-key prefix, by index. */
  readonly #prefixes: string[] = []
  readonly #tenantIndex = new Map<string, number>()
  readonly #quotas: ReadonlyMap<string, number>
  #size = 0
  #bytes = 0
  /** Whether the key last hashed has a char above 255. */
  #hashedWide = false
  #buckets = new Uint32Array(0)
  #prev = new Uint32Array(0)
  #next = new Uint32Array(0)
  #chain = new Uint32Array(0)
  #hash = new Uint32Array(0)
  /** Absolute expiry on the `monotonicMs` clock, in ms; Infinity for no TTL. */
  #expires = new Float64Array(0)
  /** Kept as given, like Store keeps them: any number survives a Float64. */
  #flags = new Float64Array(0)
  /** Each entry's version (versions.ts): 8 bytes a slot. */
  #version = new BigUint64Array(0)
  #page = new Uint32Array(0)
  #offset = new Uint32Array(0)
  /** Key length in chars; the key takes that many bytes, or twice as many when wide. */
  #keyLength = new Uint32Array(0)
  #keyWide = new Uint8Array(0)
  #valueLength = new Uint32Array(0)
  /** Each slot's tenant (an index of #quota). */
  #tenant = new Uint8Array(0)

  constructor(options: Partial<StoreOptions> = {}) {
    const o = { ...STORE_DEFAULTS, ...options }
    // What Store's LRUCache refuses, refused here by the option's own name.
    if (!(Number.isSafeInteger(o.maxBytes) && o.maxBytes > 0))
      throw new TypeError(`maxBytes must be a positive integer of bytes, got ${o.maxBytes}`)
    if (!(Number.isSafeInteger(o.defaultTtlMs) && o.defaultTtlMs >= 0)) {
      throw new TypeError(`defaultTtlMs must be a non-negative integer of ms, got ${o.defaultTtlMs}`)
    }
    this.options = o
    // The same default clock as LRUCache, so as Store: monotonic, fractional ms.
    this.#monotonicMs = o.monotonicMs ?? (() => performance.now())
    this.#clock = o.clock ?? new Hlc()
    this.#tombstones = new Tombstones({
      lifetimeMs: o.tombstoneLifetimeMs,
      max: o.maxTombstones,
      monotonicMs: this.#monotonicMs,
      tenants: o.tenantQuotas?.keys() ?? [],
    })
    this.#quotas = quotasOf(o)
    if (this.#quotas.size > 256) throw new TypeError(`a store holds at most 256 tenants, got ${this.#quotas.size}`)
    this.#quota = []
    for (const [name, bytes] of this.#quotas) {
      this.#tenantIndex.set(name, this.#quota.length)
      this.#quota.push(bytes)
      this.#prefixes.push(tenantPrefix(name))
    }
    this.#head = new Uint32Array(this.#quota.length).fill(NIL)
    this.#tail = new Uint32Array(this.#quota.length).fill(NIL)
    this.#tenantBytes = new Float64Array(this.#quota.length)
    this.#tenantEntries = new Float64Array(this.#quota.length)
    this.#grow(INITIAL_SLOTS)
  }

  /** The TTL an entry gets for a requested TTL: 0 means the default; longer than the cap is capped. */
  effectiveTtl(ttlMs: number): number {
    return effectiveTtl(this.options, ttlMs)
  }

  /** The stored entry (a view into the store's memory: copy before yielding), or undefined. */
  get(key: string): StoreEntry | undefined {
    const slot = this.#find(key)
    if (slot === NIL) {
      this.counters.misses++
      return undefined
    }
    if (this.#isStale(slot)) {
      this.#release(slot, Release.EXPIRE)
      this.counters.misses++
      return undefined
    }
    this.#moveToTail(slot)
    this.counters.hits++
    return this.#entry(slot)
  }

  /** Like get, without touching recency or counters (used to answer peers and list keys). */
  peek(key: string): StoreEntry | undefined {
    const slot = this.#find(key)
    if (slot === NIL || this.#isStale(slot)) return undefined
    return this.#entry(slot)
  }

  /** Remaining TTL in ms (at least 1) of a live entry, or 0 when absent. */
  remainingTtl(key: string): number {
    const slot = this.#find(key)
    if (slot === NIL) return 0
    const expires = this.#expires[slot]!
    if (expires === Infinity) return this.options.maxTtlMs
    const r = expires - this.#monotonicMs()
    return r > 0 ? Math.ceil(r) : 0
  }

  has(key: string): boolean {
    const slot = this.#find(key)
    return slot !== NIL && !this.#isStale(slot)
  }

  /** Stores a copy of `value` under a new version. Throws StoreError TOO_LARGE or BAD_TTL; never stores part of it. */
  set(key: string, value: Buffer, ttlMs = 0, flags = 0): void {
    const ttl = admit(this.options, key, value, ttlMs)
    this.#put(key, value, ttl, flags, this.#clock.next())
  }

  /**
   * A peer's write (a copy, a fill, a handoff) at `version`: stored only when newer than the live
   * entry or tombstone held for the key (versions.ts, `peerWins`); false when refused as stale.
   * Throws StoreError like `set`.
   */
  setFromPeer(key: string, value: Buffer, ttlMs: number, flags: number, version: bigint): boolean {
    const ttl = admit(this.options, key, value, ttlMs)
    if (!this.#tombstones.admits(version)) return false
    if (!peerWins(this.#tombstones, key, version, value, this.#held(key))) {
      this.#tombstones.counters.staleWrites++
      return false
    }
    this.#put(key, value, ttl, flags, version)
    this.#clock.observe(version)
    return true
  }

  /** A peer's delete at `version`: applied (tombstone kept) unless what is held is newer; false when refused. */
  deleteFromPeer(key: string, version: bigint): boolean {
    if (!this.#tombstones.admits(version)) return false
    if (!peerWins(this.#tombstones, key, version, undefined, this.#held(key))) {
      this.#tombstones.counters.staleWrites++
      return false
    }
    const slot = this.#find(key)
    const live = slot !== NIL && !this.#isStale(slot)
    if (slot !== NIL) {
      this.#release(slot, Release.DROP)
      this.counters.deletes++
    }
    this.#tombstones.add(key, version, live)
    this.#clock.observe(version)
    return true
  }

  /** The version of the key's live entry, else of its tombstone, else NO_VERSION. */
  version(key: string): bigint {
    const slot = this.#find(key)
    if (slot !== NIL && !this.#isStale(slot)) return this.#version[slot]!
    return this.#tombstones.get(key) ?? NO_VERSION
  }

  /** The live entry, as the version rule needs it. */
  #held(key: string): StoreEntry | undefined {
    const slot = this.#find(key)
    return slot === NIL || this.#isStale(slot) ? undefined : this.#entry(slot)
  }

  #put(key: string, value: Buffer, ttl: number, flags: number, version: bigint): void {
    const size = key.length + value.length + ENTRY_OVERHEAD_BYTES
    // The tenant's share bounds the entry and is what it may evict from: nothing else.
    const t = this.#tenantIndex.get(tenantFor(this.#quotas, key, size))!
    const quota = this.#quota[t]!

    const hash = this.#hashKey(key)
    const wide = this.#hashedWide
    const keyBytes = wide ? 2 * key.length : key.length
    // Copy first: `value` may be a view of this very entry, whose bytes are wiped below.
    let page = NIL
    let offset = 0
    if (keyBytes + value.length > 0) {
      page = this.#slab.alloc(keyBytes + value.length)
      offset = this.#slab.offset
      const buf = this.#slab.buffer(page)
      if (!wide) buf.write(key, offset, 'latin1')
      else for (let i = 0; i < key.length; i++) buf.writeUInt16LE(key.charCodeAt(i), offset + 2 * i)
      value.copy(buf, offset + keyBytes)
    }

    let slot = this.#lookup(key, hash)
    if (slot !== NIL) {
      // Overwrite, of a live or a stale entry alike: most recent now, old chunk wiped, no counter.
      this.#moveToTail(slot)
      this.#freeChunk(slot)
      const old = key.length + this.#valueLength[slot]! + ENTRY_OVERHEAD_BYTES
      this.#bytes -= old
      this.#tenantBytes[t] = this.#tenantBytes[t]! - old
      // The slot is the tail and no longer counted, so it is evicted only when nothing else is
      // left, and then the tenant's bytes are 0 and the loop has stopped.
      while (this.#tenantBytes[t] + size > quota) this.#release(this.#head[t]!, Release.EVICT)
    } else {
      while (this.#tenantBytes[t]! + size > quota) this.#release(this.#head[t]!, Release.EVICT)
      slot = this.#newSlot()
      this.#tenant[slot] = t
      const b = hash & (this.#capacity - 1)
      this.#chain[slot] = this.#buckets[b]!
      this.#buckets[b] = slot
      this.#hash[slot] = hash
      this.#keyLength[slot] = key.length
      this.#keyWide[slot] = wide ? 1 : 0
      this.#linkAtTail(slot)
      this.#size++
      this.#tenantEntries[t] = this.#tenantEntries[t]! + 1
    }
    this.#bytes += size
    this.#tenantBytes[t] = this.#tenantBytes[t]! + size
    this.#page[slot] = page
    this.#offset[slot] = offset
    this.#valueLength[slot] = value.length
    this.#flags[slot] = flags
    this.#version[slot] = version
    this.#expires[slot] = ttl === 0 ? Infinity : this.#monotonicMs() + ttl
    this.#tombstones.remove(key)
    this.counters.sets++
  }

  /** Deletes the key under a new version, leaving a tombstone (also when absent). True when it was live. */
  delete(key: string): boolean {
    const slot = this.#find(key)
    this.#tombstones.add(key, this.#clock.next(), slot !== NIL && !this.#isStale(slot))
    if (slot === NIL) return false
    this.#release(slot, Release.DROP)
    this.counters.deletes++
    return true
  }

  /** Gives a live entry a new TTL from now, and makes it the most recently used. False when absent. */
  touch(key: string, ttlMs: number): boolean {
    const ttl = this.effectiveTtl(ttlMs)
    const slot = this.#find(key)
    if (slot === NIL || this.#isStale(slot)) return false
    this.#moveToTail(slot)
    this.#expires[slot] = ttl === 0 ? Infinity : this.#monotonicMs() + ttl
    this.#version[slot] = this.#clock.next()
    this.counters.touches++
    return true
  }

  /** Up to `limit` live keys starting with `prefix`, most recently used first. */
  keys(prefix = '', limit = Infinity): string[] {
    const out: string[] = []
    if (limit <= 0) return out
    const now = this.#monotonicMs()
    // Tenant by tenant, each most recently used first.
    for (let t = 0; t < this.#quota.length; t++) {
      for (let s = this.#tail[t]!; s !== NIL; s = this.#prev[s]!) {
        if (!(now > this.#expires[s]!) && this.#keyStartsWith(s, prefix)) {
          out.push(this.#key(s))
          if (out.length >= limit) return out
        }
      }
    }
    return out
  }

  /** Every live entry with its remaining TTL; the values are views into the store's memory. */
  *entries(): Generator<[key: string, entry: StoreEntry, ttlMs: number]> {
    // The keys first, so that the caller may change the store between steps.
    for (const k of this.keys()) {
      const v = this.peek(k)
      const ttl = this.remainingTtl(k)
      if (v !== undefined && ttl > 0) yield [k, v, ttl]
    }
  }

  /** Drops every entry (zero-filling each). Returns how many there were. */
  flush(): number {
    const n = this.#size
    for (let t = 0; t < this.#quota.length; t++) for (let s = this.#head[t]!; s !== NIL; s = this.#next[s]!) this.#freeChunk(s)
    this.#slab = new Slab()
    this.#used = 0
    this.#freeSlot = NIL
    this.#head.fill(NIL)
    this.#tail.fill(NIL)
    this.#tenantBytes.fill(0)
    this.#tenantEntries.fill(0)
    this.#size = 0
    this.#bytes = 0
    this.#capacity = 0
    this.#grow(INITIAL_SLOTS)
    this.#tombstones.clear()
    return n
  }

  /** Drops every entry of one tenant (zero-filling each); tombstones stay. Returns how many there were. */
  flushTenant(tenant: string): number {
    const t = this.#tenantIndex.get(tenant)
    if (t === undefined) return 0
    const n = this.#tenantEntries[t]!
    while (this.#head[t] !== NIL) this.#release(this.#head[t]!, Release.DROP)
    return n
  }

  /** A tenant's entries, bytes and share; undefined for a tenant the store has no share for. */
  usage(tenant: string): TenantUsage | undefined {
    const t = this.#tenantIndex.get(tenant)
    if (t === undefined) return undefined
    return { entries: this.#tenantEntries[t]!, bytes: this.#tenantBytes[t]!, maxBytes: this.#quota[t]! }
  }

  /** Drops expired entries now instead of when next touched, so their secrets are wiped promptly. */
  purgeStale(): void {
    const now = this.#monotonicMs()
    for (let t = 0; t < this.#quota.length; t++) {
      for (let s = this.#head[t]!; s !== NIL;) {
        const next = this.#next[s]!
        if (now > this.#expires[s]!) this.#release(s, Release.EXPIRE)
        s = next
      }
    }
    this.#tombstones.purge()
  }

  newestPeerVersion(): bigint {
    return this.#clock.observed
  }

  forgetOlderThan(version: bigint): number {
    let n = 0
    for (let t = 0; t < this.#quota.length; t++) {
      for (let s = this.#head[t]!; s !== NIL;) {
        const next = this.#next[s]!
        if (this.#version[s]! < version) {
          this.#release(s, Release.DROP)
          n++
        }
        s = next
      }
    }
    return n
  }

  get size(): number {
    return this.#size
  }

  get bytes(): number {
    return this.#bytes
  }

  stats(): StoreStats {
    return {
      ...this.counters,
      ...this.#tombstones.counters,
      entries: this.#size,
      bytes: this.#bytes,
      maxBytes: this.options.maxBytes,
      tombstones: this.#tombstones.size,
    }
  }

  // --- entries ---------------------------------------------------------------------------------

  // TTLs are absolute and the clock is read on every check: an expired secret is never returned.
  #isStale(slot: number): boolean {
    return this.#monotonicMs() > this.#expires[slot]!
  }

  #keyBytes(slot: number): number {
    return this.#keyWide[slot] ? 2 * this.#keyLength[slot]! : this.#keyLength[slot]!
  }

  #entry(slot: number): StoreEntry {
    const len = this.#valueLength[slot]!
    const value = len === 0 ? EMPTY : this.#slab.view(this.#page[slot]!, this.#offset[slot]! + this.#keyBytes(slot), len)
    return { value, flags: this.#flags[slot]!, version: this.#version[slot]! }
  }

  #key(slot: number): string {
    const n = this.#keyBytes(slot)
    if (n === 0) return ''
    const start = this.#offset[slot]!
    return this.#slab.buffer(this.#page[slot]!).toString(this.#keyWide[slot] ? 'utf16le' : 'latin1', start, start + n)
  }

  #freeChunk(slot: number): void {
    const n = this.#keyBytes(slot) + this.#valueLength[slot]!
    if (n > 0) this.#slab.free(this.#page[slot]!, this.#offset[slot]!, n)
  }

  #release(slot: number, why: Release): void {
    // The key is read out only here, under memory pressure: its bucket's floor (of its tenant) is raised.
    if (why === Release.EVICT) this.#tombstones.evicted(this.#key(slot), this.#version[slot]!)
    // Out of its hash chain.
    const b = this.#hash[slot]! & (this.#capacity - 1)
    if (this.#buckets[b] === slot) this.#buckets[b] = this.#chain[slot]!
    else {
      let p = this.#buckets[b]!
      while (this.#chain[p] !== slot) p = this.#chain[p]!
      this.#chain[p] = this.#chain[slot]!
    }
    const size = this.#keyLength[slot]! + this.#valueLength[slot]! + ENTRY_OVERHEAD_BYTES
    const t = this.#tenant[slot]!
    this.#bytes -= size
    this.#tenantBytes[t] = this.#tenantBytes[t]! - size
    this.#tenantEntries[t] = this.#tenantEntries[t]! - 1
    this.#freeChunk(slot)
    this.#unlink(slot)
    this.#next[slot] = this.#freeSlot
    this.#freeSlot = slot
    this.#size--
    if (why === Release.EVICT) this.counters.evictions++
    else if (why === Release.EXPIRE) this.counters.expirations++
  }

  // --- keys ------------------------------------------------------------------------------------

  /** A seeded multiply-xorshift hash of the key's chars; notes in #hashedWide whether any is > 255. */
  #hashKey(key: string): number {
    let h = this.#seed ^ key.length
    let all = 0
    for (let i = 0; i < key.length; i++) {
      const c = key.charCodeAt(i)
      all |= c
      h = Math.imul(h ^ c, 0x5bd1e995)
      h ^= h >>> 15
    }
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b)
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35)
    this.#hashedWide = all > 0xff
    return (h ^ (h >>> 16)) >>> 0
  }

  #find(key: string): number {
    return this.#lookup(key, this.#hashKey(key))
  }

  /** The slot of `key`, or NIL. A wide key never equals a latin1 one: some char of it is > 255. */
  #lookup(key: string, hash: number): number {
    for (let s = this.#buckets[hash & (this.#capacity - 1)]!; s !== NIL; s = this.#chain[s]!) {
      if (this.#hash[s] === hash && this.#keyLength[s] === key.length && this.#keyStartsWith(s, key)) return s
    }
    return NIL
  }

  /** Whether the slot's key starts with `prefix` (the whole key, when as long). */
  #keyStartsWith(slot: number, prefix: string): boolean {
    const n = prefix.length
    if (n === 0) return true
    if (n > this.#keyLength[slot]!) return false
    const buf = this.#slab.buffer(this.#page[slot]!)
    const at = this.#offset[slot]!
    if (this.#keyWide[slot]) {
      for (let i = 0; i < n; i++) if (buf[at + 2 * i]! + 256 * buf[at + 2 * i + 1]! !== prefix.charCodeAt(i)) return false
    } else {
      for (let i = 0; i < n; i++) if (buf[at + i] !== prefix.charCodeAt(i)) return false
    }
    return true
  }

  // --- slots -----------------------------------------------------------------------------------

  #newSlot(): number {
    if (this.#freeSlot !== NIL) {
      const s = this.#freeSlot
      this.#freeSlot = this.#next[s]!
      return s
    }
    if (this.#used === this.#capacity) this.#grow(this.#capacity * 2)
    return this.#used++
  }

  #linkAtTail(slot: number): void {
    const t = this.#tenant[slot]!
    const tail = this.#tail[t]!
    this.#prev[slot] = tail
    this.#next[slot] = NIL
    if (tail === NIL) this.#head[t] = slot
    else this.#next[tail] = slot
    this.#tail[t] = slot
  }

  #unlink(slot: number): void {
    const t = this.#tenant[slot]!
    const p = this.#prev[slot]!
    const n = this.#next[slot]!
    if (p === NIL) this.#head[t] = n
    else this.#next[p] = n
    if (n === NIL) this.#tail[t] = p
    else this.#prev[n] = p
  }

  #moveToTail(slot: number): void {
    if (slot === this.#tail[this.#tenant[slot]!]) return
    this.#unlink(slot)
    this.#linkAtTail(slot)
  }

  /** Resizes the slot arrays to `capacity` (a power of two) slots, keeping slots below #used. */
  #grow(capacity: number): void {
    if (capacity > 2 ** 31) throw new RangeError(`the store cannot hold more than ${2 ** 31} entries`)
    const keep = this.#used
    const u32 = (old: Uint32Array) => {
      const a = new Uint32Array(capacity)
      a.set(old.subarray(0, keep))
      return a
    }
    this.#prev = u32(this.#prev)
    this.#next = u32(this.#next)
    this.#chain = u32(this.#chain)
    this.#hash = u32(this.#hash)
    this.#page = u32(this.#page)
    this.#offset = u32(this.#offset)
    this.#keyLength = u32(this.#keyLength)
    this.#valueLength = u32(this.#valueLength)
    const f64 = (old: Float64Array) => {
      const a = new Float64Array(capacity)
      a.set(old.subarray(0, keep))
      return a
    }
    this.#expires = f64(this.#expires)
    this.#flags = f64(this.#flags)
    const version = new BigUint64Array(capacity)
    version.set(this.#version.subarray(0, keep))
    this.#version = version
    const wide = new Uint8Array(capacity)
    wide.set(this.#keyWide.subarray(0, keep))
    this.#keyWide = wide
    const tenant = new Uint8Array(capacity)
    tenant.set(this.#tenant.subarray(0, keep))
    this.#tenant = tenant
    // One bucket a slot; the chains are rebuilt from the stored hashes.
    this.#capacity = capacity
    this.#buckets = new Uint32Array(capacity).fill(NIL)
    const mask = capacity - 1
    for (let t = 0; t < this.#head.length; t++) {
      for (let s = this.#head[t]!; s !== NIL; s = this.#next[s]!) {
        const b = this.#hash[s]! & mask
        this.#chain[s] = this.#buckets[b]!
        this.#buckets[b] = s
      }
    }
  }
}
