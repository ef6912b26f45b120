/**
 * The local API: length-prefixed binary frames on the daemon's Unix stream socket.
 *
 * Every frame, request or reply, starts with the same 10-byte header:
 *
 *    0          4      5         6           10
 *   +----------+------+---------+-----------+------------------------+
 *   | len u32  | op u8| flags u8| id u32    | body (len - 6 bytes)   |
 *   +----------+------+---------+-----------+------------------------+
 *
 * `len` counts the bytes after itself, so a frame is 4 + len bytes. All integers are big-endian.
 * `id` is chosen by the client and echoed in the reply, so many requests may be in flight on one
 * connection and replies may come back in any order (pipelining).
 *
 * Request bodies (op < 0x80):
 *   PING    empty
 *   GET     key                                         (key = rest of the frame)
 *   SET     ttlMs u32 | keyLen u16 | key | value        (value = rest of the frame)
 *   DELETE  key
 *   TOUCH   ttlMs u32 | key
 *   STATS   empty
 *   KEYS    limit u32 | prefix                          (admin socket only)
 *   FLUSH   empty                                       (admin socket only)
 *   PEERS   empty
 *   TICKET_KEY empty                                    (Node's ticket key: the "node" consumer's)
 *   TICKET_WINDOW empty                                 (retired: always DENIED; the epoch secrets
 *                                                        never leave the daemon)
 *   CONSUMER_KEYS formatLen u8 | format | name          (one consumer's derived ticket keys, if
 *                                                        this socket may read that consumer)
 * ttlMs 0 means "the daemon's default TTL".
 *
 * Replies carry op | 0x80 and start their body with a status byte:
 *   status u8 | rest
 *   GET OK:              remainingTtlMs u32 | value
 *   TICKET_KEY OK:       epoch u32 | remainingMs u32 | key (48 bytes: name 16 | HMAC 16 | AES 16)
 *   CONSUMER_KEYS OK:    epoch u32 | rotationMs u32 | count u8 |
 *                        count x (slot u8 | real u8 | epoch u32 | name 16 | aesLen u8 | aes |
 *                                 hmacLen u8 | hmac)
 *                        (slot 0 previous, 1 current, 2 next; real 0: a filler for an epoch with
 *                        no secret yet, which never encrypts)
 *   TICKET_WINDOW OK:    epoch u32 | rotationMs u32 | count u8 | count x (epoch u32 | secret 48)
 *   STATS/KEYS/PEERS OK: a UTF-8 JSON document
 *   error statuses:      a UTF-8 message for people (never parsed by programs: branch on status)
 *   anything else:       empty
 *
 * The numbers below are the protocol: append only, never renumber.
 */
import { Parser } from 'binary-parser'
import { TICKET_SECRET_BYTES } from './wire/constants.js'
import { ProtocolError, needBytes } from './errors.js'
import { U32_MAX } from './ids.js'
import { namer } from './tables.js'

export const HEADER_BYTES = 10
/** Bytes before the body of a reply: the header and the status byte. */
export const REPLY_HEADER_BYTES = HEADER_BYTES + 1
export const REPLY_BIT = 0x80
/** Keys are at most this many bytes (memcached's limit, so the memcache front end can share it). */
export const MAX_KEY_BYTES = 250

export const Op = {
  PING: 1,
  GET: 2,
  SET: 3,
  DELETE: 4,
  TOUCH: 5,
  STATS: 6,
  KEYS: 7,
  FLUSH: 8,
  PEERS: 9,
  TICKET_KEY: 10,
  TICKET_WINDOW: 11,
  CONSUMER_KEYS: 16,
} as const
export type OpCode = (typeof Op)[keyof typeof Op]
export const opName = namer(Op, 'op')

export const Status = {
  OK: 0,
  NOT_FOUND: 1,
  MALFORMED: 2,
  TOO_LARGE: 3,
  UNKNOWN_OP: 4,
  BAD_KEY: 5,
  BUSY: 6,
  INTERNAL: 7,
  SHUTTING_DOWN: 8,
  DENIED: 9,
  BAD_TTL: 10,
} as const
export type StatusCode = (typeof Status)[keyof typeof Status]
export const statusName = namer(Status, 'status')

/** Request flags. */
export const ReqFlag = {
  /** GET: answer from this host's store only, never ask the peers. */
  LOCAL_ONLY: 0x01,
  /** SET/DELETE/TOUCH: do not replicate or invalidate on peers (used by handoff and tests). */
  NO_PROPAGATE: 0x02,
} as const
/** Reply flags. */
export const ReplyFlag = {
  /** GET OK: the value was fetched from a peer, not found in the local store. */
  REMOTE: 0x01,
} as const
const REQ_FLAGS_MASK = ReqFlag.LOCAL_ONLY | ReqFlag.NO_PROPAGATE

/** A request's flags byte, spelled out. */
export interface RequestFlags {
  /** GET: answer from this host's store only (LOCAL_ONLY). */
  localOnly: boolean
  /** SET/DELETE: no copies or invalidations to peers (NO_PROPAGATE). */
  noPropagate: boolean
}

/** The flags byte of a request; absent options are off. */
export function encodeRequestFlags(f: Partial<RequestFlags>): number {
  return (f.localOnly ? ReqFlag.LOCAL_ONLY : 0) | (f.noPropagate ? ReqFlag.NO_PROPAGATE : 0)
}

function checkRequestFlags(flags: number): void {
  if (!Number.isInteger(flags) || flags < 0 || flags > 0xff || flags & ~REQ_FLAGS_MASK)
    throw new ProtocolError('BAD_FIELD', `unknown request flags 0x${flags.toString(16)}`)
}

/** A request's flags byte spelled out. Throws ProtocolError (BAD_FIELD) for a bit not in ReqFlag. */
export function decodeRequestFlags(flags: number): RequestFlags {
  checkRequestFlags(flags)
  return { localOnly: (flags & ReqFlag.LOCAL_ONLY) !== 0, noPropagate: (flags & ReqFlag.NO_PROPAGATE) !== 0 }
}

interface Base {
  id: number
  flags: number
}
export type Request =
  | (Base & { op: typeof Op.PING })
  | (Base & { op: typeof Op.GET; key: Buffer })
  | (Base & { op: typeof Op.SET; key: Buffer; value: Buffer; ttlMs: number })
  | (Base & { op: typeof Op.DELETE; key: Buffer })
  | (Base & { op: typeof Op.TOUCH; key: Buffer; ttlMs: number })
  | (Base & { op: typeof Op.STATS })
  | (Base & { op: typeof Op.KEYS; prefix: Buffer; limit: number })
  | (Base & { op: typeof Op.FLUSH })
  | (Base & { op: typeof Op.PEERS })
  | (Base & { op: typeof Op.TICKET_KEY })
  | (Base & { op: typeof Op.TICKET_WINDOW })
  | (Base & { op: typeof Op.CONSUMER_KEYS; format: string; consumer: string })

/** A reply. `op` is the request's op (without the reply bit); `body` follows the status byte. */
export interface Reply {
  op: number
  id: number
  flags: number
  status: number
  body: Buffer
}

const EMPTY = Buffer.alloc(0)

// binary-parser reads the fixed fields; every variable-length part is checked against the bytes
// present before it is sliced, because binary-parser returns a short buffer instead of failing.
const headerParser = new Parser().uint32be('len').uint8('op').uint8('flags').uint32be('id')
const ttlKeyLenParser = new Parser().uint32be('ttlMs').uint16be('keyLen')
const u32Parser = new Parser().uint32be('n')

interface Header {
  len: number
  op: number
  flags: number
  id: number
}

function parseHeader(frame: Buffer): Header {
  needBytes(frame.length, HEADER_BYTES, 'frame header')
  const h = headerParser.parse(frame) as Header
  if (h.len !== frame.length - 4) {
    throw new ProtocolError(
      h.len > frame.length - 4 ? 'TRUNCATED' : 'TRAILING',
      `frame length field says ${h.len} bytes, frame holds ${frame.length - 4}`,
    )
  }
  return h
}

/**
 * Why a well-framed key is unusable, or undefined when it is fine. Not a decode error: the frame
 * is intact, so the server answers BAD_KEY and keeps the connection.
 */
export function keyProblem(key: Buffer, maxKeyBytes = MAX_KEY_BYTES): string | undefined {
  if (key.length === 0) return 'key is empty'
  if (key.length > maxKeyBytes) return `key is ${key.length} bytes, at most ${maxKeyBytes}`
  return undefined
}

/** Bytes the encoded request occupies, length prefix included. */
export function requestLength(req: Request): number {
  switch (req.op) {
    case Op.PING:
    case Op.STATS:
    case Op.FLUSH:
    case Op.PEERS:
    case Op.TICKET_KEY:
    case Op.TICKET_WINDOW:
      return HEADER_BYTES
    case Op.GET:
    case Op.DELETE:
      return HEADER_BYTES + req.key.length
    case Op.SET:
      return HEADER_BYTES + 6 + req.key.length + req.value.length
    case Op.TOUCH:
      return HEADER_BYTES + 4 + req.key.length
    case Op.KEYS:
      return HEADER_BYTES + 4 + req.prefix.length
    case Op.CONSUMER_KEYS:
      return HEADER_BYTES + 1 + Buffer.byteLength(req.format, 'latin1') + Buffer.byteLength(req.consumer, 'latin1')
  }
}

function writeHeader(buf: Buffer, total: number, op: number, flags: number, id: number): void {
  buf.writeUInt32BE(total - 4, 0)
  buf[4] = op
  buf[5] = flags
  buf.writeUInt32BE(id >>> 0, 6)
}

/**
 * The op (without the reply bit) and id of a frame that may not decode, for the error reply that
 * answers it: 0 for whatever the frame is too short to hold. Never throws.
 */
export function peekRequestHeader(frame: Buffer): { op: number; id: number } {
  const op = frame.length > 4 ? frame[4]! & ~REPLY_BIT : 0
  const id = frame.length >= HEADER_BYTES ? frame.readUInt32BE(6) : 0
  return { op, id }
}

/** Encodes a request into one freshly allocated frame. */
export function encodeRequest(req: Request): Buffer {
  const total = requestLength(req)
  const buf = Buffer.allocUnsafe(total)
  writeHeader(buf, total, req.op, req.flags, req.id)
  switch (req.op) {
    case Op.GET:
    case Op.DELETE:
      req.key.copy(buf, HEADER_BYTES)
      break
    case Op.SET:
      buf.writeUInt32BE(req.ttlMs, HEADER_BYTES)
      buf.writeUInt16BE(req.key.length, HEADER_BYTES + 4)
      req.key.copy(buf, HEADER_BYTES + 6)
      req.value.copy(buf, HEADER_BYTES + 6 + req.key.length)
      break
    case Op.TOUCH:
      buf.writeUInt32BE(req.ttlMs, HEADER_BYTES)
      req.key.copy(buf, HEADER_BYTES + 4)
      break
    case Op.KEYS:
      buf.writeUInt32BE(req.limit, HEADER_BYTES)
      req.prefix.copy(buf, HEADER_BYTES + 4)
      break
    case Op.CONSUMER_KEYS: {
      const f = Buffer.byteLength(req.format, 'latin1')
      if (f > 255) throw new ProtocolError('BAD_FIELD', 'CONSUMER_KEYS format longer than 255 bytes')
      buf[HEADER_BYTES] = f
      buf.write(req.format, HEADER_BYTES + 1, 'latin1')
      buf.write(req.consumer, HEADER_BYTES + 1 + f, 'latin1')
      break
    }
    default:
      break
  }
  return buf
}

/**
 * Decodes one whole request frame (length prefix included). Keys and values are views into
 * `frame`: copy what outlives it. Throws ProtocolError only.
 */
export function decodeRequest(frame: Buffer): Request {
  const h = parseHeader(frame)
  const { op, id } = h
  if (op & REPLY_BIT) throw new ProtocolError('UNKNOWN_OP', `a reply (${opName(op & ~REPLY_BIT)}) sent as a request`)
  checkRequestFlags(h.flags)
  const flags = h.flags
  const body = frame.subarray(HEADER_BYTES)
  switch (op) {
    case Op.PING:
    case Op.STATS:
    case Op.FLUSH:
    case Op.PEERS:
    case Op.TICKET_KEY:
    case Op.TICKET_WINDOW:
      if (body.length !== 0) throw new ProtocolError('TRAILING', `${opName(op)} takes no body, got ${body.length} bytes`)
      return { op, id, flags }
    case Op.GET:
    case Op.DELETE:
      return { op, id, flags, key: body }
    case Op.SET: {
      needBytes(body.length, 6, 'SET body')
      const f = ttlKeyLenParser.parse(body) as { ttlMs: number; keyLen: number }
      needBytes(body.length, 6 + f.keyLen, 'SET key')
      const key = body.subarray(6, 6 + f.keyLen)
      return { op, id, flags, ttlMs: f.ttlMs, key, value: body.subarray(6 + f.keyLen) }
    }
    case Op.TOUCH: {
      needBytes(body.length, 4, 'TOUCH body')
      const { n } = u32Parser.parse(body) as { n: number }
      return { op, id, flags, ttlMs: n, key: body.subarray(4) }
    }
    case Op.KEYS: {
      needBytes(body.length, 4, 'KEYS body')
      const { n } = u32Parser.parse(body) as { n: number }
      return { op, id, flags, limit: n, prefix: body.subarray(4) }
    }
    case Op.CONSUMER_KEYS: {
      needBytes(body.length, 1, 'CONSUMER_KEYS body')
      const f = body[0]!
      needBytes(body.length - 1, f, 'CONSUMER_KEYS format')
      return { op, id, flags, format: body.subarray(1, 1 + f).toString('latin1'), consumer: body.subarray(1 + f).toString('latin1') }
    }
    default:
      throw new ProtocolError('UNKNOWN_OP', `unknown operation ${op}`)
  }
}

/**
 * Encodes a reply. For GET OK pass the remaining TTL in `ttlMs` and the value as `body`.
 * One allocation, one copy of the body.
 */
export function encodeReply(op: number, id: number, status: number, body: Buffer = EMPTY, flags = 0, ttlMs = -1): Buffer {
  const ttlBytes = ttlMs >= 0 ? 4 : 0
  const total = REPLY_HEADER_BYTES + ttlBytes + body.length
  const buf = Buffer.allocUnsafe(total)
  writeHeader(buf, total, op | REPLY_BIT, flags, id)
  buf[HEADER_BYTES] = status
  if (ttlBytes) buf.writeUInt32BE(Math.min(ttlMs, U32_MAX), REPLY_HEADER_BYTES)
  body.copy(buf, REPLY_HEADER_BYTES + ttlBytes)
  return buf
}

/** Encodes an error reply with a message for people. */
export function encodeError(op: number, id: number, status: number, message: string): Buffer {
  return encodeReply(op, id, status, Buffer.from(message, 'utf8'))
}

/** Decodes one whole reply frame. `body` is a view into `frame`. Throws ProtocolError only. */
export function decodeReply(frame: Buffer): Reply {
  const h = parseHeader(frame)
  if (!(h.op & REPLY_BIT)) throw new ProtocolError('UNKNOWN_OP', `a request (${opName(h.op)}) sent as a reply`)
  needBytes(frame.length, REPLY_HEADER_BYTES, 'reply status')
  return { op: h.op & ~REPLY_BIT, id: h.id, flags: h.flags, status: frame[HEADER_BYTES]!, body: frame.subarray(REPLY_HEADER_BYTES) }
}

/** Splits a GET OK reply body into its remaining TTL and value (a view). */
export function decodeGetBody(body: Buffer): { ttlMs: number; value: Buffer } {
  needBytes(body.length, 4, 'GET reply body')
  return { ttlMs: body.readUInt32BE(0), value: body.subarray(4) }
}

/**
 * Splits a byte stream into whole frames. Pure: feed it chunks, take frames out.
 * A length prefix above `maxFrameBytes` throws FRAME_TOO_LARGE before anything is buffered, so a
 * peer cannot make us hold more than one frame's worth of bytes.
 */
export class FrameDecoder {
  readonly maxFrameBytes: number
  #buf: Buffer = EMPTY

  constructor(maxFrameBytes: number) {
    this.maxFrameBytes = maxFrameBytes
  }

  /** Bytes held waiting for the rest of a frame. */
  get buffered(): number {
    return this.#buf.length
  }

  /**
   * Appends `chunk` and calls `onFrame` for every whole frame (views valid only during the call
   * unless copied). Stops at the first oversized frame and throws; the decoder is then unusable.
   *
   * `onFrame` may return `false` to stop after its frame: the rest is kept unparsed (a view of
   * `chunk`, so a caller that stops must not reuse the chunk's memory) and `push` returns false;
   * `push(EMPTY_CHUNK, ...)` later carries on where it stopped. Returns true when every whole frame
   * was handed over. This is how a server stops handling a connection whose replies pile up
   * without dropping what it already read.
   */
  push(chunk: Buffer, onFrame: (frame: Buffer) => unknown): boolean {
    let buf = this.#buf.length === 0 ? chunk : chunk.length === 0 ? this.#buf : Buffer.concat([this.#buf, chunk])
    let off = 0
    while (buf.length - off >= 4) {
      const len = buf.readUInt32BE(off)
      if (len + 4 > this.maxFrameBytes) {
        this.#buf = EMPTY
        throw new ProtocolError('FRAME_TOO_LARGE', `frame of ${len + 4} bytes exceeds the limit of ${this.maxFrameBytes}`)
      }
      if (buf.length - off < len + 4) break
      const more = onFrame(buf.subarray(off, off + 4 + len))
      off += 4 + len
      if (more === false) {
        this.#buf = off === buf.length ? EMPTY : buf.subarray(off)
        return false
      }
    }
    // Keep only the unfinished tail; copy it so the caller's chunk can be reused or released.
    this.#buf = off === buf.length ? EMPTY : Buffer.from(buf.subarray(off))
    buf = EMPTY
    return true
  }
}

/** Bytes of one epoch's ticket secret (the key of a TICKET_KEY reply, too): the peer wire's. */
export { TICKET_SECRET_BYTES }
/** Bytes of a TICKET_KEY OK body: epoch, remaining ms, key. */
export const TICKET_KEY_BODY_BYTES = 8 + TICKET_SECRET_BYTES

export interface TicketKeyBody {
  epoch: number
  /** Until the next rotation, in ms (kept within 0..U32_MAX when encoded). */
  remainingMs: number
  key: Buffer
}

/** The body of a TICKET_KEY OK reply (after the status byte). The caller wipes it after use. */
export function encodeTicketKeyBody(k: TicketKeyBody): Buffer {
  if (k.key.length !== TICKET_SECRET_BYTES) throw new ProtocolError('BAD_FIELD', `a ticket key is ${TICKET_SECRET_BYTES} bytes`)
  const buf = Buffer.alloc(TICKET_KEY_BODY_BYTES)
  buf.writeUInt32BE(k.epoch, 0)
  buf.writeUInt32BE(Math.max(0, Math.min(k.remainingMs, U32_MAX)), 4)
  k.key.copy(buf, 8)
  return buf
}

/** Decodes a TICKET_KEY OK body; the key is a view into `body`. Throws ProtocolError only. */
export function decodeTicketKeyBody(body: Buffer): TicketKeyBody {
  needBytes(body.length, TICKET_KEY_BODY_BYTES, 'TICKET_KEY body')
  if (body.length > TICKET_KEY_BODY_BYTES)
    throw new ProtocolError('TRAILING', `TICKET_KEY body has ${body.length - TICKET_KEY_BODY_BYTES} bytes after its key`)
  return { epoch: body.readUInt32BE(0), remainingMs: body.readUInt32BE(4), key: body.subarray(8) }
}
/** Most secrets a TICKET_WINDOW reply carries (previous, current, next). */
export const MAX_WINDOW_SECRETS = 3

export interface TicketWindowBody {
  /** The epoch the daemon's clock is in. */
  epoch: number
  rotationMs: number
  secrets: { epoch: number; secret: Buffer }[]
}

export function ticketWindowBodyLength(w: TicketWindowBody): number {
  return 9 + w.secrets.length * (4 + TICKET_SECRET_BYTES)
}

/** The body of a TICKET_WINDOW OK reply (after the status byte). */
export function encodeTicketWindowBody(w: TicketWindowBody): Buffer {
  if (w.secrets.length > MAX_WINDOW_SECRETS)
    throw new ProtocolError('BAD_FIELD', `a ticket window holds at most ${MAX_WINDOW_SECRETS} secrets`)
  const buf = Buffer.alloc(ticketWindowBodyLength(w))
  buf.writeUInt32BE(w.epoch, 0)
  buf.writeUInt32BE(w.rotationMs, 4)
  buf[8] = w.secrets.length
  let off = 9
  for (const s of w.secrets) {
    if (s.secret.length !== TICKET_SECRET_BYTES) throw new ProtocolError('BAD_FIELD', `a ticket secret is ${TICKET_SECRET_BYTES} bytes`)
    buf.writeUInt32BE(s.epoch, off)
    s.secret.copy(buf, off + 4)
    off += 4 + TICKET_SECRET_BYTES
  }
  return buf
}

/** Decodes a TICKET_WINDOW OK body; secrets are views into `body`. Throws ProtocolError only. */
export function decodeTicketWindowBody(body: Buffer): TicketWindowBody {
  needBytes(body.length, 9, 'TICKET_WINDOW body')
  const n = body[8]!
  if (n > MAX_WINDOW_SECRETS) throw new ProtocolError('BAD_FIELD', `a ticket window holds at most ${MAX_WINDOW_SECRETS} secrets, got ${n}`)
  const want = 9 + n * (4 + TICKET_SECRET_BYTES)
  needBytes(body.length, want, 'TICKET_WINDOW secrets')
  if (body.length > want) throw new ProtocolError('TRAILING', `TICKET_WINDOW body has ${body.length - want} bytes after its secrets`)
  const secrets: TicketWindowBody['secrets'] = []
  for (let i = 0, off = 9; i < n; i++, off += 4 + TICKET_SECRET_BYTES)
    secrets.push({ epoch: body.readUInt32BE(off), secret: body.subarray(off + 4, off + 4 + TICKET_SECRET_BYTES) })
  return { epoch: body.readUInt32BE(0), rotationMs: body.readUInt32BE(4), secrets }
}

/** One derived key of a CONSUMER_KEYS reply. */
export interface ConsumerKey {
  /** 0 previous, 1 current, 2 next. */
  slot: number
  /** False for a filler (its epoch has no secret yet): it decrypts nothing and never encrypts. */
  real: boolean
  epoch: number
  name: Buffer
  aes: Buffer
  hmac: Buffer
}

export interface ConsumerKeysBody {
  /** The epoch the daemon's clock is in. */
  epoch: number
  rotationMs: number
  keys: ConsumerKey[]
}

/** Bytes of a key name in a CONSUMER_KEYS reply. */
export const CONSUMER_KEY_NAME_BYTES = 16
/** Most keys a CONSUMER_KEYS reply carries (previous, current, next). */
export const MAX_CONSUMER_KEYS = 3

/** The body of a CONSUMER_KEYS OK reply (after the status byte). The caller wipes it after use. */
export function encodeConsumerKeysBody(b: ConsumerKeysBody): Buffer {
  if (b.keys.length > MAX_CONSUMER_KEYS)
    throw new ProtocolError('BAD_FIELD', `a CONSUMER_KEYS reply holds at most ${MAX_CONSUMER_KEYS} keys`)
  let len = 9
  for (const k of b.keys) {
    if (k.name.length !== CONSUMER_KEY_NAME_BYTES || k.aes.length > 255 || k.hmac.length > 255 || k.slot > 2)
      throw new ProtocolError('BAD_FIELD', 'a consumer key has a 16-byte name, keys of at most 255 bytes and a slot from 0 to 2')
    len += 6 + CONSUMER_KEY_NAME_BYTES + 2 + k.aes.length + k.hmac.length
  }
  const buf = Buffer.alloc(len)
  buf.writeUInt32BE(b.epoch, 0)
  buf.writeUInt32BE(b.rotationMs, 4)
  buf[8] = b.keys.length
  let off = 9
  for (const k of b.keys) {
    buf[off] = k.slot
    buf[off + 1] = k.real ? 1 : 0
    buf.writeUInt32BE(k.epoch, off + 2)
    k.name.copy(buf, off + 6)
    off += 6 + CONSUMER_KEY_NAME_BYTES
    buf[off] = k.aes.length
    k.aes.copy(buf, off + 1)
    off += 1 + k.aes.length
    buf[off] = k.hmac.length
    k.hmac.copy(buf, off + 1)
    off += 1 + k.hmac.length
  }
  return buf
}

/** Decodes a CONSUMER_KEYS OK body; keys are views into `body`. Throws ProtocolError only. */
export function decodeConsumerKeysBody(body: Buffer): ConsumerKeysBody {
  needBytes(body.length, 9, 'CONSUMER_KEYS body')
  const n = body[8]!
  if (n > MAX_CONSUMER_KEYS) throw new ProtocolError('BAD_FIELD', `a CONSUMER_KEYS reply holds at most ${MAX_CONSUMER_KEYS} keys, got ${n}`)
  const keys: ConsumerKey[] = []
  let off = 9
  for (let i = 0; i < n; i++) {
    needBytes(body.length - off, 6 + CONSUMER_KEY_NAME_BYTES + 1, 'CONSUMER_KEYS key')
    const slot = body[off]!
    const real = body[off + 1]!
    if (slot > 2 || real > 1) throw new ProtocolError('BAD_FIELD', `CONSUMER_KEYS key with slot ${slot}, real ${real}`)
    const epoch = body.readUInt32BE(off + 2)
    const name = body.subarray(off + 6, off + 6 + CONSUMER_KEY_NAME_BYTES)
    off += 6 + CONSUMER_KEY_NAME_BYTES
    const a = body[off]!
    needBytes(body.length - off - 1, a + 1, 'CONSUMER_KEYS AES key')
    const aes = body.subarray(off + 1, off + 1 + a)
    off += 1 + a
    const h = body[off]!
    needBytes(body.length - off - 1, h, 'CONSUMER_KEYS HMAC key')
    const hmac = body.subarray(off + 1, off + 1 + h)
    off += 1 + h
    keys.push({ slot, real: real === 1, epoch, name, aes, hmac })
  }
  if (off !== body.length) throw new ProtocolError('TRAILING', `CONSUMER_KEYS body has ${body.length - off} bytes after its keys`)
  return { epoch: body.readUInt32BE(0), rotationMs: body.readUInt32BE(4), keys }
}

/** An empty chunk: `decoder.push(EMPTY_CHUNK, onFrame)` resumes a decoder that was stopped. */
export const EMPTY_CHUNK: Buffer = EMPTY
