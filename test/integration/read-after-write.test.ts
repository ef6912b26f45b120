/**
 * Read-after-write across hosts (issue 15, point 1): once a SET has returned, a GET of its key on
 * any other host finds it. Real daemons on loopback, default replication (R = 2); the lossy
 * version is test/netns/netns-read-after-write.test.ts.
 */
import t from 'tap'
import { GENEROUS_LOOKUPS, clusterStats, startCluster, type ClusterCounter } from '../helpers/cluster.js'
import { writeThenRead } from '../helpers/read-after-write.js'

for (const n of [3, 6]) {
  t.test(`${n} hosts: 10,000 reads right after the SET, each on another host, none not found`, async (t) => {
    // A deadline no loaded machine reaches: a "not found" can only be the owners' MISSes.
    const { nodes } = await startCluster(t, n, GENEROUS_LOOKUPS)
    const r = await writeThenRead(nodes, 10_000, 4, `raw${n}`)
    const s = await Promise.all(nodes.map(clusterStats))
    const sum = (k: ClusterCounter) => s.reduce((a, c) => a + c[k], 0)
    t.comment(
      `${n} hosts: ${r.remote} of 10,000 reads were remote fills; MISS-settled lookups ${sum('remoteMisses')}, timeouts ${sum('timeouts')}; ` +
        `members declared dead ${sum('membersDied')}, joined ${sum('membersJoined')} (${n * (n - 1)} when none died)`,
    )
    t.equal(r.wrong, 0, 'no read answered other bytes')
    t.equal(r.notFound, 0, 'no read answered "not found"')
    t.ok(r.remote > 0, 'reads on hosts without a copy were served by a fill')
  })
}
