import assert from 'node:assert'
import t from 'tap'
import fc from 'fast-check'
import * as compact from '../../daemon/store/compact-store.js'
import { CompactStore, ENTRY_OVERHEAD_BYTES, STORE_DEFAULTS, type StoreEntry, type StoreOptions } from '../../daemon/store/compact-store.js'
import * as store from '../../daemon/store/session-store.js'
import { LruStore as Store } from '../../daemon/store/lru-store.js'
import { storeBehaviour, type StoreApi } from '../helpers/store-behaviour.js'

storeBehaviour(CompactStore)

// The same API as Store, and no more: either can stand in for the other.
const _isStoreApi: StoreApi = new CompactStore()
const _noMore: keyof CompactStore extends keyof Store ? true : false = true
void _isStoreApi
void _noMore

function clocked(opts: Partial<StoreOptions> = {}) {
  let now = 1_000_000
  const store = new CompactStore({ ...opts, monotonicMs: () => now })
  return { store, advance: (ms: number) => (now += ms) }
}

const isZero = (b: Uint8Array) => b.every((x) => x === 0)
const random = (len: number) => {
  const b = Buffer.alloc(len)
  for (let i = 0; i < len; i++) b[i] = 1 + ((i * 131 + len) % 255)
  return b
}

t.test('shares its types, errors and constants with the lru-cache engine (session-store.ts)', async (t) => {
  t.equal(compact.StoreError, store.StoreError)
  t.equal(compact.STORE_DEFAULTS, store.STORE_DEFAULTS)
  t.equal(compact.ENTRY_OVERHEAD_BYTES, store.ENTRY_OVERHEAD_BYTES)
})

t.test('options are checked and named', async (t) => {
  t.throws(() => new CompactStore({ maxBytes: 0 }), { name: 'TypeError', message: /maxBytes/ })
  t.throws(() => new CompactStore({ maxBytes: 1.5 }), { name: 'TypeError', message: /maxBytes/ })
  t.throws(() => new CompactStore({ defaultTtlMs: -1 }), { name: 'TypeError', message: /defaultTtlMs/ })
  t.ok(new CompactStore({ maxBytes: 1 }), 'a store too small for any entry is still a store')
})

t.test('a released chunk is reused by the next value of its class', async (t) => {
  const s = new CompactStore()
  s.set('a', random(200))
  const a = s.peek('a')!.value
  s.delete('a')
  s.set('b', random(200))
  const b = s.peek('b')!.value
  t.equal(b.buffer, a.buffer, 'same page')
  t.equal(b.byteOffset, a.byteOffset, 'same chunk')
  t.same(a, random(200), 'the old view now shows the new value: callers copy before yielding')

  // An overwrite takes a new chunk before wiping the old one, so `set(k, peek(k).value)` works.
  s.set('b', s.peek('b')!.value)
  t.same(s.get('b')?.value, random(200))
  t.ok(isZero(a), 'the old chunk is wiped')
})

t.test('slab pages are reused or returned, never piled up', async (t) => {
  const s = new CompactStore({ maxBytes: 1 << 30 })
  const n = 12_000
  const pages = () => new Set([...s.entries()].map(([, e]) => e.value.buffer)).size
  let first = 0
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < n; i++) s.set(`k${i}`, random(200))
    if (round === 0) first = pages()
    else t.equal(pages(), first, `round ${round}: ${first} pages, as in the first`)
    for (let i = 0; i < n; i++) s.delete(`k${i}`)
  }
  t.ok(first > 1 && first < 100, `${first} pages`)
  t.equal(s.size, 0)
  t.equal(s.bytes, 0)
})

t.test('many keys: hash chains and slot reuse', async (t) => {
  const s = new CompactStore({ maxBytes: 1 << 30 })
  const n = 50_000
  const k = (i: number) => `session:${String(i).padStart(10, '0')}`
  for (let i = 0; i < n; i++) s.set(k(i), Buffer.from(String(i)), 0, i)
  let ok = 0
  for (let i = 0; i < n; i++) if (s.get(k(i))?.value.toString() === String(i) && s.peek(k(i))?.flags === i) ok++
  t.equal(ok, n, 'every key found with its own value')
  for (let i = 0; i < n; i += 2) s.delete(k(i))
  t.equal(s.size, n / 2)
  let found = 0
  for (let i = 0; i < n; i++) if (s.has(k(i))) found += i % 2 ? 1 : -1000
  t.equal(found, n / 2, 'exactly the odd keys are left')
  t.equal(s.get('session:'), undefined, 'a prefix of a key is not the key')
  t.equal(s.get(`${k(1)}x`), undefined, 'nor is a longer key')
  for (let i = 0; i < n; i += 2) s.set(k(i), Buffer.from(String(-i)))
  t.equal(s.get(k(4))?.value.toString(), '-4')
  t.equal(s.get(k(5))?.value.toString(), '5')
  t.same(
    s.keys('session:000000499').sort(),
    [...Array(10).keys()].map((d) => k(4990 + d)),
  )
  t.same(s.keys('session:000000499', 3), [k(4998), k(4996), k(4994)], 'most recently set first')
})

t.test('keys of any chars: empty, latin1 and wider', async (t) => {
  const s = new CompactStore()
  const keys = ['', 'a', '\u00ff\u0000x', 'caf\u00e9', 'f\u00fc\u00dfe \u263a', '\ud83d\udd11', '\ud800', 'x'.repeat(250)]
  keys.forEach((k, i) => s.set(k, Buffer.from([i, i, i]), 0, i))
  for (const [i, k] of keys.entries()) t.has(s.get(k), { value: Buffer.from([i, i, i]), flags: i }, JSON.stringify(k))
  t.same(new Set(s.keys()), new Set(keys), 'keys come back as they went in')
  t.same(s.keys('f\u00fc'), ['f\u00fc\u00dfe \u263a'])
  t.same(s.keys('\ud83d'), ['\ud83d\udd11'])
  t.equal(s.get('caf\u0169'), undefined, 'a wide char is not its low byte')
  t.equal(s.get('\u263a'), undefined)
  s.set('', Buffer.alloc(0))
  t.has(s.get(''), { value: Buffer.alloc(0), flags: 0 })
  t.equal(s.bytes, keys.reduce((n, k) => n + k.length + 3 + ENTRY_OVERHEAD_BYTES, 0) - 3)
  for (const k of keys) t.equal(s.delete(k), true)
  t.equal(s.bytes, 0)
})

t.test('values of 0 bytes', async (t) => {
  const { store: s, advance } = clocked()
  s.set('z', Buffer.alloc(0), 0, 7)
  t.has(s.get('z'), { value: Buffer.alloc(0), flags: 7 })
  t.equal(s.bytes, 1 + ENTRY_OVERHEAD_BYTES)
  s.set('z', Buffer.from('abc'))
  t.same(s.get('z')?.value, Buffer.from('abc'))
  s.set('z', Buffer.alloc(0), 10)
  t.equal(s.get('z')?.value.length, 0)
  t.equal(s.bytes, 1 + ENTRY_OVERHEAD_BYTES)
  t.same(
    [...s.entries()].map(([k, e, ttl]) => [k, e.value.length, ttl]),
    [['z', 0, 10]],
  )
  advance(11)
  t.equal(s.get('z'), undefined)
  t.equal(s.counters.expirations, 1)
  s.set('y', Buffer.alloc(0))
  t.equal(s.delete('y'), true)
  t.equal(s.bytes, 0)
})

t.test('64 KiB values, and longer ones on pages of their own', async (t) => {
  t.equal(new CompactStore().options.maxValueBytes, 1024 * 1024, "the default is memcached's item limit")
  const s = new CompactStore({ maxValueBytes: 64 * 1024 })
  const views: Buffer[] = []
  for (let i = 0; i < 40; i++) {
    s.set(`big${i}`, random(64 * 1024 - (i % 2)))
    views.push(s.peek(`big${i}`)!.value)
  }
  for (let i = 0; i < 40; i++) t.same(s.get(`big${i}`)?.value, random(64 * 1024 - (i % 2)), `big${i} intact`)
  t.throws(() => s.set('over', Buffer.alloc(64 * 1024 + 1)), { code: 'TOO_LARGE' })
  t.equal(s.flush(), 40)
  t.ok(views.every(isZero), 'all wiped')

  const l = new CompactStore({ maxValueBytes: 3 * 1024 * 1024 })
  for (const len of [64 * 1024 + 1, 100_000, 2 * 1024 * 1024]) {
    l.set('k', random(len), 0, len)
    const v = l.peek('k')!.value
    t.has(l.get('k'), { value: random(len), flags: len }, `${len} bytes round trip`)
    l.set('k', Buffer.from('small'))
    t.ok(isZero(v), `${len} bytes wiped when overwritten`)
  }
})

t.test('a view stays valid while other entries come and go', async (t) => {
  const s = new CompactStore({ maxBytes: 1 << 30 })
  s.set('keep', random(300))
  const v = s.get('keep')!.value
  for (let i = 0; i < 20_000; i++) {
    s.set(`k${i % 3000}`, random(1 + (i % 700)))
    if (i % 3 === 0) s.delete(`k${(i * 7) % 3000}`)
  }
  t.same(v, random(300))
})

t.test('released values leave nothing in the slab', async (t) => {
  const { store: s, advance } = clocked({ maxBytes: 256 * 1024 })
  const views: Buffer[] = []
  const hold = (k: string) => views.push(s.peek(k)!.value)
  for (let i = 0; i < 3000; i++) {
    s.set(`k${i}`, random(1 + ((i * 37) % 2000)), 1 + (i % 50)) // many classes; evictions
    hold(`k${i}`)
    if (i % 5 === 0) s.set(`k${i}`, random(7)) // overwrites
    if (i % 7 === 0) s.delete(`k${i}`)
    if (i % 11 === 0) s.get(`k${i - 1}`)
    if (i % 100 === 0) {
      advance(10)
      s.purgeStale()
    }
  }
  t.ok(s.counters.evictions > 0 && s.counters.expirations > 0, 'evicted and expired entries')
  for (const k of s.keys()) if (k.endsWith('0')) s.delete(k)
  advance(25)
  s.purgeStale()
  s.flush()
  const pages = new Set(views.map((v) => v.buffer))
  t.ok(pages.size > 10, `${pages.size} pages`)
  t.ok(
    [...pages].every((p) => isZero(new Uint8Array(p))),
    'every page the store used is all zero',
  )
})

// --- Differential: CompactStore against a plain model and against Store -------------------

interface ModelEntry {
  value: Buffer
  flags: number
  /** Versions are not modelled (each store has its own clock); see the version tests. */
  version: bigint
  expires: number
}

/** The store's rules in the plainest terms: a Map in LRU order (first = least recently used). */
class Model {
  readonly counters = { hits: 0, misses: 0, sets: 0, deletes: 0, touches: 0, evictions: 0, expirations: 0 }
  readonly map = new Map<string, ModelEntry>()
  bytes = 0
  constructor(
    readonly o: StoreOptions,
    readonly now: () => number,
  ) {}

  static size(k: string, e: ModelEntry): number {
    return k.length + e.value.length + ENTRY_OVERHEAD_BYTES
  }
  ttl(ttlMs: number): number {
    if (!Number.isFinite(ttlMs) || ttlMs < 0) throw Object.assign(new Error('bad ttl'), { code: 'BAD_TTL' })
    return ttlMs === 0 ? this.o.defaultTtlMs : Math.min(Math.ceil(ttlMs), this.o.maxTtlMs)
  }
  live(k: string): ModelEntry | undefined {
    const e = this.map.get(k)
    return e && !(this.now() > e.expires) ? e : undefined
  }
  drop(k: string): void {
    this.bytes -= Model.size(k, this.map.get(k)!)
    this.map.delete(k)
  }
  use(k: string, e: ModelEntry): void {
    this.map.delete(k)
    this.map.set(k, e)
  }
  get(k: string): StoreEntry | undefined {
    const e = this.map.get(k)
    if (e && this.now() > e.expires) {
      this.drop(k)
      this.counters.expirations++
    } else if (e) {
      this.use(k, e)
      this.counters.hits++
      return e
    }
    this.counters.misses++
    return undefined
  }
  peek(k: string): StoreEntry | undefined {
    return this.live(k)
  }
  has(k: string): boolean {
    return this.live(k) !== undefined
  }
  remainingTtl(k: string): number {
    const e = this.map.get(k)
    if (!e) return 0
    if (e.expires === Infinity) return this.o.maxTtlMs
    const r = e.expires - this.now()
    return r > 0 ? Math.ceil(r) : 0
  }
  set(k: string, v: Buffer, ttlMs: number, flags: number): void {
    if (v.length > this.o.maxValueBytes) throw Object.assign(new Error('too large'), { code: 'TOO_LARGE' })
    const ttl = this.ttl(ttlMs)
    const e = { value: Buffer.from(v), flags, version: 0n, expires: ttl === 0 ? Infinity : this.now() + ttl }
    const size = Model.size(k, e)
    if (size > this.o.maxBytes) throw Object.assign(new Error('too large'), { code: 'TOO_LARGE' })
    if (this.map.has(k)) this.drop(k)
    while (this.bytes + size > this.o.maxBytes) {
      this.drop(this.map.keys().next().value!)
      this.counters.evictions++
    }
    this.map.set(k, e)
    this.bytes += size
    this.counters.sets++
  }
  delete(k: string): boolean {
    if (!this.map.has(k)) return false
    this.drop(k)
    this.counters.deletes++
    return true
  }
  touch(k: string, ttlMs: number): boolean {
    const ttl = this.ttl(ttlMs)
    const e = this.live(k)
    if (!e) return false
    this.use(k, e)
    e.expires = ttl === 0 ? Infinity : this.now() + ttl
    this.counters.touches++
    return true
  }
  keys(prefix: string, limit: number): string[] {
    return [...this.map.keys()]
      .reverse()
      .filter((k) => k.startsWith(prefix) && this.has(k))
      .slice(0, Math.max(0, limit))
  }
  purgeStale(): void {
    for (const k of [...this.map.keys()]) {
      if (this.now() > this.map.get(k)!.expires) {
        this.drop(k)
        this.counters.expirations++
      }
    }
  }
  flush(): number {
    const n = this.map.size
    this.map.clear()
    this.bytes = 0
    return n
  }
}

type Op =
  | { op: 'get' | 'peek' | 'has' | 'delete' | 'remainingTtl'; k: number }
  | { op: 'set'; k: number; len: number; fill: number; ttl: number; flags: number }
  | { op: 'touch'; k: number; ttl: number }
  | { op: 'keys'; prefix: string; limit: number }
  | { op: 'advance'; ms: number }
  | { op: 'purgeStale' | 'flush' | 'entries' }

/** Keys of the random workloads: latin1 mostly, an empty one and some wider than a byte a char. */
const KEYS = [...Array(20).keys()].map((i) => `k${i}`).concat(['', 'k', '\u0138', 'k\u263a', '\u00ff'])
const key = fc.integer({ min: 0, max: KEYS.length - 1 })
const ttl = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 120 }), fc.constantFrom(0.5, 99.2, -1, 1e9))
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ op: fc.constantFrom('get', 'peek', 'has', 'delete', 'remainingTtl'), k: key }), weight: 6 },
  {
    arbitrary: fc.record({
      op: fc.constant('set'),
      k: key,
      len: fc.oneof(
        { arbitrary: fc.integer({ min: 0, max: 300 }), weight: 4 },
        { arbitrary: fc.integer({ min: 0, max: 5000 }), weight: 1 },
      ),
      fill: fc.integer({ min: 1, max: 255 }),
      ttl,
      flags: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: -5, max: 5 })),
    }),
    weight: 6,
  },
  { arbitrary: fc.record({ op: fc.constant('touch'), k: key, ttl }), weight: 2 },
  {
    arbitrary: fc.record({
      op: fc.constant('keys'),
      prefix: fc.constantFrom('', 'k', 'k1', 'x', '\u0138', 'k\u263a'),
      limit: fc.constantFrom(Infinity, 0, 1, 3),
    }),
    weight: 1,
  },
  { arbitrary: fc.record({ op: fc.constant('advance'), ms: fc.oneof(fc.integer({ min: 0, max: 40 }), fc.constant(0.5)) }), weight: 3 },
  { arbitrary: fc.record({ op: fc.constantFrom('purgeStale', 'flush', 'entries') }), weight: 1 },
)

type Subject = Pick<StoreApi, 'get' | 'peek' | 'has' | 'remainingTtl' | 'set' | 'delete' | 'touch' | 'keys' | 'purgeStale' | 'flush'> & {
  counters: StoreApi['counters']
}

function apply(s: Subject, o: Op): unknown {
  const entry = (e: StoreEntry | undefined) => e && { value: e.value.toString('hex'), flags: e.flags }
  try {
    switch (o.op) {
      case 'get':
        return entry(s.get(KEYS[o.k]!))
      case 'peek':
        return entry(s.peek(KEYS[o.k]!))
      case 'has':
        return s.has(KEYS[o.k]!)
      case 'remainingTtl':
        return s.remainingTtl(KEYS[o.k]!)
      case 'delete':
        return s.delete(KEYS[o.k]!)
      case 'set':
        return s.set(KEYS[o.k]!, Buffer.alloc(o.len, o.fill), o.ttl, o.flags)
      case 'touch':
        return s.touch(KEYS[o.k]!, o.ttl)
      case 'keys':
        return s.keys(o.prefix, o.limit)
      case 'purgeStale':
        return s.purgeStale()
      case 'flush':
        return s.flush()
      case 'entries':
        return undefined // compared after every step
      case 'advance':
        return undefined
    }
  } catch (err) {
    return { thrown: (err as { code?: string }).code }
  }
}

function snapshot(s: StoreApi | Model): unknown {
  return {
    counters: { ...s.counters },
    bytes: s.bytes,
    size: s instanceof Model ? s.map.size : s.size,
    order: s.keys('', Infinity),
    ttl: KEYS.map((k) => [s.has(k), s.remainingTtl(k)]),
    entries: s instanceof Model ? undefined : [...s.entries()].map(([k, e, ttl]) => [k, e.value.toString('hex'), e.flags, ttl]),
  }
}

t.test('differential: CompactStore behaves as the model and as Store', async (t) => {
  let steps = 0
  fc.assert(
    fc.property(fc.integer({ min: 1200, max: 12_000 }), fc.array(opArb, { minLength: 1, maxLength: 200, size: 'max' }), (maxBytes, ops) => {
      let now = 1_000_000
      const o: StoreOptions = { ...STORE_DEFAULTS, maxBytes, maxValueBytes: 4000, defaultTtlMs: 50, maxTtlMs: 100 }
      const clock = () => now
      const c = new CompactStore({ ...o, monotonicMs: clock })
      const s = new Store({ ...o, monotonicMs: clock })
      const m = new Model(o, clock)
      for (const op of ops) {
        steps++
        // Views of every live value before the step: the ones the step releases must read zero.
        const held = new Map<string, Buffer>()
        for (const k of c.keys()) held.set(k, c.peek(k)!.value)
        if (op.op === 'advance') now += op.ms
        const want = apply(m, op)
        assert.deepStrictEqual(apply(c, op), want, `CompactStore ${JSON.stringify(op)}`)
        assert.deepStrictEqual(apply(s, op), want, `Store ${JSON.stringify(op)}`)
        const mine = snapshot(c)
        assert.deepStrictEqual(snapshot(s), mine, `Store and CompactStore after ${JSON.stringify(op)}`)
        const { entries: _, ...model } = mine as { entries: unknown }
        assert.deepStrictEqual(snapshot(m), { ...model, entries: undefined }, `model and CompactStore after ${JSON.stringify(op)}`)
        assert.ok(c.bytes <= maxBytes)
        for (const [k, v] of held) {
          const released = !m.map.has(k) || (op.op === 'set' && KEYS[op.k] === k && !('thrown' in ((want as object) ?? {})))
          if (released) assert.ok(isZero(v), `released value of ${k} wiped after ${JSON.stringify(op)}`)
        }
      }
    }),
    { numRuns: 400 },
  )
  t.pass(`400 random workloads, ${steps} steps, agree`)
})
