/**
 * The replay windows under a backlog (regression test of commit eeb7905): a receiver reads its
 * group socket and its unicast socket each in order, but not in order with each other (libuv
 * reads up to 32 datagrams from one socket, then turns to the other). With one replay window per
 * sender for both, a receiver that fell behind by more than the window (1024 counters) took a
 * group datagram with a late counter first and then dropped the older, fresh unicast datagrams
 * behind it as replays: at 3,000 handshakes/s the retries that followed collapsed a 3-daemon fleet.
 *
 * Two real transports on loopback, sealed UDP unicast and multicast: the sender sends its
 * backlog while the receiver's event loop is blocked, then the receiver is released.
 */
import t from 'tap'
import { Transport } from '../../daemon/cluster/transport.js'
import { silentLog } from '../../daemon/host/log.js'
import { newClusterKey } from '../../protocol/keyfile.js'
import { MsgType } from '../../protocol/wire.js'
import { uniqueGroup } from '../helpers/cluster.js'
import { eventually } from '../helpers/daemon.js'

/** Datagrams sealed to the receiver: well beyond the 1024-counter window. */
const UNICAST = 1600
/** One group datagram after every this many unicast ones. */
const GROUP_EVERY = 100

t.test('a backlog of datagrams sealed to us, with group datagrams between them, is taken whole: none dropped as a replay', async (t) => {
  const { group, port } = uniqueGroup()
  const keys = [newClusterKey(Date.now() / 1000 - 60)]
  const make = () =>
    new Transport({
      group,
      port,
      unicastPort: 0,
      multicastEnabled: true,
      multicastTtl: 0,
      multicastLoopback: true,
      replayWindowMs: 30_000,
      maxDatagramBytes: 1400,
      iface: '127.0.0.1',
      peers: [],
      keys,
      log: silentLog,
    })
  const sender = make()
  const receiver = make()
  await sender.start()
  t.teardown(() => sender.close())
  await receiver.start()
  t.teardown(() => receiver.close())
  let acks = 0
  let invalidates = 0
  receiver.onMessage = ({ msg }) => {
    if (msg.type === MsgType.ACK) acks++
    else if (msg.type === MsgType.INVALIDATE) invalidates++
  }

  // The whole backlog is sent in this one synchronous stretch, each message in a datagram of its
  // own (flushed at once), each on the wire when its send returns: the receiver, in this same
  // process, reads none of them until the stretch ends. Its event loop is blocked exactly as a
  // busy daemon's is, and its kernel queues hold the backlog: 1,600 datagrams sealed to it on its
  // unicast socket and 16 on its group socket, the last group one some 1,600 counters ahead of the
  // first unicast one.
  let groups = 0
  for (let i = 1; i <= UNICAST; i++) {
    sender.sendTo(receiver.replyAddress, receiver.nodeIdHex, { type: MsgType.ACK, replId: i })
    sender.flush()
    if (i % GROUP_EVERY === 0) {
      sender.sendGroup({ type: MsgType.INVALIDATE, version: BigInt(i), key: Buffer.from(`k${i}`) })
      sender.flush()
      groups++
    }
  }
  t.equal(sender.counters.datagramsSent, UNICAST + groups, 'every message left in a datagram of its own')
  t.equal(sender.counters.sendErrors, 0, 'and none failed to leave')

  const c = receiver.counters
  await eventually(() => acks + invalidates + c.dropped.replayed >= UNICAST + groups, 30_000, 'the receiver has read the backlog')
  t.comment(
    `taken: ${acks} of ${UNICAST} sealed to the receiver, ${invalidates} of ${groups} to the group; dropped as replayed: ${c.dropped.replayed}`,
  )
  t.equal(c.dropped.replayed, 0, 'no fresh datagram taken for a replay')
  t.equal(acks, UNICAST, 'every datagram sealed to the receiver was taken')
  t.equal(invalidates, groups, 'every group datagram was taken')
})
