/**
 * Deletes reach the hosts that may hold a copy (owners, the writer, hosts that fetched it),
 * acknowledged, and nobody else: no group datagram, the same count at 4 and at 8 hosts. The lossy
 * and attacked versions are in test/netns/netns-deletes.test.ts.
 */
import net from 'node:net'
import t, { type Test } from 'tap'
import {
  clusterStats,
  replicationSettled,
  startCluster,
  startNode,
  uniqueGroup,
  waitMembers,
  writeKeyFile,
  type Node,
} from '../helpers/cluster.js'
import { eventually, freePort, runCli, tmpDir } from '../helpers/daemon.js'
import { tombstoneLifetimeMs } from '../../daemon/store/versions.js'

/** Short tombstones, so the test can outwait them: 2 x 1000 + (100 + 200 + 400 + 800) ms. */
const SHORT = { replayWindowMs: 1000, replicationAckTimeoutMs: 100, replicationRetries: 3 }
const SHORT_ARGS = ['--replay-window-ms', '1000', '--replication-ack-timeout-ms', '100', '--replication-retries', '3']
const value = Buffer.from('tls-session-state'.padEnd(300, '#'))

const COUNTERS = [
  'deletesQueued',
  'deleteDatagramsSent',
  'deleteDatagramsReceived',
  'deletesRetried',
  'deletesFailed',
  'invalidationsSent',
  'invalidationsReceived',
] as const
type Counts = Record<(typeof COUNTERS)[number], number>

/** The cluster counters of every host, read the way an operator does: `statecast stats --json`. */
async function cliCounters(nodes: Node[]): Promise<Counts[]> {
  return Promise.all(
    nodes.map(async (n) => {
      const r = await runCli(['--socket', n.adminSocket, 'stats', '--json'])
      if (r.code !== 0) throw new Error(`statecast stats failed: ${r.stderr}`)
      const c = (JSON.parse(r.stdout.toString()) as { cluster: Record<string, number> }).cluster
      return Object.fromEntries(COUNTERS.map((k) => [k, c[k] ?? NaN])) as Counts
    }),
  )
}

async function holding(nodes: Node[], key: string): Promise<Node[]> {
  const out: Node[] = []
  for (const n of nodes) if (await n.client.get(key, { localOnly: true })) out.push(n)
  return out
}

/**
 * Writes a key that its writer owns (so it sits on exactly two hosts), fetches it on two other
 * hosts one after the other, deletes it on the writer, and checks that no host serves it, also
 * once the tombstones are gone. Resolves the delete's counters summed over the fleet.
 */
async function deleteOnce(t: Test, n: number) {
  const { nodes } = await startCluster(t, n, SHORT_ARGS)
  const w = nodes[0]!
  let key = ''
  for (let i = 0; !key; i++) {
    const k = `victim-${n}-${i}`
    await w.client.set(k, value)
    await replicationSettled(nodes)
    if ((await holding(nodes, k)).length === 2) key = k
  }
  const owners = await holding(nodes, key)
  const fetchers = nodes.filter((x) => !owners.includes(x)).slice(0, 2)
  for (const f of fetchers) {
    // A first GET can still miss on a loaded machine (issue 15 point 1, another branch): asked again.
    const e = await eventually(() => f.client.getEntry(key), 30_000, `${f.name} fetches ${key}`)
    t.equal(e?.remote, true, `${f.name} fetched it from a peer`)
  }
  const holders = new Set([...owners, ...fetchers])
  t.equal((await holding(nodes, key)).length, 4, 'four hosts hold a copy')

  const before = await cliCounters(nodes)
  const deletedAt = performance.now()
  t.equal(await w.client.delete(key), true)
  await replicationSettled(nodes)
  const after = await cliCounters(nodes)
  const delta = after.map((a, i) => Object.fromEntries(COUNTERS.map((k) => [k, a[k] - before[i]![k]])) as Counts)
  for (const [i, d] of delta.entries()) {
    t.equal(d.invalidationsSent + d.invalidationsReceived, 0, `${nodes[i]!.name}: no group INVALIDATE`)
    if (!holders.has(nodes[i]!))
      t.equal(d.deleteDatagramsReceived + d.deleteDatagramsSent, 0, `${nodes[i]!.name} holds no copy and hears nothing of the delete`)
    t.equal(d.deletesFailed, 0, `${nodes[i]!.name}: every delete acknowledged`)
  }
  for (const x of nodes) t.equal(await x.client.get(key), undefined, `${x.name} does not serve it`)

  // Once every tombstone of the delete has expired, a GET anywhere still finds nothing: no host
  // kept a copy to fill the others back from.
  const lifetime = tombstoneLifetimeMs(SHORT)
  await new Promise((r) => setTimeout(r, Math.max(0, deletedAt + lifetime + 200 - performance.now())))
  for (const x of nodes)
    t.equal(await x.client.get(key), undefined, `${x.name} does not serve it after the tombstone lifetime (${lifetime} ms)`)

  const sum = (k: (typeof COUNTERS)[number]) => delta.reduce((s, d) => s + d[k], 0)
  return {
    queued: sum('deletesQueued'),
    sent: sum('deleteDatagramsSent'),
    received: sum('deleteDatagramsReceived'),
    retried: sum('deletesRetried'),
  }
}

type Result = Awaited<ReturnType<typeof deleteOnce>>
const results = new Map<number, Result>()
for (const n of [4, 8]) {
  t.test(`${n} hosts: after a delete no host serves the session, and only its holders hear of it`, async (t) => {
    results.set(n, await deleteOnce(t, n))
  })
}

t.test('datagrams per delete do not grow with the fleet: at 4 and at 8 hosts within the same bound', async (t) => {
  const [four, eight] = [results.get(4)!, results.get(8)!]
  t.comment(`4 hosts: ${JSON.stringify(four)}; 8 hosts: ${JSON.stringify(eight)}`)
  // Writer and one owner, two fetchers. At most: the writer tells the other owner and both
  // fetchers (3), the owner passes it to both fetchers (2), the first fetcher to the second (1);
  // fewer when not every holder answered a fetch. The bound is set by the copies, not by N (the
  // group INVALIDATE it replaces cost 3 sent and 3 x (N - 1) received). Retries are counted apart.
  for (const [n, r] of [
    [4, four],
    [8, eight],
  ] as const) {
    t.ok(r.queued >= 3 && r.queued <= 6, `${n} hosts: ${r.queued} deletes queued (3..6)`)
    t.equal(r.sent - r.retried, r.queued, `${n} hosts: one DELETE datagram per delete queued`)
    t.ok(r.received <= r.sent, `${n} hosts: ${r.received} received of ${r.sent} sent`)
  }
})

t.test('500 memcache touches of one key queue one copy, not 500', async (t) => {
  const dir = tmpDir('sc-coal-')
  const keyFile = writeKeyFile(dir)
  const { group, port } = uniqueGroup()
  const mc = await freePort()
  // One copy in flight at a time, and a peer that does not acknowledge (stopped): before, every
  // touch queued a copy of its own behind it.
  const common = ['--max-replication-inflight', '1', '--dead-after-ms', '60000']
  const a = await startNode(t, { dir, name: 'a', keyFile, group, port, args: [...common, '--memcache-listen', `127.0.0.1:${mc}`] })
  const b = await startNode(t, { dir, name: 'b', keyFile, group, port, args: common })
  await waitMembers([a, b], 1)
  await a.client.set('hot', Buffer.alloc(65536, 7))
  await replicationSettled([a, b])
  b.proc.kill('SIGSTOP')
  t.teardown(() => b.proc.kill('SIGCONT'))
  const n = 500
  const sock = net.connect(mc, '127.0.0.1')
  t.teardown(() => sock.destroy())
  let got = ''
  const done = new Promise<void>((resolve, reject) => {
    sock.on('data', (d) => {
      got += d.toString()
      if (got.split('TOUCHED\r\n').length - 1 === n) resolve()
    })
    sock.on('error', reject)
  })
  sock.write('touch hot 300\r\n'.repeat(n))
  await done
  const c = await clusterStats(a)
  t.ok(c['replicationPending'] <= 2, `copies pending: ${c['replicationPending']} (one in flight, one waiting)`)
  t.ok(c['jobsCoalesced'] >= n - 2, `${c['jobsCoalesced']} touches folded into the waiting copy`)
  b.proc.kill('SIGCONT')
  await replicationSettled([a, b])
  t.ok((await b.client.get('hot', { localOnly: true }))?.equals(Buffer.alloc(65536, 7)), 'the copy arrives once the peer answers again')
})
