/**
 * The peer wire's layouts, written a second time as binary-parser declarations (the field list of
 * each diagram in protocol/wire/, in order), and checked against what the codec writes: a named
 * offset that drifts from its diagram fails here, independently of the codec's own reader, which
 * shares its offsets. binary-parser is too slow for the hot path (protocol/wire/ reads by hand).
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { Parser } from 'binary-parser'
import {
  CODECS,
  HEADER_BYTES,
  Keyring,
  MsgType,
  encodeBody,
  readHeader,
  seal,
  type Message,
  type PayloadType,
} from '../../protocol/wire.js'
import { newClusterKey } from '../../protocol/keyfile.js'

const bodyHead = () => new Parser().uint8('type').uint64be('sentAtMs')
const keyed = (p: Parser) => p.uint16be('keyLen').buffer('key', { length: 'keyLen' })
const binding = (p: Parser) => p.uint32be('reqId').buffer('nonce', { length: 8 }).buffer('digest', { length: 16 })

const LAYOUTS: Partial<Record<PayloadType, Parser>> = {
  [MsgType.HIT]: binding(bodyHead())
    .uint32be('ttlMs')
    .uint32be('flags')
    .uint32be('totalLen')
    .uint16be('index')
    .uint16be('count')
    .uint64be('version')
    .buffer('chunk', { readUntil: 'eof' }),
  [MsgType.MISS]: binding(bodyHead()),
  [MsgType.INVALIDATE]: keyed(bodyHead().uint64be('version')),
  [MsgType.REPLICATE]: bodyHead()
    .uint32be('replId')
    .uint32be('ttlMs')
    .uint32be('flags')
    .uint32be('totalLen')
    .uint16be('index')
    .uint16be('count')
    .uint64be('version')
    .uint16be('keyLen')
    .buffer('key', { length: 'keyLen' })
    .buffer('chunk', { readUntil: 'eof' }),
  [MsgType.ACK]: bodyHead().uint32be('replId'),
  [MsgType.DELETE]: keyed(bodyHead().uint32be('replId').uint64be('version')),
  [MsgType.ACKS]: bodyHead().uint16be('count').array('replIds', { type: 'uint32be', length: 'count' }),
  [MsgType.TICKET_KEY]: bodyHead().uint32be('epoch').buffer('creator', { length: 8 }).buffer('key', { length: 48 }),
  [MsgType.TICKET_PUB]: bodyHead()
    .uint32be('period')
    .buffer('pub', { length: 32 })
    .uint8('count')
    .array('held', { length: 'count', type: new Parser().uint32be('epoch').buffer('holder', { length: 8 }) }),
  [MsgType.TICKET_SEAL]: bodyHead()
    .uint32be('epoch')
    .buffer('sealerPub', { length: 32 })
    .buffer('recipientPub', { length: 32 })
    .buffer('nonce', { length: 12 })
    .buffer('sealed', { length: 48 })
    .buffer('tag', { length: 16 }),
}

const u32 = () => randomBytes(4).readUInt32BE(0)
const u16 = () => randomBytes(2).readUInt16BE(0)
const key = () => randomBytes(1 + (u16() % 200))

function sample(type: PayloadType): Message {
  switch (type) {
    case MsgType.HIT: {
      const chunk = randomBytes(1 + (u16() % 900))
      return {
        type,
        reqId: u32(),
        nonce: randomBytes(8),
        digest: randomBytes(16),
        ttlMs: u32(),
        flags: u32(),
        totalLen: chunk.length,
        index: 0,
        count: 1,
        version: randomBytes(8).readBigUInt64BE(0),
        chunk,
      }
    }
    case MsgType.MISS:
      return { type, reqId: u32(), nonce: randomBytes(8), digest: randomBytes(16) }
    case MsgType.INVALIDATE:
      return { type, version: randomBytes(8).readBigUInt64BE(0), key: key() }
    case MsgType.REPLICATE: {
      const chunk = randomBytes(1 + (u16() % 900))
      return {
        type,
        replId: u32(),
        ttlMs: u32(),
        flags: u32(),
        totalLen: chunk.length + 5,
        index: 0,
        count: 2,
        version: randomBytes(8).readBigUInt64BE(0),
        key: key(),
        chunk,
      }
    }
    case MsgType.ACK:
      return { type, replId: u32() }
    case MsgType.DELETE:
      return { type, replId: u32(), version: randomBytes(8).readBigUInt64BE(0), key: key() }
    case MsgType.ACKS:
      return { type, replIds: Array.from({ length: 1 + (u16() % 50) }, u32) }
    case MsgType.TICKET_KEY:
      return { type, epoch: u32(), creator: randomBytes(8), key: randomBytes(48) }
    case MsgType.TICKET_PUB:
      return {
        type,
        period: u32(),
        pub: randomBytes(32),
        held: Array.from({ length: u16() % 5 }, () => ({ epoch: u32(), holder: randomBytes(8) })),
      }
    case MsgType.TICKET_SEAL:
      return {
        type,
        epoch: u32(),
        sealerPub: randomBytes(32),
        recipientPub: randomBytes(32),
        nonce: randomBytes(12),
        sealed: randomBytes(48),
        tag: randomBytes(16),
      }
    default:
      throw new Error(`no sample of type ${type}`)
  }
}

t.test('every message type has a record in CODECS', async (t) => {
  const types = Object.entries(MsgType).filter(([name]) => name !== 'BATCH')
  t.same(
    Object.keys(CODECS)
      .map(Number)
      .sort((a, b) => a - b),
    types.map(([, v]) => v).sort((a, b) => a - b),
  )
})

t.test('the codec writes each fixed layout as its diagram declares it', async (t) => {
  for (const [typeText, layout] of Object.entries(LAYOUTS)) {
    const type = Number(typeText) as PayloadType
    for (let i = 0; i < 50; i++) {
      const m = sample(type)
      const sentAtMs = Date.now() + i
      const parsed = layout.parse(encodeBody(m, sentAtMs)) as Record<string, unknown>
      const want: Record<string, unknown> = { ...m, sentAtMs: BigInt(sentAtMs) }
      if ('key' in m && type !== MsgType.TICKET_KEY) want['keyLen'] = m.key.length
      if ('replIds' in m) want['count'] = m.replIds.length
      if ('held' in m) want['count'] = m.held.length
      t.same(parsed, want, `${typeText} #${i}`, { diagnostic: false })
    }
  }
})

t.test('the clear header is laid out as its diagram declares it', async (t) => {
  const header = new Parser()
    .uint32be('magic')
    .uint8('version')
    .uint8('reserved')
    .uint32be('keyId')
    .buffer('senderId', { length: 8 })
    .uint64be('counter')
    .buffer('receiverId', { length: 8 })
  const ck = newClusterKey(Date.now())
  const ring = new Keyring([ck])
  for (const counter of [0, 1, 2 ** 32 + 7, 2 ** 53 - 1]) {
    const senderId = randomBytes(8)
    const receiverId = randomBytes(8)
    const dgram = seal(ring, ck.id, senderId, counter, encodeBody({ type: MsgType.ACK, replId: 1 }, 0), receiverId)
    const parsed = header.parse(dgram.subarray(0, HEADER_BYTES)) as Record<string, unknown>
    t.same(parsed, { magic: 0x53544353, version: 2, reserved: 0, keyId: ck.id, senderId, counter: BigInt(counter), receiverId })
    t.same(readHeader(dgram), { keyId: ck.id, senderId, counter, receiverId })
  }
})
