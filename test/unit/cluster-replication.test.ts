/**
 * Replication between cluster cores in one process (test/helpers/memory-cluster.ts): copies and
 * deletes over a lossy, duplicating, reordering in-memory network, and the handoff of a clean
 * stop, with fake time.
 */
import t from 'tap'
import { startLab, type Core, type MemoryLab } from '../helpers/memory-cluster.js'

const KEYS = Array.from({ length: 30 }, (_, i) => `sess-${i}`)

const sum = (cores: Core[], f: (c: Core) => number) => cores.reduce((n, c) => n + f(c), 0)

/** True when every key is held by exactly its owners' stores (as `from` sees the owners), at `from`'s version. */
function placed(l: MemoryLab, from: Core, keys: string[]): boolean {
  return keys.every((k) => l.ownersOf(k, from).every((o) => o.store.peek(k)?.version === from.store.peek(k)?.version))
}

t.test('copies reach every owner over a lossy network: lost copies and ACKs are retried, duplicates dropped', async (t) => {
  const { lab: l, cores } = await startLab(t, 4, 11)
  const [a] = cores as [Core]
  // Loss below what would starve the heartbeats (deadAfterMs is three of them).
  l.net.faults = { loss: 0.25, duplicate: 0.2, minDelayMs: 0, maxDelayMs: 20 }
  // One write per turn, as separate client requests come: written in one turn, all copies for an
  // owner would share one datagram (a BATCH), leaving the network few datagrams to lose.
  for (const k of KEYS) {
    l.set(a, k, `value of ${k}`)
    await l.run(1)
  }
  t.ok(await l.until(() => placed(l, a, KEYS), 60_000, 50), 'every key on each of its owners, at the version written')
  t.ok(sum(cores, (c) => c.cluster.replicator.counters.copiesRetried) > 0, 'lost copies or ACKs were retried')
  t.ok(l.net.counters.lost > 0 && l.net.counters.duplicated > 0, 'the network lost and duplicated datagrams')
  t.ok(sum(cores, (c) => c.cluster.transport.counters.dropped.replayed) > 0, 'duplicated datagrams were dropped as replays')
  for (const k of KEYS) {
    for (const o of l.ownersOf(k, a)) t.equal(o.store.peek(k)?.value.toString(), `value of ${k}`, `${k} on ${o.name}`)
  }
})

t.test('deletes reach every copy over a lossy network, acknowledged and retried', async (t) => {
  const { lab: l, cores } = await startLab(t, 4, 12)
  const [a, b] = cores as [Core, Core]
  // A key neither a nor b owns, that b fetches from an owner: the owner remembers b as a holder,
  // a does not, so a's delete reaches b's copy only through the owner.
  let fetched = ''
  for (let i = 0; fetched === ''; i++) if (!l.ownersOf(`fetched-${i}`, a).some((o) => o === a || o === b)) fetched = `fetched-${i}`
  const keys = [...KEYS, fetched]
  for (const k of keys) l.set(a, k, `value of ${k}`)
  t.ok(await l.until(() => placed(l, a, keys), 10_000, 50), 'copies placed')
  t.ok(await l.settle(b.cluster.lookup(fetched)), 'a non-owner fetched a copy')

  l.net.faults = { loss: 0.25, duplicate: 0.2, minDelayMs: 0, maxDelayMs: 20 }
  // One delete per turn, for the same reason as the writes above.
  for (const k of keys) {
    l.delete(a, k)
    await l.run(1)
  }
  t.ok(await l.until(() => keys.every((k) => l.holding(k).length === 0), 60_000, 50), 'no core holds any deleted key')
  t.ok(sum(cores, (c) => c.cluster.replicator.counters.deletesRetried) > 0, 'lost deletes or ACKs were retried')
  t.ok(sum(cores, (c) => c.cluster.replicator.counters.deletesForwarded) >= 1, 'the delete went on to the fetched copy')
  t.equal(
    sum(cores, (c) => c.cluster.counters.invalidationsSent),
    0,
    'no group INVALIDATE: the holders were known',
  )
})

t.test('handoff: a clean stop hands the sessions it owns to the owners that remain, then leaves', async (t) => {
  const { lab: l, cores } = await startLab(t, 3, 13)
  const [a, b, c] = cores as [Core, Core, Core]
  for (const k of KEYS) l.set(a, k, `value of ${k}`)
  t.ok(await l.until(() => placed(l, a, KEYS), 10_000, 50), 'copies placed')
  const owned = KEYS.filter((k) => l.ownersOf(k, a).includes(a))
  t.ok(owned.length > 0, 'a owns some keys')
  t.ok(
    owned.some((k) => !b.store.peek(k) || !c.store.peek(k)),
    'before the stop, some key a owns is on one of b and c only',
  )

  await l.settle(l.stop(a))
  await l.run(10) // the LEAVE, sent last, is still on its way
  t.ok(a.cluster.replicator.counters.handedOff > 0, 'sessions handed off')
  for (const k of KEYS) t.ok(b.store.peek(k) && c.store.peek(k), `${k} on both remaining owners`)
  t.equal(b.cluster.counters.membersLeft + c.cluster.counters.membersLeft, 2, 'both heard the LEAVE')
  t.equal(b.cluster.members.has(a.cluster.nodeId) || c.cluster.members.has(a.cluster.nodeId), false, 'a is no member any more')
  t.equal(l.net.openSockets, 2 * 2, 'a closed its sockets (each remaining core has a group and a unicast socket)')
})
