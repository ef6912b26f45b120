/** Replication, handoff and listed peers on loopback; the multi-host versions are in netns-*.test.ts. */
import t from 'tap'
import { clusterStats, replicationSettled, startCluster, startNode, uniqueGroup, unreadable, waitMembers, writeKeyFile, type Node } from '../helpers/cluster.js'
import { eventually, freePort, tmpDir } from '../helpers/daemon.js'

const val = (k: string) => Buffer.from(`state-of-${k}`.padEnd(200, '.'))

t.test('a SET is copied to its other owner; a killed host loses nothing', async (t) => {
  const { nodes } = await startCluster(t, 3)
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
  t.same(await unreadable([b!, c!], keys, val), [], 'every session readable from B and C after A died')
})

t.test('a clean stop hands owned sessions over; a rejoining host gets its share back', async (t) => {
  const { nodes, dir, keyFile, group, port } = await startCluster(t, 3, ['--replication-factor', '2'])
  const keys = Array.from({ length: 300 }, (_, i) => `h${i}`)
  for (let i = 0; i < keys.length; i++) await nodes[i % 3]!.client.set(keys[i]!, val(keys[i]!))
  await replicationSettled(nodes)
  // Stop B cleanly, then kill C: only the handoff can have put B's sessions on A.
  await nodes[1]!.stop('SIGTERM')
  t.ok(nodes[1]!.logs.some((l) => l['msg'] === 'sessions handed off'), 'B handed off before leaving')
  await waitMembers([nodes[0]!, nodes[2]!], 1)
  await replicationSettled([nodes[0]!, nodes[2]!])
  await nodes[2]!.stop('SIGKILL')
  t.same(await unreadable([nodes[0]!], keys, val), [], 'A alone holds every session')
  // A new host joins: it becomes an owner of some keys and receives them.
  const d = await startNode(t, { dir, name: 'd', keyFile, group, port })
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
    nodes.push(await startNode(t, { dir, name: `u${i}`, keyFile, group, port, args: ['--multicast-enabled', 'false', '--peers', peers, '--unicast-port', String(ports[i]), '--replication-factor', '1'] }))
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
  const { nodes } = await startCluster(t, 3)
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
  const { nodes } = await startCluster(t, 6)
  const [a] = nodes
  const before = await clusterStats(a!)
  for (let i = 0; i < 50; i++) t.equal(await a!.client.get(`absent-${i}`), undefined)
  const after = await clusterStats(a!)
  const lookups = after['lookups'] - before['lookups']
  const misses = after['missesReceived'] - before['missesReceived']
  t.equal(lookups, 50)
  t.comment(`6 hosts, R=2: ${misses} MISS datagrams for ${lookups} lookups; timeouts ${after['timeouts'] - before['timeouts']}`)
  // The owners other than the asker: R-1 when it is an owner, R when it is not; never N-1 = 5.
  t.ok(misses <= 2 * lookups, `at most R = 2 MISS per lookup, not five (${misses} for ${lookups})`)
  t.equal(after['timeouts'] - before['timeouts'], 0, 'still answered before the deadline')
  // A retransmit round (a busy machine) also goes to the owners, so rounds can exceed lookups.
  t.ok(after['directLookups'] - before['directLookups'] >= 50, 'each lookup went straight to the key\'s owners, not to the group')
  let answered = 0
  for (const n of nodes.slice(1)) answered += (await clusterStats(n))['lookupsAnswered']
  t.ok(answered <= 2 * 50, `the other five hosts handled ${answered} LOOKUPs for 50 lookups (owners only), not 250`)
  // And a key that is there is still found from any host.
  await nodes[3]!.client.set('present', 'yes')
  await replicationSettled(nodes)
  for (const n of nodes) t.equal((await n.client.get('present'))?.toString(), 'yes', `found from ${n.name}`)
})

t.test('a fill asks the first owner alone; when it is frozen, the hedge asks the other owner', async (t) => {
  const { nodes } = await startCluster(t, 4)
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
  t.comment(`${half.length} fills: ${lookupDatagrams} LOOKUP datagrams, ${hedged} hedged, ${mid['lateReplies'] - before['lateReplies']} late replies`)
  t.ok(lookupDatagrams <= half.length + hedged, 'one LOOKUP per fill, plus one per hedge')
  t.ok(hedged < half.length / 4, `most fills needed the first owner only (${hedged} of ${half.length} hedged)`)

  // Freeze B (alive to the membership for another second): fills whose first owner is B must
  // come from the other owner after the hedge delay, well before the first retransmit.
  b.proc.kill('SIGSTOP')
  t.teardown(() => b.proc.kill('SIGCONT'))
  const rest = probes.slice(half.length)
  const t0 = performance.now()
  const got = await Promise.all(rest.map((k) => d.client.get(k)))
  const ms = performance.now() - t0
  t.same(got.filter((v, i) => !v?.equals(val(rest[i]!))), [], 'every value arrived while an owner was frozen')
  const after = await clusterStats(d)
  t.ok(after['hedged'] - mid['hedged'] > 0, `${after['hedged'] - mid['hedged']} fills went on to the second owner`)
  t.equal(after['timeouts'] - mid['timeouts'], 0, 'none waited for the deadline')
  t.comment(`${rest.length} fills with B frozen in ${ms.toFixed(1)} ms`)
  b.proc.kill('SIGCONT')
})
