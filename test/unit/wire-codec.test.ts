import t from 'tap'
import fc from 'fast-check'
import { ProtocolError } from '../../protocol/errors.js'
import { onlyProtocolErrors } from '../helpers/fuzz.js'
import { KEY_BYTES, formatKeyFile, newClusterKey, parseKeyFile, sealingKey, type ClusterKey } from '../../protocol/keyfile.js'
import {
  AnnounceFlag,
  MAX_ACKS,
  acksPerDatagram,
  BATCH_HEAD_BYTES,
  GROUP_TYPES,
  MAX_BATCH_COUNT,
  batchBody,
  decodeBatch,
  encodeBatch,
  loneBody,
  writeBatchEntry,
  HEADER_BYTES,
  HIT_OVERHEAD_BYTES,
  Keyring,
  MAX_COUNTER,
  MsgType,
  NO_RECEIVER,
  SENDER_ID_BYTES,
  datagramLength,
  decodeBody,
  encodeBody,
  encodeHeader,
  keyDigest,
  open,
  readHeader,
  seal,
  writeHeader,
  type Header,
  type Message,
} from '../../protocol/wire.js'

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const key1: ClusterKey = { id: 0x01020304, createdAt: 1_700_000_000, key: Buffer.alloc(32, 0x11) }
const sender = hex('a1a2a3a4a5a6a7a8')
const T = 1_764_000_000_123
const v4 = { family: 4 as const, address: '10.0.0.7', port: 47700 }
const receiver = hex('b1b2b3b4b5b6b7b8')
const nonce = hex('0102030405060708')
const digest = hex('d0'.repeat(16))
/** A session version (daemon/store/versions.ts): wall ms T, logical 1, tiebreak 2. */
const V = (BigInt(T) << 16n) | 0x0102n

// Golden plaintext bodies: the bytes are the protocol.
const bodies: { name: string; msg: Message; bytes: string }[] = [
  {
    name: 'LOOKUP',
    msg: { type: MsgType.LOOKUP, reqId: 7, nonce, reply: v4, expect: [], key: Buffer.from('k1') },
    bytes: '01 0000019a b697e87b 00000007 0102030405060708 04 0a000007 ba54 00 0002 6b31',
  },
  {
    name: 'LOOKUP with expected owners',
    msg: { type: MsgType.LOOKUP, reqId: 7, nonce, reply: v4, expect: [hex('a1a2a3a4a5a6a7a8')], key: Buffer.from('k1') },
    bytes: '01 0000019a b697e87b 00000007 0102030405060708 04 0a000007 ba54 01 a1a2a3a4a5a6a7a8 0002 6b31',
  },
  {
    name: 'HIT',
    msg: {
      type: MsgType.HIT,
      reqId: 7,
      nonce,
      digest,
      ttlMs: 1000,
      flags: 0x2a,
      totalLen: 3,
      index: 0,
      count: 1,
      version: V,
      chunk: Buffer.from('abc'),
    },
    bytes: `02 0000019a b697e87b 00000007 0102030405060708 ${'d0'.repeat(16)} 000003e8 0000002a 00000003 0000 0001 019ab697e87b0102 616263`,
  },
  {
    name: 'MISS',
    msg: { type: MsgType.MISS, reqId: 9, nonce, digest },
    bytes: `03 0000019a b697e87b 00000009 0102030405060708 ${'d0'.repeat(16)}`,
  },
  {
    name: 'HIT of an empty value',
    msg: {
      type: MsgType.HIT,
      reqId: 1,
      nonce,
      digest,
      ttlMs: 1,
      flags: 0,
      totalLen: 0,
      index: 0,
      count: 1,
      version: V,
      chunk: Buffer.alloc(0),
    },
    bytes: `02 0000019a b697e87b 00000001 0102030405060708 ${'d0'.repeat(16)} 00000001 00000000 00000000 0000 0001 019ab697e87b0102`,
  },
  {
    name: 'INVALIDATE',
    msg: { type: MsgType.INVALIDATE, version: V, key: Buffer.from('k') },
    bytes: '04 0000019a b697e87b 019ab697e87b0102 0001 6b',
  },
  {
    name: 'ANNOUNCE',
    msg: { type: MsgType.ANNOUNCE, reply: v4, entries: 5, flags: 1, name: 'h1' },
    bytes: '05 0000019a b697e87b 04 0a000007 ba54 00000005 01 02 6831',
  },
  { name: 'LEAVE', msg: { type: MsgType.LEAVE }, bytes: '06 0000019a b697e87b' },
  {
    name: 'TICKET_KEY',
    msg: { type: MsgType.TICKET_KEY, epoch: 3, creator: hex('a1a2a3a4a5a6a7a8'), key: Buffer.alloc(48, 0x5a) },
    bytes: `07 0000019a b697e87b 00000003 a1a2a3a4a5a6a7a8 ${'5a'.repeat(48)}`,
  },
  {
    name: 'TICKET_PUB',
    msg: {
      type: MsgType.TICKET_PUB,
      period: 9,
      pub: Buffer.alloc(32, 0x11),
      held: [
        { epoch: 9, holder: hex('a1a2a3a4a5a6a7a8') },
        { epoch: 10, holder: hex('b1b2b3b4b5b6b7b8') },
      ],
    },
    bytes: `14 0000019a b697e87b 00000009 ${'11'.repeat(32)} 02 00000009 a1a2a3a4a5a6a7a8 0000000a b1b2b3b4b5b6b7b8`,
  },
  {
    name: 'TICKET_PUB holding nothing',
    msg: { type: MsgType.TICKET_PUB, period: 9, pub: Buffer.alloc(32, 0x11), held: [] },
    bytes: `14 0000019a b697e87b 00000009 ${'11'.repeat(32)} 00`,
  },
  {
    name: 'TICKET_SEAL',
    msg: {
      type: MsgType.TICKET_SEAL,
      epoch: 10,
      sealerPub: Buffer.alloc(32, 0x22),
      recipientPub: Buffer.alloc(32, 0x33),
      nonce: Buffer.alloc(12, 0x44),
      sealed: Buffer.alloc(48, 0x55),
      tag: Buffer.alloc(16, 0x66),
    },
    bytes: `15 0000019a b697e87b 0000000a ${'22'.repeat(32)} ${'33'.repeat(32)} ${'44'.repeat(12)} ${'55'.repeat(48)} ${'66'.repeat(16)}`,
  },
  {
    name: 'REPLICATE',
    msg: {
      type: MsgType.REPLICATE,
      replId: 4,
      ttlMs: 500,
      flags: 1,
      totalLen: 5,
      index: 0,
      count: 2,
      version: V,
      key: Buffer.from('k'),
      chunk: Buffer.from('abc'),
    },
    bytes: '08 0000019a b697e87b 00000004 000001f4 00000001 00000005 0000 0002 019ab697e87b0102 0001 6b 616263',
  },
  { name: 'ACK', msg: { type: MsgType.ACK, replId: 4 }, bytes: '09 0000019a b697e87b 00000004' },
  {
    name: 'DELETE',
    msg: { type: MsgType.DELETE, replId: 5, version: V, key: Buffer.from('k1') },
    bytes: '0a 0000019a b697e87b 00000005 019ab697e87b0102 0002 6b31',
  },
  {
    name: 'DECIDE (add)',
    msg: {
      type: MsgType.DECIDE,
      reqId: 7,
      kind: 1,
      flags: 2,
      ttlMs: 60_000,
      unique: 0n,
      delta: 0n,
      key: Buffer.from('k'),
      value: Buffer.from('v'),
    },
    bytes: '0d 0000019a b697e87b 00000007 01 00000002 000000000000ea60 0000000000000000 0000000000000000 0001 6b 76',
  },
  {
    name: 'DECIDE (incr, an expired ttl)',
    msg: {
      type: MsgType.DECIDE,
      reqId: 8,
      kind: 6,
      flags: 0,
      ttlMs: -1,
      unique: V,
      delta: 5n,
      key: Buffer.from('k'),
      value: Buffer.alloc(0),
    },
    bytes: '0d 0000019a b697e87b 00000008 06 00000000 ffffffffffffffff 019ab697e87b0102 0000000000000005 0001 6b',
  },
  {
    name: 'DECIDED',
    msg: {
      type: MsgType.DECIDED,
      reqId: 7,
      outcome: 1,
      wrote: 1,
      flags: 2,
      ttlMs: 60_000,
      version: V,
      number: 9n,
      key: Buffer.from('k'),
      value: Buffer.from('v'),
    },
    bytes: '0e 0000019a b697e87b 00000007 01 01 00000002 0000ea60 019ab697e87b0102 0000000000000009 0001 6b 76',
  },
  { name: 'ACKS of one id', msg: { type: MsgType.ACKS, replIds: [4] }, bytes: '0c 0000019a b697e87b 0001 00000004' },
  {
    name: 'ACKS of three ids',
    msg: { type: MsgType.ACKS, replIds: [4, 0xffffffff, 4] },
    bytes: '0c 0000019a b697e87b 0003 00000004 ffffffff 00000004',
  },
  {
    name: 'ANNOUNCE over IPv6',
    msg: { type: MsgType.ANNOUNCE, reply: { family: 6, address: 'fd00::1:2', port: 1 }, entries: 0, flags: 0, name: '' },
    bytes: '05 0000019a b697e87b 06 fd000000000000000000000000010002 0001 00000000 00 00',
  },
  {
    name: 'ANNOUNCE, dual stack',
    msg: { type: MsgType.ANNOUNCE, reply: v4, entries: 5, flags: 3, name: 'h1', also: { family: 6, address: 'fd00::1:2', port: 1 } },
    bytes: '05 0000019a b697e87b 04 0a000007 ba54 00000005 03 02 6831 06 fd000000000000000000000000010002 0001',
  },
  {
    name: 'ANNOUNCE, isolated',
    msg: { type: MsgType.ANNOUNCE, reply: v4, entries: 5, flags: AnnounceFlag.ISOLATED, name: 'h1' },
    bytes: '05 0000019a b697e87b 04 0a000007 ba54 00000005 04 02 6831',
  },
]

for (const f of bodies) {
  t.test(`body ${f.name}`, async (t) => {
    const bytes = hex(f.bytes)
    t.same(encodeBody(f.msg, T), bytes, 'generate')
    t.same(decodeBody(bytes), { sentAtMs: T, msg: f.msg }, 'parse')
    t.same(encodeBody(decodeBody(bytes).msg, T), bytes, 'mirror')
  })
}

t.test('sealed datagram: golden header, deterministic ciphertext, open', async (t) => {
  const ring = new Keyring([key1])
  const body = encodeBody({ type: MsgType.MISS, reqId: 9, nonce, digest }, T)
  const d = seal(ring, key1.id, sender, 5, body, receiver)
  t.same(d.subarray(0, HEADER_BYTES), hex('53544353 02 00 01020304 a1a2a3a4a5a6a7a8 00000000 00000005 b1b2b3b4b5b6b7b8'), 'clear header')
  t.equal(d.length, HEADER_BYTES + body.length + 16)
  t.same(seal(new Keyring([key1]), key1.id, sender, 5, body, receiver), d, 'same key, sender, counter and receiver: same bytes')
  t.notSame(seal(ring, key1.id, sender, 6, body, receiver), d, 'the counter changes the nonce')
  t.notOk(d.includes(body.subarray(9)), 'the body does not travel in clear')
  const o = open(ring, d)
  t.same(o.body, body)
  t.same(o.header, { keyId: key1.id, senderId: sender, counter: 5, receiverId: receiver })
  t.same(
    open(ring, seal(ring, key1.id, sender, 7, encodeBody({ type: MsgType.LEAVE }, T))).header.receiverId,
    NO_RECEIVER,
    'group datagrams name no receiver',
  )
})

t.test('the receiver id is authenticated: rewriting it fails to open', async (t) => {
  const ring = new Keyring([key1])
  const d = seal(ring, key1.id, sender, 5, encodeBody({ type: MsgType.ACK, replId: 1 }, T), receiver)
  const other = Buffer.from(d)
  hex('c1c2c3c4c5c6c7c8').copy(other, 26)
  t.throws(() => open(ring, other), { code: 'OPEN_FAILED' }, 'another receiver')
  const group = Buffer.from(d)
  NO_RECEIVER.copy(group, 26)
  t.throws(() => open(ring, group), { code: 'OPEN_FAILED' }, 'turned into a group datagram')
  t.throws(() => seal(ring, key1.id, sender, 6, encodeBody({ type: MsgType.LEAVE }, T), Buffer.alloc(4)), { code: 'BAD_FIELD' })
})

t.test('only membership, lookup, invalidation and ticket key types may go to the group', async (t) => {
  t.same(
    [...GROUP_TYPES].sort(),
    [MsgType.LOOKUP, MsgType.INVALIDATE, MsgType.ANNOUNCE, MsgType.LEAVE, MsgType.TICKET_KEY, MsgType.TICKET_PUB].sort(),
  )
  for (const ty of [MsgType.HIT, MsgType.MISS, MsgType.REPLICATE, MsgType.ACK, MsgType.TICKET_SEAL])
    t.notOk(GROUP_TYPES.has(ty), `type ${ty} is unicast only`)
})

t.test('key digest and datagram lengths', async (t) => {
  t.same(keyDigest(Buffer.from('k1')), hex('6ab9f1eb8f7d3388f4f9d586f66e99fd'), 'SHA-256 prefix, golden')
  const hit: Message = {
    type: MsgType.HIT,
    reqId: 1,
    nonce,
    digest,
    ttlMs: 1,
    flags: 0,
    totalLen: 9,
    index: 0,
    count: 1,
    version: V,
    chunk: Buffer.alloc(9),
  }
  const ring = new Keyring([key1])
  t.equal(datagramLength(hit), seal(ring, key1.id, sender, 1, encodeBody(hit, T), receiver).length, 'datagramLength is what seal makes')
  t.equal(datagramLength(hit), HIT_OVERHEAD_BYTES + 9, 'HIT overhead constant')
})

t.test('chunk counts must agree with the value length', async (t) => {
  const hit = (totalLen: number, count: number, chunk: number) =>
    encodeBody(
      { type: MsgType.HIT, reqId: 1, nonce, digest, ttlMs: 1, flags: 0, totalLen, index: 0, count, version: V, chunk: Buffer.alloc(chunk) },
      T,
    )
  const repl = (totalLen: number, count: number, chunk: number) =>
    encodeBody(
      {
        type: MsgType.REPLICATE,
        replId: 1,
        ttlMs: 1,
        flags: 0,
        totalLen,
        index: 0,
        count,
        version: V,
        key: Buffer.from('k'),
        chunk: Buffer.alloc(chunk),
      },
      T,
    )
  for (const [name, make] of [
    ['HIT', hit],
    ['REPLICATE', repl],
  ] as const) {
    t.throws(() => decodeBody(make(0, 65535, 0)), { code: 'BAD_FIELD' }, `${name}: 65,535 chunks of an empty value`)
    t.throws(() => decodeBody(make(10, 11, 1)), { code: 'BAD_FIELD' }, `${name}: more chunks than bytes`)
    t.throws(() => decodeBody(make(10, 2, 0)), { code: 'BAD_FIELD' }, `${name}: an empty chunk of a non-empty value`)
    t.throws(() => decodeBody(make(3, 1, 4)), { code: 'BAD_FIELD' }, `${name}: a chunk longer than the value`)
    t.equal((decodeBody(make(10, 10, 1)).msg as { count: number }).count, 10, `${name}: one byte per chunk is fine`)
    t.equal((decodeBody(make(0, 1, 0)).msg as { count: number }).count, 1, `${name}: an empty value in one empty chunk`)
  }
})

t.test('tampering, wrong keys and junk fail with their codes', async (t) => {
  const ring = new Keyring([key1])
  const d = seal(ring, key1.id, sender, 1, encodeBody({ type: MsgType.LEAVE }, T))
  for (let i = 0; i < d.length; i++) {
    const x = Buffer.from(d)
    x[i]! ^= 0x01
    try {
      open(ring, x)
      t.fail(`bit flip at ${i} opened`)
    } catch (e) {
      t.ok(
        e instanceof ProtocolError && ['OPEN_FAILED', 'BAD_MAGIC', 'BAD_VERSION', 'UNKNOWN_KEY', 'BAD_FIELD'].includes(e.code),
        `byte ${i}: ${(e as ProtocolError).code}`,
      )
    }
  }
  const other = new Keyring([{ ...key1, key: Buffer.alloc(32, 0x22) }])
  t.throws(() => open(other, d), { code: 'OPEN_FAILED' }, 'same id, other key')
  t.throws(() => open(new Keyring([{ ...key1, id: 9 }]), d), { code: 'UNKNOWN_KEY' })
  t.throws(() => readHeader(Buffer.alloc(10)), { code: 'TRUNCATED' })
  t.throws(() => open(ring, Buffer.alloc(60)), { code: 'BAD_MAGIC' })
})

t.test('random bytes only ever fail with ProtocolError', async (t) => {
  const ring = new Keyring([key1])
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 200 }),
      (a) => onlyProtocolErrors(() => decodeBody(Buffer.from(a))) && onlyProtocolErrors(() => open(ring, Buffer.from(a))),
    ),
    { numRuns: 5000 },
  )
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 11 }), fc.uint8Array({ maxLength: 60 }), (type, rest) =>
      onlyProtocolErrors(() => decodeBody(Buffer.concat([Buffer.from([type]), Buffer.alloc(8), Buffer.from(rest)]))),
    ),
    { numRuns: 5000 },
  )
  t.pass('no foreign exception')
})

// Arbitrary messages, for the round-trip tests.
const key = fc.uint8Array({ minLength: 1, maxLength: 250 }).map((a) => Buffer.from(a))
const addr = fc
  .oneof(
    fc.ipV4().map((a) => ({ family: 4 as const, address: a })),
    fc.ipV6().map((a) => ({ family: 6 as const, address: new URL(`http://[${a}]/`).hostname.slice(1, -1) })),
  )
  .chain((a) => fc.integer({ min: 0, max: 65535 }).map((port) => ({ ...a, port })))
const u32 = fc.integer({ min: 0, max: 0xffffffff })
const b8 = fc.uint8Array({ minLength: 8, maxLength: 8 }).map((a) => Buffer.from(a))
const b16 = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((a) => Buffer.from(a))
const version = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })
/** Any message of any type but BATCH. */
const msg: fc.Arbitrary<Message> = fc.oneof(
  fc.record({
    type: fc.constant(MsgType.LOOKUP),
    reqId: u32,
    nonce: b8,
    reply: addr,
    expect: fc.array(
      fc.uint8Array({ minLength: 8, maxLength: 8 }).map((a) => Buffer.from(a)),
      { maxLength: 4 },
    ),
    key,
  }),
  fc.record({ type: fc.constant(MsgType.MISS), reqId: u32, nonce: b8, digest: b16 }),
  fc.record({ type: fc.constant(MsgType.INVALIDATE), version, key }),
  fc.record({
    type: fc.constant(MsgType.ANNOUNCE),
    reply: addr,
    entries: u32,
    flags: fc.integer({ min: 0, max: 255 }).map((f) => f & ~AnnounceFlag.DUAL_STACK),
    name: fc.string({ maxLength: 60 }),
  }),
  fc
    .record({ reply: addr, also: addr, entries: u32, flags: fc.integer({ min: 0, max: 255 }), name: fc.string({ maxLength: 60 }) })
    .filter((m) => m.also.family !== m.reply.family)
    .map((m) => ({ type: MsgType.ANNOUNCE, ...m, flags: m.flags | AnnounceFlag.DUAL_STACK })),
  fc.constant({ type: MsgType.LEAVE }),
  fc.record({ type: fc.constant(MsgType.ACK), replId: u32 }),
  fc.record({ type: fc.constant(MsgType.DELETE), replId: u32, version, key }),
  fc.record({ type: fc.constant(MsgType.ACKS), replIds: fc.array(u32, { minLength: 1, maxLength: 300 }) }),
  fc.record({
    type: fc.constant(MsgType.DECIDE),
    reqId: u32,
    kind: fc.integer({ min: 0, max: 255 }),
    flags: u32,
    ttlMs: fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
    unique: version,
    delta: version,
    key,
    value: fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)),
  }),
  fc.record({
    type: fc.constant(MsgType.DECIDED),
    reqId: u32,
    outcome: fc.integer({ min: 0, max: 255 }),
    wrote: fc.integer({ min: 0, max: 255 }),
    flags: u32,
    ttlMs: u32,
    version,
    number: version,
    key,
    value: fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)),
  }),
  fc.uint8Array({ maxLength: 1200 }).chain((c) =>
    fc.record({
      type: fc.constant(MsgType.REPLICATE),
      replId: u32,
      ttlMs: u32,
      flags: u32,
      totalLen: fc.constant(c.length),
      index: fc.constant(0),
      count: fc.constant(1),
      version,
      key,
      chunk: fc.constant(Buffer.from(c)),
    }),
  ),
  fc.record({
    type: fc.constant(MsgType.TICKET_PUB),
    period: u32,
    pub: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a)),
    held: fc.array(fc.record({ epoch: u32, holder: b8 }), { maxLength: 4 }),
  }),
  fc.record({
    type: fc.constant(MsgType.TICKET_SEAL),
    epoch: u32,
    sealerPub: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a)),
    recipientPub: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a)),
    nonce: fc.uint8Array({ minLength: 12, maxLength: 12 }).map((a) => Buffer.from(a)),
    sealed: fc.uint8Array({ minLength: 48, maxLength: 48 }).map((a) => Buffer.from(a)),
    tag: b16,
  }),
  fc.record({
    type: fc.constant(MsgType.TICKET_KEY),
    epoch: u32,
    creator: fc.uint8Array({ minLength: 8, maxLength: 8 }).map((a) => Buffer.from(a)),
    key: fc.uint8Array({ minLength: 48, maxLength: 48 }).map((a) => Buffer.from(a)),
  }),
  fc.uint8Array({ minLength: 1, maxLength: 1400 }).chain((c) =>
    fc.integer({ min: 1, max: Math.min(100, c.length + 5) }).chain((count) =>
      fc.record({
        type: fc.constant(MsgType.HIT),
        reqId: u32,
        nonce: b8,
        digest: b16,
        ttlMs: u32,
        flags: u32,
        totalLen: fc.constant(c.length + 5),
        index: fc.integer({ min: 0, max: count - 1 }),
        count: fc.constant(count),
        version,
        chunk: fc.constant(Buffer.from(c)),
      }),
    ),
  ),
)

t.test('round trip of arbitrary messages', async (t) => {
  fc.assert(
    fc.property(msg, fc.integer({ min: 0, max: 2 ** 48 }), (m, time) => {
      const ring = new Keyring([key1])
      const d = seal(ring, key1.id, sender, time + 1, encodeBody(m, time), receiver)
      const back = decodeBody(open(ring, d).body)
      t.same(back, { sentAtMs: time, msg: m })
      return true
    }),
    { numRuns: 300 },
  )
})

t.test('key files', async (t) => {
  const k2: ClusterKey = { id: 0xdeadbeef, createdAt: 1_800_000_000, key: Buffer.alloc(32, 0x33) }
  const text = formatKeyFile([key1, k2])
  t.match(text, /^# .*\n01020304 1700000000 ERERER/)
  t.same(parseKeyFile(text), [key1, k2])
  t.equal(sealingKey([key1, k2], 1_750_000_000).id, key1.id, 'a key not yet in force does not seal')
  t.equal(sealingKey([key1, k2], 1_800_000_000).id, k2.id, 'the newest in force seals')
  t.equal(sealingKey([k2], 1).id, k2.id, 'if none is in force, the earliest seals')
  t.throws(() => parseKeyFile('# nothing\n'), { message: /holds no key; make one with: statecast keygen/ })
  t.throws(() => parseKeyFile('zz 1 abc\n', 'k.key'), { message: /k\.key:1: expected "ID CREATED KEY"/ })
  t.throws(() => parseKeyFile(`${text}01020304 1 ${Buffer.alloc(32).toString('base64')}\n`), { message: /appears twice/ })
})

t.test('a counter beyond 2^53 is refused with the protocol error (found by npm run fuzz)', async (t) => {
  const ring = new Keyring([key1])
  const d = seal(ring, key1.id, sender, 1, encodeBody({ type: MsgType.LEAVE }, T))
  d.writeUInt32BE(0xffffffff, 18)
  d.writeUInt32BE(0xffffffff, 22)
  t.throws(() => open(ring, d), { code: 'BAD_FIELD' })
})

t.test('addresses that are not IP addresses are refused when encoding', async (t) => {
  const bad = (address: string, family: 4 | 6) => () =>
    encodeBody({ type: MsgType.ANNOUNCE, reply: { family, address, port: 1 }, entries: 0, flags: 0, name: '' }, T)
  t.throws(bad('300.1.1.1', 4), { code: 'BAD_FIELD' })
  t.throws(bad('1.2.3', 4), { code: 'BAD_FIELD' })
  t.throws(bad('fd00::zz', 6), { code: 'BAD_FIELD' })
  t.throws(bad('10.0.0.1', 6), { code: 'BAD_FIELD' })
  t.doesNotThrow(bad('10.0.0.1', 4))
  t.doesNotThrow(bad('fe80::1%eth0', 6))
})

t.test('ANNOUNCE: the dual-stack flag and the second address go together', async (t) => {
  const reply = { family: 4 as const, address: '10.0.0.7', port: 47700 }
  const also = { family: 6 as const, address: 'fd00::7', port: 47700 }
  t.throws(
    () => encodeBody({ type: MsgType.ANNOUNCE, reply, entries: 0, flags: AnnounceFlag.DUAL_STACK, name: 'x' }, T),
    { code: 'BAD_FIELD' },
    'flag without an address',
  )
  t.throws(
    () => encodeBody({ type: MsgType.ANNOUNCE, reply, entries: 0, flags: 0, name: 'x', also }, T),
    { code: 'BAD_FIELD' },
    'address without the flag',
  )
  t.throws(
    () =>
      encodeBody(
        { type: MsgType.ANNOUNCE, reply, entries: 0, flags: AnnounceFlag.DUAL_STACK, name: 'x', also: { ...reply, address: '10.0.0.8' } },
        T,
      ),
    { code: 'BAD_FIELD' },
    'two addresses of one family',
  )
  const good = encodeBody({ type: MsgType.ANNOUNCE, reply, entries: 0, flags: AnnounceFlag.DUAL_STACK, name: 'x', also }, T)
  t.throws(() => decodeBody(good.subarray(0, good.length - 3)), { code: 'TRUNCATED' }, 'a cut second address')
  t.throws(() => decodeBody(Buffer.concat([good, Buffer.from([0])])), { code: 'TRAILING' }, 'bytes after it')
  const flagged = Buffer.from(encodeBody({ type: MsgType.ANNOUNCE, reply, entries: 0, flags: 0, name: 'x' }, T))
  flagged[flagged.length - 3] = flagged[flagged.length - 3]! | AnnounceFlag.DUAL_STACK
  t.throws(() => decodeBody(flagged), { code: 'TRUNCATED' }, 'the flag with no address after the name')
})

t.test('versions: a u64 both ways, anything else refused when encoding', async (t) => {
  const max = 2n ** 64n - 1n
  const inv = (version: bigint) => ({ type: MsgType.INVALIDATE, version, key: Buffer.from('k') }) as Message
  t.same(decodeBody(encodeBody(inv(max), T)).msg, inv(max), 'the largest version survives')
  t.same(decodeBody(encodeBody(inv(0n), T)).msg, inv(0n))
  t.throws(() => encodeBody(inv(max + 1n), T), { code: 'BAD_FIELD' })
  t.throws(() => encodeBody(inv(-1n), T), { code: 'BAD_FIELD' })
  // A body cut inside the version fails with the protocol's own error.
  const hitBody = encodeBody(
    {
      type: MsgType.HIT,
      reqId: 1,
      nonce,
      digest,
      ttlMs: 1,
      flags: 0,
      totalLen: 1,
      index: 0,
      count: 1,
      version: V,
      chunk: Buffer.from('a'),
    },
    T,
  )
  t.throws(() => decodeBody(hitBody.subarray(0, 9 + 28 + 16 + 4)), { code: 'TRUNCATED' })
  const invBody = encodeBody(inv(V), T)
  t.throws(() => decodeBody(invBody.subarray(0, 9 + 5)), { code: 'TRUNCATED' })
})

t.test('DELETE: unicast only, and every cut or padded body is refused with a protocol error', async (t) => {
  t.notOk(GROUP_TYPES.has(MsgType.DELETE), 'a DELETE names its receiver')
  const body = encodeBody({ type: MsgType.DELETE, replId: 1, version: V, key: Buffer.from('key') }, T)
  for (let len = 9; len < body.length; len++) t.throws(() => decodeBody(body.subarray(0, len)), { code: 'TRUNCATED' }, `cut at ${len}`)
  t.throws(() => decodeBody(Buffer.concat([body, Buffer.from([0])])), { code: 'TRAILING' }, 'a byte too many')
  const empty = encodeBody({ type: MsgType.DELETE, replId: 1, version: V, key: Buffer.from('k') }, T)
  t.throws(
    () => decodeBody(Buffer.concat([empty.subarray(0, empty.length - 3), Buffer.from([0, 0])])),
    { code: 'BAD_FIELD' },
    'an empty key',
  )
})

t.test('ACKS: unicast only, at least one id, its count exact, and what fits in a datagram', async (t) => {
  t.notOk(GROUP_TYPES.has(MsgType.ACKS), 'an ACKS names its receiver')
  const body = encodeBody({ type: MsgType.ACKS, replIds: [1, 2, 3] }, T)
  for (let len = 9; len < body.length; len++) t.throws(() => decodeBody(body.subarray(0, len)), { code: 'TRUNCATED' }, `cut at ${len}`)
  t.throws(() => decodeBody(Buffer.concat([body, Buffer.from([0, 0, 0, 0])])), { code: 'TRAILING' }, 'an id more than the count says')
  const lying = Buffer.from(body)
  lying.writeUInt16BE(0xffff, 9)
  t.throws(() => decodeBody(lying), { code: 'TRUNCATED' }, 'a count larger than the ids present')
  const zero = Buffer.concat([body.subarray(0, 9), Buffer.from([0, 0])])
  t.throws(() => decodeBody(zero), { code: 'BAD_FIELD' }, 'count 0')
  t.throws(() => encodeBody({ type: MsgType.ACKS, replIds: [] }, T), { code: 'BAD_FIELD' }, 'nothing to acknowledge is not encoded')
  t.throws(
    () => encodeBody({ type: MsgType.ACKS, replIds: new Array<number>(MAX_ACKS + 1).fill(1) }, T),
    { code: 'BAD_FIELD' },
    'more than a u16 count',
  )
  for (const max of [256, 1400, 9000, 65_000]) {
    const n = acksPerDatagram(max)
    t.ok(datagramLength({ type: MsgType.ACKS, replIds: new Array<number>(n).fill(1) }) <= max, `${n} ids fit in ${max} bytes`)
    t.ok(n === MAX_ACKS || datagramLength({ type: MsgType.ACKS, replIds: new Array<number>(n + 1).fill(1) }) > max, `${n + 1} do not`)
  }
})

// The clear header is what a receiver peeks at before opening (transport.ts): sender and counter
// (its own datagrams, dual-stack second copies), receiver (misaddressed), key id.
t.test('clear header: golden bytes, round trip, and what a receiver peeks at', async (t) => {
  const h: Header = { keyId: 0x01020304, senderId: sender, counter: 2 ** 32 + 5, receiverId: receiver }
  const golden = hex('53544353 02 00 01020304 a1a2a3a4a5a6a7a8 00000001 00000005 b1b2b3b4b5b6b7b8')
  t.same(encodeHeader(h), golden, 'generate')
  const dgram = Buffer.concat([golden, Buffer.alloc(16)])
  t.same(readHeader(dgram), h, 'parse (a header and a tag is the shortest datagram)')
  t.same(encodeHeader(readHeader(dgram)), golden, 'mirror')
  t.throws(() => readHeader(golden), { code: 'TRUNCATED' }, 'a header without room for a tag')
  const ring = new Keyring([key1])
  const d = seal(ring, key1.id, sender, 5, encodeBody({ type: MsgType.LEAVE }, T), receiver)
  t.same(
    d.subarray(0, HEADER_BYTES),
    encodeHeader({ keyId: key1.id, senderId: sender, counter: 5, receiverId: receiver }),
    'seal writes the same header',
  )
  const peeked = readHeader(d)
  t.same(open(ring, d, peeked), open(ring, d), 'open takes the header already peeked')
  const buf = Buffer.alloc(HEADER_BYTES + 3, 0xee)
  writeHeader(buf, h)
  t.same(buf.subarray(0, HEADER_BYTES), golden, 'writeHeader writes at the start of a larger buffer')
  t.same(buf.subarray(HEADER_BYTES), Buffer.alloc(3, 0xee), 'and nothing after the header')
})

t.test('clear header: fields out of range are refused when encoding, with the protocol error', async (t) => {
  const h: Header = { keyId: 1, senderId: sender, counter: 1, receiverId: NO_RECEIVER }
  t.throws(() => encodeHeader({ ...h, senderId: Buffer.alloc(SENDER_ID_BYTES - 1) }), { code: 'BAD_FIELD' }, 'a short sender id')
  t.throws(() => encodeHeader({ ...h, receiverId: Buffer.alloc(SENDER_ID_BYTES + 1) }), { code: 'BAD_FIELD' }, 'a long receiver id')
  t.throws(() => encodeHeader({ ...h, counter: MAX_COUNTER + 1 }), { code: 'BAD_FIELD' }, 'a counter past 2^53-1')
  t.throws(() => encodeHeader({ ...h, counter: -1 }), { code: 'BAD_FIELD' }, 'a negative counter')
  t.equal(
    readHeader(Buffer.concat([encodeHeader({ ...h, counter: MAX_COUNTER }), Buffer.alloc(16)])).counter,
    MAX_COUNTER,
    'the largest counter survives',
  )
})

t.test('clear header: round trip of arbitrary headers', async (t) => {
  const id = fc.uint8Array({ minLength: 8, maxLength: 8 }).map((a) => Buffer.from(a))
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xffffffff }),
      id,
      fc.integer({ min: 0, max: MAX_COUNTER }),
      id,
      (keyId, senderId, counter, receiverId) => {
        const h = { keyId, senderId, counter, receiverId }
        t.same(readHeader(Buffer.concat([encodeHeader(h), Buffer.alloc(16)])), h)
        return true
      },
    ),
    { numRuns: 300 },
  )
})

t.test('clear header: random bytes only ever fail with ProtocolError', async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 80 }), (a) => onlyProtocolErrors(() => readHeader(Buffer.from(a)))),
    { numRuns: 3000 },
  )
  // Behind a valid magic and version, random fields reach every check of the header reader.
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 44, maxLength: 60 }), (a) =>
      onlyProtocolErrors(() => readHeader(Buffer.concat([hex('53544353 02'), Buffer.from(a)]))),
    ),
    { numRuns: 3000 },
  )
  t.pass('no foreign exception')
})

t.test('new cluster keys: random id and key bytes, in force from the time given', async (t) => {
  const a = newClusterKey(1_700_000_000)
  const b = newClusterKey(1_700_000_000)
  t.equal(a.createdAt, 1_700_000_000)
  t.equal(a.key.length, KEY_BYTES)
  t.ok(Number.isInteger(a.id) && a.id >= 0 && a.id <= 0xffffffff, 'a u32 id')
  t.notSame(a.key, b.key, 'two keys differ')
  t.same(parseKeyFile(formatKeyFile([a])), [a], 'a new key survives its key file')
  const ring = new Keyring([a])
  t.same(open(ring, seal(ring, a.id, sender, 1, encodeBody({ type: MsgType.LEAVE }, T))).header.keyId, a.id, 'and seals')
})

// ---- BATCH: what one sender has for one destination within one turn, in one datagram ----

const batches: { name: string; msgs: Message[]; bytes: string }[] = [
  {
    name: 'an ACK and a DELETE to one host',
    msgs: [
      { type: MsgType.ACK, replId: 4 },
      { type: MsgType.DELETE, replId: 5, version: V, key: Buffer.from('k1') },
    ],
    bytes: '0b 0000019a b697e87b 02 0004 09 00000004 0010 0a 00000005 019ab697e87b0102 0002 6b31',
  },
  {
    name: 'a LEAVE and an INVALIDATE to the group',
    msgs: [{ type: MsgType.LEAVE }, { type: MsgType.INVALIDATE, version: V, key: Buffer.from('k') }],
    bytes: '0b 0000019a b697e87b 02 0000 06 000b 04 019ab697e87b0102 0001 6b',
  },
  {
    name: 'one MISS',
    msgs: [{ type: MsgType.MISS, reqId: 9, nonce, digest }],
    bytes: `0b 0000019a b697e87b 01 001c 03 00000009 0102030405060708 ${'d0'.repeat(16)}`,
  },
]

for (const f of batches) {
  t.test(`BATCH: ${f.name}`, async (t) => {
    const bytes = hex(f.bytes)
    t.same(encodeBatch(f.msgs, T), bytes, 'generate')
    t.same(decodeBatch(bytes), { sentAtMs: T, msgs: f.msgs }, 'parse')
    t.same(encodeBatch(decodeBatch(bytes).msgs, T), bytes, 'mirror')
    t.throws(() => decodeBody(bytes), { code: 'UNKNOWN_OP' }, 'not a message of its own')
  })
}

t.test('BATCH: a lone message travels as itself, byte for byte', async (t) => {
  // What the transport does with a turn's single message: written as an entry, sent as a body.
  for (const f of bodies) {
    const buf = Buffer.alloc(BATCH_HEAD_BYTES + 1500)
    const end = writeBatchEntry(buf, BATCH_HEAD_BYTES, f.msg)
    t.same(loneBody(buf, end, T), hex(f.bytes), f.name)
  }
  const buf = Buffer.alloc(200)
  let end = writeBatchEntry(buf, BATCH_HEAD_BYTES, batches[0]!.msgs[0]!)
  end = writeBatchEntry(buf, end, batches[0]!.msgs[1]!)
  t.same(batchBody(buf, end, 2, T), hex(batches[0]!.bytes), 'entries written one by one make the golden BATCH')
})

t.test('BATCH: no nesting, no empty batch, no lying length, no trailing bytes, no unknown type', async (t) => {
  const good = hex(batches[0]!.bytes)
  const head = '0b 0000019a b697e87b'
  t.throws(() => decodeBatch(hex(`${head} 00`)), { code: 'BAD_FIELD' }, 'an empty batch')
  t.throws(() => decodeBatch(hex(head)), { code: 'TRUNCATED' }, 'no count')
  t.throws(
    () => decodeBatch(hex(`${head} 01 0011 0b 01 0004 09 00000004 00000000 00000000`)),
    { code: 'BAD_FIELD' },
    'a BATCH inside a BATCH',
  )
  t.throws(() => decodeBatch(hex(`${head} 01 0000 63`)), { code: 'UNKNOWN_OP' }, 'an unknown inner type')
  t.throws(() => decodeBatch(hex(`${head} 01 0000 00`)), { code: 'UNKNOWN_OP' }, 'inner type 0')
  t.throws(() => decodeBatch(hex(`${head} 01 0005 09 00000004`)), { code: 'TRUNCATED' }, 'a length beyond the datagram')
  t.throws(() => decodeBatch(hex(`${head} 01 0003 09 00000004`)), ProtocolError, 'a length shorter than the message')
  t.throws(() => decodeBatch(hex(`${head} 02 0004 09 00000004`)), { code: 'TRUNCATED' }, 'a count beyond the entries')
  t.throws(() => decodeBatch(Buffer.concat([good, Buffer.from([0])])), { code: 'TRAILING' }, 'a byte after the last entry')
  t.throws(() => decodeBatch(hex(`${head} 01 0004 09 00000004 0000 06`)), { code: 'TRAILING' }, 'an entry more than the count says')
  for (let len = 0; len < good.length; len++) t.throws(() => decodeBatch(good.subarray(0, len)), { code: 'TRUNCATED' }, `cut at ${len}`)
  t.throws(() => decodeBatch(encodeBody({ type: MsgType.LEAVE }, T)), { code: 'UNKNOWN_OP' }, 'a lone message is not a BATCH')
  t.throws(() => encodeBatch([], T), { code: 'BAD_FIELD' }, 'encoding an empty batch')
  t.throws(
    () => encodeBatch(Array<Message>(MAX_BATCH_COUNT + 1).fill({ type: MsgType.LEAVE }), T),
    { code: 'BAD_FIELD' },
    `encoding more than ${MAX_BATCH_COUNT}`,
  )
  t.throws(() => encodeBatch([{ type: MsgType.BATCH } as unknown as Message], T), { code: 'BAD_FIELD' }, 'encoding a nested batch')
  t.equal(
    decodeBatch(encodeBatch(Array<Message>(MAX_BATCH_COUNT).fill({ type: MsgType.LEAVE }), T)).msgs.length,
    MAX_BATCH_COUNT,
    `${MAX_BATCH_COUNT} messages fit`,
  )
})

t.test('BATCH: round trip of arbitrary message lists, sealed and opened', async (t) => {
  fc.assert(
    fc.property(fc.array(msg, { minLength: 1, maxLength: 6 }), fc.integer({ min: 0, max: 2 ** 48 }), (msgs, time) => {
      const ring = new Keyring([key1])
      const d = seal(ring, key1.id, sender, time + 1, encodeBatch(msgs, time), receiver)
      t.same(decodeBatch(open(ring, d).body), { sentAtMs: time, msgs })
      return true
    }),
    { numRuns: 200 },
  )
})

t.test('BATCH: random bytes only ever fail with ProtocolError', async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (a) => onlyProtocolErrors(() => decodeBatch(Buffer.from(a)))),
    { numRuns: 5000 },
  )
  // Behind a valid head, random counts, lengths and inner types reach every check of the entries.
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 120 }), (count, rest) =>
      onlyProtocolErrors(() => decodeBatch(Buffer.concat([hex('0b 0000019a b697e87b'), Buffer.from([count]), Buffer.from(rest)]))),
    ),
    { numRuns: 5000 },
  )
  // Well-formed entries of random types and payloads reach every message decoder.
  const entry = fc
    .tuple(fc.integer({ min: 0, max: 12 }), fc.uint8Array({ maxLength: 60 }))
    .map(([ty, p]) => Buffer.concat([Buffer.from([p.length >> 8, p.length & 0xff, ty]), Buffer.from(p)]))
  fc.assert(
    fc.property(fc.array(entry, { minLength: 1, maxLength: 5 }), (es) =>
      onlyProtocolErrors(() => decodeBatch(Buffer.concat([hex('0b 0000019a b697e87b'), Buffer.from([es.length]), ...es]))),
    ),
    { numRuns: 5000 },
  )
  t.pass('no foreign exception')
})
