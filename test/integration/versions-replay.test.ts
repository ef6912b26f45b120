/**
 * Issue 13, finding 3: a captured REPLICATE resent later must neither bring a deleted session
 * back nor roll a value back, on a live owner or on one restarted since.
 *
 * Real daemons A and C on loopback multicast, and a third member X played by this test: it holds
 * the cluster key (as an insider's capture point would need none: it only records and resends
 * bytes), announces itself, and so receives A's real copies by unicast, sealed by A for X. Those
 * datagrams, resent unchanged to C, are what an attacker on the segment could capture and replay.
 */
import t from 'tap'
import crypto from 'node:crypto'
import dgram from 'node:dgram'
import { AnnounceFlag, Keyring, MsgType, decodeMessages, encodeBody, open, seal, type Message } from '../../protocol/wire.js'
import { clusterStats, newKey, startCluster, startNode, uniqueGroup, waitMembers, writeKeyFile, type Node } from '../helpers/cluster.js'
import { eventually, tmpDir } from '../helpers/daemon.js'

interface Captured {
  bytes: Buffer
  key: string
  value: Buffer
  sender: string
}

/** A member of the cluster played by the test: announces itself, records every REPLICATE sent to it. */
async function fakeMember(t: { teardown(fn: () => unknown): void }, key: ReturnType<typeof newKey>, group: string, port: number) {
  const ring = new Keyring([key])
  const id = crypto.randomBytes(8)
  let counter = 1
  const sock = dgram.createSocket('udp4')
  t.teardown(() => sock.close())
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r))
  sock.setMulticastInterface('127.0.0.1')
  sock.setMulticastLoopback(true)
  const me = { family: 4 as const, address: '127.0.0.1', port: sock.address().port }
  const send = (m: Message, to: { address: string; port: number }) =>
    sock.send(seal(ring, key.id, id, counter++, encodeBody(m, Date.now())), to.port, to.address)
  const announce = (flags: number) => send({ type: MsgType.ANNOUNCE, reply: me, entries: 0, flags, name: 'x' }, { address: group, port })
  const copies: Captured[] = []
  sock.on('message', (bytes, rinfo) => {
    try {
      const { header, body } = open(ring, bytes)
      for (const msg of decodeMessages(body).msgs) {
        // An application's SET travels as REPLICATE_AWAITED (REPLICATE's layout).
        if (msg.type !== MsgType.REPLICATE && msg.type !== MsgType.REPLICATE_AWAITED) continue
        copies.push({
          bytes: Buffer.from(bytes),
          key: msg.key.toString('latin1'),
          value: Buffer.from(msg.chunk),
          sender: header.senderId.toString('hex'),
        })
        // Acknowledged like a member would, so the sender does not keep retrying.
        send({ type: MsgType.ACK, replId: msg.replId }, rinfo)
      }
    } catch {
      /* not for us to judge */
    }
  })
  announce(AnnounceFlag.HELLO)
  const heartbeat = setInterval(() => announce(0), 200)
  t.teardown(() => clearInterval(heartbeat))
  return { copies, sock }
}

/** C's unicast address, as it announces it. */
async function unicastOf(n: Node): Promise<{ address: string; port: number }> {
  const self = (await n.client.peers()).find((p) => p['self']) as { address: string }
  const i = self.address.lastIndexOf(':')
  return { address: self.address.slice(0, i), port: Number(self.address.slice(i + 1)) }
}

/** How many REPLICATEs C has dealt with: stored, refused as stale, or dropped by its transport. */
async function handled(n: Node): Promise<number> {
  const c = await clusterStats(n)
  const dropped = (Object.values(c['dropped']) as number[]).reduce((a, b) => a + b, 0)
  return c['copiesReceived'] + dropped
}

async function resend(sock: dgram.Socket, to: Node, copy: Captured): Promise<void> {
  const before = await handled(to)
  const dest = await unicastOf(to)
  await new Promise((r) => sock.send(copy.bytes, dest.port, dest.address, r))
  await eventually(async () => (await handled(to)) > before, 30_000, 'the resent copy reached C and was dealt with')
}

t.test('finding 3: captured REPLICATEs resent to another owner neither resurrect nor roll back', async (t) => {
  const dir = tmpDir('sc-ver-')
  const key = { ...newKey() }
  const keyFile = writeKeyFile(dir, [key])
  const { group, port } = uniqueGroup()
  // Three copies of every session: A, C and X all own every key, so A copies each SET to both.
  const args = ['--replication-factor', '3']
  const a = await startNode(t, { dir, name: 'a', keyFile, group, port, args })
  let c = await startNode(t, { dir, name: 'c', keyFile, group, port, args })
  const x = await fakeMember(t, key, group, port)
  await waitMembers([a, c], 2)
  const aId = (await clusterStats(a))['nodeId']
  const local = (n: Node, k: string) => n.client.get(k, { localOnly: true })
  const copyOf = async (k: string, v: Buffer): Promise<Captured> =>
    (await eventually(
      () => x.copies.find((p) => p.key === k && p.sender === aId && p.value.equals(v)),
      30_000,
      `A's copy of ${k} captured`,
    ))!

  await t.test('a copy captured from A to X, resent to C after the key was deleted everywhere', async (t) => {
    const v1 = Buffer.from('alice-session-secret')
    await a.client.set('sess-del', v1)
    const captured = await copyOf('sess-del', v1)
    await eventually(async () => (await local(c, 'sess-del'))?.equals(v1), 30_000, 'C holds its copy')
    const deletes = (await clusterStats(c))['deleteDatagramsReceived']
    t.equal(await a.client.delete('sess-del'), true)
    // The delete goes to C as a DELETE (C owns the key), acknowledged: the replay comes after it.
    await eventually(async () => (await clusterStats(c))['deleteDatagramsReceived'] > deletes, 30_000, 'the DELETE reached C')
    t.equal(await local(c, 'sess-del'), undefined, 'deleted everywhere')
    await resend(x.sock, c, captured)
    t.equal(await local(c, 'sess-del'), undefined, 'C does not hold the deleted session again')
    t.equal(await c.client.get('sess-del'), undefined, 'and does not serve it, locally or from the cluster')
    t.equal(await a.client.get('sess-del'), undefined, 'nor does A')
    // Refused at the door (sealed for X: `misaddressed`) or, past it, by its version (`staleWrites`).
    // Before deletes were acknowledged, the repeats of the group INVALIDATE also counted as stale writes.
    const refused = (await c.admin.stats()) as { store: { staleWrites: number }; cluster: { dropped: { misaddressed: number } } }
    t.ok(refused.store.staleWrites + refused.cluster.dropped.misaddressed >= 1, 'refused: by its receiver id or as stale by its version')
  })

  await t.test('an older copy resent to a live owner after a newer SET', async (t) => {
    const v1 = Buffer.from('session-value-one')
    const v2 = Buffer.from('session-value-two')
    await a.client.set('sess-roll', v1)
    const captured = await copyOf('sess-roll', v1)
    await a.client.set('sess-roll', v2)
    await eventually(async () => (await local(c, 'sess-roll'))?.equals(v2), 30_000, 'C holds the newer value')
    await resend(x.sock, c, captured)
    t.same(await local(c, 'sess-roll'), v2, 'C keeps the newer value')
    t.same(await a.client.get('sess-roll'), v2, 'as does the writer')
    // The capture is sealed for X, so C refuses it at the door (`misaddressed`); a copy that got past
    // it would be refused by its version (`copiesStale`): test/integration/peer-forgery.test.ts sends
    // such copies sealed for C, and test/unit/versions.test.ts covers the rule itself.
    const st = (await c.admin.stats()) as { cluster: { copiesStale: number; dropped: { misaddressed: number } } }
    t.ok(
      st.cluster.copiesStale + st.cluster.dropped.misaddressed >= 1,
      'the old copy refused: by its receiver id or as stale by its version',
    )
  })

  await t.test('an older copy resent to an owner restarted after a newer SET: the rejoin copy is newer and wins', async (t) => {
    const v1 = Buffer.from('restart-value-one')
    const v2 = Buffer.from('restart-value-two')
    await a.client.set('sess-restart', v1)
    const captured = await copyOf('sess-restart', v1)
    await a.client.set('sess-restart', v2)
    await eventually(async () => (await local(c, 'sess-restart'))?.equals(v2), 30_000, 'C holds the newer value')
    await c.stop()
    c = await startNode(t, { dir, name: 'c2', keyFile, group, port, args })
    await waitMembers([a, c], 2)
    // A re-places its sessions on the newcomer, each with its version.
    await eventually(async () => (await local(c, 'sess-restart'))?.equals(v2), 30_000, 'the restarted owner got the newer value back')
    await resend(x.sock, c, captured)
    t.same(await local(c, 'sess-restart'), v2, 'the restarted owner keeps the newer value')
    t.same(await a.client.get('sess-restart'), v2, 'as does the writer')
  })
})

t.test('a fill older than a delete made here is not served (the holder missed the INVALIDATE)', async (t) => {
  const { nodes } = await startCluster(t, 2)
  const [a, c] = nodes as [Node, Node]
  const v1 = Buffer.from('filled-session-value')
  // Only A holds it: no copies, no invalidation reaches A.
  await a.client.set('sess-fill', v1, { noPropagate: true })
  const first = await c.client.get('sess-fill')
  t.same(first, v1, "C fills it from A (and stores it with A's version)")
  t.equal(await c.client.delete('sess-fill', { noPropagate: true }), true, 'deleted on C alone')
  t.same(await a.client.get('sess-fill', { localOnly: true }), v1, 'A still holds the old value')
  t.equal(await c.client.get('sess-fill'), undefined, 'C does not serve the older value A answers with')
  t.equal(await c.client.get('sess-fill', { localOnly: true }), undefined, 'nor store it')
  t.ok((await clusterStats(c))['staleHits'] >= 1, 'the HIT counted as stale')
})
