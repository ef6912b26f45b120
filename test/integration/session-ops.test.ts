/**
 * One write path for both front ends (daemon/local/session-ops.ts): a TOUCH over the API reaches
 * the copies as a memcache `touch` does (before, an API TOUCH on a host that was no owner left the
 * owners' copies to expire, and a reader elsewhere got "not found" while the writer still held the
 * value), and memcache incr and touch replicate like a set.
 */
import t from 'tap'
import { GENEROUS_LOOKUPS, replicationSettled, startCluster, type Node } from '../helpers/cluster.js'
import { eventually } from '../helpers/daemon.js'
import { mcConnect, startMcCluster } from '../helpers/memcache-cluster.js'

const value = Buffer.from('session-state'.padEnd(200, '.'))

async function holding(nodes: Node[], key: string): Promise<Node[]> {
  const out: Node[] = []
  for (const n of nodes) if (await n.client.get(key, { localOnly: true })) out.push(n)
  return out
}

/** A key written on `w` that `w` does not own: with 2 copies, three hosts hold it (writer and owners). */
async function nonOwnerKey(nodes: Node[], w: Node, prefix: string, ttlMs: number): Promise<string> {
  for (let i = 0; ; i++) {
    const k = `${prefix}-${i}`
    await w.client.set(k, value, { ttlMs })
    await replicationSettled(nodes)
    if ((await holding(nodes, k)).length === 3) return k
    for (const n of nodes) await n.client.delete(k)
    await replicationSettled(nodes)
  }
}

t.test('an API TOUCH on a host that owns no copy reaches the owners: a reader elsewhere finds the key after the first TTL', async (t) => {
  const { nodes } = await startCluster(t, 4, GENEROUS_LOOKUPS)
  const w = nodes[0]!
  const FIRST_TTL_MS = 3000
  const key = await nonOwnerKey(nodes, w, 'touched', FIRST_TTL_MS)
  const held = await holding(nodes, key)
  const owners = held.filter((n) => n !== w)
  // The reader holds no copy: it must ask the owners.
  const r = nodes.find((n) => !held.includes(n))!
  t.ok(await w.client.touch(key, 60_000), 'touched on the writer')
  const touchedAt = Date.now()
  for (const o of owners) {
    const e = await o.client.getEntry(key, { localOnly: true })
    t.ok(e && e.ttlMs > FIRST_TTL_MS, `owner ${o.name} holds the new expiry once TOUCH returned (${e?.ttlMs} ms)`)
  }
  // The first TTL passes (waited for as an event: the owners' first expiry).
  await eventually(() => Date.now() - touchedAt > FIRST_TTL_MS + 200, 30_000, 'the first TTL passed')
  const got = await r.client.getEntry(key)
  t.ok(got?.value.equals(value), 'the reader on a third host finds the value after the first TTL')
  t.equal(got?.remote, true, 'fetched from a peer')
})

t.test('memcache incr and touch on a host that owns no copy reach the copies before they answer, like set', async (t) => {
  const { nodes } = await startMcCluster(t, 3, GENEROUS_LOOKUPS)
  const w = nodes[0]!
  const conns = await Promise.all(nodes.map((n) => mcConnect(t, n.mcPort)))
  // A counter its writer does not own (all three hold it once written).
  let key = ''
  for (let i = 0; !key; i++) {
    const k = `counter-${i}`
    t.same(await conns[0]!.cmd(`set ${k} 0 60 1`, '0'), ['STORED'])
    await replicationSettled(nodes)
    if ((await holding(nodes, k)).length === 3) key = k
  }
  for (let i = 1; i <= 50; i++) {
    t.same(await conns[0]!.cmd(`incr ${key} 1`), [String(i)], `incr ${i} on the writer`)
    // Right after the answer, each owner holds the new value (its copy went before the reply).
    for (const o of nodes.slice(1)) {
      const e = await o.client.get(key, { localOnly: true })
      if (e?.toString().trim() !== String(i)) t.fail(`owner ${o.name} holds ${e?.toString()} after incr ${i}`)
    }
  }
  t.same(await conns[0]!.cmd(`touch ${key} 3600`), ['TOUCHED'])
  for (const o of nodes.slice(1)) {
    const e = await o.client.getEntry(key, { localOnly: true })
    t.ok(e && e.ttlMs > 60_000, `owner ${o.name} has the touched expiry (${e?.ttlMs} ms)`)
  }
  t.ok(w)
})
