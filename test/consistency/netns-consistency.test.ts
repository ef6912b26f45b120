/**
 * The consistency checker in network namespaces (issue 22, point 6): four hosts on a bridge, clients
 * on each (through memcache Unix sockets, reachable from the test's namespace), a phase with 5% of
 * UDP datagrams dropped, then one host cut off and healed.
 *
 * The partition: statecast is not a quorum system. A host cut off from the others cannot be
 * consistent with them, and a write on it is answered after its copies time out. So the clients of
 * the cut-off host pause while it is cut (the history has no operation on that side then); the
 * other hosts' clients go on, and after the heal, once every host trusts every other again, all
 * clients go on. What the checker asserts is that no history, through the loss, the cut and the
 * heal, breaks read-after-write, locks, counters or cas. What a SET on the cut-off side answers is
 * probed and reported as a comment, outside the history.
 */
import path from 'node:path'
import t from 'tap'
import { NetLab } from '../helpers/netns.js'
import { clusterStats, startNode, type ClusterCounter, uniqueGroup, waitMembers, writeKeyFile, type Node } from '../helpers/cluster.js'
import { tmpDir } from '../helpers/daemon.js'
import { needs, NETNS } from '../helpers/needs.js'
import { describe } from '../helpers/checker.js'
import { OPS_PER_PHASE, Workload, type Endpoint } from '../helpers/consistency-run.js'
import { McClient } from '../helpers/memcache-client.js'

const NEEDS = needs(NETNS)
const HOSTS = 4
/** More daemon options for experiments (CONSISTENCY_DAEMON_ARGS, space-separated), e.g. longer lookup deadlines. */
const EXTRA_ARGS = (process.env['CONSISTENCY_DAEMON_ARGS'] ?? '').split(' ').filter(Boolean)
/** Per-host counters printed after the run, to tell a violation's cause (loss, membership, a heal). */
const TRACED: ClusterCounter[] = [
  'remoteMisses',
  'timeouts',
  'alone',
  'staleHits',
  'lookupsWidened',
  'copiesFailed',
  'deletesFailed',
  'invalidationsFallback',
  'isolations',
  'partitionsHealed',
  'copiesForgottenAtHeal',
]

t.test('four hosts: histories through 5% loss and a partition check clean', NEEDS, async (t) => {
  const lab = NetLab.create(t, HOSTS)
  const dir = tmpDir('sc-ncons-')
  const keyFile = writeKeyFile(dir)
  const { group, port } = uniqueGroup()
  const nodes: Node[] = []
  const eps: Endpoint[] = []
  for (let i = 1; i <= HOSTS; i++) {
    const target = path.join(dir, `h${i}-mc.sock`)
    nodes.push(
      await startNode(t, {
        dir,
        name: `h${i}`,
        keyFile,
        group,
        port,
        prefix: lab.exec(i),
        args: ['--interface', lab.addr(i), '--memcache-listen', target, ...EXTRA_ARGS],
      }),
    )
    eps.push({ name: `h${i}`, target })
  }
  await waitMembers(nodes, HOSTS - 1)
  const w = new Workload(eps)
  // Phase boundaries on the history's clock (performance.now()), to place each violation.
  const phase = (name: string) => t.comment(`phase ${name} from ${performance.now().toFixed(1)} ms`)
  await w.init(eps[0]!)
  phase('steady')
  w.start()
  await w.ops(OPS_PER_PHASE)

  phase('5% loss')
  lab.loss(5)
  t.teardown(() => lab.clearLoss())
  await w.ops(OPS_PER_PHASE)
  lab.clearLoss()

  // The cut: host 4's clients pause, then its bridge port goes down.
  const cut = eps[HOSTS - 1]!
  const cutTarget = cut.target!
  cut.target = undefined
  phase(`h${HOSTS} cut off`)
  lab.link(HOSTS, 'down')
  const probe = new McClient(cutTarget, 30_000)
  const t0 = performance.now()
  const answer = await probe.store('set', 'probe-cut', 'x').catch((e: Error) => `error ${e.message}`)
  probe.close()
  t.comment(`a SET on the cut-off host answered ${JSON.stringify(answer)} after ${Math.round(performance.now() - t0)} ms`)
  await w.ops(OPS_PER_PHASE)
  phase('heal (link up)')
  lab.link(HOSTS, 'up')
  await waitMembers(nodes, HOSTS - 1)
  phase('healed (every host trusts every other)')
  cut.target = cutTarget
  await w.ops(OPS_PER_PHASE)
  phase('end')

  await w.stop()
  const r = await w.check(eps[0]!)
  t.comment(`ops: ${JSON.stringify(r.tally)}`)
  for (const n of nodes) {
    const c = await clusterStats(n)
    t.comment(`${n.name}: ${TRACED.map((k) => `${k} ${c[k]}`).join(', ')}`)
  }
  t.comment(describe(r, 0))
  t.equal(r.violations.length, 0, describe(r, 3))
})
