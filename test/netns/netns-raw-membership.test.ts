/**
 * Read-after-write through membership change under loss (issue 22, point 2): six hosts as network
 * namespaces on a bridge that drops 5% of UDP datagrams from before they start, started together
 * and read from the moment PEERS lists all six on every host, while members are still in
 * probation. Default membership timing. The loss-free version is
 * test/integration/raw-membership.test.ts; the settled one netns-read-after-write.test.ts.
 */
import t from 'tap'
import { NetLab } from '../helpers/netns.js'
import { clusterStats, startNode, uniqueGroup, writeKeyFile, type ClusterCounter } from '../helpers/cluster.js'
import { eventually, tmpDir } from '../helpers/daemon.js'
import { RAW_PAIRS, listsAll, pairsAmong } from '../helpers/read-after-write.js'

t.test('six hosts, 5% loss, started together and read from the moment PEERS lists them all: at most a few not found', async (t) => {
  const lab = NetLab.create(t, 6)
  const dir = tmpDir('sc-rawn-')
  const keyFile = writeKeyFile(dir)
  const { group, port } = uniqueGroup()
  lab.loss(5)
  t.teardown(() => lab.clearLoss())
  // Retransmits close together within a deadline a loaded machine meets: a "not found" then
  // comes from the owners' MISSes, not from a lost LOOKUP or a stalled host.
  const args = (i: number) => [
    '--interface',
    lab.addr(i),
    '--heartbeat-ms',
    '1000',
    '--dead-after-ms',
    '3000',
    '--member-probation-ms',
    '2000',
    '--lookup-timeout-ms',
    '2500',
    '--lookup-retries',
    '50',
  ]
  const nodes = await Promise.all(
    Array.from({ length: 6 }, (_, k) =>
      startNode(t, { dir, name: `h${k + 1}`, keyFile, group, port, prefix: lab.exec(k + 1), args: args(k + 1) }),
    ),
  )
  await eventually(async () => (await Promise.all(nodes.map((x) => listsAll(x, 6)))).every(Boolean), 60_000, 'every host lists six')
  const r = await pairsAmong(() => nodes, RAW_PAIRS, 'lossy-start')
  lab.clearLoss()
  const s = await Promise.all(nodes.map(clusterStats))
  const sum = (k: ClusterCounter) => s.reduce((a, c) => a + c[k], 0)
  t.comment(
    `5% loss from the start: ${r.notFound} of ${r.pairs} not found (at ${JSON.stringify(r.notFoundAtMs)} ms), ${r.remote} remote fills; copies retried ${sum('copiesRetried')}, SETs that waited for a copy's ACK ${sum('setsAwaitingCopy')}, timeouts ${sum('timeouts')}, MISS-settled ${sum('remoteMisses')}`,
  )
  t.equal(r.wrong, 0, 'no read answered other bytes')
  t.ok(r.notFound <= 5, `at most a few not found (${r.notFound} of ${r.pairs})`)
})
