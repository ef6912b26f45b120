/**
 * The payload of every peer message type: one record per type that holds its length, write and
 * read together (CODECS below), so a field cannot be added to one direction only.
 *
 * Sealed body:
 *   type u8 | sentAtMs u64 (Unix ms) | payload
 * Payloads:
 *   LOOKUP      reqId u32 | nonce (8 bytes) | reply address | expect count u8 |
 *               expected ids (8 bytes each) | keyLen u16 | key
 *               (members listed in `expect` answer MISS; an empty list asks every member to;
 *               any member holding the key answers HIT)
 *   HIT         reqId u32 | nonce (8 bytes) | key digest (16 bytes) | ttlMs u32 | flags u32 |
 *               totalLen u32 | index u16 | count u16 | version u64 | chunk
 *   MISS        reqId u32 | nonce (8 bytes) | key digest (16 bytes)
 *               (nonce: random per lookup, echoed; key digest: keyDigest() of the key asked for;
 *               the asker takes a reply only when both match its lookup in flight)
 *   INVALIDATE  version u64 | keyLen u16 | key
 *   ANNOUNCE    reply address | entries u32 | flags u8 | nameLen u8 | name (UTF-8) |
 *               [second reply address, of the other family: when flags has DUAL_STACK]
 *   LEAVE       empty
 *   TICKET_KEY  epoch u32 | creator id (8 bytes) | key (48 bytes)
 *               (retired: daemons no longer send it and drop it unread; see TICKET_SEAL)
 *   TICKET_PUB  period u32 | public key (X25519, 32 bytes) | count u8 (<= 4) |
 *               count x (epoch u32 | holder id (8 bytes))
 *               (the sender's ephemeral key for receiving ticket secrets during wall epoch
 *               `period`, and which epochs' secrets it holds, each with the member it took it from
 *               or itself: group, with every heartbeat, and unicast in answer to a HELLO)
 *   TICKET_SEAL epoch u32 | sealer public key (32) | recipient public key (32) | nonce (12) |
 *               sealed secret (48) | tag (16)
 *               (one epoch's ticket secret for one member: AES-256-GCM under
 *               HKDF(X25519(sealer, recipient), ids, epoch and both public keys); unicast only)
 *   REPLICATE   replId u32 | ttlMs u32 | flags u32 | totalLen u32 | index u16 | count u16 |
 *               version u64 | keyLen u16 | key | chunk
 *   REPLICATE_AWAITED, DELETE_AWAITED: the layouts of REPLICATE and DELETE. A writer waits for
 *               their ACK before it answers its client; a receiver that remembers holders of the
 *               key passes the update on to them (awaited) and acknowledges only once they did (or
 *               its wait ended, then a group INVALIDATE), and acknowledges without the ACKS delay.
 *   ACK         replId u32
 *               (acknowledges a REPLICATE or a DELETE: both draw their ids from one sequence)
 *   DELETE      replId u32 | version u64 | keyLen u16 | key
 *               (a delete sent to one host that may hold a copy, acknowledged by ACK and retried;
 *               INVALIDATE is the same to the group, unacknowledged, for when holders are unknown)
 *   BATCH       count u8 | count x (len u16 | type u8 | payload (len bytes))
 *               (what one sender had for one destination within one turn of its event loop, in one
 *               datagram: each entry is a message of any other type without its own sentAtMs, which
 *               is the batch's; never nested, never empty; a batch to the group holds only
 *               GROUP_TYPES. One message alone travels as itself, never as a batch of one.)
 *   DECIDE      reqId u32 | kind u8 | flags u32 | ttlMs i64 | unique u64 | delta u64 |
 *               keyLen u16 | key | value
 *               (a conditional write (add, cas, incr, ...: kind is CondKind of store/conditional.ts)
 *               sent to the key's decider, its first live owner, which decides it; retransmitted
 *               with the same reqId until answered; ttlMs < 0: an already-expired write)
 *   DECIDED     reqId u32 | outcome u8 | wrote u8 | flags u32 | ttlMs u32 | version u64 |
 *               number u64 | keyLen u16 | key | value
 *               (the decider's answer to DECIDE reqId: outcome is CondOutcome, or 0 when refused,
 *               with `wrote` the DecideRefusal; else wrote is DecidedWrote; with SET the value
 *               follows, as the decider stored it at `version`)
 *   ACKS        count u16 | replId u32 x count
 *               (acknowledges several REPLICATEs and DELETEs of one sender at once: 1 <= count <=
 *               MAX_ACKS; a receiver sends it a short delay after the first it owes, or at once
 *               when the list is full; ACK stays valid)
 * Reply address: family u8 (4 or 6) | address (4 or 16 bytes) | port u16
 * Version: the stored session's version (daemon/store/versions.ts: a hybrid logical clock), which the
 * receiver compares with what it holds; a HIT or REPLICATE carries the copied entry's, an
 * INVALIDATE the delete's. Every chunk of a value carries the same one.
 *
 * A chunked value (HIT, REPLICATE) has 1 <= count <= max(1, totalLen): no chunk is empty unless the
 * value is.
 *
 *
 * Each record names its fields' offsets from the start of its payload; a variable-length part
 * ends the fixed ones, and what follows it is placed from where it ends.
 */
import { ProtocolError, needBytes } from '../errors.js'
import { type Address, addressLength, readAddress, writeAddress } from './address.js'
import {
  AnnounceFlag,
  ENVELOPE_BYTES,
  KEY_DIGEST_BYTES,
  MAX_ACKS,
  MAX_TICKET_HELD,
  MsgType,
  NONCE_BYTES,
  SENDER_ID_BYTES,
  TICKET_SEAL_NONCE_BYTES,
  TICKET_SEAL_TAG_BYTES,
  TICKET_SECRET_BYTES,
  U16,
  U32,
  U8,
  U64,
  VERSION_BYTES,
  X25519_PUBLIC_BYTES,
  typeName,
} from './constants.js'
import { checkChunking, exactly, fixedBuffer, keyAt, keyLength, writeKey, writeVersion } from './fields.js'

/** The fields of a REPLICATE and of a REPLICATE_AWAITED. */
export interface ReplicateFields {
  replId: number
  ttlMs: number
  flags: number
  totalLen: number
  index: number
  count: number
  version: bigint
  key: Buffer
  chunk: Buffer
}

/** The fields of a DELETE and of a DELETE_AWAITED. */
export interface DeleteFields {
  replId: number
  version: bigint
  key: Buffer
}

export type Message =
  | { type: typeof MsgType.LOOKUP; reqId: number; nonce: Buffer; reply: Address; expect: Buffer[]; key: Buffer }
  | {
      type: typeof MsgType.HIT
      reqId: number
      nonce: Buffer
      digest: Buffer
      ttlMs: number
      flags: number
      totalLen: number
      index: number
      count: number
      version: bigint
      chunk: Buffer
    }
  | { type: typeof MsgType.MISS; reqId: number; nonce: Buffer; digest: Buffer }
  | { type: typeof MsgType.INVALIDATE; version: bigint; key: Buffer }
  | { type: typeof MsgType.ANNOUNCE; reply: Address; entries: number; flags: number; name: string; also?: Address }
  | { type: typeof MsgType.LEAVE }
  | { type: typeof MsgType.TICKET_KEY; epoch: number; creator: Buffer; key: Buffer }
  | ({ type: typeof MsgType.REPLICATE } & ReplicateFields)
  | { type: typeof MsgType.ACK; replId: number }
  | ({ type: typeof MsgType.DELETE } & DeleteFields)
  | ({ type: typeof MsgType.REPLICATE_AWAITED } & ReplicateFields)
  | ({ type: typeof MsgType.DELETE_AWAITED } & DeleteFields)
  | { type: typeof MsgType.ACKS; replIds: number[] }
  | {
      type: typeof MsgType.DECIDE
      reqId: number
      kind: number
      flags: number
      ttlMs: number
      unique: bigint
      delta: bigint
      key: Buffer
      value: Buffer
    }
  | {
      type: typeof MsgType.DECIDED
      reqId: number
      outcome: number
      wrote: number
      flags: number
      ttlMs: number
      version: bigint
      number: bigint
      key: Buffer
      value: Buffer
    }
  | { type: typeof MsgType.TICKET_PUB; period: number; pub: Buffer; held: { epoch: number; holder: Buffer }[] }
  | { type: typeof MsgType.TICKET_SEAL; epoch: number; sealerPub: Buffer; recipientPub: Buffer; nonce: Buffer; sealed: Buffer; tag: Buffer }

/** The types a Message can have (every MsgType but BATCH, which holds messages). */
export type PayloadType = Message['type']
/** The message of type `T`. */
export type MessageOf<T extends PayloadType> = Extract<Message, { type: T }>

/** One message type's payload codec. */
export interface Codec<M extends Message> {
  /** Bytes of the payload of `m`. */
  length(m: M): number
  /** Writes the payload of `m` at `off` (length(m) bytes). Throws BAD_FIELD for a field the layout cannot carry. */
  write(m: M, buf: Buffer, off: number): void
  /** Reads the payload that is the whole of `p`; buffers in the result are views into `p`. Throws ProtocolError only. */
  read(p: Buffer): M
}

// ---- LOOKUP: reqId u32 | nonce | reply address | expect count u8 | expected ids | keyLen u16 | key ----

const LOOKUP_REQ_ID = 0
const LOOKUP_NONCE = LOOKUP_REQ_ID + U32
const LOOKUP_REPLY = LOOKUP_NONCE + NONCE_BYTES
/** The most ids a LOOKUP expects (its count is a u8). */
const MAX_EXPECT = 255

const LOOKUP: Codec<MessageOf<typeof MsgType.LOOKUP>> = {
  length: (m) => LOOKUP_REPLY + addressLength(m.reply) + U8 + SENDER_ID_BYTES * m.expect.length + keyLength(m.key),
  write(m, buf, off) {
    fixedBuffer(m.nonce, NONCE_BYTES, 'LOOKUP nonce')
    buf.writeUInt32BE(m.reqId, off + LOOKUP_REQ_ID)
    m.nonce.copy(buf, off + LOOKUP_NONCE)
    let at = writeAddress(buf, off + LOOKUP_REPLY, m.reply)
    if (m.expect.length > MAX_EXPECT || m.expect.some((id) => id.length !== SENDER_ID_BYTES))
      throw new ProtocolError('BAD_FIELD', `LOOKUP expects at most ${MAX_EXPECT} ids of ${SENDER_ID_BYTES} bytes`)
    buf[at] = m.expect.length
    at += U8
    for (const id of m.expect) at += id.copy(buf, at)
    writeKey(buf, at, m.key)
  },
  read(p) {
    needBytes(p.length, LOOKUP_REPLY, 'LOOKUP')
    const reqId = p.readUInt32BE(LOOKUP_REQ_ID)
    const nonce = p.subarray(LOOKUP_NONCE, LOOKUP_NONCE + NONCE_BYTES)
    const [reply, at] = readAddress(p, LOOKUP_REPLY)
    needBytes(p.length - at, U8, 'LOOKUP expect count')
    const count = p[at]!
    const ids = at + U8
    needBytes(p.length - ids, SENDER_ID_BYTES * count, 'LOOKUP expected ids')
    const expect: Buffer[] = []
    for (let i = 0; i < count; i++) expect.push(p.subarray(ids + i * SENDER_ID_BYTES, ids + (i + 1) * SENDER_ID_BYTES))
    return { type: MsgType.LOOKUP, reqId, nonce, reply, expect, key: keyAt(p, ids + SENDER_ID_BYTES * count, 'LOOKUP') }
  },
}

// ---- the binding of a HIT or MISS to its lookup: reqId u32 | nonce | key digest ----

const BIND_REQ_ID = 0
const BIND_NONCE = BIND_REQ_ID + U32
const BIND_DIGEST = BIND_NONCE + NONCE_BYTES
const BINDING_BYTES = BIND_DIGEST + KEY_DIGEST_BYTES

function writeBinding(buf: Buffer, off: number, m: { type: number; reqId: number; nonce: Buffer; digest: Buffer }): void {
  fixedBuffer(m.nonce, NONCE_BYTES, `${typeName(m.type)} nonce`)
  fixedBuffer(m.digest, KEY_DIGEST_BYTES, `${typeName(m.type)} key digest`)
  buf.writeUInt32BE(m.reqId, off + BIND_REQ_ID)
  m.nonce.copy(buf, off + BIND_NONCE)
  m.digest.copy(buf, off + BIND_DIGEST)
}

// ---- HIT: binding | ttlMs u32 | flags u32 | totalLen u32 | index u16 | count u16 | version u64 | chunk ----

const HIT_TTL = BINDING_BYTES
const HIT_FLAGS = HIT_TTL + U32
const HIT_TOTAL = HIT_FLAGS + U32
const HIT_INDEX = HIT_TOTAL + U32
const HIT_COUNT = HIT_INDEX + U16
const HIT_VERSION = HIT_COUNT + U16
const HIT_CHUNK = HIT_VERSION + VERSION_BYTES

/** Bytes of a HIT before its chunk: envelope plus reqId, nonce, digest, ttl, flags, total, index, count, version. */
export const HIT_OVERHEAD_BYTES = ENVELOPE_BYTES + HIT_CHUNK

const HIT: Codec<MessageOf<typeof MsgType.HIT>> = {
  length: (m) => HIT_CHUNK + m.chunk.length,
  write(m, buf, off) {
    writeBinding(buf, off, m)
    buf.writeUInt32BE(m.ttlMs, off + HIT_TTL)
    buf.writeUInt32BE(m.flags, off + HIT_FLAGS)
    buf.writeUInt32BE(m.totalLen, off + HIT_TOTAL)
    buf.writeUInt16BE(m.index, off + HIT_INDEX)
    buf.writeUInt16BE(m.count, off + HIT_COUNT)
    writeVersion(buf, off + HIT_VERSION, m.version)
    m.chunk.copy(buf, off + HIT_CHUNK)
  },
  read(p) {
    needBytes(p.length, HIT_CHUNK, 'HIT')
    const totalLen = p.readUInt32BE(HIT_TOTAL)
    const index = p.readUInt16BE(HIT_INDEX)
    const count = p.readUInt16BE(HIT_COUNT)
    const chunk = p.subarray(HIT_CHUNK)
    checkChunking('HIT', totalLen, index, count, chunk.length)
    return {
      type: MsgType.HIT,
      reqId: p.readUInt32BE(BIND_REQ_ID),
      nonce: p.subarray(BIND_NONCE, BIND_NONCE + NONCE_BYTES),
      digest: p.subarray(BIND_DIGEST, BINDING_BYTES),
      ttlMs: p.readUInt32BE(HIT_TTL),
      flags: p.readUInt32BE(HIT_FLAGS),
      totalLen,
      index,
      count,
      version: p.readBigUInt64BE(HIT_VERSION),
      chunk,
    }
  },
}

// ---- MISS: binding ----

const MISS: Codec<MessageOf<typeof MsgType.MISS>> = {
  length: () => BINDING_BYTES,
  write(m, buf, off) {
    writeBinding(buf, off, m)
  },
  read(p) {
    exactly(p, BINDING_BYTES, 'MISS')
    return {
      type: MsgType.MISS,
      reqId: p.readUInt32BE(BIND_REQ_ID),
      nonce: p.subarray(BIND_NONCE, BIND_NONCE + NONCE_BYTES),
      digest: p.subarray(BIND_DIGEST, BINDING_BYTES),
    }
  },
}

// ---- INVALIDATE: version u64 | keyLen u16 | key ----

const INVALIDATE_VERSION = 0
const INVALIDATE_KEY = INVALIDATE_VERSION + VERSION_BYTES

const INVALIDATE: Codec<MessageOf<typeof MsgType.INVALIDATE>> = {
  length: (m) => INVALIDATE_KEY + keyLength(m.key),
  write(m, buf, off) {
    writeVersion(buf, off + INVALIDATE_VERSION, m.version)
    writeKey(buf, off + INVALIDATE_KEY, m.key)
  },
  read(p) {
    needBytes(p.length, INVALIDATE_KEY, 'INVALIDATE')
    return { type: MsgType.INVALIDATE, version: p.readBigUInt64BE(INVALIDATE_VERSION), key: keyAt(p, INVALIDATE_KEY, 'INVALIDATE') }
  },
}

// ---- ANNOUNCE: reply address | entries u32 | flags u8 | nameLen u8 | name | [second address] ----
// Offsets after the reply address, which is 7 or 19 bytes.

const ANNOUNCE_ENTRIES = 0
const ANNOUNCE_FLAGS = ANNOUNCE_ENTRIES + U32
const ANNOUNCE_NAME_LEN = ANNOUNCE_FLAGS + U8
const ANNOUNCE_NAME = ANNOUNCE_NAME_LEN + U8
/** The longest node name (its length is a u8). */
const MAX_NAME_BYTES = 255

const ANNOUNCE: Codec<MessageOf<typeof MsgType.ANNOUNCE>> = {
  length: (m) => addressLength(m.reply) + ANNOUNCE_NAME + Buffer.byteLength(m.name, 'utf8') + (m.also ? addressLength(m.also) : 0),
  write(m, buf, off) {
    if (((m.flags & AnnounceFlag.DUAL_STACK) !== 0) !== (m.also !== undefined))
      throw new ProtocolError('BAD_FIELD', 'ANNOUNCE: the DUAL_STACK flag and the second address go together')
    if (m.also && m.also.family === m.reply.family)
      throw new ProtocolError('BAD_FIELD', 'ANNOUNCE: the second address must be of the other family')
    const at = writeAddress(buf, off, m.reply)
    buf.writeUInt32BE(m.entries, at + ANNOUNCE_ENTRIES)
    buf[at + ANNOUNCE_FLAGS] = m.flags
    const name = Buffer.from(m.name, 'utf8')
    if (name.length > MAX_NAME_BYTES) throw new ProtocolError('BAD_FIELD', `node name longer than ${MAX_NAME_BYTES} bytes`)
    buf[at + ANNOUNCE_NAME_LEN] = name.length
    name.copy(buf, at + ANNOUNCE_NAME)
    if (m.also) writeAddress(buf, at + ANNOUNCE_NAME + name.length, m.also)
  },
  read(p) {
    const [reply, at] = readAddress(p, 0)
    needBytes(p.length - at, ANNOUNCE_NAME, 'ANNOUNCE')
    const entries = p.readUInt32BE(at + ANNOUNCE_ENTRIES)
    const flags = p[at + ANNOUNCE_FLAGS]!
    const nameLen = p[at + ANNOUNCE_NAME_LEN]!
    const nameAt = at + ANNOUNCE_NAME
    if (!(flags & AnnounceFlag.DUAL_STACK)) {
      exactly(p.subarray(nameAt), nameLen, 'ANNOUNCE name')
      return { type: MsgType.ANNOUNCE, reply, entries, flags, name: p.subarray(nameAt).toString('utf8') }
    }
    needBytes(p.length - nameAt, nameLen, 'ANNOUNCE name')
    const [also, end] = readAddress(p, nameAt + nameLen)
    exactly(p.subarray(end), 0, 'ANNOUNCE')
    if (also.family === reply.family) throw new ProtocolError('BAD_FIELD', 'ANNOUNCE: the second address must be of the other family')
    return { type: MsgType.ANNOUNCE, reply, entries, flags, name: p.subarray(nameAt, nameAt + nameLen).toString('utf8'), also }
  },
}

// ---- LEAVE: empty ----

const LEAVE: Codec<MessageOf<typeof MsgType.LEAVE>> = {
  length: () => 0,
  write() {},
  read(p) {
    exactly(p, 0, 'LEAVE')
    return { type: MsgType.LEAVE }
  },
}

// ---- TICKET_KEY: epoch u32 | creator id | key (retired: see TICKET_SEAL) ----

const TICKET_KEY_EPOCH = 0
const TICKET_KEY_CREATOR = TICKET_KEY_EPOCH + U32
const TICKET_KEY_KEY = TICKET_KEY_CREATOR + SENDER_ID_BYTES
const TICKET_KEY_BYTES_ALL = TICKET_KEY_KEY + TICKET_SECRET_BYTES

const TICKET_KEY: Codec<MessageOf<typeof MsgType.TICKET_KEY>> = {
  length: () => TICKET_KEY_BYTES_ALL,
  write(m, buf, off) {
    if (m.creator.length !== SENDER_ID_BYTES || m.key.length !== TICKET_SECRET_BYTES)
      throw new ProtocolError('BAD_FIELD', `TICKET_KEY needs an ${SENDER_ID_BYTES}-byte creator and a ${TICKET_SECRET_BYTES}-byte key`)
    buf.writeUInt32BE(m.epoch, off + TICKET_KEY_EPOCH)
    m.creator.copy(buf, off + TICKET_KEY_CREATOR)
    m.key.copy(buf, off + TICKET_KEY_KEY)
  },
  read(p) {
    exactly(p, TICKET_KEY_BYTES_ALL, 'TICKET_KEY')
    return {
      type: MsgType.TICKET_KEY,
      epoch: p.readUInt32BE(TICKET_KEY_EPOCH),
      creator: p.subarray(TICKET_KEY_CREATOR, TICKET_KEY_KEY),
      key: p.subarray(TICKET_KEY_KEY),
    }
  },
}

// ---- REPLICATE: replId u32 | ttlMs u32 | flags u32 | totalLen u32 | index u16 | count u16 | version u64 | keyLen u16 | key | chunk ----

const REPL_ID = 0
const REPL_TTL = REPL_ID + U32
const REPL_FLAGS = REPL_TTL + U32
const REPL_TOTAL = REPL_FLAGS + U32
const REPL_INDEX = REPL_TOTAL + U32
const REPL_COUNT = REPL_INDEX + U16
const REPL_VERSION = REPL_COUNT + U16
const REPL_KEY_LEN = REPL_VERSION + VERSION_BYTES
const REPL_KEY = REPL_KEY_LEN + U16

/** Bytes of a REPLICATE before its key and chunk. */
export const REPLICATE_OVERHEAD_BYTES = ENVELOPE_BYTES + REPL_KEY

const REPLICATE: Codec<MessageOf<typeof MsgType.REPLICATE>> = {
  length: (m) => REPL_KEY + m.key.length + m.chunk.length,
  write(m, buf, off) {
    buf.writeUInt32BE(m.replId, off + REPL_ID)
    buf.writeUInt32BE(m.ttlMs, off + REPL_TTL)
    buf.writeUInt32BE(m.flags, off + REPL_FLAGS)
    buf.writeUInt32BE(m.totalLen, off + REPL_TOTAL)
    buf.writeUInt16BE(m.index, off + REPL_INDEX)
    buf.writeUInt16BE(m.count, off + REPL_COUNT)
    writeVersion(buf, off + REPL_VERSION, m.version)
    writeKey(buf, off + REPL_KEY_LEN, m.key)
    m.chunk.copy(buf, off + REPL_KEY + m.key.length)
  },
  read(p) {
    needBytes(p.length, REPL_KEY, 'REPLICATE')
    const keyLen = p.readUInt16BE(REPL_KEY_LEN)
    if (keyLen === 0) throw new ProtocolError('BAD_FIELD', 'REPLICATE with an empty key')
    needBytes(p.length, REPL_KEY + keyLen, 'REPLICATE key')
    const totalLen = p.readUInt32BE(REPL_TOTAL)
    const index = p.readUInt16BE(REPL_INDEX)
    const count = p.readUInt16BE(REPL_COUNT)
    const chunk = p.subarray(REPL_KEY + keyLen)
    checkChunking('REPLICATE', totalLen, index, count, chunk.length)
    return {
      type: MsgType.REPLICATE,
      replId: p.readUInt32BE(REPL_ID),
      ttlMs: p.readUInt32BE(REPL_TTL),
      flags: p.readUInt32BE(REPL_FLAGS),
      totalLen,
      index,
      count,
      version: p.readBigUInt64BE(REPL_VERSION),
      key: p.subarray(REPL_KEY, REPL_KEY + keyLen),
      chunk,
    }
  },
}

// ---- ACK: replId u32 ----

const ACK_REPL_ID = 0
const ACK_BYTES = ACK_REPL_ID + U32

const ACK: Codec<MessageOf<typeof MsgType.ACK>> = {
  length: () => ACK_BYTES,
  write(m, buf, off) {
    buf.writeUInt32BE(m.replId, off + ACK_REPL_ID)
  },
  read(p) {
    exactly(p, ACK_BYTES, 'ACK')
    return { type: MsgType.ACK, replId: p.readUInt32BE(ACK_REPL_ID) }
  },
}

// ---- DELETE: replId u32 | version u64 | keyLen u16 | key ----

const DELETE_REPL_ID = 0
const DELETE_VERSION = DELETE_REPL_ID + U32
const DELETE_KEY = DELETE_VERSION + VERSION_BYTES

const DELETE: Codec<MessageOf<typeof MsgType.DELETE>> = {
  length: (m) => DELETE_KEY + keyLength(m.key),
  write(m, buf, off) {
    buf.writeUInt32BE(m.replId, off + DELETE_REPL_ID)
    writeVersion(buf, off + DELETE_VERSION, m.version)
    writeKey(buf, off + DELETE_KEY, m.key)
  },
  read(p) {
    needBytes(p.length, DELETE_KEY, 'DELETE')
    return {
      type: MsgType.DELETE,
      replId: p.readUInt32BE(DELETE_REPL_ID),
      version: p.readBigUInt64BE(DELETE_VERSION),
      key: keyAt(p, DELETE_KEY, 'DELETE'),
    }
  },
}

// ---- ACKS: count u16 | replId u32 x count ----

const ACKS_COUNT = 0
const ACKS_IDS = ACKS_COUNT + U16

/** Bytes of an ACKS before its ids: envelope and count. */
export const ACKS_OVERHEAD_BYTES = ENVELOPE_BYTES + ACKS_IDS

/** The replIds an ACKS carries in a datagram of `maxDatagramBytes`. */
export function acksPerDatagram(maxDatagramBytes: number): number {
  return Math.max(1, Math.min(MAX_ACKS, Math.floor((maxDatagramBytes - ACKS_OVERHEAD_BYTES) / U32)))
}

const ACKS: Codec<MessageOf<typeof MsgType.ACKS>> = {
  length: (m) => ACKS_IDS + U32 * m.replIds.length,
  write(m, buf, off) {
    if (m.replIds.length === 0 || m.replIds.length > MAX_ACKS)
      throw new ProtocolError('BAD_FIELD', `ACKS carries 1 to ${MAX_ACKS} ids; got ${m.replIds.length}`)
    buf.writeUInt16BE(m.replIds.length, off + ACKS_COUNT)
    for (let i = 0; i < m.replIds.length; i++) buf.writeUInt32BE(m.replIds[i]!, off + ACKS_IDS + U32 * i)
  },
  read(p) {
    needBytes(p.length, ACKS_IDS, 'ACKS count')
    const count = p.readUInt16BE(ACKS_COUNT)
    if (count === 0) throw new ProtocolError('BAD_FIELD', 'ACKS with no ids')
    exactly(p.subarray(ACKS_IDS), U32 * count, `ACKS of ${count} ids`)
    const replIds: number[] = new Array<number>(count)
    for (let i = 0; i < count; i++) replIds[i] = p.readUInt32BE(ACKS_IDS + U32 * i)
    return { type: MsgType.ACKS, replIds }
  },
}

// ---- DECIDE: reqId u32 | kind u8 | flags u32 | ttlMs i64 | unique u64 | delta u64 | keyLen u16 | key | value ----

const DECIDE_REQ_ID = 0
const DECIDE_KIND = DECIDE_REQ_ID + U32
const DECIDE_FLAGS = DECIDE_KIND + U8
const DECIDE_TTL = DECIDE_FLAGS + U32
const DECIDE_UNIQUE = DECIDE_TTL + U64
const DECIDE_DELTA = DECIDE_UNIQUE + VERSION_BYTES
const DECIDE_KEY = DECIDE_DELTA + U64

/** Bytes of a DECIDE datagram besides its key and value. */
export const DECIDE_OVERHEAD_BYTES = ENVELOPE_BYTES + DECIDE_KEY + U16

function checkKey(key: Buffer, what: string): void {
  if (key.length === 0 || key.length > 0xffff) throw new ProtocolError('BAD_FIELD', `${what} needs a key of 1 to 65535 bytes`)
}

/** The key (u16 length) at `off` and the value that fills the rest of `p`. */
function keyAndValue(p: Buffer, off: number, what: string): { key: Buffer; value: Buffer } {
  needBytes(p.length - off, U16, `${what} key length`)
  const len = p.readUInt16BE(off)
  if (len === 0) throw new ProtocolError('BAD_FIELD', `${what} with an empty key`)
  needBytes(p.length - off - U16, len, `${what} key`)
  return { key: p.subarray(off + U16, off + U16 + len), value: p.subarray(off + U16 + len) }
}

const DECIDE: Codec<MessageOf<typeof MsgType.DECIDE>> = {
  length: (m) => DECIDE_KEY + keyLength(m.key) + m.value.length,
  write(m, buf, off) {
    checkKey(m.key, 'DECIDE')
    if (!Number.isSafeInteger(m.ttlMs)) throw new ProtocolError('BAD_FIELD', 'DECIDE ttlMs is an integer')
    buf.writeUInt32BE(m.reqId, off + DECIDE_REQ_ID)
    buf[off + DECIDE_KIND] = m.kind
    buf.writeUInt32BE(m.flags, off + DECIDE_FLAGS)
    buf.writeBigInt64BE(BigInt(m.ttlMs), off + DECIDE_TTL)
    writeVersion(buf, off + DECIDE_UNIQUE, m.unique)
    writeVersion(buf, off + DECIDE_DELTA, m.delta)
    writeKey(buf, off + DECIDE_KEY, m.key)
    m.value.copy(buf, off + DECIDE_KEY + keyLength(m.key))
  },
  read(p) {
    needBytes(p.length, DECIDE_KEY, 'DECIDE')
    const ttl = p.readBigInt64BE(DECIDE_TTL)
    if (ttl > BigInt(Number.MAX_SAFE_INTEGER) || ttl < BigInt(Number.MIN_SAFE_INTEGER))
      throw new ProtocolError('BAD_FIELD', 'DECIDE ttlMs out of range')
    return {
      type: MsgType.DECIDE,
      reqId: p.readUInt32BE(DECIDE_REQ_ID),
      kind: p[DECIDE_KIND]!,
      flags: p.readUInt32BE(DECIDE_FLAGS),
      ttlMs: Number(ttl),
      unique: p.readBigUInt64BE(DECIDE_UNIQUE),
      delta: p.readBigUInt64BE(DECIDE_DELTA),
      ...keyAndValue(p, DECIDE_KEY, 'DECIDE'),
    }
  },
}

// ---- DECIDED: reqId u32 | outcome u8 | wrote u8 | flags u32 | ttlMs u32 | version u64 | number u64 | keyLen u16 | key | value ----

const DECIDED_REQ_ID = 0
const DECIDED_OUTCOME = DECIDED_REQ_ID + U32
const DECIDED_WROTE = DECIDED_OUTCOME + U8
const DECIDED_FLAGS = DECIDED_WROTE + U8
const DECIDED_TTL = DECIDED_FLAGS + U32
const DECIDED_VERSION = DECIDED_TTL + U32
const DECIDED_NUMBER = DECIDED_VERSION + VERSION_BYTES
const DECIDED_KEY = DECIDED_NUMBER + U64

/** Bytes of a DECIDED datagram besides its key and value. */
export const DECIDED_OVERHEAD_BYTES = ENVELOPE_BYTES + DECIDED_KEY + U16

const DECIDED: Codec<MessageOf<typeof MsgType.DECIDED>> = {
  length: (m) => DECIDED_KEY + keyLength(m.key) + m.value.length,
  write(m, buf, off) {
    checkKey(m.key, 'DECIDED')
    buf.writeUInt32BE(m.reqId, off + DECIDED_REQ_ID)
    buf[off + DECIDED_OUTCOME] = m.outcome
    buf[off + DECIDED_WROTE] = m.wrote
    buf.writeUInt32BE(m.flags, off + DECIDED_FLAGS)
    buf.writeUInt32BE(m.ttlMs, off + DECIDED_TTL)
    writeVersion(buf, off + DECIDED_VERSION, m.version)
    writeVersion(buf, off + DECIDED_NUMBER, m.number)
    writeKey(buf, off + DECIDED_KEY, m.key)
    m.value.copy(buf, off + DECIDED_KEY + keyLength(m.key))
  },
  read(p) {
    needBytes(p.length, DECIDED_KEY, 'DECIDED')
    return {
      type: MsgType.DECIDED,
      reqId: p.readUInt32BE(DECIDED_REQ_ID),
      outcome: p[DECIDED_OUTCOME]!,
      wrote: p[DECIDED_WROTE]!,
      flags: p.readUInt32BE(DECIDED_FLAGS),
      ttlMs: p.readUInt32BE(DECIDED_TTL),
      version: p.readBigUInt64BE(DECIDED_VERSION),
      number: p.readBigUInt64BE(DECIDED_NUMBER),
      ...keyAndValue(p, DECIDED_KEY, 'DECIDED'),
    }
  },
}

// ---- TICKET_PUB: period u32 | public key | count u8 | count x (epoch u32 | holder id) ----

const PUB_PERIOD = 0
const PUB_KEY = PUB_PERIOD + U32
const PUB_COUNT = PUB_KEY + X25519_PUBLIC_BYTES
const PUB_HELD = PUB_COUNT + U8
/** Bytes of one held epoch: epoch u32 | holder id. */
const HELD_EPOCH = 0
const HELD_HOLDER = HELD_EPOCH + U32
const HELD_BYTES = HELD_HOLDER + SENDER_ID_BYTES

const TICKET_PUB: Codec<MessageOf<typeof MsgType.TICKET_PUB>> = {
  length: (m) => PUB_HELD + HELD_BYTES * m.held.length,
  write(m, buf, off) {
    fixedBuffer(m.pub, X25519_PUBLIC_BYTES, 'TICKET_PUB public key')
    if (m.held.length > MAX_TICKET_HELD)
      throw new ProtocolError('BAD_FIELD', `TICKET_PUB lists at most ${MAX_TICKET_HELD} epochs; got ${m.held.length}`)
    buf.writeUInt32BE(m.period, off + PUB_PERIOD)
    m.pub.copy(buf, off + PUB_KEY)
    buf[off + PUB_COUNT] = m.held.length
    let at = off + PUB_HELD
    for (const h of m.held) {
      fixedBuffer(h.holder, SENDER_ID_BYTES, 'TICKET_PUB holder id')
      buf.writeUInt32BE(h.epoch, at + HELD_EPOCH)
      h.holder.copy(buf, at + HELD_HOLDER)
      at += HELD_BYTES
    }
  },
  read(p) {
    needBytes(p.length, PUB_HELD, 'TICKET_PUB')
    const count = p[PUB_COUNT]!
    if (count > MAX_TICKET_HELD) throw new ProtocolError('BAD_FIELD', `TICKET_PUB lists at most ${MAX_TICKET_HELD} epochs, got ${count}`)
    exactly(p.subarray(PUB_HELD), HELD_BYTES * count, `TICKET_PUB of ${count} epochs`)
    const held: { epoch: number; holder: Buffer }[] = []
    for (let i = 0, at = PUB_HELD; i < count; i++, at += HELD_BYTES)
      held.push({ epoch: p.readUInt32BE(at + HELD_EPOCH), holder: p.subarray(at + HELD_HOLDER, at + HELD_BYTES) })
    return { type: MsgType.TICKET_PUB, period: p.readUInt32BE(PUB_PERIOD), pub: p.subarray(PUB_KEY, PUB_COUNT), held }
  },
}

// ---- TICKET_SEAL: epoch u32 | sealer public key | recipient public key | nonce | sealed secret | tag ----

const SEAL_EPOCH = 0
const SEAL_SEALER = SEAL_EPOCH + U32
const SEAL_RECIPIENT = SEAL_SEALER + X25519_PUBLIC_BYTES
const SEAL_NONCE = SEAL_RECIPIENT + X25519_PUBLIC_BYTES
const SEAL_SEALED = SEAL_NONCE + TICKET_SEAL_NONCE_BYTES
const SEAL_TAG = SEAL_SEALED + TICKET_SECRET_BYTES
const TICKET_SEAL_BYTES = SEAL_TAG + TICKET_SEAL_TAG_BYTES

const TICKET_SEAL: Codec<MessageOf<typeof MsgType.TICKET_SEAL>> = {
  length: () => TICKET_SEAL_BYTES,
  write(m, buf, off) {
    fixedBuffer(m.sealerPub, X25519_PUBLIC_BYTES, 'TICKET_SEAL sealer public key')
    fixedBuffer(m.recipientPub, X25519_PUBLIC_BYTES, 'TICKET_SEAL recipient public key')
    fixedBuffer(m.nonce, TICKET_SEAL_NONCE_BYTES, 'TICKET_SEAL nonce')
    fixedBuffer(m.sealed, TICKET_SECRET_BYTES, 'TICKET_SEAL sealed secret')
    fixedBuffer(m.tag, TICKET_SEAL_TAG_BYTES, 'TICKET_SEAL tag')
    buf.writeUInt32BE(m.epoch, off + SEAL_EPOCH)
    m.sealerPub.copy(buf, off + SEAL_SEALER)
    m.recipientPub.copy(buf, off + SEAL_RECIPIENT)
    m.nonce.copy(buf, off + SEAL_NONCE)
    m.sealed.copy(buf, off + SEAL_SEALED)
    m.tag.copy(buf, off + SEAL_TAG)
  },
  read(p) {
    exactly(p, TICKET_SEAL_BYTES, 'TICKET_SEAL')
    return {
      type: MsgType.TICKET_SEAL,
      epoch: p.readUInt32BE(SEAL_EPOCH),
      sealerPub: p.subarray(SEAL_SEALER, SEAL_RECIPIENT),
      recipientPub: p.subarray(SEAL_RECIPIENT, SEAL_NONCE),
      nonce: p.subarray(SEAL_NONCE, SEAL_SEALED),
      sealed: p.subarray(SEAL_SEALED, SEAL_TAG),
      tag: p.subarray(SEAL_TAG),
    }
  },
}

// ---- the table ----

/**
 * The codec of every message type. Typed as a mapped type over Message, so a type added to
 * Message without its record here does not compile.
 */
/** A record of `base`'s layout under another type code (the AWAITED forms of REPLICATE and DELETE). */
function sameLayout<A extends Message, T extends PayloadType>(base: Codec<A>, type: T): Codec<MessageOf<T>> {
  return {
    length: (m) => base.length(m as unknown as A),
    write: (m, buf, off) => base.write(m as unknown as A, buf, off),
    read: (p) => ({ ...base.read(p), type }) as unknown as MessageOf<T>,
  }
}

export const CODECS: { readonly [T in PayloadType]: Codec<MessageOf<T>> } = {
  [MsgType.LOOKUP]: LOOKUP,
  [MsgType.HIT]: HIT,
  [MsgType.MISS]: MISS,
  [MsgType.INVALIDATE]: INVALIDATE,
  [MsgType.ANNOUNCE]: ANNOUNCE,
  [MsgType.LEAVE]: LEAVE,
  [MsgType.TICKET_KEY]: TICKET_KEY,
  [MsgType.REPLICATE]: REPLICATE,
  [MsgType.ACK]: ACK,
  [MsgType.DELETE]: DELETE,
  [MsgType.REPLICATE_AWAITED]: sameLayout(REPLICATE, MsgType.REPLICATE_AWAITED),
  [MsgType.DELETE_AWAITED]: sameLayout(DELETE, MsgType.DELETE_AWAITED),
  [MsgType.ACKS]: ACKS,
  [MsgType.DECIDE]: DECIDE,
  [MsgType.DECIDED]: DECIDED,
  [MsgType.TICKET_PUB]: TICKET_PUB,
  [MsgType.TICKET_SEAL]: TICKET_SEAL,
}

/** CODECS as a dense array indexed by type byte: what the hot path looks up. */
const BY_TYPE: (Codec<Message> | undefined)[] = Array.from({ length: 256 }, () => undefined)
for (const [type, codec] of Object.entries(CODECS)) BY_TYPE[Number(type)] = codec

/** The codec of message type `type`; UNKNOWN_OP for a number that is no message type (BATCH among them). */
export function codecOf(type: unknown): Codec<Message> {
  const codec = typeof type === 'number' ? BY_TYPE[type] : undefined
  if (codec === undefined) throw new ProtocolError('UNKNOWN_OP', `unknown message type ${String(type)}`)
  return codec
}

/** Bytes of a message's payload: its body after type and sentAtMs, or a BATCH entry after its head. */
export function payloadLength(m: Message): number {
  return codecOf(m.type).length(m)
}

/** Writes the payload of `m` at `off` (payloadLength(m) bytes). */
export function writePayload(buf: Buffer, off: number, m: Message): void {
  codecOf(m.type).write(m, buf, off)
}

/** Decodes the payload `p` of a message of `type` (the whole of `p` is the payload). */
export function decodePayload(type: number, p: Buffer): Message {
  return codecOf(type).read(p)
}

/** Value bytes a HIT carries per datagram of `maxDatagramBytes`. */
export function hitChunkBytes(maxDatagramBytes: number): number {
  return maxDatagramBytes - HIT_OVERHEAD_BYTES
}

/** Value bytes a REPLICATE of a `keyLen`-byte key carries per datagram of `maxDatagramBytes`. */
export function replicateChunkBytes(maxDatagramBytes: number, keyLen: number): number {
  return maxDatagramBytes - REPLICATE_OVERHEAD_BYTES - keyLen
}

/**
 * The most chunks a value of `totalLen` bytes can legally arrive in, when every sender's chunks
 * are at least `smallestChunk` bytes (what the smallest legal datagram carries): no sender needs
 * more, so a larger count is refused before it costs an index.
 */
export function maxChunkCount(totalLen: number, smallestChunk: number): number {
  return Math.max(1, Math.ceil(totalLen / Math.max(1, smallestChunk)))
}
