/**
 * Read-after-write through membership change (issue 22, point 2): daemons started together and
 * read from the moment PEERS (what `statecast peers` shows) lists every host, so the pairs run
 * while members are still in probation, trusted by some hosts and not yet by others; and the same
 * while one host restarts (SIGTERM and SIGKILL in turn, a new node id each time) every few
 * seconds. Default membership timing (1 s heartbeats, 2 s probation), lookups with a deadline no
 * loaded machine reaches: a "not found" is the owners' MISSes. The pair count is RAW_PAIRS
 * (STATECAST_RAW_PAIRS); the settled-cluster version is read-after-write.test.ts.
 */
import t from 'tap'
import {
  GENEROUS_LOOKUPS,
  clusterStats,
  startNode,
  uniqueGroup,
  waitMembers,
  writeKeyFile,
  type Node,
  type ClusterStats,
  type ClusterCounter,
} from '../helpers/cluster.js'
import { eventually, tmpDir } from '../helpers/daemon.js'
import { RAW_PAIRS, listsAll, pairsAmong } from '../helpers/read-after-write.js'

/** The daemon's own membership timing, not the test helpers' faster one. */
const DEFAULT_TIMING = ['--heartbeat-ms', '1000', '--dead-after-ms', '3000', '--member-probation-ms', '2000']
const ARGS = [...DEFAULT_TIMING, ...GENEROUS_LOOKUPS]

async function startTogether(t: { teardown(fn: () => unknown): void }, n: number) {
  const dir = tmpDir('sc-rawm-')
  const keyFile = writeKeyFile(dir)
  const { group, port } = uniqueGroup()
  const start = (name: string) => startNode(t, { dir, name, keyFile, group, port, args: ARGS })
  const nodes = await Promise.all(Array.from({ length: n }, (_, i) => start(String.fromCharCode(97 + i))))
  return { nodes, start }
}

const sumOf = (s: ClusterStats[], k: ClusterCounter) => s.reduce((a, c) => a + c[k], 0)

for (const n of [3, 6]) {
  t.test(`${n} hosts started together, read from the moment PEERS lists them all: none not found`, async (t) => {
    const { nodes } = await startTogether(t, n)
    await eventually(async () => (await Promise.all(nodes.map((x) => listsAll(x, n)))).every(Boolean), 60_000, `every host lists ${n}`)
    const untrusted = (await Promise.all(nodes.map(clusterStats))).reduce((a, c) => a + (c['members'] - c['trustedMembers']), 0)
    const r = await pairsAmong(() => nodes, RAW_PAIRS, `start${n}`)
    const s = await Promise.all(nodes.map(clusterStats))
    t.comment(
      `${n} hosts: ${untrusted} members still in probation when the pairs began; ${r.remote} of ${r.pairs} reads remote; MISS-settled ${sumOf(s, 'remoteMisses')}, timeouts ${sumOf(s, 'timeouts')}; not found at ${JSON.stringify(r.notFoundAtMs.slice(0, 20))} ms`,
    )
    t.equal(r.pairs, RAW_PAIRS, 'every pair made')
    t.equal(r.wrong, 0, 'no read answered other bytes')
    t.equal(r.notFound, 0, 'no read answered "not found"')
  })
}

t.test('3 hosts, one restarting every few seconds (SIGTERM and SIGKILL in turn, a new node id each time): none not found', async (t) => {
  const n = 3
  const { nodes, start } = await startTogether(t, n)
  // Settled first: what fails here is the restarts, not the start of the fleet (tested above).
  await waitMembers(nodes, n - 1)
  const up = new Set<Node>(nodes)
  const busy = new Set<Node>()
  let done = false
  let restarts = 0
  const ids = new Set<string>()
  const churn = (async () => {
    let slot = 0
    while (!done) {
      // The cadence of the churn, not a wait for anything to settle.
      await new Promise((resolve) => setTimeout(resolve, 1500))
      if (done) break
      const i = slot++ % n
      const old = nodes[i]!
      up.delete(old)
      await eventually(() => !busy.has(old), 60_000, 'the pair on the host to stop ended')
      ids.add(String((await old.client.peers()).find((p) => p['self'])!['nodeId']))
      await old.stop(restarts % 2 === 0 ? 'SIGTERM' : 'SIGKILL')
      restarts++
      const fresh = await start(old.name)
      nodes[i] = fresh
      // Back in the pool once its PEERS lists every host (as an operator's `statecast peers` would).
      await eventually(() => listsAll(fresh, n), 60_000, 'the restarted host lists every host')
      ids.add(String((await fresh.client.peers()).find((p) => p['self'])!['nodeId']))
      up.add(fresh)
    }
  })()
  let r
  try {
    r = await pairsAmong(() => [...up], RAW_PAIRS, 'churn', busy)
  } finally {
    done = true
    await churn
  }
  const s = await Promise.all(nodes.map(clusterStats))
  t.comment(
    `${restarts} restarts (${ids.size} node ids); ${r.pairs} pairs (${r.skipped} skipped), ${r.remote} reads remote; MISS-settled now-running hosts ${sumOf(s, 'remoteMisses')}; not found at ${JSON.stringify(r.notFoundAtMs.slice(0, 20))} ms`,
  )
  t.ok(restarts >= 2, `hosts restarted during the pairs (${restarts})`)
  t.ok(ids.size > n, 'each restart came back with a new node id')
  t.equal(r.wrong, 0, 'no read answered other bytes')
  t.equal(r.notFound, 0, 'no read answered "not found"')
})
