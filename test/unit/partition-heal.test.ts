/**
 * A host cut off from the others for longer than deadAfterMs, and healed (docs/consistency.md,
 * "Partitions"), between cluster cores in one process with fake time: the copies it kept from
 * before the cut are forgotten when a member it declared dead comes back, so it neither serves
 * nor re-places a value overwritten or deleted meanwhile, also once the others' tombstones are
 * gone; a write made on it while cut off stays. When the others restarted instead (new node ids),
 * its copies are the ones that survived, and stay. And the store's part: forgetOlderThan on both
 * engines, and the clock's newest observed version.
 */
import t from 'tap'
import { startLab, type Core } from '../helpers/memory-cluster.js'
import { tombstoneLifetimeMs, Hlc, NO_VERSION, versionAtWallMs, versionWallMs } from '../../daemon/store/versions.js'
import { CompactStore } from '../../daemon/store/compact-store.js'
import { LruStore } from '../../daemon/store/lru-store.js'
import { CORE_DEFAULTS } from '../helpers/memory-cluster.js'

const DELETED = Array.from({ length: 30 }, (_, i) => `del-${i}`)
const OVERWRITTEN = Array.from({ length: 30 }, (_, i) => `ow-${i}`)
const TOMBSTONE_MS = tombstoneLifetimeMs(CORE_DEFAULTS)
/** Sessions outlive the cut and the tombstones (the lab's default TTL is a minute). */
const TTL_MS = 600_000

const value = (c: Core | undefined) => (k: string) => c?.store.peek(k)?.value.toString()

t.test('a host cut off longer than the tombstone lifetime serves and re-places none of what changed meanwhile', async (t) => {
  const { lab: l, cores } = await startLab(t, 4, 41)
  const [a, b, c, d] = cores as [Core, Core, Core, Core]
  // Written on d: d holds every key, and so do its owners.
  for (const k of [...DELETED, ...OVERWRITTEN]) l.set(d, k, `old ${k}`, TTL_MS)
  t.ok(
    await l.until(() => [...DELETED, ...OVERWRITTEN].every((k) => l.ownersOf(k, a).every((o) => o.store.peek(k))), 10_000, 50),
    'copies placed',
  )

  const heal = l.crash(d)
  t.ok(await l.until(() => d.cluster.counters.isolations === 1 && !a.cluster.members.has(d.cluster.nodeId), 10_000, 50), 'd cut off')
  t.equal(d.cluster.members.size, 0, 'd declared every member dead')
  for (const k of DELETED) l.delete(a, k)
  for (const k of OVERWRITTEN) l.set(b, k, `new ${k}`, TTL_MS)
  l.set(d, 'written-while-cut', 'kept', TTL_MS)
  // Past every tombstone of the deletes: only d's copies remember those keys.
  await l.run(TOMBSTONE_MS + 1000)
  for (const x of [a, b, c]) t.equal(DELETED.filter((k) => x.store.version(k) !== NO_VERSION).length, 0, `${x.name}: no tombstone left`)
  t.equal(DELETED.filter((k) => d.store.peek(k)).length, DELETED.length, 'd still holds the deleted keys')

  heal()
  t.ok(await l.converge(), 'every core trusts every other again')
  await l.run(5000) // the re-placement scans and their copies
  t.equal(d.cluster.counters.partitionsHealed, 1, 'd saw the partition heal')
  t.ok(d.cluster.counters.copiesForgottenAtHeal >= DELETED.length + OVERWRITTEN.length, 'd forgot its copies from before the cut')
  for (const x of cores) {
    t.same(
      DELETED.filter((k) => x.store.peek(k)),
      [],
      `${x.name} holds no deleted key`,
    )
    t.same(
      OVERWRITTEN.filter((k) => x.store.peek(k) && value(x)(k) !== `new ${k}`),
      [],
      `${x.name} holds no overwritten key's old value`,
    )
  }
  t.equal(value(d)('written-while-cut'), 'kept', 'the write made on d while cut off is kept')
  t.ok(
    OVERWRITTEN.every((k) => l.ownersOf(k, a).every((o) => value(o)(k) === `new ${k}`)),
    'every owner holds the new values, d where it owns one',
  )
  t.equal(a.cluster.counters.partitionsHealed + b.cluster.counters.partitionsHealed, 0, 'the hosts that stayed together forgot nothing')
  t.equal(a.cluster.counters.copiesForgottenAtHeal, 0)
})

t.test('the other hosts restarted (new ids) while one was alone: its copies are kept', async (t) => {
  const { lab: l, cores } = await startLab(t, 2, 42)
  const [a, b] = cores as [Core, Core]
  for (const k of OVERWRITTEN) l.set(a, k, `v ${k}`)
  t.ok(await l.until(() => OVERWRITTEN.every((k) => b.store.peek(k)), 10_000, 50), 'copies on b')
  l.crash(b)
  t.ok(await l.until(() => a.cluster.counters.isolations === 1, 10_000, 50), 'a lost its only member')
  const b2 = await l.add('b2')
  t.ok(await l.until(() => a.cluster.members.get(b2.cluster.nodeId)?.trusted === true, 10_000, 50), 'a trusts the restarted host')
  t.equal(a.cluster.counters.partitionsHealed, 0, 'no partition healed: the member came back with a new id')
  t.equal(a.cluster.counters.copiesForgottenAtHeal, 0, 'nothing forgotten')
  t.same(
    OVERWRITTEN.filter((k) => value(a)(k) !== `v ${k}`),
    [],
    'a still holds every session, the only copies left',
  )
  t.ok(await l.until(() => OVERWRITTEN.every((k) => value(b2)(k) === `v ${k}`), 10_000, 50), 'and re-places them on the restarted host')
})

t.test('a split in two where each side was alone: neither knows better, both keep their copies', async (t) => {
  const { lab: l, cores } = await startLab(t, 2, 43)
  const [a, b] = cores as [Core, Core]
  for (const k of OVERWRITTEN) l.set(a, k, `v ${k}`, TTL_MS)
  t.ok(await l.until(() => OVERWRITTEN.every((k) => b.store.peek(k)), 10_000, 50), 'copies on b')
  const heal = l.crash(b)
  t.ok(await l.until(() => a.cluster.counters.isolations === 1 && b.cluster.counters.isolations === 1, 10_000, 50), 'each lost the other')
  t.ok(a.cluster.membership.isolated() && b.cluster.membership.isolated(), 'both announce themselves isolated')
  heal()
  t.ok(await l.converge(), 'they trust each other again')
  t.equal(a.cluster.counters.partitionsHealed + b.cluster.counters.partitionsHealed, 0, 'each heard the other was alone too')
  for (const x of [a, b])
    t.same(
      OVERWRITTEN.filter((k) => value(x)(k) !== `v ${k}`),
      [],
      `${x.name} kept every session`,
    )
  t.ok(
    await l.until(() => !a.cluster.membership.isolated() && !b.cluster.membership.isolated(), 10_000, 50),
    'the flag goes after a few heartbeats',
  )
})

for (const [name, make] of [
  ['CompactStore', (o: ConstructorParameters<typeof CompactStore>[0]) => new CompactStore(o)],
  ['LruStore', (o: ConstructorParameters<typeof LruStore>[0]) => new LruStore(o)],
] as const) {
  t.test(`${name}: forgetOlderThan drops the entries below a version, zero-filled, with no tombstone`, async (t) => {
    let wall = 1_800_000_000_000
    const store = make({ tombstoneLifetimeMs: 60_000, monotonicMs: () => wall, clock: new Hlc(() => wall, 7) })
    t.equal(store.newestPeerVersion(), NO_VERSION, 'nothing observed yet')
    store.set('mine-old', Buffer.from('a'))
    const peerVersion = versionAtWallMs(wall + 5) | 0x0107n
    t.ok(store.setFromPeer('copy', Buffer.from('b'), 60_000, 0, peerVersion), 'a copy taken in')
    t.equal(store.newestPeerVersion(), peerVersion, 'its version is the newest observed')
    t.ok(store.setFromPeer('older-copy', Buffer.from('c'), 60_000, 0, versionAtWallMs(wall - 5)), 'an older copy taken in')
    t.equal(store.newestPeerVersion(), peerVersion, 'an older version does not lower it')
    wall += 100
    store.set('mine-new', Buffer.from('d'))
    t.ok(versionWallMs(store.peek('mine-new')!.version) >= versionWallMs(peerVersion), 'a later write is above what was observed')
    const held = store.peek('copy')!.value
    t.equal(store.forgetOlderThan(store.newestPeerVersion() + 1n), 3, 'three entries below the bound')
    t.same(store.keys().sort(), ['mine-new'], 'the write above the bound stays')
    t.ok(
      held.every((x) => x === 0),
      'a forgotten value is zero-filled',
    )
    t.equal(store.version('copy'), NO_VERSION, 'no tombstone: forgotten, not deleted')
    t.ok(store.setFromPeer('copy', Buffer.from('b'), 60_000, 0, peerVersion), 'the same copy is taken in again')
    t.equal(store.forgetOlderThan(NO_VERSION), 0, 'nothing is below the oldest version')
  })
}
