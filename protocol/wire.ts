/**
 * Peer datagrams between daemons: a clear header and a sealed body (AES-256-GCM).
 *
 *    0        4     5      6        10            18            26            34
 *   +--------+-----+------+--------+-------------+-------------+-------------+----------------+--------+
 *   | magic  | ver | rsvd | key id | sender id   | counter     | receiver id | sealed body ...| tag    |
 *   | u32    | u8  | u8   | u32    | 8 bytes     | u64         | 8 bytes     | (ciphertext)   | 16 B   |
 *   +--------+-----+------+--------+-------------+-------------+-------------+----------------+--------+
 *   \_____________ clear header: authenticated as additional data ______________/
 *
 * The sender id is random per daemon start. Each sender seals with its own subkey,
 * HKDF-SHA256(cluster key, salt = sender id), and nonce = 4 zero bytes | counter, where the counter
 * increases with every datagram it sends: (subkey, nonce) never repeats, even across restarts
 * and hosts, and the counter doubles as the replay sequence number.
 *
 * The receiver id binds a unicast datagram to the one daemon it was sent to (the id it announced):
 * a copy captured on its way to one host and resent to another fails the receiver check there,
 * and so does one resent to a restarted daemon (a new id per start). Datagrams to the group carry
 * eight zero bytes, and only the types in GROUP_TYPES may travel that way.
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
 *   REPLICATE_AWAITED, DELETE_AWAITED: the layouts of REPLICATE and DELETE; decoded as those with
 *               `awaited: true`. A writer waits for their ACK before it answers its client, and a
 *               receiver that remembers holders of the key passes the update on to them and
 *               acknowledges only once they did (or its wait ended), so no holder serves the old value
 *               once the write is answered. Sent at once and acknowledged at once (no ACKS delay).
 *   ACK         replId u32
 *               (acknowledges a REPLICATE or a DELETE: both draw their ids from one sequence)
 *   DELETE      replId u32 | version u64 | keyLen u16 | key
 *               (a delete sent to one host that may hold a copy, acknowledged by ACK and retried;
 *               INVALIDATE is the same to the group, unacknowledged, for when holders are unknown)
   BATCH       count u8 | count x (len u16 | type u8 | payload (len bytes))
               (what one sender had for one destination within one turn of its event loop, in one
               datagram: each entry is a message of any other type without its own sentAtMs, which
               is the batch's; never nested, never empty; a batch to the group holds only
               GROUP_TYPES. One message alone travels as itself, never as a batch of one.)
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
 * The numbers are the protocol: append only, never renumber.
 * Version 2: the receiver id in the header; the nonce in LOOKUP, nonce and key digest in HIT and MISS.
 */
import crypto from 'node:crypto'
import { Parser } from 'binary-parser'
import { ProtocolError, needBytes } from './errors.js'
import type { ClusterKey } from './keyfile.js'
import { BoundedMap } from './bounded.js'
import { namer } from './tables.js'

export const MAGIC = 0x53544353 // "STCS"
export const VERSION = 2
export const HEADER_BYTES = 34
export const TAG_BYTES = 16
export const SENDER_ID_BYTES = 8
/** Receiver id of a datagram to the group (or to listed peers in its stead). */
export const NO_RECEIVER: Buffer = Buffer.alloc(SENDER_ID_BYTES)
/** Bytes of a lookup's nonce, echoed by its HIT and MISS replies. */
export const NONCE_BYTES = 8
/** Bytes of the key digest a HIT or MISS carries (a SHA-256 prefix of the key). */
export const KEY_DIGEST_BYTES = 16
/** Bytes a datagram spends on everything but its payload: clear header, tag, type and time. */
export const ENVELOPE_BYTES = HEADER_BYTES + TAG_BYTES + 9
/** Bytes of a session version (u64) in HIT, REPLICATE, INVALIDATE and DELETE. */
export const VERSION_BYTES = 8
/** Bytes of a HIT before its chunk: envelope plus reqId, nonce, digest, ttl, flags, total, index, count, version. */
export const HIT_OVERHEAD_BYTES = ENVELOPE_BYTES + 20 + NONCE_BYTES + KEY_DIGEST_BYTES + VERSION_BYTES
/** Bytes of a REPLICATE before its key and chunk. */
export const REPLICATE_OVERHEAD_BYTES = ENVELOPE_BYTES + 22 + VERSION_BYTES
/** The smallest maxDatagramBytes a daemon may run with. */
export const MIN_DATAGRAM_BYTES = 256
/** Bytes of an ACKS before its ids: envelope and count. */
export const ACKS_OVERHEAD_BYTES = ENVELOPE_BYTES + 2
/** The most replIds one ACKS carries (its count is a u16). */
export const MAX_ACKS = 0xffff

/** The replIds an ACKS carries in a datagram of `maxDatagramBytes`. */
export function acksPerDatagram(maxDatagramBytes: number): number {
  return Math.max(1, Math.min(MAX_ACKS, Math.floor((maxDatagramBytes - ACKS_OVERHEAD_BYTES) / 4)))
}
/** Largest version: a u64. */
const VERSION_MAX = 2n ** 64n - 1n

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

export const MsgType = {
  LOOKUP: 1,
  HIT: 2,
  MISS: 3,
  INVALIDATE: 4,
  ANNOUNCE: 5,
  LEAVE: 6,
  TICKET_KEY: 7,
  REPLICATE: 8,
  ACK: 9,
  DELETE: 10,
  BATCH: 11,
  ACKS: 12,
  REPLICATE_AWAITED: 15,
  DELETE_AWAITED: 16,
  TICKET_PUB: 20,
  TICKET_SEAL: 21,
} as const
/** Bytes of a TLS session ticket key (Node's setTicketKeys). */
export const TICKET_KEY_BYTES = 48
/** Bytes of an X25519 public key (TICKET_PUB, TICKET_SEAL). */
export const X25519_PUBLIC_BYTES = 32
/** Bytes of a TICKET_SEAL's AES-GCM nonce and tag. */
export const TICKET_SEAL_NONCE_BYTES = 12
export const TICKET_SEAL_TAG_BYTES = 16
/** Most epochs a TICKET_PUB lists (previous, current, next and the one after). */
export const MAX_TICKET_HELD = 4
/** Bytes of a TICKET_SEAL payload. */
const TICKET_SEAL_BYTES = 4 + 2 * X25519_PUBLIC_BYTES + TICKET_SEAL_NONCE_BYTES + TICKET_KEY_BYTES + TICKET_SEAL_TAG_BYTES
export type MsgTypeCode = (typeof MsgType)[keyof typeof MsgType]
/** Types that may be sent to the group (receiver NO_RECEIVER); every other type names its receiver. */
export const GROUP_TYPES: ReadonlySet<number> = new Set<number>([
  MsgType.LOOKUP,
  MsgType.INVALIDATE,
  MsgType.ANNOUNCE,
  MsgType.LEAVE,
  MsgType.TICKET_KEY,
  MsgType.TICKET_PUB,
])

/** The digest of a key that binds a HIT or MISS to the key asked for. */
export function keyDigest(key: Buffer): Buffer {
  return crypto.createHash('sha256').update(key).digest().subarray(0, KEY_DIGEST_BYTES)
}
export const typeName = namer(MsgType, 'type')

export const AnnounceFlag = {
  /** The sender just started: members who hear it announce themselves back at once. */
  HELLO: 0x01,
  /** The sender speaks both IP families: its reply address on the other one follows the name. */
  DUAL_STACK: 0x02,
} as const

export interface Address {
  family: 4 | 6
  address: string
  port: number
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
  | {
      type: typeof MsgType.REPLICATE
      replId: number
      ttlMs: number
      flags: number
      totalLen: number
      index: number
      count: number
      version: bigint
      key: Buffer
      chunk: Buffer
      /** Travels as REPLICATE_AWAITED: see the layout. */
      awaited?: boolean
    }
  | { type: typeof MsgType.ACK; replId: number }
  | { type: typeof MsgType.DELETE; replId: number; version: bigint; key: Buffer; awaited?: boolean }
  | { type: typeof MsgType.ACKS; replIds: number[] }
  | { type: typeof MsgType.TICKET_PUB; period: number; pub: Buffer; held: { epoch: number; holder: Buffer }[] }
  | { type: typeof MsgType.TICKET_SEAL; epoch: number; sealerPub: Buffer; recipientPub: Buffer; nonce: Buffer; sealed: Buffer; tag: Buffer }

/** The most messages one BATCH carries (its count is a u8). */
export const MAX_BATCH_COUNT = 255
/** Bytes of a BATCH datagram besides its entries: the envelope and the count. */
export const BATCH_OVERHEAD_BYTES = HEADER_BYTES + TAG_BYTES + 9 + 1
/** Bytes an entry of a BATCH spends besides its payload: length and type. */
const BATCH_ENTRY_HEAD_BYTES = 3
/** Bytes of a body before its payload: type and sentAtMs. */
const BODY_HEAD_BYTES = 9

export interface Header {
  keyId: number
  senderId: Buffer
  counter: number
  /** The daemon the datagram is for; NO_RECEIVER for the group. */
  receiverId: Buffer
}

// ---- addresses ----

function addressLength(a: Address): number {
  return 1 + (a.family === 4 ? 4 : 16) + 2
}

function writeAddress(buf: Buffer, off: number, a: Address): number {
  buf[off] = a.family
  if (a.family === 4) {
    const parts = a.address.split('.').map(Number)
    if (
      parts.length !== 4 ||
      !parts.every((x, i) => Number.isInteger(x) && x >= 0 && x <= 255 && /^\d{1,3}$/.test(a.address.split('.')[i]!))
    )
      throw new ProtocolError('BAD_FIELD', `not an IPv4 address: ${a.address}`)
    for (let i = 0; i < 4; i++) buf[off + 1 + i] = parts[i]!
    off += 5
  } else {
    if (!isIPv6Text(a.address)) throw new ProtocolError('BAD_FIELD', `not an IPv6 address: ${a.address}`)
    ipv6Bytes(a.address).copy(buf, off + 1)
    off += 17
  }
  buf.writeUInt16BE(a.port, off)
  return off + 2
}

/** True for IPv6 text (a zone after % allowed); uses the WHATWG URL parser, which is pure. */
function isIPv6Text(addr: string): boolean {
  const bare = addr.split('%')[0]!
  if (!bare.includes(':')) return false
  try {
    new URL(`http://[${bare}]/`)
    return true
  } catch {
    return false
  }
}

function ipv6Bytes(addr: string): Buffer {
  const out = Buffer.alloc(16)
  const zone = addr.indexOf('%')
  const a = zone >= 0 ? addr.slice(0, zone) : addr
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined]
  const groups = (s: string | undefined) => (s ? s.split(':') : [])
  let h = groups(head)
  let t = groups(tail)
  const expand = (g: string[]) =>
    g.flatMap((x) =>
      x.includes('.')
        ? [
            ((Number(x.split('.')[0]) << 8) | Number(x.split('.')[1])).toString(16),
            ((Number(x.split('.')[2]) << 8) | Number(x.split('.')[3])).toString(16),
          ]
        : [x],
    )
  h = expand(h)
  t = expand(t)
  const all = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t]
  for (let i = 0; i < 8; i++) out.writeUInt16BE(parseInt(all[i] ?? '0', 16), i * 2)
  return out
}

function readAddress(buf: Buffer, off: number): [Address, number] {
  needBytes(buf.length - off, 1, 'address family')
  const family = buf[off]!
  if (family === 4) {
    needBytes(buf.length - off, 7, 'IPv4 address')
    return [
      { family: 4, address: `${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}.${buf[off + 4]}`, port: buf.readUInt16BE(off + 5) },
      off + 7,
    ]
  }
  if (family === 6) {
    needBytes(buf.length - off, 19, 'IPv6 address')
    const parts: string[] = []
    for (let i = 0; i < 8; i++) parts.push(buf.readUInt16BE(off + 1 + i * 2).toString(16))
    // Canonical text form via the URL parser's normaliser.
    const text = new URL(`http://[${parts.join(':')}]/`).hostname.slice(1, -1)
    return [{ family: 6, address: text, port: buf.readUInt16BE(off + 17) }, off + 19]
  }
  throw new ProtocolError('BAD_FIELD', `unknown address family ${family}`)
}

// ---- bodies ----

const u32 = new Parser().uint32be('n')
const replHead = new Parser()
  .uint32be('replId')
  .uint32be('ttlMs')
  .uint32be('flags')
  .uint32be('totalLen')
  .uint16be('index')
  .uint16be('count')
  .uint64be('version')
  .uint16be('keyLen')
const hitHead = new Parser()
  .uint32be('ttlMs')
  .uint32be('flags')
  .uint32be('totalLen')
  .uint16be('index')
  .uint16be('count')
  .uint64be('version')
/** reqId, nonce and key digest: what binds a HIT or MISS to its lookup. */
const BINDING_BYTES = 4 + NONCE_BYTES + KEY_DIGEST_BYTES
/** Bytes of the fixed part of a REPLICATE, and of a HIT after its binding. */
const REPL_HEAD_BYTES = 22 + VERSION_BYTES
const HIT_HEAD_BYTES = 16 + VERSION_BYTES

function checkChunking(what: string, totalLen: number, index: number, count: number, chunkLen: number): void {
  if (count === 0 || index >= count) throw new ProtocolError('BAD_FIELD', `${what} chunk ${index} of ${count}`)
  // Every chunk carries at least one byte unless the value is empty: a count beyond the value's
  // length could only announce empty chunks, which cost the receiver an index slot each.
  if (count > Math.max(1, totalLen)) throw new ProtocolError('BAD_FIELD', `${what}: ${count} chunks for a value of ${totalLen} bytes`)
  if (chunkLen === 0 && totalLen > 0) throw new ProtocolError('BAD_FIELD', `${what}: an empty chunk of a value of ${totalLen} bytes`)
  if (chunkLen > totalLen) throw new ProtocolError('BAD_FIELD', `${what} chunk of ${chunkLen} bytes exceeds the value's ${totalLen}`)
}

function writeVersion(buf: Buffer, off: number, v: bigint): void {
  if (typeof v !== 'bigint' || v < 0n || v > VERSION_MAX) throw new ProtocolError('BAD_FIELD', 'a version is a u64')
  buf.writeBigUInt64BE(v, off)
}

function fixedBuffer(b: Buffer, len: number, what: string): void {
  if (b.length !== len) throw new ProtocolError('BAD_FIELD', `${what} must be ${len} bytes`)
}

/** Plaintext length of a message's body. */
export function bodyLength(m: Message): number {
  return BODY_HEAD_BYTES + payloadLength(m)
}

/** Bytes of a message's payload: its body after type and sentAtMs, or a BATCH entry after its head. */
function payloadLength(m: Message): number {
  switch (m.type) {
    case MsgType.LOOKUP:
      return 4 + NONCE_BYTES + addressLength(m.reply) + 1 + SENDER_ID_BYTES * m.expect.length + 2 + m.key.length
    case MsgType.HIT:
      return BINDING_BYTES + HIT_HEAD_BYTES + m.chunk.length
    case MsgType.MISS:
      return BINDING_BYTES
    case MsgType.INVALIDATE:
      return VERSION_BYTES + 2 + m.key.length
    case MsgType.ANNOUNCE:
      return addressLength(m.reply) + 4 + 2 + Buffer.byteLength(m.name, 'utf8') + (m.also ? addressLength(m.also) : 0)
    case MsgType.LEAVE:
      return 0
    case MsgType.TICKET_KEY:
      return 4 + SENDER_ID_BYTES + TICKET_KEY_BYTES
    case MsgType.REPLICATE:
      return REPL_HEAD_BYTES + m.key.length + m.chunk.length
    case MsgType.ACK:
      return 4
    case MsgType.DELETE:
      return 4 + VERSION_BYTES + 2 + m.key.length
    case MsgType.ACKS:
      return 2 + 4 * m.replIds.length
    case MsgType.TICKET_PUB:
      return 4 + X25519_PUBLIC_BYTES + 1 + (4 + SENDER_ID_BYTES) * m.held.length
    case MsgType.TICKET_SEAL:
      return TICKET_SEAL_BYTES
    default:
      throw new ProtocolError('UNKNOWN_OP', `unknown message type ${(m as { type: unknown }).type}`)
  }
}

function writeBodyHead(buf: Buffer, type: number, sentAtMs: number): void {
  buf[0] = type
  buf.writeUInt32BE(Math.floor(sentAtMs / 2 ** 32), 1)
  buf.writeUInt32BE(sentAtMs >>> 0, 5)
}

/** The type code `m` travels with: REPLICATE and DELETE marked awaited go as their AWAITED types. */
function wireType(m: Message): number {
  if (m.type === MsgType.REPLICATE && m.awaited) return MsgType.REPLICATE_AWAITED
  if (m.type === MsgType.DELETE && m.awaited) return MsgType.DELETE_AWAITED
  return m.type
}

export function encodeBody(m: Message, sentAtMs: number): Buffer {
  const buf = Buffer.allocUnsafe(bodyLength(m))
  writeBodyHead(buf, wireType(m), sentAtMs)
  writePayload(buf, BODY_HEAD_BYTES, m)
  return buf
}

/** Bytes of the BATCH body that carries `msgs`. */
export function batchBodyLength(msgs: readonly Message[]): number {
  let n = BATCH_HEAD_BYTES
  for (const m of msgs) n += batchEntryLength(m)
  return n
}

/** Bytes `m` adds to a BATCH. */
export function batchEntryLength(m: Message): number {
  if ((m.type as number) === MsgType.BATCH) throw new ProtocolError('BAD_FIELD', 'a BATCH does not nest')
  return BATCH_ENTRY_HEAD_BYTES + payloadLength(m)
}

/**
 * Where a sender writes the entries of a BATCH it is gathering (writeBatchEntry), from which
 * batchBody or loneBody makes the body without copying: the body head and the count go first.
 */
export const BATCH_HEAD_BYTES = BODY_HEAD_BYTES + 1

/** Writes `m` as a BATCH entry at `off`; returns the offset after it. */
export function writeBatchEntry(buf: Buffer, off: number, m: Message): number {
  if ((m.type as number) === MsgType.BATCH) throw new ProtocolError('BAD_FIELD', 'a BATCH does not nest')
  const len = payloadLength(m)
  buf.writeUInt16BE(len, off)
  buf[off + 2] = wireType(m)
  writePayload(buf, off + BATCH_ENTRY_HEAD_BYTES, m)
  return off + BATCH_ENTRY_HEAD_BYTES + len
}

/**
 * The BATCH body of the `count` entries written into `buf` from BATCH_HEAD_BYTES to `end`: a view
 * of `buf`, whose head it fills in.
 */
export function batchBody(buf: Buffer, end: number, count: number, sentAtMs: number): Buffer {
  if (count === 0 || count > MAX_BATCH_COUNT)
    throw new ProtocolError('BAD_FIELD', `a BATCH carries 1 to ${MAX_BATCH_COUNT} messages, not ${count}`)
  writeBodyHead(buf, MsgType.BATCH, sentAtMs)
  buf[BODY_HEAD_BYTES] = count
  return buf.subarray(0, end)
}

/**
 * The plain body of the one entry written into `buf` from BATCH_HEAD_BYTES to `end`: a message
 * alone travels as itself. The body head is written over the bytes before the entry's payload
 * (the entry's own length and type among them): a view of `buf`.
 */
export function loneBody(buf: Buffer, end: number, sentAtMs: number): Buffer {
  const payloadAt = BATCH_HEAD_BYTES + BATCH_ENTRY_HEAD_BYTES
  const type = buf[payloadAt - 1]!
  writeBodyHead(buf.subarray(payloadAt - BODY_HEAD_BYTES), type, sentAtMs)
  return buf.subarray(payloadAt - BODY_HEAD_BYTES, end)
}

/** The body of a BATCH of 1 to MAX_BATCH_COUNT messages of any type but BATCH. */
export function encodeBatch(msgs: readonly Message[], sentAtMs: number): Buffer {
  if (msgs.length === 0 || msgs.length > MAX_BATCH_COUNT)
    throw new ProtocolError('BAD_FIELD', `a BATCH carries 1 to ${MAX_BATCH_COUNT} messages, not ${msgs.length}`)
  const buf = Buffer.allocUnsafe(batchBodyLength(msgs))
  let off = BATCH_HEAD_BYTES
  for (const m of msgs) off = writeBatchEntry(buf, off, m)
  return batchBody(buf, off, msgs.length, sentAtMs)
}

/** Writes the payload of `m` at `off` (payloadLength(m) bytes). */
function writePayload(buf: Buffer, off: number, m: Message): void {
  switch (m.type) {
    case MsgType.LOOKUP:
      fixedBuffer(m.nonce, NONCE_BYTES, 'LOOKUP nonce')
      buf.writeUInt32BE(m.reqId, off)
      m.nonce.copy(buf, off + 4)
      off = writeAddress(buf, off + 4 + NONCE_BYTES, m.reply)
      if (m.expect.length > 255 || m.expect.some((id) => id.length !== SENDER_ID_BYTES))
        throw new ProtocolError('BAD_FIELD', 'LOOKUP expects at most 255 ids of 8 bytes')
      buf[off++] = m.expect.length
      for (const id of m.expect) off += id.copy(buf, off)
      buf.writeUInt16BE(m.key.length, off)
      m.key.copy(buf, off + 2)
      break
    case MsgType.HIT:
      off = writeBinding(buf, off, m)
      buf.writeUInt32BE(m.ttlMs, off)
      buf.writeUInt32BE(m.flags, off + 4)
      buf.writeUInt32BE(m.totalLen, off + 8)
      buf.writeUInt16BE(m.index, off + 12)
      buf.writeUInt16BE(m.count, off + 14)
      writeVersion(buf, off + 16, m.version)
      m.chunk.copy(buf, off + HIT_HEAD_BYTES)
      break
    case MsgType.MISS:
      writeBinding(buf, off, m)
      break
    case MsgType.INVALIDATE:
      writeVersion(buf, off, m.version)
      buf.writeUInt16BE(m.key.length, off + VERSION_BYTES)
      m.key.copy(buf, off + VERSION_BYTES + 2)
      break
    case MsgType.ANNOUNCE: {
      if (((m.flags & AnnounceFlag.DUAL_STACK) !== 0) !== (m.also !== undefined))
        throw new ProtocolError('BAD_FIELD', 'ANNOUNCE: the DUAL_STACK flag and the second address go together')
      if (m.also && m.also.family === m.reply.family)
        throw new ProtocolError('BAD_FIELD', 'ANNOUNCE: the second address must be of the other family')
      off = writeAddress(buf, off, m.reply)
      buf.writeUInt32BE(m.entries, off)
      buf[off + 4] = m.flags
      const name = Buffer.from(m.name, 'utf8')
      if (name.length > 255) throw new ProtocolError('BAD_FIELD', 'node name longer than 255 bytes')
      buf[off + 5] = name.length
      name.copy(buf, off + 6)
      if (m.also) writeAddress(buf, off + 6 + name.length, m.also)
      break
    }
    case MsgType.LEAVE:
      break
    case MsgType.TICKET_KEY:
      if (m.creator.length !== SENDER_ID_BYTES || m.key.length !== TICKET_KEY_BYTES)
        throw new ProtocolError('BAD_FIELD', 'TICKET_KEY needs an 8-byte creator and a 48-byte key')
      buf.writeUInt32BE(m.epoch, off)
      m.creator.copy(buf, off + 4)
      m.key.copy(buf, off + 4 + SENDER_ID_BYTES)
      break
    case MsgType.REPLICATE:
      buf.writeUInt32BE(m.replId, off)
      buf.writeUInt32BE(m.ttlMs, off + 4)
      buf.writeUInt32BE(m.flags, off + 8)
      buf.writeUInt32BE(m.totalLen, off + 12)
      buf.writeUInt16BE(m.index, off + 16)
      buf.writeUInt16BE(m.count, off + 18)
      writeVersion(buf, off + 20, m.version)
      buf.writeUInt16BE(m.key.length, off + 28)
      m.key.copy(buf, off + REPL_HEAD_BYTES)
      m.chunk.copy(buf, off + REPL_HEAD_BYTES + m.key.length)
      break
    case MsgType.ACK:
      buf.writeUInt32BE(m.replId, off)
      break
    case MsgType.DELETE:
      buf.writeUInt32BE(m.replId, off)
      writeVersion(buf, off + 4, m.version)
      buf.writeUInt16BE(m.key.length, off + 4 + VERSION_BYTES)
      m.key.copy(buf, off + 4 + VERSION_BYTES + 2)
      break
    case MsgType.ACKS:
      if (m.replIds.length === 0 || m.replIds.length > MAX_ACKS)
        throw new ProtocolError('BAD_FIELD', `ACKS carries 1 to ${MAX_ACKS} ids; got ${m.replIds.length}`)
      buf.writeUInt16BE(m.replIds.length, off)
      for (let i = 0; i < m.replIds.length; i++) buf.writeUInt32BE(m.replIds[i]!, off + 2 + 4 * i)
      break
    case MsgType.TICKET_PUB: {
      fixedBuffer(m.pub, X25519_PUBLIC_BYTES, 'TICKET_PUB public key')
      if (m.held.length > MAX_TICKET_HELD)
        throw new ProtocolError('BAD_FIELD', `TICKET_PUB lists at most ${MAX_TICKET_HELD} epochs; got ${m.held.length}`)
      buf.writeUInt32BE(m.period, off)
      m.pub.copy(buf, off + 4)
      buf[off + 4 + X25519_PUBLIC_BYTES] = m.held.length
      let at = off + 5 + X25519_PUBLIC_BYTES
      for (const h of m.held) {
        fixedBuffer(h.holder, SENDER_ID_BYTES, 'TICKET_PUB holder id')
        buf.writeUInt32BE(h.epoch, at)
        h.holder.copy(buf, at + 4)
        at += 4 + SENDER_ID_BYTES
      }
      break
    }
    case MsgType.TICKET_SEAL:
      fixedBuffer(m.sealerPub, X25519_PUBLIC_BYTES, 'TICKET_SEAL sealer public key')
      fixedBuffer(m.recipientPub, X25519_PUBLIC_BYTES, 'TICKET_SEAL recipient public key')
      fixedBuffer(m.nonce, TICKET_SEAL_NONCE_BYTES, 'TICKET_SEAL nonce')
      fixedBuffer(m.sealed, TICKET_KEY_BYTES, 'TICKET_SEAL sealed secret')
      fixedBuffer(m.tag, TICKET_SEAL_TAG_BYTES, 'TICKET_SEAL tag')
      buf.writeUInt32BE(m.epoch, off)
      m.sealerPub.copy(buf, off + 4)
      m.recipientPub.copy(buf, off + 4 + X25519_PUBLIC_BYTES)
      m.nonce.copy(buf, off + 4 + 2 * X25519_PUBLIC_BYTES)
      m.sealed.copy(buf, off + 4 + 2 * X25519_PUBLIC_BYTES + TICKET_SEAL_NONCE_BYTES)
      m.tag.copy(buf, off + 4 + 2 * X25519_PUBLIC_BYTES + TICKET_SEAL_NONCE_BYTES + TICKET_KEY_BYTES)
      break
    default:
      throw new ProtocolError('UNKNOWN_OP', `unknown message type ${(m as { type: unknown }).type}`)
  }
}

function writeBinding(buf: Buffer, off: number, m: { type: number; reqId: number; nonce: Buffer; digest: Buffer }): number {
  fixedBuffer(m.nonce, NONCE_BYTES, `${typeName(m.type)} nonce`)
  fixedBuffer(m.digest, KEY_DIGEST_BYTES, `${typeName(m.type)} key digest`)
  buf.writeUInt32BE(m.reqId, off)
  m.nonce.copy(buf, off + 4)
  m.digest.copy(buf, off + 4 + NONCE_BYTES)
  return off + BINDING_BYTES
}

function readBinding(p: Buffer): { reqId: number; nonce: Buffer; digest: Buffer } {
  return { reqId: p.readUInt32BE(0), nonce: p.subarray(4, 4 + NONCE_BYTES), digest: p.subarray(4 + NONCE_BYTES, BINDING_BYTES) }
}

function keyAt(buf: Buffer, off: number, what: string): Buffer {
  needBytes(buf.length - off, 2, `${what} key length`)
  const len = buf.readUInt16BE(off)
  if (len === 0) throw new ProtocolError('BAD_FIELD', `${what} with an empty key`)
  if (buf.length - off - 2 !== len)
    throw new ProtocolError(
      buf.length - off - 2 < len ? 'TRUNCATED' : 'TRAILING',
      `${what} key length ${len} does not match the ${buf.length - off - 2} bytes present`,
    )
  return buf.subarray(off + 2)
}

function exactly(buf: Buffer, len: number, what: string): void {
  needBytes(buf.length, len, what)
  if (buf.length !== len) throw new ProtocolError('TRAILING', `${what}: ${buf.length - len} bytes too many`)
}

function readBodyHead(buf: Buffer): { type: number; sentAtMs: number } {
  needBytes(buf.length, BODY_HEAD_BYTES, 'body header')
  return { type: buf[0]!, sentAtMs: buf.readUInt32BE(1) * 2 ** 32 + buf.readUInt32BE(5) }
}

/**
 * Decodes a plaintext body of one message (not a BATCH: decodeBatch, or decodeMessages for
 * either). Buffers in the result are views into `buf`. Throws ProtocolError only.
 */
export function decodeBody(buf: Buffer): { sentAtMs: number; msg: Message } {
  const { type, sentAtMs } = readBodyHead(buf)
  if (type === MsgType.BATCH) throw new ProtocolError('UNKNOWN_OP', 'a BATCH body holds several messages: decodeBatch reads it')
  return { sentAtMs, msg: decodePayload(type, buf.subarray(BODY_HEAD_BYTES)) }
}

/**
 * Decodes any plaintext body, a BATCH or one message, into its messages in order (what a
 * receiver does with every datagram). Throws ProtocolError only.
 */
export function decodeMessages(buf: Buffer): { sentAtMs: number; msgs: Message[] } {
  if (buf[0] === MsgType.BATCH) return decodeBatch(buf)
  const { sentAtMs, msg } = decodeBody(buf)
  return { sentAtMs, msgs: [msg] }
}

/** Decodes a BATCH body into its messages, in order. Throws ProtocolError only. */
export function decodeBatch(buf: Buffer): { sentAtMs: number; msgs: Message[] } {
  const { type, sentAtMs } = readBodyHead(buf)
  if (type !== MsgType.BATCH) throw new ProtocolError('UNKNOWN_OP', `message type ${type} is not a BATCH`)
  needBytes(buf.length - BODY_HEAD_BYTES, 1, 'BATCH count')
  const count = buf[BODY_HEAD_BYTES]!
  if (count === 0) throw new ProtocolError('BAD_FIELD', 'an empty BATCH')
  const msgs: Message[] = []
  let off = BATCH_HEAD_BYTES
  for (let i = 0; i < count; i++) {
    needBytes(buf.length - off, BATCH_ENTRY_HEAD_BYTES, `BATCH entry ${i}`)
    const len = buf.readUInt16BE(off)
    const inner = buf[off + 2]!
    if (inner === MsgType.BATCH) throw new ProtocolError('BAD_FIELD', 'a BATCH inside a BATCH')
    off += BATCH_ENTRY_HEAD_BYTES
    needBytes(buf.length - off, len, `BATCH entry ${i}`)
    msgs.push(decodePayload(inner, buf.subarray(off, off + len)))
    off += len
  }
  if (off !== buf.length) throw new ProtocolError('TRAILING', `BATCH: ${buf.length - off} bytes after its ${count} messages`)
  return { sentAtMs, msgs }
}

/** Decodes the payload `p` of a message of `type` (the whole of `p` is the payload). */
function decodePayload(type: number, p: Buffer): Message {
  switch (type) {
    case MsgType.LOOKUP: {
      needBytes(p.length, 4 + NONCE_BYTES, 'LOOKUP')
      const { n } = u32.parse(p) as { n: number }
      const nonce = p.subarray(4, 4 + NONCE_BYTES)
      const [reply, at] = readAddress(p, 4 + NONCE_BYTES)
      needBytes(p.length - at, 1, 'LOOKUP expect count')
      const count = p[at]!
      needBytes(p.length - at - 1, SENDER_ID_BYTES * count, 'LOOKUP expected ids')
      const expect: Buffer[] = []
      for (let i = 0; i < count; i++) expect.push(p.subarray(at + 1 + i * SENDER_ID_BYTES, at + 1 + (i + 1) * SENDER_ID_BYTES))
      return { type: MsgType.LOOKUP, reqId: n, nonce, reply, expect, key: keyAt(p, at + 1 + SENDER_ID_BYTES * count, 'LOOKUP') }
    }
    case MsgType.HIT: {
      needBytes(p.length, BINDING_BYTES + HIT_HEAD_BYTES, 'HIT')
      const f = hitHead.parse(p.subarray(BINDING_BYTES)) as {
        ttlMs: number
        flags: number
        totalLen: number
        index: number
        count: number
        version: bigint
      }
      const chunk = p.subarray(BINDING_BYTES + HIT_HEAD_BYTES)
      checkChunking('HIT', f.totalLen, f.index, f.count, chunk.length)
      return { type: MsgType.HIT, ...readBinding(p), ...f, chunk }
    }
    case MsgType.MISS: {
      exactly(p, BINDING_BYTES, 'MISS')
      return { type: MsgType.MISS, ...readBinding(p) }
    }
    case MsgType.INVALIDATE:
      needBytes(p.length, VERSION_BYTES, 'INVALIDATE')
      return { type: MsgType.INVALIDATE, version: p.readBigUInt64BE(0), key: keyAt(p, VERSION_BYTES, 'INVALIDATE') }
    case MsgType.ANNOUNCE: {
      const [reply, off] = readAddress(p, 0)
      needBytes(p.length - off, 6, 'ANNOUNCE')
      const entries = p.readUInt32BE(off)
      const flags = p[off + 4]!
      const nameLen = p[off + 5]!
      if (!(flags & AnnounceFlag.DUAL_STACK)) {
        exactly(p.subarray(off + 6), nameLen, 'ANNOUNCE name')
        return { type: MsgType.ANNOUNCE, reply, entries, flags, name: p.subarray(off + 6).toString('utf8') }
      }
      needBytes(p.length - off - 6, nameLen, 'ANNOUNCE name')
      const [also, end] = readAddress(p, off + 6 + nameLen)
      exactly(p.subarray(end), 0, 'ANNOUNCE')
      if (also.family === reply.family) throw new ProtocolError('BAD_FIELD', 'ANNOUNCE: the second address must be of the other family')
      return { type: MsgType.ANNOUNCE, reply, entries, flags, name: p.subarray(off + 6, off + 6 + nameLen).toString('utf8'), also }
    }
    case MsgType.LEAVE:
      exactly(p, 0, 'LEAVE')
      return { type: MsgType.LEAVE }
    case MsgType.TICKET_KEY:
      exactly(p, 4 + SENDER_ID_BYTES + TICKET_KEY_BYTES, 'TICKET_KEY')
      return {
        type: MsgType.TICKET_KEY,
        epoch: p.readUInt32BE(0),
        creator: p.subarray(4, 4 + SENDER_ID_BYTES),
        key: p.subarray(4 + SENDER_ID_BYTES),
      }
    case MsgType.REPLICATE:
    case MsgType.REPLICATE_AWAITED: {
      needBytes(p.length, REPL_HEAD_BYTES, 'REPLICATE')
      const f = replHead.parse(p) as {
        replId: number
        ttlMs: number
        flags: number
        totalLen: number
        index: number
        count: number
        version: bigint
        keyLen: number
      }
      if (f.keyLen === 0) throw new ProtocolError('BAD_FIELD', 'REPLICATE with an empty key')
      needBytes(p.length, REPL_HEAD_BYTES + f.keyLen, 'REPLICATE key')
      const chunk = p.subarray(REPL_HEAD_BYTES + f.keyLen)
      checkChunking('REPLICATE', f.totalLen, f.index, f.count, chunk.length)
      const { keyLen: _k, ...rest } = f
      const key = p.subarray(REPL_HEAD_BYTES, REPL_HEAD_BYTES + f.keyLen)
      return { type: MsgType.REPLICATE, ...rest, key, chunk, ...(type === MsgType.REPLICATE_AWAITED ? { awaited: true } : {}) }
    }
    case MsgType.ACK:
      exactly(p, 4, 'ACK')
      return { type: MsgType.ACK, replId: p.readUInt32BE(0) }
    case MsgType.DELETE:
    case MsgType.DELETE_AWAITED:
      needBytes(p.length, 4 + VERSION_BYTES, 'DELETE')
      return {
        type: MsgType.DELETE,
        replId: p.readUInt32BE(0),
        version: p.readBigUInt64BE(4),
        key: keyAt(p, 4 + VERSION_BYTES, 'DELETE'),
        ...(type === MsgType.DELETE_AWAITED ? { awaited: true } : {}),
      }
    case MsgType.ACKS: {
      needBytes(p.length, 2, 'ACKS count')
      const count = p.readUInt16BE(0)
      if (count === 0) throw new ProtocolError('BAD_FIELD', 'ACKS with no ids')
      exactly(p.subarray(2), 4 * count, `ACKS of ${count} ids`)
      const replIds: number[] = new Array(count)
      for (let i = 0; i < count; i++) replIds[i] = p.readUInt32BE(2 + 4 * i)
      return { type: MsgType.ACKS, replIds }
    }
    case MsgType.TICKET_PUB: {
      needBytes(p.length, 5 + X25519_PUBLIC_BYTES, 'TICKET_PUB')
      const count = p[4 + X25519_PUBLIC_BYTES]!
      if (count > MAX_TICKET_HELD) throw new ProtocolError('BAD_FIELD', `TICKET_PUB lists at most ${MAX_TICKET_HELD} epochs, got ${count}`)
      exactly(p.subarray(5 + X25519_PUBLIC_BYTES), (4 + SENDER_ID_BYTES) * count, `TICKET_PUB of ${count} epochs`)
      const held: { epoch: number; holder: Buffer }[] = []
      for (let i = 0, at = 5 + X25519_PUBLIC_BYTES; i < count; i++, at += 4 + SENDER_ID_BYTES)
        held.push({ epoch: p.readUInt32BE(at), holder: p.subarray(at + 4, at + 4 + SENDER_ID_BYTES) })
      return { type: MsgType.TICKET_PUB, period: p.readUInt32BE(0), pub: p.subarray(4, 4 + X25519_PUBLIC_BYTES), held }
    }
    case MsgType.TICKET_SEAL: {
      exactly(p, TICKET_SEAL_BYTES, 'TICKET_SEAL')
      const a = 4 + 2 * X25519_PUBLIC_BYTES
      return {
        type: MsgType.TICKET_SEAL,
        epoch: p.readUInt32BE(0),
        sealerPub: p.subarray(4, 4 + X25519_PUBLIC_BYTES),
        recipientPub: p.subarray(4 + X25519_PUBLIC_BYTES, a),
        nonce: p.subarray(a, a + TICKET_SEAL_NONCE_BYTES),
        sealed: p.subarray(a + TICKET_SEAL_NONCE_BYTES, a + TICKET_SEAL_NONCE_BYTES + TICKET_KEY_BYTES),
        tag: p.subarray(a + TICKET_SEAL_NONCE_BYTES + TICKET_KEY_BYTES),
      }
    }
    default:
      throw new ProtocolError('UNKNOWN_OP', `unknown message type ${type}`)
  }
}

// ---- the sealing envelope ----

const HKDF_INFO = Buffer.from('statecast/1 datagram')

/** Bytes of the datagram that carries `m`: clear header, sealed body, tag. */
export function datagramLength(m: Message): number {
  return HEADER_BYTES + bodyLength(m) + TAG_BYTES
}
const MAX_SUBKEYS = 4096

/**
 * The cluster keys, with a bounded cache of per-sender subkeys. Only subkeys that opened a datagram
 * (or our own) are cached, so forged sender ids cannot flush the cache.
 */
export class Keyring {
  readonly keys: ReadonlyMap<number, ClusterKey>
  #subkeys = new BoundedMap<string, Buffer>(MAX_SUBKEYS)

  constructor(keys: readonly ClusterKey[]) {
    this.keys = new Map(keys.map((k) => [k.id, k]))
  }

  /**
   * The subkey of `senderId` under key `keyId` (undefined: no such key), and the name it is
   * cached under when it is not cached yet: pass that to `remember` once the subkey proved good.
   * Named once per datagram: seal and open run for every one.
   */
  subkey(keyId: number, senderId: Buffer): { subkey: Buffer; uncached?: string } | undefined {
    const ck = this.keys.get(keyId)
    if (!ck) return undefined
    const cacheKey = `${keyId}:${senderId.toString('hex')}`
    const hit = this.#subkeys.get(cacheKey)
    if (hit) return { subkey: hit }
    return { subkey: Buffer.from(crypto.hkdfSync('sha256', ck.key, senderId, HKDF_INFO, 32)), uncached: cacheKey }
  }

  /** Caches a subkey `subkey` returned as uncached, under the name it gave. */
  remember(cacheKey: string, subkey: Buffer): void {
    this.#subkeys.set(cacheKey, subkey)
  }
}

/** One nonce buffer for every seal and open: the cipher copies its IV when it is made. */
const scratchNonce = Buffer.alloc(12)

function nonceFor(counter: number): Buffer {
  scratchNonce.writeUInt32BE(Math.floor(counter / 2 ** 32), 4)
  scratchNonce.writeUInt32BE(counter >>> 0, 8)
  return scratchNonce
}

/** Seals a plaintext body into a datagram for `receiverId` (NO_RECEIVER: the group). */
export function seal(
  ring: Keyring,
  keyId: number,
  senderId: Buffer,
  counter: number,
  body: Buffer,
  receiverId: Buffer = NO_RECEIVER,
): Buffer {
  if (receiverId.length !== SENDER_ID_BYTES) throw new ProtocolError('BAD_FIELD', `a receiver id is ${SENDER_ID_BYTES} bytes`)
  const found = ring.subkey(keyId, senderId)
  if (!found) throw new ProtocolError('UNKNOWN_KEY', `no key with id ${keyId.toString(16)}`)
  const { subkey, uncached } = found
  if (uncached !== undefined) ring.remember(uncached, subkey)
  const out = Buffer.allocUnsafe(HEADER_BYTES + body.length + TAG_BYTES)
  writeHeader(out, { keyId, senderId, counter, receiverId })
  const c = crypto.createCipheriv('aes-256-gcm', subkey, nonceFor(counter))
  c.setAAD(out.subarray(0, HEADER_BYTES))
  const n1 = c.update(body).copy(out, HEADER_BYTES)
  c.final()
  c.getAuthTag().copy(out, HEADER_BYTES + n1)
  return out
}

/** Largest datagram counter: counters stay exact as numbers (a sender would need 2^53 datagrams). */
export const MAX_COUNTER = 2 ** 53 - 1

/**
 * Writes the clear header of `h` at the start of `buf` (HEADER_BYTES). Throws ProtocolError
 * (BAD_FIELD) for ids of the wrong size or a counter outside 0..MAX_COUNTER.
 */
export function writeHeader(buf: Buffer, h: Header): void {
  if (h.senderId.length !== SENDER_ID_BYTES || h.receiverId.length !== SENDER_ID_BYTES)
    throw new ProtocolError('BAD_FIELD', `sender and receiver ids are ${SENDER_ID_BYTES} bytes`)
  if (!Number.isSafeInteger(h.counter) || h.counter < 0) throw new ProtocolError('BAD_FIELD', 'datagram counter out of range')
  buf.writeUInt32BE(MAGIC, 0)
  buf[4] = VERSION
  buf[5] = 0
  buf.writeUInt32BE(h.keyId, 6)
  h.senderId.copy(buf, 10)
  buf.writeUInt32BE(Math.floor(h.counter / 2 ** 32), 18)
  buf.writeUInt32BE(h.counter >>> 0, 22)
  h.receiverId.copy(buf, 26)
}

/** The clear header of `h` on its own (what readHeader reads back from a datagram's first bytes). */
export function encodeHeader(h: Header): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_BYTES)
  writeHeader(buf, h)
  return buf
}

/**
 * Reads the clear header without opening: what a receiver peeks at before it spends a decryption
 * (its own datagrams looped back, second copies, datagrams for another receiver). Nothing in it is
 * authenticated until `open` succeeds. Throws ProtocolError only.
 */
export function readHeader(dgram: Buffer): Header {
  needBytes(dgram.length, HEADER_BYTES + TAG_BYTES, 'datagram')
  if (dgram.readUInt32BE(0) !== MAGIC) throw new ProtocolError('BAD_MAGIC', 'not a statecast datagram')
  if (dgram[4] !== VERSION) throw new ProtocolError('BAD_VERSION', `protocol version ${dgram[4]}, this daemon speaks ${VERSION}`)
  const ctrHi = dgram.readUInt32BE(18)
  // Counters stay below 2^53 so they are exact as numbers (a sender would need 2^53 datagrams).
  if (ctrHi >= 2 ** 21) throw new ProtocolError('BAD_FIELD', 'datagram counter out of range')
  // The ids are views, not copies: read on every datagram, kept by none beyond it.
  return {
    keyId: dgram.readUInt32BE(6),
    senderId: dgram.subarray(10, 18),
    counter: ctrHi * 2 ** 32 + dgram.readUInt32BE(22),
    receiverId: dgram.subarray(26, 34),
  }
}

/**
 * Authenticates and decrypts a datagram. `header` is its readHeader, when the caller already
 * peeked at it. Throws ProtocolError (UNKNOWN_KEY, OPEN_FAILED, ...) only.
 */
export function open(ring: Keyring, dgram: Buffer, header: Header = readHeader(dgram)): { header: Header; body: Buffer } {
  const found = ring.subkey(header.keyId, header.senderId)
  if (!found)
    throw new ProtocolError(
      'UNKNOWN_KEY',
      `sealed with key id ${header.keyId.toString(16).padStart(8, '0')}, which this daemon does not hold`,
    )
  const d = crypto.createDecipheriv('aes-256-gcm', found.subkey, nonceFor(header.counter))
  d.setAAD(dgram.subarray(0, HEADER_BYTES))
  d.setAuthTag(dgram.subarray(dgram.length - TAG_BYTES))
  const body = d.update(dgram.subarray(HEADER_BYTES, dgram.length - TAG_BYTES))
  try {
    d.final()
  } catch {
    throw new ProtocolError('OPEN_FAILED', 'datagram failed authentication')
  }
  if (found.uncached !== undefined) ring.remember(found.uncached, found.subkey)
  return { header, body }
}
