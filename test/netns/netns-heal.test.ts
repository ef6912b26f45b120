/**
 * A partition that outlasts the tombstones, healed (docs/consistency.md, "Partitions"): four
 * hosts in network namespaces, one of them holding a copy of every session, cut off (its bridge
 * port down) for longer than deadAfterMs and than the tombstone lifetime, while the others delete
 * half of the sessions and overwrite the rest. After the heal no host serves a deleted session or
 * an overwritten value, then or later: before, the healed host served its copies and its
 * re-placement scan pushed them back to their owners, whose tombstones had expired.
 */
import t from 'tap'
import { NetLab } from '../helpers/netns.js'
import { clusterStats, replicationSettled, startNode, uniqueGroup, waitMembers, writeKeyFile, type Node } from '../helpers/cluster.js'
import { eventually, tmpDir } from '../helpers/daemon.js'
import { needs, NETNS } from '../helpers/needs.js'

const NEEDS = needs(NETNS)

/** Tombstones of 2 x 1000 ms + the copy retry span (versions.ts tombstoneLifetimeMs). */
const SHORT = [
  '--replay-window-ms',
  '1000',
  '--replication-ack-timeout-ms',
  '100',
  '--replication-retries',
  '6',
  '--lookup-timeout-ms',
  '2000',
]
/** 2 x 1000 + (100 + 200 + 400 + 800 + 1600 + 2000 + 2000) ms. */
const TOMBSTONE_MS = 9100

const DELETED = Array.from({ length: 30 }, (_, i) => `gone-${i}`)
const OVERWRITTEN = Array.from({ length: 30 }, (_, i) => `changed-${i}`)
const value = (k: string, gen: string) => Buffer.from(`${gen} session ${k} `.padEnd(200, 'x'))

/** What any host serves wrongly: a deleted key, or an overwritten key's old value (remote fetches allowed). */
async function wrong(nodes: Node[]): Promise<string[]> {
  const out: string[] = []
  for (const n of nodes) {
    const got = await Promise.all([...DELETED, ...OVERWRITTEN].map(async (k) => [k, await n.client.get(k)] as const))
    for (const [k, v] of got) {
      if (DELETED.includes(k) ? v !== undefined : v !== undefined && !v.equals(value(k, 'new'))) out.push(`${n.name}:${k}`)
    }
  }
  return out
}

t.test(
  'a host cut off longer than the tombstones live serves, and brings back, nothing deleted or overwritten meanwhile',
  NEEDS,
  async (t) => {
    const n = 4
    const lab = NetLab.create(t, n)
    const dir = tmpDir('sc-nsheal-')
    const keyFile = writeKeyFile(dir)
    const { group, port } = uniqueGroup()
    const nodes: Node[] = await Promise.all(
      Array.from({ length: n }, (_, j) => j + 1).map((i) =>
        startNode(t, { dir, name: `h${i}`, keyFile, group, port, prefix: lab.exec(i), args: ['--interface', lab.addr(i), ...SHORT] }),
      ),
    )
    await waitMembers(nodes, n - 1)
    const [h1, h2, , h4] = nodes as [Node, Node, Node, Node]
    // Written on h4: it holds every session, as owner or as the writer.
    for (const k of [...DELETED, ...OVERWRITTEN]) await h4.client.set(k, value(k, 'old'), { ttlMs: 600_000 })
    await replicationSettled(nodes)

    lab.link(4, 'down')
    t.teardown(() => lab.link(4, 'up'))
    await eventually(async () => (await clusterStats(h4))['isolations'] >= 1, 30_000, 'h4 declares every member dead')
    await waitMembers(nodes.slice(0, 3), 2)
    await Promise.all([
      ...DELETED.map((k) => h1.client.delete(k)),
      ...OVERWRITTEN.map((k) => h2.client.set(k, value(k, 'new'), { ttlMs: 600_000 })),
    ])
    const changedAt = performance.now()
    t.same(await wrong(nodes.slice(0, 3)), [], 'the hosts that stayed together serve only the new state')
    // Past every tombstone of the deletes: only h4's copies remember those sessions.
    await new Promise((r) => setTimeout(r, Math.max(0, changedAt + TOMBSTONE_MS + 1000 - performance.now())))

    // What the heal costs in datagrams: copies sent by every host, and h4's LOOKUPs, from the heal
    // until the re-placement has settled and every host has been read from (printed, not asserted).
    const cost = async () => {
      const s = await Promise.all(nodes.map(clusterStats))
      return { copies: s.reduce((a, c) => a + c['copiesPushed'] + c['copiesRetried'], 0), lookups: s[3]!['lookupDatagrams'] }
    }
    const before = await cost()
    lab.link(4, 'up')
    await waitMembers(nodes, n - 1)
    t.same(await wrong(nodes), [], 'after the heal no host serves a deleted session or an old value')
    await replicationSettled(nodes)
    t.same(await wrong(nodes), [], 'nor once the re-placement scans have run')
    const after = await cost()
    t.comment(`heal: ${after.copies - before.copies} copies sent, ${after.lookups - before.lookups} LOOKUP datagrams from h4`)
    const s4 = await clusterStats(h4)
    t.equal(s4['partitionsHealed'], 1, 'h4 saw the partition heal')
    t.ok(
      s4['copiesForgottenAtHeal'] >= DELETED.length + OVERWRITTEN.length,
      `h4 forgot its copies from before (${s4['copiesForgottenAtHeal']})`,
    )
    for (const x of nodes.slice(0, 3)) t.equal((await clusterStats(x))['copiesForgottenAtHeal'], 0, `${x.name} forgot nothing`)
    // Every overwritten session is still served, from every host.
    for (const x of nodes) {
      const missing = (await Promise.all(OVERWRITTEN.map(async (k) => ((await x.client.get(k)) ? undefined : k)))).filter(Boolean)
      t.same(missing, [], `${x.name} serves every overwritten session`)
    }
  },
)
