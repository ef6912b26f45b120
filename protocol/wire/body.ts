/**
 * Plaintext bodies: one message, or a BATCH of several.
 *
 *   body        type u8 | sentAtMs u64 (Unix ms) | payload
 *   BATCH body  type u8 (BATCH) | sentAtMs u64 | count u8 | count x (len u16 | type u8 | payload (len bytes))
 *
 * The payload of each type is its record's in messages.ts.
 */
import { ProtocolError, needBytes } from '../errors.js'
import { BODY_HEAD_BYTES, HEADER_BYTES, MAX_BATCH_COUNT, MsgType, TAG_BYTES, U16, U32, U8 } from './constants.js'
import { type Message, decodePayload, payloadLength, writePayload } from './messages.js'

/** Offsets in a body head: type u8 | sentAtMs u64 (as two u32, high first). */
const BODY_TYPE = 0
const BODY_SENT_HI = BODY_TYPE + U8
const BODY_SENT_LO = BODY_SENT_HI + U32

/** Offset of a BATCH's count, after its body head. */
const BATCH_COUNT = BODY_HEAD_BYTES
/**
 * Where a sender writes the entries of a BATCH it is gathering (writeBatchEntry), from which
 * batchBody or loneBody makes the body without copying: the body head and the count go first.
 */
export const BATCH_HEAD_BYTES = BATCH_COUNT + U8
/** Bytes of a BATCH datagram besides its entries: the envelope and the count. */
export const BATCH_OVERHEAD_BYTES = HEADER_BYTES + TAG_BYTES + BATCH_HEAD_BYTES

/** Offsets in a BATCH entry's head: len u16 | type u8. */
const ENTRY_LEN = 0
const ENTRY_TYPE = ENTRY_LEN + U16
/** Bytes an entry of a BATCH spends besides its payload: length and type. */
const BATCH_ENTRY_HEAD_BYTES = ENTRY_TYPE + U8

function writeBodyHead(buf: Buffer, type: number, sentAtMs: number): void {
  buf[BODY_TYPE] = type
  buf.writeUInt32BE(Math.floor(sentAtMs / 2 ** 32), BODY_SENT_HI)
  buf.writeUInt32BE(sentAtMs >>> 0, BODY_SENT_LO)
}

function readBodyHead(buf: Buffer): { type: number; sentAtMs: number } {
  needBytes(buf.length, BODY_HEAD_BYTES, 'body header')
  return { type: buf[BODY_TYPE]!, sentAtMs: buf.readUInt32BE(BODY_SENT_HI) * 2 ** 32 + buf.readUInt32BE(BODY_SENT_LO) }
}

/** Plaintext length of a message's body. */
export function bodyLength(m: Message): number {
  return BODY_HEAD_BYTES + payloadLength(m)
}

export function encodeBody(m: Message, sentAtMs: number): Buffer {
  const buf = Buffer.allocUnsafe(bodyLength(m))
  writeBodyHead(buf, m.type, sentAtMs)
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

/** Writes `m` as a BATCH entry at `off`; returns the offset after it. */
export function writeBatchEntry(buf: Buffer, off: number, m: Message): number {
  if ((m.type as number) === MsgType.BATCH) throw new ProtocolError('BAD_FIELD', 'a BATCH does not nest')
  const len = payloadLength(m)
  buf.writeUInt16BE(len, off + ENTRY_LEN)
  buf[off + ENTRY_TYPE] = m.type
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
  buf[BATCH_COUNT] = count
  return buf.subarray(0, end)
}

/**
 * The plain body of the one entry written into `buf` from BATCH_HEAD_BYTES to `end`: a message
 * alone travels as itself. The body head is written over the bytes before the entry's payload
 * (the entry's own length and type among them): a view of `buf`.
 */
export function loneBody(buf: Buffer, end: number, sentAtMs: number): Buffer {
  const payloadAt = BATCH_HEAD_BYTES + BATCH_ENTRY_HEAD_BYTES
  const type = buf[BATCH_HEAD_BYTES + ENTRY_TYPE]!
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
  if (buf[BODY_TYPE] === MsgType.BATCH) return decodeBatch(buf)
  const { sentAtMs, msg } = decodeBody(buf)
  return { sentAtMs, msgs: [msg] }
}

/** Decodes a BATCH body into its messages, in order. Throws ProtocolError only. */
export function decodeBatch(buf: Buffer): { sentAtMs: number; msgs: Message[] } {
  const { type, sentAtMs } = readBodyHead(buf)
  if (type !== MsgType.BATCH) throw new ProtocolError('UNKNOWN_OP', `message type ${type} is not a BATCH`)
  needBytes(buf.length - BODY_HEAD_BYTES, U8, 'BATCH count')
  const count = buf[BATCH_COUNT]!
  if (count === 0) throw new ProtocolError('BAD_FIELD', 'an empty BATCH')
  const msgs: Message[] = []
  let off = BATCH_HEAD_BYTES
  for (let i = 0; i < count; i++) {
    needBytes(buf.length - off, BATCH_ENTRY_HEAD_BYTES, `BATCH entry ${i}`)
    const len = buf.readUInt16BE(off + ENTRY_LEN)
    const inner = buf[off + ENTRY_TYPE]!
    if (inner === MsgType.BATCH) throw new ProtocolError('BAD_FIELD', 'a BATCH inside a BATCH')
    off += BATCH_ENTRY_HEAD_BYTES
    needBytes(buf.length - off, len, `BATCH entry ${i}`)
    msgs.push(decodePayload(inner, buf.subarray(off, off + len)))
    off += len
  }
  if (off !== buf.length) throw new ProtocolError('TRAILING', `BATCH: ${buf.length - off} bytes after its ${count} messages`)
  return { sentAtMs, msgs }
}
