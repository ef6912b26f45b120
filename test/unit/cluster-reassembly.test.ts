/**
 * Values in chunks between cluster cores in one process (test/helpers/memory-cluster.ts): remote
 * fills and replication copies whose chunks arrive out of order, twice, or never, over the
 * in-memory network with fake time.
 */
import crypto from 'node:crypto'
import t from 'tap'
import { MsgType, datagramLength, replicateChunkBytes, type Message } from '../../protocol/wire.js'
import { MAX_PARTIAL_COPIES_PER_SENDER } from '../../daemon/cluster/replication.js'
import { startLab, type Core } from '../helpers/memory-cluster.js'

/** Records the chunk indices of `type` that reach `core`'s cluster while `open()`, in arrival order. */
function arrivals(core: Core, type: typeof MsgType.HIT | typeof MsgType.REPLICATE, open: () => boolean): number[] {
  const seen: number[] = []
  const inner = core.cluster.transport.onMessage
  core.cluster.transport.onMessage = (m) => {
    // An application's copies travel as REPLICATE_AWAITED, in REPLICATE's layout.
    const t = m.msg.type === MsgType.REPLICATE_AWAITED ? MsgType.REPLICATE : m.msg.type
    if (t === type && open()) seen.push((m.msg as Extract<Message, { index: number }>).index)
    inner(m)
  }
  return seen
}

const outOfOrder = (xs: number[]) => xs.some((x, i) => i > 0 && x < xs[i - 1]!)
const repeated = (xs: number[]) => new Set(xs).size < xs.length

t.test('a fill in chunks arriving out of order and twice (retransmitted rounds) joins into the value', async (t) => {
  // Delays of 20 to 100 ms against rounds every 200 / 8 ms: a value's 15 chunks take several
  // rounds to arrive, and later rounds' chunks overtake earlier ones.
  const { lab: l, cores } = await startLab(t, 2, 31, { replicationFactor: 1, lookupTimeoutMs: 200, lookupRetries: 7 })
  const [a, b] = cores as [Core, Core]
  const value = crypto.randomBytes(20_000)
  a.store.set('big', value, 60_000)
  const seen = arrivals(b, MsgType.HIT, () => b.cluster.lookups.inflight > 0)
  l.net.faults = { loss: 0, duplicate: 0, minDelayMs: 20, maxDelayMs: 100 }
  const found = await l.settle(b.cluster.lookup('big'))
  t.ok(found?.value.equals(value), 'the whole value, byte for byte')
  t.ok(outOfOrder(seen), 'chunks arrived out of order')
  t.ok(repeated(seen), 'some chunks arrived twice before the value was whole (from two rounds)')
  t.equal(b.cluster.lookups.counters.reassemblyDropped, 0, 'no chunk refused')
  t.ok(b.store.peek('big')?.value.equals(value), 'kept whole')
})

t.test('a copy in chunks arriving out of order and duplicated on the wire is stored once, whole', async (t) => {
  const { lab: l, cores } = await startLab(t, 2, 32)
  const [a, b] = cores as [Core, Core]
  const value = crypto.randomBytes(20_000)
  const seen = arrivals(b, MsgType.REPLICATE, () => b.store.peek('big') === undefined)
  l.net.faults = { loss: 0.1, duplicate: 0.5, minDelayMs: 0, maxDelayMs: 40 }
  l.set(a, 'big', value)
  t.ok(await l.until(() => b.store.peek('big') !== undefined, 30_000), 'the copy arrived')
  t.ok(b.store.peek('big')!.value.equals(value), 'byte for byte')
  t.equal(b.store.peek('big')!.version, a.store.peek('big')!.version, 'at the version written')
  t.ok(outOfOrder(seen), 'chunks arrived out of order')
  t.ok(l.net.counters.duplicated > 0 && b.cluster.transport.counters.dropped.replayed > 0, 'duplicated datagrams were dropped as replays')
  t.ok(await l.until(() => a.cluster.replicator.pending === 0, 30_000), 'acknowledged')
  t.equal(a.cluster.replicator.counters.copiesAcked, 1)
})

t.test("copies abandoned half way are dropped after the reassembly timeout, freeing the sender's share", async (t) => {
  const { lab: l, cores } = await startLab(t, 2, 33, { replicationRetries: 0 })
  const [a, b] = cores as [Core, Core]
  // Values of two chunks, the second REPLICATE_TAIL bytes: the datagrams of second chunks have a
  // length no other message here has, so a rule can lose exactly those.
  const REPLICATE_TAIL = 300
  const key = (i: number) => `abandoned-${String(i).padStart(3, '0')}`
  const valueBytes = replicateChunkBytes(1400, key(0).length) + REPLICATE_TAIL
  const tailLength = datagramLength({
    type: MsgType.REPLICATE,
    replId: 1,
    ttlMs: 1,
    flags: 0,
    totalLen: valueBytes,
    index: 1,
    count: 2,
    version: 1n,
    key: Buffer.from(key(0)),
    chunk: Buffer.alloc(REPLICATE_TAIL),
  })
  const unblock = l.net.block((d) => d.from.address === a.address && d.toHost === b.address && d.bytes === tailLength)

  for (let i = 0; i < MAX_PARTIAL_COPIES_PER_SENDER; i++) l.set(a, key(i), crypto.randomBytes(valueBytes))
  t.ok(await l.until(() => a.cluster.replicator.pending === 0, 10_000), 'a gave up on them (no ACK, no retries)')
  t.equal(l.net.counters.blocked, MAX_PARTIAL_COPIES_PER_SENDER, 'each copy lost its second chunk')
  t.equal(a.cluster.replicator.counters.copiesFailed, MAX_PARTIAL_COPIES_PER_SENDER)
  t.equal(b.store.size, 0, 'b stored none of them')

  // b holds MAX_PARTIAL_COPIES_PER_SENDER half copies from a: a further chunked copy from a is refused.
  unblock()
  const full = crypto.randomBytes(valueBytes)
  l.set(a, 'whole-1', full)
  await l.until(() => a.cluster.replicator.pending === 0, 10_000)
  t.equal(b.store.peek('whole-1'), undefined, 'refused while the half copies are held')
  t.equal(b.cluster.replicator.counters.copiesUnassembled, 2, 'each of its two chunks counted')

  // The reassembly timeout (5 s) and a heartbeat's sweep later, they are gone: copies are taken again.
  await l.run(7000)
  l.set(a, 'whole-2', full)
  t.ok(await l.until(() => b.store.peek('whole-2') !== undefined, 10_000), 'a chunked copy is taken again')
  t.ok(b.store.peek('whole-2')!.value.equals(full), 'whole')
})
