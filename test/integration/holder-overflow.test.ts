/**
 * Issue 21 finding 6: junk writes filled maxHolderRecords, after which a deleted (logged-out)
 * session stayed served by every host that fetched it. Holder records are now bounded per member
 * (a quarter of the table each), and a host whose table refused a record sends overwrites and
 * deletes to the whole group as well (INVALIDATE), never nothing. The attack as it was: junk
 * writes of random keys from two hosts, then sessions fetched by those hosts, then deleted.
 */
import t from 'tap'
import { clusterStats, startCluster } from '../helpers/cluster.js'
import { eventually } from '../helpers/daemon.js'

const SESSIONS = 13

/** The counter `name` wherever it sits in a stats object. */
function found(o: unknown, name: string): number {
  if (!o || typeof o !== 'object') return 0
  let n = 0
  for (const [k, v] of Object.entries(o)) n += k === name && typeof v === 'number' ? v : found(v, name)
  return n
}
const JUNK = 1500

t.test('a full holder table: deleted sessions are served by no host that fetched them', async (t) => {
  const { nodes } = await startCluster(t, 3, ['--max-holder-records', '400'])
  const [a, b, c] = nodes as [(typeof nodes)[0], (typeof nodes)[0], (typeof nodes)[0]]
  const sessions = Array.from({ length: SESSIONS }, (_, i) => `sess-${process.pid}-${i}`)
  for (const s of sessions) await a.client.set(s, Buffer.from(`state of ${s}`))
  // The junk: random keys written through B and C, so every host's table fills with them.
  for (const h of [b, c])
    for (let i = 0; i < JUNK; i += 50)
      await Promise.all(Array.from({ length: 50 }, (_, j) => h.client.set(`junk-${h.name}-${i + j}-${Math.random()}`, Buffer.from('x'))))
  for (const s of sessions)
    for (const h of [b, c]) await eventually(async () => (await h.client.get(s)) !== undefined, 30_000, `${h.name} fetches ${s}`)
  const unrecorded = (await Promise.all(nodes.map(clusterStats))).reduce((n, st) => n + found(st, 'holdersUnrecorded'), 0)
  t.ok(unrecorded > 0, `the junk filled the holder tables (${unrecorded} records refused)`)
  let served = 0
  for (const s of sessions) {
    t.equal(await a.client.delete(s), true, `${s} deleted on ${a.name}`)
    for (const h of nodes) if (await h.client.get(s)) served++
  }
  t.equal(served, 0, `no host serves a deleted session (${SESSIONS} sessions, 3 hosts)`)
})
