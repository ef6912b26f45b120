/**
 * Copies owed to members in probation (the netns-failover "listed peers" loss): a host whose peers
 * rejoined and sit in probation stores sessions; the copies those peers will own are counted as
 * pending and sent when they are trusted, also for keys this host does not own by then.
 * The Replicator runs on a real store and a recording fake transport.
 */
import t from 'tap'
import { MsgType, type Address, type Message } from '../../protocol/wire.js'
import { CompactStore } from '../../daemon/store/compact-store.js'
import { Replicator } from '../../daemon/cluster/replication.js'
import { owners } from '../../daemon/cluster/rendezvous.js'
import type { Transport } from '../../daemon/cluster/transport.js'

const opts = {
  replicationFactor: 2,
  replicationAckTimeoutMs: 60_000,
  replicationAckDelayMs: 2,
  replicationRetries: 0,
  maxReplicationInflight: 256,
  maxReplicationQueue: 100_000,
  maxDatagramBytes: 1400,
  maxValueBytes: 65536,
  maxReassemblyBytes: 1 << 20,
  maxHolderRecords: 1000,
}
const addr = (port: number): Address => ({ family: 4, address: '127.0.0.1', port })

t.test('copies owed to members in probation are pending until they are trusted, then sent', async (t) => {
  const sent: { to: string; msg: Message }[] = []
  const group: Message[] = []
  const transport = {
    sendTo: (_a: Address, to: string, msg: Message) => (sent.push({ to, msg }), Promise.resolve()),
    sendGroup: (msg: Message) => group.push(msg),
  } as unknown as Transport
  const store = new CompactStore()
  const self = 'aa00000000000001'
  const peers = ['bb00000000000002', 'cc00000000000003']
  let trusted: string[] = []
  let probation = [...peers]
  const r = new Replicator(opts, transport, store, {
    selfId: self,
    aliveIds: () => trusted,
    probationIds: () => probation,
    addressOf: (id) => addr(peers.indexOf(id) + 1000),
  })
  t.teardown(() => r.close())

  const keys = Array.from({ length: 40 }, (_, i) => `k${i}`)
  const waits = keys.map((k) => {
    store.set(k, Buffer.from(`v-${k}`), 60_000)
    return r.stored(k)
  })
  t.same(waits.filter(Boolean), [], 'every SET answered at once (no loss seen)')
  t.equal(sent.length, 0, 'nothing sent to members in probation')
  t.ok(
    group.some((m) => m.type === MsgType.INVALIDATE),
    'the group is told to drop older copies (a member in probation may hold one no record leads to)',
  )
  // Each key whose owners among all three include a peer owes it a copy.
  const owed = keys
    .flatMap((k) =>
      owners(k, [self, ...peers], 2)
        .filter((id) => id !== self)
        .map((id) => `${id}:${k}`),
    )
    .sort()
  t.ok(owed.length >= keys.length, `${owed.length} copies owed`)
  t.equal(r.pending, owed.length, 'every owed copy counts as pending')
  t.equal(r.counters.copiesOwed, owed.length)
  const notOwnedHere = keys.filter((k) => !owners(k, [self, ...peers], 2).includes(self))
  t.ok(notOwnedHere.length > 0, `${notOwnedHere.length} keys are not this host's to own once the peers are trusted`)

  // The peers pass probation: the owed copies leave at once.
  trusted = [...peers]
  probation = []
  r.membersChanged()
  const copies = sent
    .filter((s) => s.msg.type === MsgType.REPLICATE || s.msg.type === MsgType.REPLICATE_AWAITED)
    .map((s) => `${s.to}:${(s.msg as { key: Buffer }).key.toString('latin1')}`)
  t.same([...new Set(copies)].sort(), owed, 'every owed copy sent to its new owner, keys this host no longer owns included')
  t.ok(r.pending >= owed.length, 'pending until each is acknowledged')
  for (const s of sent)
    if (s.msg.type === MsgType.REPLICATE || s.msg.type === MsgType.REPLICATE_AWAITED) r.onAck(s.to, (s.msg as { replId: number }).replId)
  await t.resolves(r.whenIdle(10_000))
  t.equal(r.counters.copiesAcked, owed.length, 'each acknowledged')
})

t.test('a member that dies in probation is owed nothing', async (t) => {
  const sent: Message[] = []
  const transport = {
    sendTo: (_a: Address, _to: string, msg: Message) => (sent.push(msg), Promise.resolve()),
    sendGroup: () => {},
  } as unknown as Transport
  const store = new CompactStore()
  let probation = ['bb00000000000002']
  const r = new Replicator(opts, transport, store, {
    selfId: 'aa00000000000001',
    aliveIds: () => [],
    probationIds: () => probation,
    addressOf: () => addr(1000),
  })
  t.teardown(() => r.close())
  for (let i = 0; i < 10; i++) {
    store.set(`d${i}`, Buffer.from('x'), 60_000)
    void r.stored(`d${i}`) // the wait for a copy only resolves; the test reads r.pending
  }
  t.equal(r.pending, 10, 'with one peer, R = 2: it owns every key')
  probation = []
  r.membersChanged()
  await t.resolves(r.whenIdle(10_000))
  t.equal(r.pending, 0, 'nothing owed to a member gone')
  t.equal(sent.length, 0)
})

t.test(
  'a member kept in probation while writes go on costs bounded memory: owed copies stop at maxReplicationQueue, deleted keys are owed nothing',
  async (t) => {
    const transport = { sendTo: () => Promise.resolve(), sendGroup: () => {} } as unknown as Transport
    const store = new CompactStore()
    const maxReplicationQueue = 500
    // One peer, R = 2: it owns every key, so every SET owes it a copy while it sits in probation.
    const r = new Replicator({ ...opts, maxReplicationQueue }, transport, store, {
      selfId: 'aa00000000000001',
      aliveIds: () => [],
      probationIds: () => ['bb00000000000002'],
      addressOf: () => addr(1000),
    })
    t.teardown(() => r.close())
    // A stream of distinct session keys, each written and ended (DELETE) at once: the store holds
    // nothing, and the peer never leaves probation (a key holder can keep it there, or it rejoins slowly).
    for (let i = 0; i < 5 * maxReplicationQueue; i++) {
      store.set(`s${i}`, Buffer.from('x'), 60_000)
      void r.stored(`s${i}`) // the wait for a copy only resolves; the test reads the counters
      store.delete(`s${i}`)
      r.deleted(`s${i}`, 1n)
    }
    t.equal(store.keys().length, 0, 'the store holds nothing')
    t.equal(r.counters.copiesOwed, 5 * maxReplicationQueue, 'each write owed a copy in turn')
    t.ok(r.pending <= maxReplicationQueue, `copies owed for deleted keys are forgotten (pending ${r.pending})`)
    // Written and kept: owed copies stop at the queue's bound, the rest counted as dropped.
    for (let i = 0; i < 5 * maxReplicationQueue; i++) {
      store.set(`k${i}`, Buffer.from('x'), 60_000)
      void r.stored(`k${i}`) // the wait for a copy only resolves; the test reads r.pending
    }
    t.ok(r.pending <= maxReplicationQueue + 1, `pending ${r.pending} stays within maxReplicationQueue (${maxReplicationQueue})`)
    t.ok(r.counters.copiesDropped >= 4 * maxReplicationQueue - 1, `the rest counted as dropped (${r.counters.copiesDropped})`)
  },
)
