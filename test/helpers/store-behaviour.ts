/**
 * The store's behaviour, as tests that take the store class: run for `Store` (store.test.ts) and
 * for `CompactStore` (compact-store.test.ts), which must behave the same.
 */
import t from 'tap'
import fc from 'fast-check'
import { ENTRY_OVERHEAD_BYTES, NO_VERSION, type StoreOptions } from '../../daemon/store/session-store.js'
import type { LruStore as Store } from '../../daemon/store/lru-store.js'
import { Hlc } from '../../daemon/store/versions.js'

/** The public API of Store (its #private fields aside), which every store class implements. */
export type StoreApi = Pick<Store, keyof Store>
export type StoreClass = new (options?: Partial<StoreOptions>) => StoreApi

export function storeBehaviour(Impl: StoreClass): void {
  function clocked(opts: Partial<StoreOptions> = {}) {
    let now = 1_000_000
    const store = new Impl({ ...opts, monotonicMs: () => now })
    return { store, advance: (ms: number) => (now += ms) }
  }

  t.test('get, set, delete and counters', async (t) => {
    const s = new Impl()
    t.equal(s.get('a'), undefined)
    s.set('a', Buffer.from('hello'))
    t.same(s.get('a')?.value, Buffer.from('hello'))
    t.equal(s.delete('a'), true)
    t.equal(s.delete('a'), false)
    t.match(s.stats(), { hits: 1, misses: 1, sets: 1, deletes: 1, entries: 0, bytes: 0 })
  })

  t.test('the store keeps its own copy of a value', async (t) => {
    const s = new Impl()
    const v = Buffer.from('secret')
    s.set('k', v)
    v.fill(0x41)
    t.same(s.get('k')?.value, Buffer.from('secret'))
  })

  t.test('TTL: default, per entry, capped, and remaining', async (t) => {
    const { store, advance } = clocked({ defaultTtlMs: 300_000, maxTtlMs: 3_600_000 })
    store.set('d', Buffer.from('x'))
    store.set('e', Buffer.from('x'), 1000)
    store.set('c', Buffer.from('x'), 10 * 3_600_000)
    t.equal(store.remainingTtl('d'), 300_000)
    t.equal(store.remainingTtl('c'), 3_600_000, 'capped at maxTtlMs')
    advance(999)
    t.ok(store.get('e'), 'alive at 999 ms')
    t.equal(store.remainingTtl('e'), 1)
    advance(2)
    t.equal(store.get('e'), undefined, 'gone at 1001 ms')
    t.equal(store.remainingTtl('e'), 0)
    t.equal(store.counters.expirations, 1)
    t.throws(() => store.set('x', Buffer.from('x'), -1), { code: 'BAD_TTL' })
  })

  t.test('touch gives a new TTL and keeps the value', async (t) => {
    const { store, advance } = clocked()
    store.set('k', Buffer.from('v'), 1000)
    advance(900)
    t.equal(store.touch('k', 5000), true)
    advance(4000)
    t.same(store.get('k')?.value, Buffer.from('v'))
    t.equal(store.touch('nope', 10), false)
  })

  t.test('released values are zero-filled: evicted, expired, deleted, overwritten, flushed', async (t) => {
    const { store, advance } = clocked({ maxBytes: 3 * (ENTRY_OVERHEAD_BYTES + 1 + 100), maxValueBytes: 100 })
    const held = (k: string) => store.peek(k)!.value
    store.set('a', Buffer.alloc(100, 1))
    const a = held('a')
    store.set('b', Buffer.alloc(100, 2))
    store.set('c', Buffer.alloc(100, 3))
    store.set('d', Buffer.alloc(100, 4)) // evicts a
    t.equal(store.has('a'), false)
    t.ok(
      a.every((x) => x === 0),
      'evicted value wiped',
    )
    t.equal(store.counters.evictions, 1)

    const b = held('b')
    store.delete('b')
    t.ok(
      b.every((x) => x === 0),
      'deleted value wiped',
    )

    const c = held('c')
    store.set('c', Buffer.alloc(100, 9))
    t.ok(
      c.every((x) => x === 0),
      'overwritten value wiped',
    )

    store.set('e', Buffer.alloc(10, 5), 10)
    const e = held('e')
    advance(20)
    store.purgeStale()
    t.ok(
      e.every((x) => x === 0),
      'expired value wiped by the purge',
    )
    t.equal(store.counters.expirations, 1)

    const d = held('d')
    t.equal(store.flush(), 2)
    t.ok(
      d.every((x) => x === 0),
      'flushed value wiped',
    )
  })

  t.test('flags travel with the value', async (t) => {
    const s = new Impl()
    s.set('k', Buffer.from('v'), 0, 0xdeadbeef)
    t.equal(s.get('k')?.flags, 0xdeadbeef)
    s.set('k', Buffer.from('v'))
    t.equal(s.get('k')?.flags, 0)
  })

  t.test('value size limit', async (t) => {
    const s = new Impl({ maxValueBytes: 10 })
    t.throws(() => s.set('k', Buffer.alloc(11)), { code: 'TOO_LARGE', message: /11 bytes, at most 10/ })
    s.set('k', Buffer.alloc(10))
    t.equal(s.size, 1)
  })

  t.test('the store never holds more than its byte bound', async (t) => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 4096 })), { minLength: 1, maxLength: 400 }),
        (ops) => {
          const maxBytes = 16 * 1024
          const s = new Impl({ maxBytes, maxValueBytes: 4096 })
          for (const [k, len] of ops) {
            s.set(`key-${k}`, Buffer.alloc(len, 7))
            if (s.bytes > maxBytes) return false
          }
          // What the store reports is what it holds.
          let sum = 0
          for (const [k, e] of s.entries()) sum += k.length + e.value.length + ENTRY_OVERHEAD_BYTES
          return sum === s.bytes
        },
      ),
      { numRuns: 200 },
    )
    t.pass('bound held over 200 random workloads')
  })

  t.test('keys by prefix with a limit', async (t) => {
    const s = new Impl()
    for (let i = 0; i < 10; i++) s.set(`a:${i}`, Buffer.from('v'))
    s.set('b:1', Buffer.from('v'))
    t.equal(s.keys('a:').length, 10)
    t.equal(s.keys('a:', 3).length, 3)
    t.same(s.keys('b'), ['b:1'])
    t.same(s.keys('zzz'), [])
  })

  // ---- versions (daemon/store/versions.ts) ----

  /** A store on fake time: `now` for TTLs and tombstones, `wall` for the versions' clock. */
  function versioned(opts: Partial<StoreOptions> = {}) {
    let now = 1_000_000
    let wall = 1_764_000_000_000
    const store = new Impl({ tombstoneLifetimeMs: 10_000, ...opts, monotonicMs: () => now, clock: new Hlc(() => wall, 1) })
    return { store, advance: (ms: number) => (now += ms), setWall: (ms: number) => (wall = ms) }
  }
  /** A version another host's clock would make at `wall` ms (tiebreak 9). */
  const peerVersion = (wall: number, logical = 0) => (BigInt(wall) << 16n) | BigInt((logical << 8) | 9)

  t.test('versions: every local set, touch and delete is newer; get and peek show it', async (t) => {
    const { store } = versioned()
    t.equal(store.version('k'), NO_VERSION, 'nothing known of the key')
    store.set('k', Buffer.from('a'))
    const v1 = store.get('k')!.version
    t.ok(v1 > NO_VERSION)
    t.equal(store.peek('k')!.version, v1, 'peek shows the same version')
    t.equal(store.version('k'), v1)
    store.set('k', Buffer.from('b'))
    const v2 = store.peek('k')!.version
    t.ok(v2 > v1, 'a second set in the same ms is newer (logical part)')
    store.touch('k', 5000)
    const v3 = store.peek('k')!.version
    t.ok(v3 > v2, 'a touch is a write')
    t.equal(store.delete('k'), true)
    const vd = store.version('k')
    t.ok(vd > v3, 'the delete has a newer version, kept by its tombstone')
    t.equal(store.delete('absent'), false)
    t.ok(store.version('absent') > vd, 'a delete of an absent key leaves a tombstone too')
    t.equal(store.stats().tombstones, 2)
  })

  t.test('versions: a peer write is applied only when newer than the entry held', async (t) => {
    const { store } = versioned()
    const t0 = 1_764_000_000_000
    t.equal(store.setFromPeer('k', Buffer.from('new'), 0, 0, peerVersion(t0, 5)), true, 'unknown key: applied')
    t.equal(store.peek('k')!.version, peerVersion(t0, 5), 'the copy keeps its version')
    t.equal(store.setFromPeer('k', Buffer.from('old'), 0, 0, peerVersion(t0, 4)), false, 'an older copy is refused')
    t.same(store.get('k')!.value, Buffer.from('new'), 'and the value is not rolled back')
    t.equal(store.setFromPeer('k', Buffer.from('new'), 0, 0, peerVersion(t0, 5)), false, 'the same copy again changes nothing')
    t.equal(store.setFromPeer('k', Buffer.from('newer'), 0, 0, peerVersion(t0 + 1)), true, 'a newer copy is applied')
    t.same(store.get('k')!.value, Buffer.from('newer'))
    // Equal versions with different values: every host keeps the larger value bytes.
    const v = peerVersion(t0 + 2)
    t.equal(store.setFromPeer('k', Buffer.from('m'), 0, 0, v), true)
    t.equal(store.setFromPeer('k', Buffer.from('a'), 0, 0, v), false, 'equal version, smaller value: refused')
    t.equal(store.setFromPeer('k', Buffer.from('z'), 0, 0, v), true, 'equal version, larger value: applied')
    t.same(store.get('k')!.value, Buffer.from('z'))
    t.equal(store.stats().staleWrites, 3)
  })

  t.test('versions: a delete leaves a tombstone that refuses older copies until its lifetime ends', async (t) => {
    const { store, advance } = versioned({ tombstoneLifetimeMs: 10_000 })
    const t0 = 1_764_000_000_000
    t.equal(store.setFromPeer('k', Buffer.from('secret'), 0, 0, peerVersion(t0 - 5)), true)
    store.delete('k')
    t.equal(store.setFromPeer('k', Buffer.from('secret'), 0, 0, peerVersion(t0 - 5)), false, 'the old copy again: refused')
    t.equal(store.get('k'), undefined, 'the deleted session stays deleted')
    advance(10_000)
    t.equal(store.setFromPeer('k', Buffer.from('secret'), 0, 0, peerVersion(t0 - 5)), false, 'still refused at the end of the lifetime')
    advance(1)
    t.equal(store.stats().tombstones, 1)
    store.purgeStale()
    t.equal(store.stats().tombstones, 0, 'an expired tombstone is purged')
    t.equal(
      store.setFromPeer('k', Buffer.from('secret'), 0, 0, peerVersion(t0 - 5)),
      true,
      'after it (when the transport refuses such a copy as stale) nothing is known',
    )
    // A write newer than the delete (the key was set again elsewhere) is applied at once.
    store.delete('j')
    t.equal(store.setFromPeer('j', Buffer.from('again'), 0, 0, peerVersion(t0 + 60_000)), true, 'a copy newer than the delete is applied')
    t.equal(store.stats().tombstones, 0, 'and the tombstone goes: the live entry holds a newer version')
  })

  t.test('versions: a delete from a peer applies only when newer than what is held', async (t) => {
    const { store } = versioned()
    const t0 = 1_764_000_000_000
    store.setFromPeer('k', Buffer.from('v'), 0, 0, peerVersion(t0, 3))
    t.equal(store.deleteFromPeer('k', peerVersion(t0, 2)), false, 'a delayed delete of an older write: refused')
    t.ok(store.get('k'), 'the newer value stays')
    t.equal(store.deleteFromPeer('k', peerVersion(t0, 4)), true)
    t.equal(store.get('k'), undefined)
    t.equal(store.version('k'), peerVersion(t0, 4), "the tombstone keeps the delete's version")
    t.equal(store.deleteFromPeer('nothing', peerVersion(t0, 1)), true, 'a delete of a key never held is remembered')
    t.equal(store.setFromPeer('nothing', Buffer.from('x'), 0, 0, peerVersion(t0)), false, 'so an older copy of it is refused')
    // A delete and a value of equal versions: the delete wins.
    t.equal(store.setFromPeer('nothing', Buffer.from('x'), 0, 0, peerVersion(t0, 1)), false)
  })

  t.test('versions: the clock moves past every version it is shown', async (t) => {
    const { store, setWall } = versioned()
    const ahead = peerVersion(1_764_000_000_000 + 5_000, 7)
    store.setFromPeer('a', Buffer.from('from a host whose clock is ahead'), 0, 0, ahead)
    store.set('a', Buffer.from('local'))
    t.ok(store.peek('a')!.version > ahead, 'a local write after it is newer, though our wall clock is behind')
    store.deleteFromPeer('b', peerVersion(1_764_000_000_000 + 9_000))
    store.set('b', Buffer.from('again'))
    t.ok(store.peek('b'), "a set after a peer's delete made with a clock ahead of ours is kept")
    setWall(1_764_000_000_000 + 60_000)
    store.set('c', Buffer.from('x'))
    t.equal(store.peek('c')!.version >> 16n, BigInt(1_764_000_000_000 + 60_000), 'and follows the wall clock again once it passes')
  })

  t.test('versions: tombstones are bounded; one evicted early fails safe', async (t) => {
    const { store, advance } = versioned({ maxTombstones: 2, tombstoneLifetimeMs: 10_000 })
    const t0 = 1_764_000_000_000
    store.setFromPeer('old', Buffer.from('x'), 0, 0, peerVersion(t0 - 1000))
    for (const k of ['a', 'b', 'c']) store.set(k, Buffer.from('x'))
    store.delete('a')
    store.delete('b')
    store.delete('c')
    t.equal(store.stats().tombstones, 2, 'at most maxTombstones')
    t.equal(store.stats().tombstonesEvictedEarly, 1)
    t.equal(store.version('a'), NO_VERSION, 'the oldest went first')
    t.equal(
      store.setFromPeer('a', Buffer.from('resurrected?'), 0, 0, peerVersion(t0 - 10)),
      false,
      'an old copy of its key is still refused: below its bucket floor',
    )
    t.equal(store.setFromPeer('old', Buffer.from('y'), 0, 0, peerVersion(t0 - 500)), true, 'a key held live is judged by its own version')
    t.equal(store.setFromPeer('fresh', Buffer.from('x'), 0, 0, peerVersion(t0 + 10_000)), true, 'a copy newer than the floor is applied')
    advance(10_001)
    t.equal(
      store.setFromPeer('a', Buffer.from('x'), 0, 0, peerVersion(t0 - 10)),
      true,
      'the floor ends when the evicted tombstone would have',
    )
  })

  t.test('versions: deletes of keys held nothing of fill a table of their own and raise no floor (issue 21 point 5)', async (t) => {
    const { store } = versioned({ maxTombstones: 2, tombstoneLifetimeMs: 10_000 })
    const t0 = 1_764_000_000_000
    store.set('kept', Buffer.from('x'))
    store.delete('kept')
    for (let i = 0; i < 1000; i++) store.delete(`rnd-${i}`)
    for (let i = 0; i < 1000; i++) store.deleteFromPeer(`peer-rnd-${i}`, peerVersion(t0 + i))
    const s = store.stats()
    t.equal(s.tombstonesEvictedEarly, 0, 'no held tombstone pushed out')
    t.equal(s.unheldTombstonesDropped, 1998, 'the flood pushed out its own kind')
    t.equal(s.tombstones, 3)
    t.ok(store.version('kept') > NO_VERSION, 'the deleted session keeps its tombstone')
    t.equal(store.setFromPeer('kept', Buffer.from('resurrected?'), 0, 0, peerVersion(t0 - 10)), false, 'and its old copy is refused')
    let filled = 0
    for (let i = 0; i < 200; i++) if (store.setFromPeer(`sess-${i}`, Buffer.from('v'), 0, 0, peerVersion(t0 - 1000))) filled++
    t.equal(filled, 200, 'every fill of another session is applied')
  })

  t.test('versions: flush forgets tombstones with the entries', async (t) => {
    const { store } = versioned()
    store.delete('k')
    store.set('j', Buffer.from('v'))
    t.equal(store.flush(), 1)
    t.equal(store.stats().tombstones, 0)
    t.equal(store.version('k'), NO_VERSION)
  })

  // Tenants (protocol/tenant-keys.ts): each tenant's share of maxBytes bounds its entries alone.
  const A = (k: string) => `\u0000alpha\u0000${k}`
  const B = (k: string) => `\u0000beta\u0000${k}`
  const tenanted = (opts: Partial<StoreOptions> = {}) => {
    const { store, advance, setWall } = versioned({
      maxBytes: 200_000,
      maxValueBytes: 10_000,
      tenantQuotas: new Map([
        ['', 50_000],
        ['alpha', 50_000],
        ['beta', 100_000],
      ]),
      ...opts,
    })
    return { store, advance, setWall }
  }

  t.test('tenants: a tenant over its share evicts only its own entries', async (t) => {
    const { store } = tenanted()
    const v = Buffer.alloc(1000, 1)
    for (let i = 0; i < 40; i++) store.set(B(`s${i}`), v)
    for (let i = 0; i < 20; i++) store.set(`d${i}`, v)
    for (let i = 0; i < 500; i++) store.set(A(`flood${i}`), v)
    for (let i = 0; i < 40; i++) t.ok(store.get(B(`s${i}`)), `beta s${i} kept`)
    for (let i = 0; i < 20; i++) t.ok(store.get(`d${i}`), `default d${i} kept`)
    const a = store.usage('alpha')!
    t.ok(a.bytes <= 50_000 && a.bytes > 40_000, `alpha within its share (${a.bytes} bytes)`)
    t.equal(a.maxBytes, 50_000)
    t.ok(store.get(A('flood499')), "alpha's newest entry held")
    t.equal(store.get(A('flood0')), undefined, "alpha's oldest evicted")
    const betaBytes = Array.from({ length: 40 }, (_, i) => B(`s${i}`).length + 1000 + ENTRY_OVERHEAD_BYTES).reduce((x, y) => x + y)
    t.same(store.usage('beta'), { entries: 40, bytes: betaBytes, maxBytes: 100_000 }, "beta's usage")
    t.equal(store.usage('gamma'), undefined, 'no share for a tenant not configured')
    t.equal(
      store.stats().bytes,
      store.usage('')!.bytes + store.usage('alpha')!.bytes + store.usage('beta')!.bytes,
      "the store's bytes are its tenants'",
    )
  })

  t.test("tenants: keys of unknown tenants and entries over a share are refused; peers' copies count against their tenant", async (t) => {
    const { store } = tenanted()
    t.throws(() => store.set('\u0000gamma\u0000k', Buffer.from('x')), { code: 'TOO_LARGE' }, 'no share: refused')
    t.throws(() => store.set('\u0000broken', Buffer.from('x')), { code: 'TOO_LARGE' }, 'a malformed namespace: refused')
    t.throws(
      () => store.setFromPeer('\u0000gamma\u0000k', Buffer.from('x'), 1000, 0, peerVersion(1_764_000_000_000)),
      { code: 'TOO_LARGE' },
      'a copy for no tenant of this host: refused',
    )
    const small = tenanted({
      tenantQuotas: new Map([
        ['', 100_000],
        ['alpha', 5_000],
      ]),
      maxValueBytes: 9_000,
    }).store
    t.throws(() => small.set(A('big'), Buffer.alloc(6_000)), { code: 'TOO_LARGE' }, "an entry larger than its tenant's share")
    small.set('big', Buffer.alloc(6_000))
    t.ok(small.get('big'), "fits the default tenant's share")
    for (let i = 0; i < 20; i++)
      t.equal(store.setFromPeer(A(`c${i}`), Buffer.alloc(5000), 60_000, 0, peerVersion(1_764_000_000_000, i)), true)
    t.ok(store.usage('alpha')!.bytes <= 50_000, "copies from peers are held within their tenant's share")
  })

  t.test("tenants: one tenant's evictions never raise the floor of another's fills", async (t) => {
    const { store } = tenanted()
    const t0 = 1_764_000_000_000
    for (let i = 0; i < 200; i++) store.set(A(`flood${i}`), Buffer.alloc(1000))
    t.ok(store.stats().evictions > 0, 'alpha evicted its own')
    // Floors are per tenant and per bucket within it, a bucket by the key after its prefix: the
    // same client key of beta is in the same bucket of beta's floors, which alpha cannot raise.
    const evicted = Array.from({ length: 200 }, (_, i) => `flood${i}`).filter((k) => !store.has(A(k)))
    t.ok(evicted.length > 0, "some of alpha's were evicted")
    for (const k of evicted) {
      t.equal(
        store.setFromPeer(B(k), Buffer.from('x'), 60_000, 0, peerVersion(t0 - 1000)),
        true,
        `an older fill of beta's ${k} is still taken`,
      )
      t.equal(
        store.setFromPeer(A(k), Buffer.from('x'), 60_000, 0, peerVersion(t0 - 1000)),
        false,
        `an older copy of alpha's evicted ${k} is refused (its own floor)`,
      )
    }
  })

  t.test("tenants: flushTenant drops one tenant's entries; keys lists every tenant", async (t) => {
    const { store } = tenanted()
    store.set(A('1'), Buffer.from('a'))
    store.set(B('1'), Buffer.from('b'))
    store.set('1', Buffer.from('d'))
    t.same(new Set(store.keys()), new Set([A('1'), B('1'), '1']))
    t.same(store.keys('\u0000beta\u0000'), [B('1')])
    t.equal(store.flushTenant('alpha'), 1)
    t.equal(store.get(A('1')), undefined)
    t.same(store.get(B('1'))?.value, Buffer.from('b'))
    t.same(store.get('1')?.value, Buffer.from('d'))
    t.equal(store.size, 2)
    t.equal(store.flushTenant('gamma'), 0)
  })
}
