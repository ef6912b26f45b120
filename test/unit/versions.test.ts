/** The versions' clock (HLC), the version rule and the tombstones, on fake time. */
import t from 'tap'
import fc from 'fast-check'
import {
  Hlc,
  NO_VERSION,
  Tombstones,
  VERSION_MAX,
  copyRetrySpanMs,
  newer,
  peerWins,
  tombstoneLifetimeMs,
  validVersion,
  versionWallMs,
} from '../../daemon/store/versions.js'
import { FIELDS, type Config } from '../../daemon/config/config.js'

const T = 1_764_000_000_000

t.test('HLC: layout, wall clock, logical part and tiebreak', async (t) => {
  let wall = T
  const c = new Hlc(() => wall, 0x2a)
  const a = c.next()
  t.equal(a, (BigInt(T) << 16n) | 0x2an, '48-bit wall ms | logical 0 | tiebreak')
  t.equal(versionWallMs(a), T)
  const b = c.next()
  t.equal(b, (BigInt(T) << 16n) | 0x012an, 'same ms: the logical part counts')
  wall += 1
  t.equal(c.next(), (BigInt(T + 1) << 16n) | 0x2an, 'a new ms: logical back to 0')
  t.throws(() => new Hlc(() => wall, 256), RangeError)
})

t.test('HLC: never goes back, also when the wall clock does, and borrows a ms on overflow', async (t) => {
  let wall = T
  const c = new Hlc(() => wall, 1)
  let last = c.next()
  let ordered = true
  for (let i = 0; i < 1000; i++) {
    const v = c.next()
    ordered &&= v > last
    last = v
  }
  t.ok(ordered, 'each of 1000 writes in one ms is newer than the one before')
  t.ok(versionWallMs(last) > T, '1000 writes in one ms borrow from the next ms')
  wall = T - 60_000
  const back = c.next()
  t.ok(back > last, 'a wall clock set back does not make older versions')
  wall = T + 10
  t.equal(versionWallMs(c.next()), T + 10, 'back in step with the wall clock once it passes')
})

t.test('HLC: observing a version moves the clock past it; older ones change nothing', async (t) => {
  let wall = T
  const c = new Hlc(() => wall, 3)
  const peer = new Hlc(() => wall + 5_000, 4).next()
  c.observe(peer)
  const mine = c.next()
  t.ok(mine > peer, "a write after a peer's newer version is newer than it")
  t.equal(versionWallMs(mine), T + 5_000)
  c.observe((BigInt(T - 1) << 16n) | 5n)
  t.ok(c.next() > mine, 'an old version does not set the clock back')
  wall = T + 6_000
  t.equal(versionWallMs(c.next()), T + 6_000)
})

t.test('HLC: two clocks with different tiebreaks never make equal versions', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 3 })), { maxLength: 200 }), (steps) => {
      let wall = T
      const a = new Hlc(() => wall, 1)
      const b = new Hlc(() => wall, 2)
      const seen = new Set<bigint>()
      for (const [which, tick] of steps) {
        wall += tick
        const v = (which ? a : b).next()
        if (seen.has(v)) return false
        seen.add(v)
        ;(which ? b : a).observe(v)
      }
      return true
    }),
  )
  t.pass('unique over random interleavings')
})

t.test('the rule: newer wins; equal versions are ordered the same way on every host', async (t) => {
  const v = 100n
  t.equal(newer(v + 1n, Buffer.from('a'), v, Buffer.from('z')), true)
  t.equal(newer(v - 1n, Buffer.from('z'), v, Buffer.from('a')), false)
  t.equal(newer(v, Buffer.from('a'), v, Buffer.from('a')), false, 'the same write does not beat itself')
  t.equal(newer(v, Buffer.from('b'), v, Buffer.from('a')), true)
  t.equal(newer(v, Buffer.from('a'), v, Buffer.from('b')), false)
  t.equal(newer(v, undefined, v, Buffer.from('a')), true, 'a delete beats a value of the same version')
  t.equal(newer(v, Buffer.from('a'), v, undefined), false, 'a value does not beat a delete of the same version')
  t.equal(newer(v, undefined, v, undefined), false)
  t.equal(newer(1n, Buffer.from('a'), NO_VERSION, undefined), true)
})

t.test('tombstones: kept for their lifetime, oldest first, bounded, with a floor while one left early', async (t) => {
  let now = 0
  const ts = new Tombstones({ lifetimeMs: 100, max: 2, monotonicMs: () => now })
  ts.add('a', 10n)
  now = 50
  ts.add('b', 20n)
  t.equal(ts.get('a'), 10n)
  now = 100
  t.equal(ts.get('a'), 10n, 'alive at the end of its lifetime')
  now = 101
  t.equal(ts.get('a'), undefined, 'gone after it')
  ts.add('c', 30n)
  ts.add('d', 40n)
  t.equal(ts.size, 2)
  t.equal(ts.counters.tombstonesEvictedEarly, 1, 'b went before its time')
  t.equal(ts.floor('b'), 20n, 'its version is the floor of its bucket')
  const elsewhere = otherBucket(ts, 'b')
  t.equal(ts.floor(elsewhere), NO_VERSION, 'and of no other bucket')
  now = 150
  t.equal(ts.floor('b'), 20n, 'until b would have expired')
  now = 151
  t.equal(ts.floor('b'), NO_VERSION)
  ts.remove('c')
  t.equal(ts.get('c'), undefined)
  const none = new Tombstones({ lifetimeMs: 100, max: 0, monotonicMs: () => now })
  none.add('x', 5n)
  t.equal(none.size, 0, 'max 0 keeps none')
  t.equal(none.floor('x'), 5n, 'and fails safe at once')
  t.throws(() => new Tombstones({ lifetimeMs: 1, max: -1, monotonicMs: () => 0 }), TypeError)
})

t.test('tombstone lifetime: derived from the replay window and the copy retries in the config', async (t) => {
  t.equal(copyRetrySpanMs(100, 0), 100)
  t.equal(copyRetrySpanMs(100, 3), 100 + 200 + 400 + 800)
  t.equal(copyRetrySpanMs(100, 10), 100 + 200 + 400 + 800 + 1600 + 6 * 2000, 'each wait capped at 2 s')
  const defaults = Object.fromEntries(FIELDS.map((f) => [f.key, f.def()])) as unknown as Config
  t.equal(
    tombstoneLifetimeMs(defaults),
    2 * defaults.replayWindowMs + copyRetrySpanMs(defaults.replicationAckTimeoutMs, defaults.replicationRetries),
  )
  t.equal(tombstoneLifetimeMs(defaults), 75_100, 'at the defaults (README: maxTombstones)')
})

t.test('HLC: a forged far-future version is not observed; at the top of the range the clock saturates instead of wrapping', async (t) => {
  const wall = T
  const c = new Hlc(() => wall, 1)
  c.observe(VERSION_MAX)
  t.equal(versionWallMs(c.next()), T, 'u64 max (wall part at the top of 48 bits) ignored')
  t.notOk(validVersion(VERSION_MAX))
  t.notOk(validVersion(VERSION_MAX + 1n))
  t.notOk(validVersion(-1n))
  t.ok(validVersion((BigInt(T) << 16n) | 0xffffn))
  const top = new Hlc(() => 2 ** 48 - 1, 0)
  let last = 0n
  let within = true
  for (let i = 0; i < 600; i++) {
    last = top.next()
    within &&= last <= VERSION_MAX
  }
  t.ok(within, '600 versions in the last ms of the range all within 64 bits')
  t.equal(versionWallMs(last), 2 ** 48 - 1, 'saturated at the top wall value')
})

t.test('Tombstones: an early eviction raises the floor with its version for one lifetime', async (t) => {
  let now = 0
  const ts = new Tombstones({ lifetimeMs: 1000, max: 10, monotonicMs: () => now })
  ts.evicted('k', 500n)
  t.equal(ts.counters.evictionsFloored, 1)
  t.ok(peerWins(ts, otherBucket(ts, 'k'), 400n, Buffer.from('old'), undefined), 'a key of another bucket is not floored')
  t.notOk(peerWins(ts, 'k', 500n, Buffer.from('old'), undefined), 'a copy at the evicted version is refused')
  t.ok(peerWins(ts, 'k', 501n, Buffer.from('new'), undefined), 'a newer one is applied')
  now = 1001
  t.ok(peerWins(ts, 'k', 400n, Buffer.from('old'), undefined), 'after one lifetime the floor is gone')
})

/** A key that falls in another floor bucket than `key`. */
function otherBucket(ts: Tombstones, key: string): string {
  for (let i = 0; ; i++) if (ts.bucket(`other-${i}`) !== ts.bucket(key)) return `other-${i}`
}

t.test(
  'Tombstones: deletes of keys held nothing of have a table of their own, whose overflow raises no floor (issue 21 point 5)',
  async (t) => {
    let now = 0
    const ts = new Tombstones({ lifetimeMs: 1000, max: 10, monotonicMs: () => now })
    ts.add('real', 7n, true)
    for (let i = 0; i < 5000; i++) ts.add(`rnd-${i}`, 100n + BigInt(i), false)
    t.equal(ts.counters.unheldTombstonesDropped, 4990, 'the flood pushed out only its own kind')
    t.equal(ts.counters.tombstonesEvictedEarly, 0)
    t.equal(ts.get('real'), 7n, "a held key's tombstone survives the flood")
    t.equal(ts.get('rnd-4999'), 5099n, 'the newest unheld deletes are remembered')
    let refused = 0
    for (let i = 0; i < 1000; i++) if (!peerWins(ts, `sess-${i}`, 50n, Buffer.from('v'), undefined)) refused++
    t.equal(refused, 0, 'no fill of another key is refused')
    t.notOk(peerWins(ts, 'rnd-4999', 50n, Buffer.from('v'), undefined), 'an older copy of a remembered one is refused')
    ts.add('rnd-4999', 6000n, false)
    t.equal(ts.get('rnd-4999'), 6000n, 'deleted again: still one tombstone')
    t.equal(ts.size, 11)
    ts.add('real', 8n, false)
    for (let i = 0; i < 20; i++) ts.add(`more-${i}`, 9000n, false)
    t.equal(ts.get('real'), 8n, 'a key with a tombstone deleted again stays in the held table')
    now = 1001
    ts.purge()
    t.equal(ts.size, 0, 'both tables expire')
  },
)

t.test('Tombstones: held tombstones evicted early raise the floor of their own bucket only', async (t) => {
  const ts = new Tombstones({ lifetimeMs: 1000, max: 10, monotonicMs: () => 0 })
  for (let i = 0; i < 5000; i++) ts.add(`x-${i}`, 1000n + BigInt(i), true)
  t.equal(ts.counters.tombstonesEvictedEarly, 4990)
  const floored = new Set(Array.from({ length: 4990 }, (_, i) => ts.bucket(`x-${i}`)))
  let refused = 0
  let expected = 0
  for (let i = 0; i < 2000; i++) {
    const k = `sess-${i}`
    if (floored.has(ts.bucket(k))) expected++
    if (!peerWins(ts, k, 50n, Buffer.from('v'), undefined)) refused++
  }
  t.equal(refused, expected, `refused exactly the keys of floored buckets (${expected} of 2000)`)
  t.ok(refused < 400, 'not every key')
  for (let i = 0; i < 4990; i++) if (peerWins(ts, `x-${i}`, 999n, Buffer.from('v'), undefined)) t.fail(`x-${i} came back`)
})
