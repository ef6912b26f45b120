/**
 * The consistency checker on loopback (issue 22, point 6): clients on every host run concurrent
 * histories (test/helpers/consistency-run.ts) from the moment `peers` lists every host, through a
 * join, a restart by SIGTERM and one by SIGKILL (each with a new node id); the checker
 * (test/helpers/checker.ts) then judges the whole history. Its own failing cases are
 * test/unit/checker.test.ts. Scale: CONSISTENCY_OPS_PER_PHASE, CONSISTENCY_CLIENTS.
 */
import path from 'node:path'
import t from 'tap'
import { startNode, uniqueGroup, writeKeyFile, type Node } from '../helpers/cluster.js'
import { tmpDir } from '../helpers/daemon.js'
import { listsAll } from '../helpers/read-after-write.js'
import { eventually } from '../helpers/daemon.js'
import { describe } from '../helpers/checker.js'
import { CLIENTS, OPS_PER_PHASE, Workload, type Endpoint } from '../helpers/consistency-run.js'

t.test('histories through start-up, a join and restarts (SIGTERM, SIGKILL) check clean', async (t) => {
  const dir = tmpDir('sc-cons-')
  const keyFile = writeKeyFile(dir)
  const { group, port } = uniqueGroup()
  let incarnation = 0
  const start = async (host: string): Promise<{ node: Node; target: string }> => {
    const name = `${host}${incarnation++}`
    const target = path.join(dir, `${name}-mc.sock`)
    const node = await startNode(t, { dir, name, keyFile, group, port, args: ['--memcache-listen', target] })
    return { node, target }
  }
  const started = await Promise.all(['a', 'b', 'c'].map(start))
  const nodes = started.map((s) => s.node)
  const eps: Endpoint[] = started.map((s, i) => ({ name: 'abc'[i]!, target: s.target }))
  // As a deploy sees it: from the moment every host lists every other, not once they are steady.
  await eventually(async () => (await Promise.all(nodes.map((n) => listsAll(n, 3)))).every(Boolean), 60_000, 'peers lists all three')
  const w = new Workload(eps)
  await w.init(eps[0]!)
  w.start()
  await w.ops(OPS_PER_PHASE)

  // A join: the fourth host's clients start once it is up.
  const d = await start('d')
  nodes.push(d.node)
  const dEp: Endpoint = { name: 'd', target: undefined }
  eps.push(dEp)
  dEp.target = d.target
  w.startOn(dEp, Math.max(1, Math.round(CLIENTS / 3)))
  await w.ops(OPS_PER_PHASE)

  // Restarts with new node ids: the host's clients pause while it is down.
  for (const [i, signal] of [
    [1, 'SIGTERM'],
    [2, 'SIGKILL'],
  ] as const) {
    const ep = eps[i]!
    ep.target = undefined
    await nodes[i]!.stop(signal)
    const again = await start(ep.name)
    nodes[i] = again.node
    ep.target = again.target
    await w.ops(OPS_PER_PHASE)
  }
  await w.stop()
  const r = await w.check(eps[0]!)
  t.comment(`ops: ${JSON.stringify(r.tally)}`)
  t.comment(describe(r, 0))
  t.equal(r.violations.length, 0, describe(r, 3))
})
