/**
 * The store's behaviour, as tests that take the store class: run for `Store` (store.test.ts) and
 * for `CompactStore` (compact-store.test.ts), which must behave the same.
 */
import t from 'tap'
import fc from 'fast-check'
import { ENTRY_OVERHEAD_BYTES, type Store, type StoreOptions } from '../../daemon/store.js'

/** The public API of Store (its #private fields aside), which every store class implements. */
export type StoreApi = Pick<Store, keyof Store>
export type StoreClass = new (options?: Partial<StoreOptions>) => StoreApi

export function storeBehaviour(Impl: StoreClass): void {
  function clocked(opts: Partial<StoreOptions> = {}) {
    let now = 1_000_000
    const store = new Impl({ ...opts, now: () => now })
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
    t.ok(a.every((x) => x === 0), 'evicted value wiped')
    t.equal(store.counters.evictions, 1)

    const b = held('b')
    store.delete('b')
    t.ok(b.every((x) => x === 0), 'deleted value wiped')

    const c = held('c')
    store.set('c', Buffer.alloc(100, 9))
    t.ok(c.every((x) => x === 0), 'overwritten value wiped')

    store.set('e', Buffer.alloc(10, 5), 10)
    const e = held('e')
    advance(20)
    store.purgeStale()
    t.ok(e.every((x) => x === 0), 'expired value wiped by the purge')
    t.equal(store.counters.expirations, 1)

    const d = held('d')
    t.equal(store.flush(), 2)
    t.ok(d.every((x) => x === 0), 'flushed value wiped')
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
}
