/**
 * Deletes on hosts in network namespaces on a bridge: the datagrams of a delete dropped on their
 * way to a host that holds a copy (an on-path attacker, or loss), and 20% loss on every datagram.
 * No host may serve a deleted session afterwards, also once the tombstones have expired (before,
 * the INVALIDATE was sent three times and never again: a host that missed all three kept the
 * session, and once the tombstones were gone a GET anywhere filled it back from there).
 */
import t from 'tap'
import { NetLab } from '../helpers/netns.js'
import { replicationSettled, startNode, uniqueGroup, waitMembers, writeKeyFile, type Node } from '../helpers/cluster.js'
import { eventually, tmpDir } from '../helpers/daemon.js'
import { needs, NETNS } from '../helpers/needs.js'

const NEEDS = needs(NETNS)

/** Tombstones of 2 x 1000 ms + the copy retry span; long enough to outwait in a test. */
const SHORT = [
  '--replay-window-ms',
  '1000',
  '--replication-ack-timeout-ms',
  '100',
  '--replication-retries',
  '6',
  '--dead-after-ms',
  '5000',
  '--lookup-timeout-ms',
  '2000',
]
/** 2 x 1000 + (100 + 200 + 400 + 800 + 1600 + 2000 + 2000) ms: versions.ts tombstoneLifetimeMs. */
const TOMBSTONE_MS = 9100

async function lab(t: { teardown(fn: () => unknown): void }, n: number) {
  const lab = NetLab.create(t, n)
  const dir = tmpDir('sc-nsdel-')
  const keyFile = writeKeyFile(dir)
  const { group, port } = uniqueGroup()
  const nodes: Node[] = await Promise.all(
    Array.from({ length: n }, (_, j) => j + 1).map((i) =>
      startNode(t, {
        dir,
        name: `h${i}`,
        keyFile,
        group,
        port,
        prefix: lab.exec(i),
        args: ['--interface', lab.addr(i), '--replication-factor', '2', ...SHORT],
      }),
    ),
  )
  await waitMembers(nodes, n - 1)
  return { lab, nodes }
}

const value = (k: string) => Buffer.from(`session-${k}-`.padEnd(200, 'x'))

/** Keys some host serves (remote fetches allowed), checked from every host. */
async function served(nodes: Node[], keys: string[]): Promise<string[]> {
  const out: string[] = []
  for (const n of nodes) {
    for (let i = 0; i < keys.length; i += 25) {
      const got = await Promise.all(keys.slice(i, i + 25).map((k) => n.client.get(k)))
      got.forEach((v, j) => v && out.push(`${n.name}:${keys[i + j]}`))
    }
  }
  return out
}

async function fetchAll(n: Node, keys: string[]): Promise<void> {
  for (const k of keys) await eventually(async () => (await n.client.get(k))?.equals(value(k)), 30_000, `${n.name} fetches ${k}`)
}

t.test('attack: every datagram of the deletes to a host holding copies is dropped; none is served after', NEEDS, async (t) => {
  const { lab: l, nodes } = await lab(t, 4)
  const [h1, h2, h3] = nodes
  const keys = Array.from({ length: 20 }, (_, i) => `dropped-${i}`)
  for (const k of keys) await h1!.client.set(k, value(k))
  await replicationSettled(nodes)
  await fetchAll(h3!, keys)
  // The attacker drops everything to and from h3 while the deletes are made, then lets traffic
  // through again (before h3 would be declared dead).
  // The deletes go at once, as a logout burst would: each waits for its copies' acknowledgements
  // (up to three ACK timeouts), so one after another they would outlast deadAfterMs and h3
  // would be declared dead, which is another case (a partition) than the one tested here.
  l.link(3, 'down')
  t.teardown(() => l.link(3, 'up'))
  await Promise.all(keys.map((k) => h2!.client.delete(k)))
  const deletedAt = performance.now()
  l.link(3, 'up')
  await replicationSettled(nodes)
  t.same(await served(nodes, keys), [], 'no host serves a deleted session')
  await new Promise((r) => setTimeout(r, Math.max(0, deletedAt + TOMBSTONE_MS + 500 - performance.now())))
  t.same(await served(nodes, keys), [], 'nor once the tombstones have expired')
})

t.test('20% of datagrams dropped: after 100 deletes no host serves any of them', NEEDS, async (t) => {
  const { lab: l, nodes } = await lab(t, 4)
  const [h1, h2, h3, h4] = nodes
  const keys = Array.from({ length: 100 }, (_, i) => `lossy-${i}`)
  for (const k of keys) await h1!.client.set(k, value(k))
  await replicationSettled(nodes)
  await fetchAll(h3!, keys)
  await fetchAll(h4!, keys)
  l.loss(20)
  t.teardown(() => l.clearLoss())
  for (const k of keys) await h2!.client.delete(k)
  const deletedAt = performance.now()
  await replicationSettled(nodes)
  l.clearLoss()
  t.same(await served(nodes, keys), [], 'no host serves a deleted session')
  await new Promise((r) => setTimeout(r, Math.max(0, deletedAt + TOMBSTONE_MS + 500 - performance.now())))
  t.same(await served(nodes, keys), [], 'nor once the tombstones have expired')
})
