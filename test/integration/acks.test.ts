/**
 * Delayed, cumulative acknowledgements between real daemons on loopback: a burst of SETs costs
 * the peer fewer acknowledgement datagrams than copies, and every copy is acknowledged; hostile
 * ACKS sealed with the cluster key (malformed, from a stranger, a flood from a member) settle nothing.
 */
import t from 'tap'
import crypto from 'node:crypto'
import { MsgType, NO_RECEIVER, encodeBody, seal } from '../../protocol/wire.js'
import { GENEROUS_LOOKUPS, clusterStats, keyHolder, replicationSettled, startCluster, unicastOf } from '../helpers/cluster.js'
import { eventually } from '../helpers/daemon.js'

const val = (k: string) => Buffer.from(`state-of-${k}`.padEnd(200, '.'))

t.test('a burst of copies is acknowledged by fewer datagrams than copies, and every copy is acknowledged', async (t) => {
  // Two hosts, replicationFactor 2: every SET on A is copied to B. The delay is generous so that
  // copies sent together share an ACKS on a loaded machine too; the ACK wait is 4 times it.
  const { nodes } = await startCluster(t, 2, [
    '--replication-factor',
    '2',
    '--replication-ack-delay-ms',
    '20',
    '--replication-ack-timeout-ms',
    '1000',
    '--replication-retries',
    '20',
    ...GENEROUS_LOOKUPS,
  ])
  const [a, b] = nodes as [(typeof nodes)[0], (typeof nodes)[0]]
  const keys = Array.from({ length: 300 }, (_, i) => `ack-${i}`)
  for (let i = 0; i < keys.length; i += 50) await Promise.all(keys.slice(i, i + 50).map((k) => a.client.set(k, val(k))))
  await replicationSettled(nodes)
  const sa = await clusterStats(a)
  const sb = await clusterStats(b)
  t.equal(sa['copiesPushed'], keys.length, 'a copy of each session to B')
  t.equal(sa['copiesAcked'], sa['copiesPushed'], 'every copy acknowledged')
  t.equal(sa['copiesFailed'], 0, 'none given up')
  t.ok(sb['acksCovered'] >= keys.length, `B acknowledged every copy it took (${sb['acksCovered']} ids, retries included)`)
  t.ok(sb['acksSent'] < keys.length, `in fewer datagrams than copies (${sb['acksSent']} ACKS for ${sb['acksCovered']} ids)`)
  t.ok(sa['acksReceived'] <= sb['acksSent'], 'A read no more acknowledgements than B sent')
  for (const k of keys) t.same(await b.client.get(k, { localOnly: true }), val(k), `${k} on B`)
})

t.test(
  'hostile ACKS: count 0, a lying count, a stranger, a flood from a member: counted, nothing settled, copies still acknowledged',
  async (t) => {
    const { nodes, keyFile, group, port } = await startCluster(t, 2, [
      '--replication-factor',
      '2',
      '--replication-ack-timeout-ms',
      '1000',
      '--replication-retries',
      '20',
      ...GENEROUS_LOOKUPS,
    ])
    const [a, b] = nodes as [(typeof nodes)[0], (typeof nodes)[0]]
    const { ring, keyId, sock, me } = await keyHolder(t, keyFile)
    const { address: to, id: receiver } = await unicastOf(a)
    let counter = 1
    const sendBody = (body: Buffer, sender: Buffer, dest = to, rcv: Buffer = receiver) =>
      sock.send(seal(ring, keyId, sender, counter++, body, rcv), dest.port, dest.address)
    const stats = () => clusterStats(a)
    const before = await stats()

    // Malformed bodies, sealed with the cluster key: dropped and counted by the decoder.
    const stranger = crypto.randomBytes(8)
    const head = encodeBody({ type: MsgType.ACKS, replIds: [1] }, Date.now()).subarray(0, 9)
    await sendBody(Buffer.concat([head, Buffer.from([0, 0])]), stranger)
    await sendBody(Buffer.concat([head, Buffer.from([0, 9]), Buffer.alloc(8, 1)]), stranger)
    await eventually(
      async () => (await stats())['dropped']['malformed'] >= before['dropped']['malformed'] + 2,
      30_000,
      'both malformed ACKS counted',
    )

    // A sender that is no member: its ACKS is not read.
    await sendBody(encodeBody({ type: MsgType.ACKS, replIds: Array.from({ length: 300 }, (_, i) => i + 1) }, Date.now()), stranger)
    await eventually(async () => (await stats())['acksRefused'] >= before['acksRefused'] + 1, 30_000, "the stranger's ACKS refused")

    // A member (an insider that announced itself) floods ACKS naming every id A is about to use,
    // with duplicates, while A writes: none of it settles a copy that went to B.
    const insider = crypto.randomBytes(8)
    const announce = () =>
      sendBody(
        encodeBody({ type: MsgType.ANNOUNCE, reply: me, entries: 0, flags: 0, name: 'insider' }, Date.now()),
        insider,
        { family: 4, address: group, port },
        NO_RECEIVER,
      )
    await announce()
    await eventually(async () => (await stats())['members'] === 2, 30_000, 'the insider is a member')
    const next = (await stats())['copiesPushed']
    const ids = Array.from({ length: 300 }, (_, i) => next + 1 + (i % 150))
    const keys = Array.from({ length: 100 }, (_, i) => `hostile-${i}`)
    const flood = (async () => {
      for (let i = 0; i < 100; i++) await sendBody(encodeBody({ type: MsgType.ACKS, replIds: ids }, Date.now()), insider)
    })()
    for (const k of keys) await a.client.set(k, val(k))
    await flood
    await replicationSettled([a, b])
    const after = await stats()
    t.ok(
      after['acksUnmatched'] - before['acksUnmatched'] >= 300,
      `the flood's ids settled nothing (${after['acksUnmatched'] - before['acksUnmatched']} unmatched)`,
    )
    t.equal(after['copiesAcked'], after['copiesPushed'], 'every copy acknowledged, by B')
    t.equal(after['copiesFailed'], 0)
    for (const k of keys) t.same(await b.client.get(k, { localOnly: true }), val(k), `${k} on B`)
    t.ok(await a.client.ping(), 'A still serves')
  },
)
