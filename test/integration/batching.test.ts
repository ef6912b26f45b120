/**
 * Batching (issue 15, point 3): what a daemon sends one peer within one turn of its event loop
 * goes out as one sealed datagram (a BATCH). Real daemons on loopback; one client write carries
 * many requests, so their copies and deletes are made in one turn.
 */
import t from 'tap'
import crypto from 'node:crypto'
import dgram from 'node:dgram'
import fs from 'node:fs'
import net from 'node:net'
import { parseKeyFile } from '../../protocol/keyfile.js'
import { FrameDecoder, Op, Status, decodeReply, encodeRequest, type Request } from '../../protocol/local.js'
import { Keyring, MsgType, NO_RECEIVER, encodeBatch, seal, type Message } from '../../protocol/wire.js'
import { GENEROUS_LOOKUPS, clusterStats, startCluster, startNode, waitMembers } from '../helpers/cluster.js'
import { eventually, freePort } from '../helpers/daemon.js'

/** Writes `reqs` to the API socket at `path` in one write; resolves their replies' statuses by id. */
async function oneWrite(path: string, reqs: Request[]): Promise<Map<number, number>> {
  const s = net.connect(path)
  await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject))
  const statuses = new Map<number, number>()
  const decoder = new FrameDecoder(1 << 20)
  const done = new Promise<void>((resolve, reject) => {
    s.on('data', (chunk: Buffer) =>
      decoder.push(chunk, (frame) => {
        const r = decodeReply(frame)
        statuses.set(r.id, r.status)
        if (statuses.size === reqs.length) resolve()
      }),
    )
    s.once('error', reject)
    s.once('close', () => reject(new Error(`connection closed after ${statuses.size} of ${reqs.length} replies`)))
  })
  s.write(Buffer.concat(reqs.map(encodeRequest)))
  try {
    await done
  } finally {
    s.destroy()
  }
  return statuses
}

const SETS = 60

t.test('copies and a delete made in one turn reach the other owner in a few datagrams, not one each', async (t) => {
  // Two hosts, two copies of everything: every key is owned by both.
  const { nodes } = await startCluster(t, 2, GENEROUS_LOOKUPS)
  const [a, b] = nodes as [(typeof nodes)[0], (typeof nodes)[0]]
  await a.client.set('doomed', Buffer.from('to be deleted'))
  await eventually(async () => (await b.client.get('doomed', { localOnly: true })) !== undefined, 30_000, 'the first copy placed')

  const keys = Array.from({ length: SETS }, (_, i) => `batched-${i}`)
  const reqs: Request[] = [
    { op: Op.DELETE, id: 1, flags: 0, key: Buffer.from('doomed') },
    ...keys.map((k, i): Request => ({
      op: Op.SET,
      id: i + 2,
      flags: 0,
      key: Buffer.from(k),
      value: Buffer.from(`value of ${k}`),
      ttlMs: 60_000,
    })),
  ]
  const [a0, b0] = await Promise.all([clusterStats(a), clusterStats(b)])
  const statuses = await oneWrite(a.socket, reqs)
  t.ok(
    [...statuses.values()].every((s) => s === Status.OK),
    'every request answered OK',
  )
  await eventually(
    async () =>
      (await Promise.all(keys.map((k) => b.client.get(k, { localOnly: true })))).every((v, i) => v?.toString() === `value of ${keys[i]}`),
    30_000,
    'every copy on b',
  )
  t.equal(await b.client.get('doomed', { localOnly: true }), undefined, 'the delete reached b')
  const [a1, b1] = await Promise.all([clusterStats(a), clusterStats(b)])

  const batched = a1['messagesBatched'] - a0['messagesBatched']
  const received = b1['datagramsReceived'] - b0['datagramsReceived']
  t.comment(
    `a sent ${a1['batchesSent'] - a0['batchesSent']} batches holding ${batched} messages; b received ${received} datagrams (${b1['batchesReceived'] - b0['batchesReceived']} batches) for ${SETS + 1} copies and deletes`,
  )
  t.ok(batched >= SETS + 1, 'a sent every copy and the delete inside batches')
  t.ok(b1['batchesReceived'] - b0['batchesReceived'] >= 1, 'b took batches')
  // One datagram per copy would be SETS + 1 on their own; heartbeats add one per 200 ms.
  t.ok(received < SETS / 2, `b received far fewer datagrams (${received}) than messages`)
  t.equal(
    b1['dropped']['malformed'] + b1['dropped']['misaddressed'] - b0['dropped']['malformed'] - b0['dropped']['misaddressed'],
    0,
    'b dropped none as malformed or misaddressed',
  )
})

t.test('memcache: sets written in one go are readable on the other host as soon as they are answered', async (t) => {
  const probe = await startCluster(t, 0)
  const common = { dir: probe.dir, keyFile: probe.keyFile, group: probe.group, port: probe.port }
  const mc = await freePort()
  const a = await startNode(t, { ...common, name: 'a', args: [...GENEROUS_LOOKUPS, '--memcache-listen', `127.0.0.1:${mc}`] })
  const b = await startNode(t, { ...common, name: 'b', args: GENEROUS_LOOKUPS })
  await waitMembers([a, b], 1)
  const a0 = await clusterStats(a)

  const keys = Array.from({ length: 10 }, (_, i) => `mc-batched-${i}`)
  const s = net.connect(mc, '127.0.0.1')
  t.teardown(() => s.destroy())
  await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject))
  let got = ''
  const stored = new Promise<void>((resolve, reject) => {
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1')
      if (got.split('STORED\r\n').length - 1 === keys.length) resolve()
    })
    s.once('error', reject)
  })
  s.write(keys.map((k) => `set ${k} 0 60 ${`value of ${k}`.length}\r\nvalue of ${k}\r\n`).join(''))
  await stored
  // Read-after-write: b finds each one (its copy, or a fill from an owner that holds it).
  const values = await Promise.all(keys.map((k) => b.client.get(k)))
  t.same(
    values.map((v) => v?.toString()),
    keys.map((k) => `value of ${k}`),
    'every value read on b right after STORED',
  )
  const a1 = await clusterStats(a)
  t.ok(
    a1['messagesBatched'] - a0['messagesBatched'] >= keys.length,
    `a sent the copies inside batches (${a1['messagesBatched'] - a0['messagesBatched']} messages in ${a1['batchesSent'] - a0['batchesSent']} batches)`,
  )
})

t.test(
  'hostile batches from a key holder: a unicast type in a group batch, a nested batch, a lying length, each dropped whole and counted; the daemon serves on',
  async (t) => {
    const { nodes, keyFile, group, port } = await startCluster(t, 1)
    const [a] = nodes as [(typeof nodes)[0]]
    const self = (await a.client.peers()).find((p) => p['self'])!
    const addr = String(self['address'])
    const unicast = { address: addr.slice(0, addr.lastIndexOf(':')), port: Number(addr.slice(addr.lastIndexOf(':') + 1)) }
    const receiver = Buffer.from(String(self['nodeId']), 'hex')
    const ring = new Keyring(parseKeyFile(fs.readFileSync(keyFile, 'utf8')))
    const keyId = [...ring.keys.keys()][0]!
    const id = crypto.randomBytes(8)
    let counter = 1
    const sock = dgram.createSocket('udp4')
    t.teardown(() => sock.close())
    await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve))
    const send = (body: Buffer, to: { address: string; port: number }, rcv: Buffer) =>
      new Promise((resolve) => sock.send(seal(ring, keyId, id, counter++, body, rcv), to.port, to.address, resolve))
    const head = () => {
      const h = Buffer.alloc(9)
      h[0] = MsgType.BATCH
      h.writeUInt32BE(Math.floor(Date.now() / 2 ** 32), 1)
      h.writeUInt32BE(Date.now() >>> 0, 5)
      return h
    }
    const copy: Message = {
      type: MsgType.REPLICATE,
      replId: 1,
      ttlMs: 60_000,
      flags: 0,
      totalLen: 6,
      index: 0,
      count: 1,
      version: BigInt(Date.now()) << 16n,
      key: Buffer.from('planted'),
      chunk: Buffer.from('forged'),
    }
    const d0 = (await clusterStats(a))['dropped']

    // A copy hidden in a batch to the group, behind a message that may go there.
    await send(
      encodeBatch([{ type: MsgType.INVALIDATE, version: 1n, key: Buffer.from('x') }, copy], Date.now()),
      { address: group, port },
      NO_RECEIVER,
    )
    await eventually(
      async () => (await clusterStats(a))['dropped']['misaddressed'] > d0['misaddressed'],
      20_000,
      'the group batch with a copy dropped as misaddressed',
    )
    // A batch inside a batch, sealed to the daemon.
    const inner = encodeBatch([copy, copy], Date.now()).subarray(9)
    const nested = Buffer.concat([head(), Buffer.from([1, inner.length >> 8, inner.length & 0xff, MsgType.BATCH]), inner])
    await send(nested, unicast, receiver)
    await eventually(
      async () => (await clusterStats(a))['dropped']['malformed'] >= d0['malformed'] + 1,
      20_000,
      'the nested batch dropped as malformed',
    )
    // An entry whose length claims more bytes than the datagram holds, and an empty batch.
    const ack = Buffer.from([0, 0, 0, 7])
    await send(Buffer.concat([head(), Buffer.from([1, 0x05, 0xdc, MsgType.ACK]), ack]), unicast, receiver)
    await send(Buffer.concat([head(), Buffer.from([0])]), unicast, receiver)
    await eventually(
      async () => (await clusterStats(a))['dropped']['malformed'] >= d0['malformed'] + 3,
      20_000,
      'the lying length and the empty batch dropped as malformed',
    )

    const d1 = (await clusterStats(a))['dropped']
    t.equal(d1['misaddressed'] - d0['misaddressed'], 1, 'one datagram dropped as misaddressed: the group batch, whole')
    t.equal(d1['malformed'] - d0['malformed'], 3, 'three dropped as malformed')
    t.equal(await a.client.get('planted', { localOnly: true }), undefined, 'the hidden copy was not stored')
    await a.client.set('after', Buffer.from('fine'))
    t.same(await a.client.get('after'), Buffer.from('fine'), 'the daemon serves on')
  },
)
