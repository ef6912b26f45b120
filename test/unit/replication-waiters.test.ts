/**
 * Attack review: while copies are being lost, a SET by a host that owns none of the key's copies
 * is answered once an owner acknowledged its copy (stored()). A SET of a key whose copy is still
 * unacknowledged queues its copy behind that one; the SET must then wait on that queued copy's
 * ACK, not on nothing (which made it wait its whole deadline, 3 x replicationAckTimeoutMs, however
 * fast the owners answered). The Replicator runs on a real store, a fake clock and a recording
 * fake transport.
 */
import t from 'tap'
import { MsgType, type Address, type Message } from '../../protocol/wire.js'
import { CompactStore } from '../../daemon/store/compact-store.js'
import { Replicator } from '../../daemon/cluster/replication.js'
import { owners } from '../../daemon/cluster/rendezvous.js'
import type { PeerTransport } from '../../daemon/cluster/peer-transport.js'
import { fakeClock } from '../helpers/fake-clock.js'

const opts = {
  replicationFactor: 2,
  replicationAckTimeoutMs: 100,
  replicationAckDelayMs: 2,
  replicationRetries: 5,
  maxReplicationInflight: 256,
  maxReplicationQueue: 100_000,
  maxDatagramBytes: 1400,
  maxValueBytes: 65536,
  maxReassemblyBytes: 1 << 20,
  maxHolderRecords: 1000,
}
const addr = (port: number): Address => ({ family: 4, address: '127.0.0.1', port })

t.test('a SET written again while its copy is unacknowledged is answered at the ACK of the copy queued behind it', async (t) => {
  const clock = fakeClock()
  const sent: { to: string; msg: Message }[] = []
  const transport = {
    sendTo: (_a: Address, to: string, msg: Message) => (sent.push({ to, msg }), Promise.resolve()),
  } as unknown as PeerTransport
  const store = new CompactStore()
  const self = 'aa00000000000001'
  const peers = ['bb00000000000002', 'cc00000000000003']
  const r = new Replicator(
    opts,
    transport,
    store,
    { selfId: self, aliveIds: () => peers, probationIds: () => [], addressOf: (id) => addr(peers.indexOf(id) + 1000) },
    clock,
  )
  t.teardown(() => r.close())
  const copies = () =>
    sent
      .filter((s) => s.msg.type === MsgType.REPLICATE || s.msg.type === MsgType.REPLICATE_AWAITED)
      .map((s) => ({ to: s.to, replId: (s.msg as { replId: number }).replId }))

  // Copies are being lost: one goes unacknowledged past its ACK timeout and is retried.
  store.set('probe', Buffer.from('p'), 60_000)
  void r.stored('probe') // only resolves; the retry is what this test watches
  await clock.advance(opts.replicationAckTimeoutMs + 1)
  t.ok(r.counters.copiesRetried > 0, 'a copy was retried')
  for (const c of copies()) r.onAck(c.to, c.replId)

  const key = Array.from({ length: 1000 }, (_, i) => `session-${i}`).find((k) => !owners(k, [self, ...peers], 2).includes(self))!
  t.ok(key, 'a key this host does not own')
  store.set(key, Buffer.from('v1'), 60_000)
  const first = r.stored(key)
  t.ok(first, 'the first SET waits for an owner')
  sent.length = 0
  store.set(key, Buffer.from('v2'), 60_000)
  const second = r.stored(key)
  t.ok(second, 'the second SET waits for an owner')
  let answered = false
  void second!.then(() => (answered = true))
  // The copies of v2 left (queued behind those of v1, the window having room): the owners ACK them.
  const v2 = copies()
  t.equal(v2.length, 2, 'v2 copied to both owners')
  for (const c of v2) r.onAck(c.to, c.replId)
  await clock.advance(0)
  t.ok(answered, "the second SET is answered at its copies' ACK, not at its deadline")
  t.equal(r.counters.setsAwaitingCopy, 3, 'every SET with copies to send waits for them (the probe too)')
})
