/**
 * Delayed, cumulative acknowledgements (ACKS) and the one retransmit timer of the Replicator: two
 * or three Replicators on real stores, a fake clock, and an in-memory wire between them that can
 * drop chosen datagrams (delivered one fake millisecond after they are sent).
 */
import t from 'tap'
import { MsgType, type Address, type Message } from '../../protocol/wire.js'
import { CompactStore } from '../../daemon/store/compact-store.js'
import { Replicator, type ReplicationOptions } from '../../daemon/cluster/replication.js'
import type { PeerTransport } from '../../daemon/cluster/peer-transport.js'
import { fakeClock, type FakeClock } from '../helpers/fake-clock.js'

const opts: ReplicationOptions = {
  replicationFactor: 2,
  replicationAckTimeoutMs: 100,
  replicationAckDelayMs: 5,
  replicationRetries: 6,
  maxReplicationInflight: 256,
  maxReplicationQueue: 100_000,
  maxDatagramBytes: 1400,
  maxValueBytes: 65536,
  maxReassemblyBytes: 1 << 20,
  maxHolderRecords: 1000,
}

interface Sent {
  from: string
  to: string
  at: number
  msg: Message
}

interface Host {
  id: string
  r: Replicator
  store: CompactStore
}

/** Hosts whose Replicators talk over an in-memory wire; `drop` decides per datagram. */
function lab(t: { teardown(fn: () => void): void }, ids: string[], o: Partial<ReplicationOptions> = {}) {
  const clock: FakeClock = fakeClock()
  const sent: Sent[] = []
  const hosts = new Map<string, Host>()
  const w = { drop: (_s: Sent) => false, sent, clock, hosts }
  const port = (id: string): Address => ({ family: 4, address: '127.0.0.1', port: 1000 + ids.indexOf(id) })
  for (const id of ids) {
    const transport = {
      sendTo: (_a: Address, to: string, msg: Message) => {
        const s = { from: id, to, at: clock.now(), msg }
        sent.push(s)
        if (!w.drop(s)) clock.setTimeout(() => deliver(s), 1)
        return Promise.resolve()
      },
      // A write whose deadline passes tells the group (INVALIDATE): recorded, delivered nowhere.
      sendGroup: (msg: Message) => sent.push({ from: id, to: '*', at: clock.now(), msg }),
    } as unknown as PeerTransport
    const store = new CompactStore()
    const others = ids.filter((x) => x !== id)
    const r = new Replicator(
      { ...opts, ...o },
      transport,
      store,
      { selfId: id, aliveIds: () => others, probationIds: () => [], addressOf: (x) => (others.includes(x) ? port(x) : undefined) },
      clock,
    )
    t.teardown(() => r.close())
    hosts.set(id, { id, r, store })
  }
  function deliver(s: Sent): void {
    const h = hosts.get(s.to)
    if (!h) return
    const m = s.msg
    if (m.type === MsgType.REPLICATE || m.type === MsgType.REPLICATE_AWAITED) h.r.onReplicate(s.from, m)
    else if (m.type === MsgType.DELETE || m.type === MsgType.DELETE_AWAITED) h.r.onDelete(s.from, m)
    else if (m.type === MsgType.ACK) h.r.onAck(s.from, m.replId)
    else if (m.type === MsgType.ACKS) h.r.onAcks(s.from, m.replIds)
  }
  return w
}

/** Awaited copies and deletes (an application's writes) count as REPLICATE and DELETE here. */
const plain = (type: number) =>
  type === MsgType.REPLICATE_AWAITED ? MsgType.REPLICATE : type === MsgType.DELETE_AWAITED ? MsgType.DELETE : type
const of = (sent: Sent[], type: number, from?: string) =>
  sent.filter((s) => plain(s.msg.type) === type && (from === undefined || s.from === from))
const A = 'aa00000000000001'
const B = 'bb00000000000002'
const C = 'cc00000000000003'

function write(h: Host, key: string, value = `value of ${key}`): void {
  h.store.set(key, Buffer.from(value), 60_000)
  void h.r.stored(key)
}

t.test('copies and deletes that arrive within the delay are acknowledged by one ACKS', async (t) => {
  const w = lab(t, [A, B])
  const a = w.hosts.get(A)!
  const b = w.hosts.get(B)!
  // An application's SETs send awaited copies: acknowledged together once the datagrams read in
  // one turn are handled, without the delay (their writers are waiting).
  for (let i = 0; i < 6; i++) write(a, `k${i}`)
  await w.clock.advance(2)
  t.equal(of(w.sent, MsgType.REPLICATE, A).length, 6, 'six copies sent')
  t.equal(b.r.counters.copiesReceived, 6, 'and taken in at once')
  const acks = of(w.sent, MsgType.ACKS, B)
  t.equal(acks.length, 1, 'one ACKS')
  t.same((acks[0]!.msg as { replIds: number[] }).replIds.length, 6, 'naming all six')
  t.equal(of(w.sent, MsgType.ACK, B).length, 0, 'no single ACK')
  await w.clock.advance(2)
  t.equal(a.r.counters.copiesAcked, 6, 'every copy settled')
  t.same([b.r.counters.acksSent, b.r.counters.acksCovered], [1, 6], 'counted by the receiver')
  t.equal(a.r.pending, 0, 'nothing in flight')

  // Deletes passed on (not awaited) wait for the delay and go together.
  for (let i = 0; i < 3; i++) a.r.deleted(`k${i}`, a.store.version(`k${i}`) + 1n)
  await w.clock.advance(2)
  t.equal(of(w.sent, MsgType.ACKS, B).length, 1, 'no acknowledgement of the deletes yet: the delay has not passed')
  await w.clock.advance(opts.replicationAckDelayMs)
  t.equal(of(w.sent, MsgType.ACKS, B).length, 2, 'the three deletes: one more ACKS')
  t.equal(a.r.counters.deletesAcked, 3, 'every delete settled')
  await w.clock.advance(10 * opts.replicationAckTimeoutMs)
  t.equal(a.r.counters.copiesRetried + a.r.counters.deletesRetried, 0, 'nothing retried')
})

t.test('a full list goes at once, without waiting for the delay', async (t) => {
  // 256-byte datagrams carry (256 - 61) / 4 = 48 ids.
  const w = lab(t, [A, B], { maxDatagramBytes: 256, replicationAckDelayMs: 20 })
  const a = w.hosts.get(A)!
  for (let i = 0; i < 50; i++) write(a, `k${i}`, 'v')
  await w.clock.advance(2)
  const acks = of(w.sent, MsgType.ACKS, B)
  t.equal(acks.length, 2, 'two ACKS before the delay (awaited copies: the rest once the turn is handled)')
  t.equal((acks[0]!.msg as { replIds: number[] }).replIds.length, 48, 'the first of as many ids as fit in 256 bytes')
  await w.clock.advance(20)
  t.equal(a.r.counters.copiesAcked, 50)
})

t.test('a lost ACKS: the copies are retried and acknowledged again, none fails', async (t) => {
  const w = lab(t, [A, B])
  const a = w.hosts.get(A)!
  let dropped = 0
  w.drop = (s) => s.msg.type === MsgType.ACKS && dropped++ === 0
  for (let i = 0; i < 5; i++) write(a, `k${i}`)
  await w.clock.advance(2 + opts.replicationAckDelayMs)
  t.equal(dropped, 1, 'the first ACKS was lost')
  t.equal(a.r.counters.copiesAcked, 0, 'so nothing is settled')
  await w.clock.advance(opts.replicationAckTimeoutMs)
  t.equal(a.r.counters.copiesRetried, 5, 'each copy retried once, at its ACK timeout')
  await w.clock.advance(2 + opts.replicationAckDelayMs)
  t.equal(a.r.counters.copiesAcked, 5, 'and acknowledged by the next ACKS')
  t.equal(a.r.counters.copiesFailed, 0)
  t.equal(a.r.pending, 0)
  t.equal(of(w.sent, MsgType.ACKS, B).length, 2, 'one ACKS for the first sends, one for the retries')
})

t.test('an ACKS settles only the jobs that went to its sender; duplicates and strangers settle nothing', async (t) => {
  // Push to all: each write goes to B and to C.
  const w = lab(t, [A, B, C], { replicationFactor: 0 })
  w.drop = (s) => s.to === A // no acknowledgement reaches A unless the test hands it over
  const a = w.hosts.get(A)!
  write(a, 'k')
  await w.clock.advance(2)
  const copies = of(w.sent, MsgType.REPLICATE, A)
  t.same(copies.map((s) => s.to).sort(), [B, C], 'push to all: a copy to each member')
  const toB = (copies.find((s) => s.to === B)!.msg as { replId: number }).replId
  const toC = (copies.find((s) => s.to === C)!.msg as { replId: number }).replId

  a.r.onAcks(C, [toB])
  t.equal(a.r.counters.copiesAcked, 0, 'C cannot settle the copy sent to B')
  a.r.onAcks('dd00000000000004', [toB, toC])
  t.equal(a.r.counters.copiesAcked, 0, 'nor can a sender that is no member')
  t.equal(a.r.counters.acksRefused, 1, 'whose ACKS is refused unread')
  a.r.onAcks(B, [toB, toB, toB])
  t.equal(a.r.counters.copiesAcked, 1, 'B settles its copy once')
  t.equal(a.r.counters.acksUnmatched, 3, 'the foreign id and the two repeats counted as unmatched')
  // A flood of ACKS from a member naming ids it was never sent costs lookups and settles nothing.
  for (let i = 0; i < 2000; i++)
    a.r.onAcks(
      B,
      Array.from({ length: 300 }, (_, j) => (i * 300 + j + 7) >>> 0).filter((x) => x !== toC),
    )
  t.equal(a.r.counters.copiesAcked, 1, 'the flood settled nothing')
  a.r.onAck(C, toC)
  t.equal(a.r.counters.copiesAcked, 2, 'the single ACK of older daemons is still read')
  t.equal(a.r.pending, 0)
})

t.test('one retransmit timer for every job in flight, with the backoff of one timer per job', async (t) => {
  const w = lab(t, [A, B], { replicationRetries: 6 })
  w.drop = () => true
  const a = w.hosts.get(A)!
  const timersBefore = w.clock.pending
  for (let i = 0; i < 100; i++) write(a, `k${i}`)
  t.equal(w.clock.pending - timersBefore, 2, "100 copies in flight: one retransmit timer, one for the SETs' deadlines")
  await w.clock.advance(3 * opts.replicationAckTimeoutMs + 50)
  t.equal(w.clock.pending - timersBefore, 1, 'still one after retries')
  await w.clock.advance(20_000)
  // The times the copy of one key went: every 100 ms doubling, up to MAX_COPY_BACKOFF_MS (2 s).
  const times = of(w.sent, MsgType.REPLICATE, A)
    .filter((s) => (s.msg as { key: Buffer }).key.toString() === 'k7')
    .map((s) => s.at)
  const gaps = times.slice(1).map((x, i) => Math.round(x - times[i]!))
  t.same(gaps, [100, 200, 400, 800, 1600, 2000], 'first send and 6 retries, backing off as before')
  t.equal(a.r.counters.copiesFailed, 100, 'each given up after replicationRetries')
  t.equal(a.r.counters.copiesRetried, 600)
  t.equal(a.r.pending, 0)
  t.equal(w.clock.pending, timersBefore, 'and no timer left')
})

t.test('a job acknowledged early does not hold the others back, and a later one with a shorter wait is retried on time', async (t) => {
  const w = lab(t, [A, B], { replicationRetries: 3 })
  const a = w.hosts.get(A)!
  // k0's copy is lost until its second retry: it waits in the 200 ms and then 400 ms lanes while
  // k1 (written later, lost once) waits in the 100 ms lane.
  const lost = new Map<string, number>([
    ['k0', 2],
    ['k1', 1],
  ])
  w.drop = (s) => {
    if (plain(s.msg.type) !== MsgType.REPLICATE) return false
    const k = (s.msg as { key: Buffer }).key.toString()
    const n = lost.get(k) ?? 0
    lost.set(k, n - 1)
    return n > 0
  }
  write(a, 'k0')
  await w.clock.advance(150)
  write(a, 'k1')
  await w.clock.advance(2000)
  const at = (k: string) =>
    of(w.sent, MsgType.REPLICATE, A)
      .filter((s) => (s.msg as { key: Buffer }).key.toString() === k)
      .map((s) => Math.round(s.at - w.sent[0]!.at))
  t.same(at('k0'), [0, 100, 300], 'k0: sent, retried after 100, then after 200')
  t.same(at('k1'), [150, 250], "k1: sent at 150 and retried 100 ms later, ahead of k0's lane")
  t.equal(a.r.counters.copiesAcked, 2)
  t.equal(a.r.counters.copiesFailed, 0)
})

t.test('replicationAckDelayMs 0: every copy gets its own ACK at once, as before ACKS', async (t) => {
  const w = lab(t, [A, B], { replicationAckDelayMs: 0 })
  const a = w.hosts.get(A)!
  for (let i = 0; i < 4; i++) write(a, `k${i}`)
  await w.clock.advance(3)
  t.equal(of(w.sent, MsgType.ACK, B).length, 4, 'four ACKs')
  t.equal(of(w.sent, MsgType.ACKS, B).length, 0, 'no ACKS')
  t.equal(a.r.counters.copiesAcked, 4)
})
