/** Replication, handoff and listed peers on loopback; the multi-host versions are in netns-*.test.ts. */
import t from 'tap'
import {
  GENEROUS_COPIES,
  GENEROUS_LOOKUPS,
  clusterStats,
  readableOnceConverged,
  replicationSettled,
  startCluster,
  startNode,
  uniqueGroup,
  waitMembers,
  writeKeyFile,
  type Node,
} from '../helpers/cluster.js'
import { freePort, tmpDir } from '../helpers/daemon.js'

const val = (k: string) => Buffer.from(`state-of-${k}`.padEnd(200, '.'))

t.test('a SET is copied to its other owner; a killed host loses nothing', async (t) => {
  // A lookup deadline a loaded machine meets: a read whose first owner was A waits for the other.
  const { nodes } = await startCluster(t, 3, [...GENEROUS_LOOKUPS, ...GENEROUS_COPIES])
  const [a, b, c] = nodes
  const keys = Array.from({ length: 200 }, (_, i) => `s${i}`)
  for (const k of keys) await a!.client.set(k, val(k))
  await replicationSettled(nodes)
  const sa = await clusterStats(a!)
  t.ok(sa['copiesPushed'] >= 200, `A pushed ${sa['copiesPushed']} copies (R=2: one per key, two when A is not an owner)`)
  t.equal(sa['copiesAcked'], sa['copiesPushed'], 'every copy acknowledged')
  let single = 0
  for (const k of keys) if (!(await b!.client.get(k, { localOnly: true })) && !(await c!.client.get(k, { localOnly: true }))) single++
  t.equal(single, 0, 'every key has a copy on B or C besides A')
  await a!.stop('SIGKILL')
  const { lost, retried } = await readableOnceConverged([b!, c!], keys, val, 1)
  t.comment(`${retried} reads raced the detection of A's death and were made again once it was removed`)
  t.same(lost, [], 'every session readable from B and C after A died')
})

t.test('a clean stop hands owned sessions over; a rejoining host gets its share back', async (t) => {
  const { nodes, dir, keyFile, group, port } = await startCluster(t, 3, [
    '--replication-factor',
    '2',
    ...GENEROUS_LOOKUPS,
    ...GENEROUS_COPIES,
  ])
  const keys = Array.from({ length: 300 }, (_, i) => `h${i}`)
  for (let i = 0; i < keys.length; i++) await nodes[i % 3]!.client.set(keys[i]!, val(keys[i]!))
  await replicationSettled(nodes)
  // Stop B cleanly, then kill C: only the handoff can have put B's sessions on A.
  await nodes[1]!.stop('SIGTERM')
  t.ok(
    nodes[1]!.logs.some((l) => l['msg'] === 'sessions handed off'),
    'B handed off before leaving',
  )
  await waitMembers([nodes[0]!, nodes[2]!], 1)
  await replicationSettled([nodes[0]!, nodes[2]!])
  await nodes[2]!.stop('SIGKILL')
  t.same((await readableOnceConverged([nodes[0]!], keys, val, 0)).lost, [], 'A alone holds every session')
  // A new host joins: it becomes an owner of some keys and receives them.
  const d = await startNode(t, { dir, name: 'd', keyFile, group, port, args: [...GENEROUS_LOOKUPS, ...GENEROUS_COPIES] })
  await waitMembers([nodes[0]!, d], 1)
  await replicationSettled([nodes[0]!, d])
  const sd = ((await d.admin.stats()) as { store: { entries: number } }).store.entries
  t.ok(sd > 0, `the new host received ${sd} re-placed sessions`)
  t.ok((await clusterStats(nodes[0]!))['replacements'] > 0, 'counted as re-placements')
})

t.test('listed peers without multicast: the same remote fetch', async (t) => {
  const dir = tmpDir('sc-uni-')
  const keyFile = writeKeyFile(dir)
  const ports = [await freePort(), await freePort(), await freePort()]
  const peers = ports.map((p) => `127.0.0.1:${p}`).join(',')
  const { group, port } = uniqueGroup()
  const nodes: Node[] = []
  for (let i = 0; i < 3; i++) {
    nodes.push(
      await startNode(t, {
        dir,
        name: `u${i}`,
        keyFile,
        group,
        port,
        args: [
          '--multicast-enabled',
          'false',
          '--peers',
          peers,
          '--unicast-port',
          String(ports[i]),
          '--replication-factor',
          '1',
          ...GENEROUS_LOOKUPS,
        ],
      }),
    )
  }
  await waitMembers(nodes, 2)
  await nodes[0]!.client.set('uni', 'cast')
  const e = await nodes[2]!.client.getEntry('uni')
  t.equal(e?.value.toString(), 'cast')
  t.equal(e?.remote, true)
  t.equal(await nodes[1]!.client.get('nobody'), undefined)
  t.equal((await clusterStats(nodes[1]!))['timeouts'], 0, 'not found from MISSes')
})

t.test('values larger than a datagram replicate intact', async (t) => {
  const { nodes } = await startCluster(t, 3, GENEROUS_LOOKUPS)
  const big = Buffer.alloc(65536)
  for (let i = 0; i < big.length; i++) big[i] = (i * 13 + 1) & 0xff
  for (let i = 0; i < 10; i++) await nodes[1]!.client.set(`big${i}`, big)
  await replicationSettled(nodes)
  let copies = 0
  let wrong = 0
  for (let i = 0; i < 10; i++) {
    for (const n of nodes) {
      const v = await n.client.get(`big${i}`, { localOnly: true })
      if (v) {
        copies++
        if (!v.equals(big)) wrong++
      }
    }
  }
  t.ok(copies >= 20, `${copies} copies of 10 values`)
  t.equal(wrong, 0, 'every copy byte for byte')
})

t.test('with replication, a lookup of an absent key draws MISS from its owners only', async (t) => {
  // A deadline no loaded machine reaches: "not found" can then only come from the owners' MISSes.
  const { nodes } = await startCluster(t, 6, GENEROUS_LOOKUPS)
  const [a] = nodes
  const before = await clusterStats(a!)
  const answeredBefore = await Promise.all(nodes.slice(1).map(clusterStats))
  for (let i = 0; i < 50; i++) t.equal(await a!.client.get(`absent-${i}`), undefined)
  const after = await clusterStats(a!)
  const lookups = after['lookups'] - before['lookups']
  const misses = after['missesReceived'] - before['missesReceived']
  const rounds = after['directLookups'] - before['directLookups']
  t.equal(lookups, 50)
  t.comment(
    `6 hosts, R=2: ${misses} MISS datagrams for ${lookups} lookups in ${rounds} rounds; timeouts ${after['timeouts'] - before['timeouts']}`,
  )
  t.equal(after['timeouts'] - before['timeouts'], 0, 'every "not found" came from MISSes, none from the deadline')
  t.equal(after['remoteMisses'] - before['remoteMisses'], 50, "each settled by its owners' MISSes")
  t.ok(rounds >= 50, "each lookup went straight to the key's owners, not to the group")
  // The owners other than the asker: R-1 when it is an owner, R when it is not; never N-1 = 5.
  // A retransmit round (only on a stall longer than deadline / (retries + 1)) asks the same owners.
  t.ok(misses <= 2 * rounds, `at most R = 2 MISS per round, not five (${misses} for ${rounds} rounds)`)
  const answered = (await Promise.all(nodes.slice(1).map(clusterStats))).reduce(
    (sum, s, i) => sum + s['lookupsAnswered'] - answeredBefore[i]!['lookupsAnswered'],
    0,
  )
  t.ok(answered <= 2 * rounds, `the other five hosts handled ${answered} LOOKUPs for ${rounds} rounds (owners only), not ${5 * rounds}`)
  // And a key that is there is still found from any host.
  await nodes[3]!.client.set('present', 'yes')
  await replicationSettled(nodes)
  for (const n of nodes) t.equal((await n.client.get('present'))?.toString(), 'yes', `found from ${n.name}`)
})

t.test('a fill asks the first owner alone; when it is frozen, the hedge asks the other owner', async (t) => {
  // A generous lookup deadline, and B stays a member while frozen (a long dead-after), so the
  // fills whose first owner is B can only be served by the hedge to the other owner.
  const { nodes } = await startCluster(t, 4, [...GENEROUS_LOOKUPS, '--dead-after-ms', '60000'])
  const [a, b, c, d] = nodes as [Node, Node, Node, Node]
  const keys = Array.from({ length: 200 }, (_, i) => `hedge${i}`)
  for (const k of keys) await a.client.set(k, val(k))
  await replicationSettled(nodes)
  // Keys D holds no copy of: each read on D is a real fill from the two owners among A, B, C.
  const probes: string[] = []
  for (const k of keys) if (!(await d.client.get(k, { localOnly: true }))) probes.push(k)
  t.ok(probes.length >= 50, `${probes.length} keys are not on D`)
  const half = probes.slice(0, Math.floor(probes.length / 2))
  const before = await clusterStats(d)
  for (const k of half) t.same(await d.client.get(k), val(k))
  const mid = await clusterStats(d)
  const lookupDatagrams = mid['lookupDatagrams'] - before['lookupDatagrams']
  const hedged = mid['hedged'] - before['hedged']
  const rounds = mid['directLookups'] - before['directLookups']
  t.comment(
    `${half.length} fills: ${lookupDatagrams} LOOKUP datagrams in ${rounds} rounds, ${hedged} hedged (hedge delay ${before['hedgeDelayMs']} ms before, ${mid['hedgeDelayMs']} ms after), ${mid['lateReplies'] - before['lateReplies']} late replies`,
  )
  // The hedge delay follows the first owners' replies (their p95), from lookupHedgeMs (1 ms) up to
  // the retransmit interval (20,000 / 5 ms here); what it settles at depends on the load.
  t.ok(mid['hedgeDelayMs'] >= 1 && mid['hedgeDelayMs'] <= 4000, `hedge delay within its bounds (${mid['hedgeDelayMs']} ms)`)
  t.equal(mid['lookups'] - before['lookups'], half.length, 'each read was a fill')
  t.equal(mid['remoteHits'] - before['remoteHits'], half.length, 'every fill found its value')
  t.equal(mid['timeouts'] - before['timeouts'], 0, 'none gave up')
  // The first round asks one owner, the hedge the other; a retransmit round (only after a stall
  // of deadline / (retries + 1)) asks both again. How many hedged depends on the load; the
  // datagrams per fill do not.
  t.ok(rounds >= half.length, 'every fill went straight to the owners')
  t.ok(
    lookupDatagrams <= half.length + hedged + 2 * (rounds - half.length),
    `one LOOKUP per fill, plus one per hedge (${lookupDatagrams} for ${half.length} fills, ${hedged} hedged)`,
  )

  const answered = async () => Promise.all([a, b, c].map(async (n) => (await clusterStats(n))['lookupsAnswered']))
  const answeredBefore = await answered()
  b.proc.kill('SIGSTOP')
  t.teardown(() => b.proc.kill('SIGCONT'))
  const rest = probes.slice(half.length)
  const t0 = performance.now()
  const got = await Promise.all(rest.map((k) => d.client.get(k)))
  const ms = performance.now() - t0
  const after = await clusterStats(d)
  b.proc.kill('SIGCONT')
  const answeredAfter = await answered()
  t.same(
    got.filter((v, i) => !v?.equals(val(rest[i]!))),
    [],
    'every value arrived while an owner was frozen',
  )
  t.ok(after['hedged'] - mid['hedged'] > 0, `${after['hedged'] - mid['hedged']} fills went on to the second owner`)
  t.equal(after['timeouts'] - mid['timeouts'], 0, 'none gave up')
  t.equal(after['remoteHits'] - mid['remoteHits'], rest.length, 'every fill was a remote hit')
  // B was stopped: the LOOKUPs it answered after SIGCONT came too late to matter; A and C served.
  t.ok(answeredAfter[0]! - answeredBefore[0]! + answeredAfter[2]! - answeredBefore[2]! >= rest.length, 'A and C answered every fill')
  t.comment(
    `${rest.length} fills with B frozen in ${ms.toFixed(1)} ms; A, B, C answered ${answeredAfter.map((n, i) => n - answeredBefore[i]!).join(', ')} LOOKUPs`,
  )
})
