/**
 * Push to all (replicationFactor 0) with real daemons on loopback: a SET reaches every host, so a
 * GET anywhere is answered from the local store; a DELETE anywhere removes it everywhere; a host
 * that joins is filled with every session.
 */
import t from 'tap'
import {
  GENEROUS_COPIES,
  GENEROUS_LOOKUPS,
  clusterStats,
  replicationSettled,
  startCluster,
  startNode,
  waitMembers,
} from '../helpers/cluster.js'
import { eventually } from '../helpers/daemon.js'

const val = (k: string) => Buffer.from(`state-of-${k}`.padEnd(120, '.'))
const ARGS = ['--replication-factor', '0', ...GENEROUS_LOOKUPS, ...GENEROUS_COPIES]

t.test('replicationFactor 0: every host holds every session, GETs are local, a DELETE reaches all', async (t) => {
  const { nodes, dir, keyFile, group, port } = await startCluster(t, 3, ARGS)
  const [a, b, c] = nodes as [(typeof nodes)[0], (typeof nodes)[0], (typeof nodes)[0]]
  const keys = Array.from({ length: 60 }, (_, i) => `all-${i}`)
  for (const k of keys) await a.client.set(k, val(k))
  await replicationSettled(nodes)
  const sa = await clusterStats(a)
  t.equal(sa['copiesPushed'], 2 * keys.length, 'A pushed a copy of each session to each of the two others')
  t.equal(sa['copiesAcked'], sa['copiesPushed'], 'every copy acknowledged')

  const before = await Promise.all([b, c].map(clusterStats))
  for (const n of [b, c]) {
    for (const k of keys) t.same(await n.client.get(k), val(k), `${k} on ${n.name}`)
  }
  const after = await Promise.all([b, c].map(clusterStats))
  t.same(
    after.map((s) => s['lookups']),
    before.map((s) => s['lookups']),
    'B and C answered every GET from their own store: no remote lookup',
  )

  // A DELETE on B: gone from every host's own store, and no host fills it back.
  const gone = keys.slice(0, 20)
  for (const k of gone) await b.client.delete(k)
  await eventually(
    async () => {
      for (const n of nodes) for (const k of gone) if (await n.client.get(k, { localOnly: true })) return false
      return true
    },
    60_000,
    'the deleted sessions gone from every store',
  )
  for (const n of nodes) for (const k of gone) t.equal(await n.client.get(k), undefined, `${k} not found on ${n.name}`)
  t.ok((await clusterStats(b))['deletesAcked'] >= 2 * gone.length, 'each delete acknowledged by both other hosts')

  // A host that joins becomes an owner of every key: it receives each live session.
  const d = await startNode(t, { dir, name: 'd', keyFile, group, port, args: ARGS })
  await waitMembers([...nodes, d], 3)
  await replicationSettled([...nodes, d])
  const left = keys.slice(gone.length)
  await eventually(
    async () => {
      for (const k of left) if (!(await d.client.get(k, { localOnly: true }))) return false
      return true
    },
    60_000,
    'D holds every live session',
  )
  for (const k of gone) t.equal(await d.client.get(k, { localOnly: true }), undefined, `deleted ${k} not re-placed on D`)
  const pushed = (await Promise.all(nodes.map(clusterStats))).reduce((n, s) => n + s['replacements'], 0)
  t.ok(
    pushed >= left.length && pushed < 3 * left.length,
    `the newcomer was filled by one holder per key, not by all three (${pushed} copies for ${left.length} sessions)`,
  )
})
