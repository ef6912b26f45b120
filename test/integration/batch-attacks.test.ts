/**
 * The attacker's review of BATCH, ACKS and push to all (issue 15): what a key holder packs into one
 * batch is checked message by message as if each had come alone, so a deleted session is not served
 * again whatever order copies and deletes of it come in; and the transport's callback sends
 * (no promise per datagram) must not let one send that the socket refuses at once end the daemon.
 * Real daemons on loopback; the datagrams are sealed with the test cluster's key file.
 */
import t from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import { DgramAsPromised } from 'dgram-as-promised'
import { parseKeyFile } from '../../protocol/keyfile.js'
import {
  Keyring,
  MsgType,
  NO_RECEIVER,
  decodeMessages,
  encodeBatch,
  encodeBody,
  open,
  seal,
  type Address,
  type Message,
} from '../../protocol/wire.js'
import { clusterStats, keyHolder, startCluster, unicastOf, type Node } from '../helpers/cluster.js'
import { eventually } from '../helpers/daemon.js'

t.test(
  'a key holder batching copies and deletes of one session in any order: once deleted, it is never served again; a newer copy still is',
  async (t) => {
    const { nodes, keyFile, group, port } = await startCluster(t, 1)
    const a = nodes[0]!
    const { ring, keyId, sock, me } = await keyHolder(t, keyFile)
    const id = crypto.randomBytes(8)
    const acked = new Set<number>()
    sock.socket.on('message', (d: Buffer) => {
      try {
        for (const m of decodeMessages(open(ring, d).body).msgs) {
          if (m.type === MsgType.ACKS) for (const r of m.replIds) acked.add(r)
          if (m.type === MsgType.ACK) acked.add(m.replId)
        }
      } catch {
        /* not for us */
      }
    })
    let counter = 1
    const { address, id: receiver } = await unicastOf(a)
    const toA = (body: Buffer) => sock.send(seal(ring, keyId, id, counter++, body, receiver), address.port, address.address)
    const batch = (msgs: Message[]) => toA(encodeBatch(msgs, Date.now()))
    // A member at its own address: its copies are taken even in probation.
    await sock.send(
      seal(
        ring,
        keyId,
        id,
        counter++,
        encodeBody({ type: MsgType.ANNOUNCE, reply: me, entries: 0, flags: 0, name: 'insider' }, Date.now()),
        NO_RECEIVER,
      ),
      port,
      group,
    )
    await eventually(async () => (await clusterStats(a))['members'] === 1, 30_000, 'the insider is a member')

    let replId = 100
    const now = BigInt(Date.now()) << 16n
    const copy = (key: string, version: bigint, value: string): Message => ({
      type: MsgType.REPLICATE,
      replId: replId++,
      ttlMs: 60_000,
      flags: 0,
      totalLen: value.length,
      index: 0,
      count: 1,
      version,
      key: Buffer.from(key),
      chunk: Buffer.from(value),
    })
    const del = (key: string, version: bigint): Message => ({ type: MsgType.DELETE, replId: replId++, version, key: Buffer.from(key) })

    // 1. Copy, delete, the same copy again, all in one batch: applied in order, the late copy is older than the delete.
    const b1 = [copy('ticket-1', now, 'resumable'), del('ticket-1', now + 1n), copy('ticket-1', now, 'resumable')]
    // 2. The delete first, then an older copy: the copy is refused.
    const b2 = [del('ticket-2', now + 5n), copy('ticket-2', now + 4n, 'resumable')]
    // 3. A copy now, its delete in this batch, and the copy again in a later batch (a late retransmit).
    const b3 = [copy('ticket-3', now, 'resumable'), del('ticket-3', now + 1n)]
    const ids = [...b1, ...b2, ...b3].map((m) => (m as { replId: number }).replId)
    await batch(b1)
    await batch(b2)
    await batch(b3)
    await eventually(() => ids.every((r) => acked.has(r)), 30_000, 'every copy and delete of the three batches acknowledged')
    await toA(encodeBody(copy('ticket-3', now, 'resumable'), Date.now()))
    // The positive control: a newer copy in a batch is taken (so the refusals above are not a daemon that takes nothing).
    const control = copy('ticket-4', now + 10n, 'fresh')
    await batch([del('ticket-4', now + 9n), control])
    await eventually(
      () => acked.has((control as { replId: number }).replId) && acked.has(replId - 3),
      30_000,
      'the late copy and the control acknowledged',
    )
    for (const k of ['ticket-1', 'ticket-2', 'ticket-3'])
      t.equal(await a.client.get(k, { localOnly: true }), undefined, `${k}: deleted, not served again`)
    t.same(await a.client.get('ticket-4', { localOnly: true }), Buffer.from('fresh'), 'a copy newer than the delete is served')
    const s = await clusterStats(a)
    t.ok(s['copiesStale'] >= 3, `the copies older than their delete were refused as stale (${s['copiesStale']})`)
  },
)

const alive = (n: Node) => n.proc.exitCode === null && n.proc.signalCode === null

t.test('one ANNOUNCE from a key holder naming reply port 0: the answers to it are counted as send errors; no daemon exits', async (t) => {
  // Node's dgram throws at once (ERR_SOCKET_BAD_PORT) for port 0, where the promise of each send
  // used to turn it into a counted failure; a throw from the turn's flush would end the process,
  // and one group datagram reaches every daemon.
  const { nodes, keyFile, group, port } = await startCluster(t, 2)
  const { ring, keyId, sock } = await keyHolder(t, keyFile)
  const before = await Promise.all(nodes.map(clusterStats))
  const announce = encodeBody(
    { type: MsgType.ANNOUNCE, reply: { family: 4, address: '127.0.0.1', port: 0 }, entries: 0, flags: 0, name: 'port-zero' },
    Date.now(),
  )
  await sock.send(seal(ring, keyId, crypto.randomBytes(8), 1, announce, NO_RECEIVER), port, group)
  // Each daemon welcomes a new member at its announced address: that send fails (counted), or the daemon died.
  // A daemon that died does not answer its admin socket: its exit ends the wait as well.
  const triedOrDied = async (n: Node, i: number) => {
    if (!alive(n)) return true
    const s = await Promise.race([clusterStats(n), n.exited.then(() => undefined)])
    return s === undefined || s['sendErrors'] > before[i]!['sendErrors']
  }
  await eventually(
    async () => (await Promise.all(nodes.map(triedOrDied))).every(Boolean),
    30_000,
    'each daemon tried to welcome the member at port 0',
  )
  for (const n of nodes)
    t.ok(alive(n), `${n.name} still runs`, { logs: n.logs.filter((l) => l['level'] !== 30 && l['level'] !== 'info').slice(-3) })
  // A dead daemon would not answer: the failures above are the finding, not a minute's wait for a reply.
  if (!nodes.every(alive)) return
  await nodes[0]!.client.set('after-port-zero', Buffer.from('fine'))
  t.same(
    await nodes[1]!.client.get('after-port-zero'),
    Buffer.from('fine'),
    'the cluster serves on: a write on one host is read on the other',
  )
})

t.test(
  'push to all with a trusted key holder that takes copies and never acknowledges them: a delete still reaches the honest member while writes go on',
  async (t) => {
    // A SET's copies start at once, past the in-flight window (stored()); a delete waits in the
    // queue until fewer than maxReplicationInflight jobs are in flight. Every copy to a member that
    // never acknowledges stays in flight through its whole retry schedule (about 15 s at the
    // defaults), so at a steady 20 writes a second they alone fill the window of 256, and the
    // delete to an honest member waits for as long as the writes go on: the deleted session (a
    // single-use TLS 1.3 ticket) is served there meanwhile.
    const { nodes, keyFile, group, port } = await startCluster(t, 2, ['--replication-factor', '0'])
    const [a, b] = nodes as [Node, Node]
    const ring = new Keyring(parseKeyFile(fs.readFileSync(keyFile, 'utf8')))
    const keyId = [...ring.keys.keys()][0]!
    const sock = DgramAsPromised.createSocket({ type: 'udp4' })
    await sock.bind(0, '127.0.0.1')
    const me: Address = { family: 4, address: '127.0.0.1', port: sock.address().port }
    const id = crypto.randomBytes(8)
    let counter = 1
    let copiesTaken = 0
    sock.socket.on('message', (d: Buffer) => {
      try {
        for (const m of decodeMessages(open(ring, d).body).msgs) if (m.type === MsgType.REPLICATE) copiesTaken++
      } catch {
        /* not for us */
      }
    })
    const announce = () =>
      void sock.send(
        seal(
          ring,
          keyId,
          id,
          counter++,
          encodeBody({ type: MsgType.ANNOUNCE, reply: me, entries: 0, flags: 0, name: 'silent' }, Date.now()),
          NO_RECEIVER,
        ),
        port,
        group,
      )
    announce()
    const beat = setInterval(announce, 150)
    let writing = true
    t.teardown(() => {
      writing = false
      clearInterval(beat)
      return sock.close()
    })
    await eventually(async () => (await clusterStats(a))['trustedMembers'] >= 2, 30_000, 'the silent member trusted by a')
    await a.client.set('ticket', Buffer.from('single use'))
    await eventually(async () => (await b.client.get('ticket', { localOnly: true })) !== undefined, 30_000, 'the ticket copied to b')

    // Writes go on (as a TLS terminator's new sessions do, from many connections at once) until
    // the test ends. Each waits for the silent member's acknowledgement up to its deadline, so
    // they are many at a time, not one.
    let written = 0
    const writer = Promise.all(
      Array.from({ length: 16 }, async () => {
        while (writing) await a.client.set(`new-${written++}`, Buffer.from('session'))
      }),
    ).catch((err: unknown) => {
      // The daemons stop at the test's end (a failed wait included) while a write is on its way.
      if (writing) throw err
    })
    await eventually(
      async () => (await clusterStats(a))['replicationPending'] > 300,
      60_000,
      'more copies unacknowledged by the silent member than the in-flight window (256) holds',
    )
    await a.client.delete('ticket')
    await eventually(async () => (await b.client.get('ticket', { localOnly: true })) === undefined, 30_000, 'the delete reached b')
    t.pass(`b no longer serves the deleted ticket (${written} writes meanwhile, ${copiesTaken} copies to the silent member)`)
    writing = false
    await writer
  },
)
