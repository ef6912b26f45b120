/**
 * The asker's side of reply binding, as pure logic with a fake transport: a HIT or MISS is taken
 * only when its request id, nonce and key digest are those of the lookup in flight. (The attack
 * with real daemons and captured datagrams is in test/netns/netns-binding.test.ts.)
 */
import t from 'tap'
import { Lookups } from '../../daemon/cluster/lookups.js'
import type { SessionStore } from '../../daemon/store/session-store.js'
import type { Transport } from '../../daemon/cluster/transport.js'
import { MsgType, keyDigest, type Message } from '../../protocol/wire.js'

function setup() {
  const sent: Message[] = []
  const counters = { oversizeNotSent: 0, dropped: { unsolicited: 0, mismatched: 0 } }
  const transport = {
    counters,
    replyAddress: { family: 4, address: '127.0.0.1', port: 9 },
    fits: () => true,
    sendGroup: (m: Message) => (sent.push(m), Promise.resolve()),
    sendToEach: (_to: unknown, m: Message) => void sent.push(m),
  } as unknown as Transport
  const stored = new Map<string, Buffer>()
  const store = { set: (k: string, v: Buffer) => void stored.set(k, Buffer.from(v)) } as unknown as SessionStore
  const lookups = new Lookups(
    {
      lookupTimeoutMs: 60_000,
      lookupRetries: 0,
      lookupHedgeMs: 0,
      maxInflightLookups: 10,
      maxReassemblyBytes: 1 << 20,
      maxValueBytes: 1 << 16,
      maxDatagramBytes: 1400,
      replicationFactor: 1,
    },
    transport,
    store,
    {
      liveIds: () => ['aa'],
      readOwners: () => ({ ids: [], changing: false }),
      addressOf: () => undefined,
      settled: () => false,
      complete: () => false,
      members: new Map(),
      fromOwnAddress: () => false,
    },
  )
  t.teardown(() => lookups.close())
  return { sent, counters, lookups, stored }
}

const hit = (m: Extract<Message, { type: typeof MsgType.LOOKUP }>, over: Partial<{ nonce: Buffer; digest: Buffer }> = {}) =>
  ({
    type: MsgType.HIT,
    reqId: m.reqId,
    nonce: m.nonce,
    digest: keyDigest(m.key),
    ttlMs: 1000,
    flags: 0,
    totalLen: 5,
    index: 0,
    count: 1,
    chunk: Buffer.from('alice'),
    ...over,
  }) as Extract<Message, { type: typeof MsgType.HIT }>

t.test('a HIT with the right request id but another nonce or key is dropped and counted', async (t) => {
  const { sent, counters, lookups, stored } = setup()
  const pending = lookups.lookup('bob')
  const ask = sent[0] as Extract<Message, { type: typeof MsgType.LOOKUP }>
  t.equal(ask.type, MsgType.LOOKUP)
  t.equal(ask.nonce.length, 8, 'the LOOKUP carries a nonce')
  lookups.onHit('aa', hit(ask, { nonce: Buffer.alloc(8) }))
  lookups.onHit('aa', hit(ask, { digest: keyDigest(Buffer.from('alice')) }))
  lookups.onMiss('aa', { type: MsgType.MISS, reqId: ask.reqId, nonce: Buffer.alloc(8), digest: keyDigest(ask.key) })
  t.equal(counters.dropped.mismatched, 3, 'all three counted as mismatched')
  t.equal(lookups.inflight, 1, 'the lookup still waits')
  t.equal(stored.size, 0, 'nothing stored')
  lookups.onHit('aa', hit(ask))
  t.same((await pending)?.value, Buffer.from('alice'), 'the bound HIT answers it')
})

t.test('each lookup draws a fresh nonce', async (t) => {
  const { sent, lookups } = setup()
  void lookups.lookup('k1')
  void lookups.lookup('k2')
  const [a, b] = sent as Extract<Message, { type: typeof MsgType.LOOKUP }>[]
  t.notSame(a!.nonce, b!.nonce)
  t.not(a!.reqId, b!.reqId)
})
