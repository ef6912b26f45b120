/**
 * Delayed, cumulative acknowledgements between real daemons on loopback: a burst of SETs costs
 * the peer fewer acknowledgement datagrams than copies, and every copy is acknowledged.
 */
import t from 'tap'
import { GENEROUS_LOOKUPS, clusterStats, replicationSettled, startCluster } from '../helpers/cluster.js'

const val = (k: string) => Buffer.from(`state-of-${k}`.padEnd(200, '.'))

t.test('a burst of copies is acknowledged by fewer datagrams than copies, and every copy is acknowledged', async (t) => {
  // Two hosts, replicationFactor 2: every SET on A is copied to B. The delay is generous so that
  // copies sent together share an ACKS on a loaded machine too; the ACK wait is 4 times it.
  const { nodes } = await startCluster(t, 2, ['--replication-factor', '2', '--replication-ack-delay-ms', '20', '--replication-ack-timeout-ms', '1000', '--replication-retries', '20', ...GENEROUS_LOOKUPS])
  const [a, b] = nodes as [typeof nodes[0], typeof nodes[0]]
  const keys = Array.from({ length: 300 }, (_, i) => `ack-${i}`)
  for (let i = 0; i < keys.length; i += 50) await Promise.all(keys.slice(i, i + 50).map((k) => a.client.set(k, val(k))))
  await replicationSettled(nodes)
  const sa = await clusterStats(a)
  const sb = await clusterStats(b)
  t.equal(sa['copiesPushed'], keys.length, 'a copy of each session to B')
  t.equal(sa['copiesAcked'], sa['copiesPushed'], 'every copy acknowledged')
  t.equal(sa['copiesFailed'], 0, 'none given up')
  t.ok(sb['acksCovered'] >= keys.length, `B acknowledged every copy it took (${sb['acksCovered']} ids, retries included)`)
  t.ok(sb['acksSent'] < keys.length, `in fewer datagrams than copies (${sb['acksSent']} ACKS for ${sb['acksCovered']} ids)`)
  t.ok(sa['acksReceived'] <= sb['acksSent'], 'A read no more acknowledgements than B sent')
  for (const k of keys) t.same(await b.client.get(k, { localOnly: true }), val(k), `${k} on B`)
})
