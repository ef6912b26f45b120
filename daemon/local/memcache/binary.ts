/**
 * memcached's binary protocol, as memcached 1.6 speaks it (protocol_binary.h, proto_bin.c):
 * pure framing and validation, no sockets. The front end's connection feeds it its input
 * buffer; it says how many bytes a request needs, or what the request is, or why memcached
 * would refuse it (status, whether to swallow a body, whether to hang up).
 *
 * Every packet, request or response, starts with a 24-byte header (big-endian):
 *
 *    0        1        2        3        4        5        6        7
 *   +--------+--------+--------+--------+--------+--------+--------+--------+
 *   | magic  | opcode |   key length    | extras | data   | vbucket (req)   |
 *   | 80/81  |        |                 | length | type 0 | status  (resp)  |
 *   +--------+--------+--------+--------+--------+--------+--------+--------+
 *   |        total body length          |             opaque                |
 *   +--------+--------+--------+--------+--------+--------+--------+--------+
 *   |                              cas                                      |
 *   +--------+--------+--------+--------+--------+--------+--------+--------+
 *   | extras (extras length) | key (key length) | value (the rest of body) |
 *
 * Extras per command: set/add/replace: flags u32, expiration u32; incr/decr: delta u64,
 * initial u64, expiration u32 (0xffffffff: do not create); touch/gat: expiration u32;
 * flush: optional expiration u32; verbosity: u32. A get's response carries the flags (u32).
 * The quiet variants (…Q) answer only errors (getq/getkq: nothing on a miss); a noop answers
 * always, so a pipeline of quiet commands ends with one.
 */

export const HEADER_BYTES = 24

export const Magic = {
  REQUEST: 0x80,
  RESPONSE: 0x81,
} as const

/** Opcodes (protocol_binary.h). The numbers are the protocol: append only. */
export const Opcode = {
  GET: 0x00,
  SET: 0x01,
  ADD: 0x02,
  REPLACE: 0x03,
  DELETE: 0x04,
  INCREMENT: 0x05,
  DECREMENT: 0x06,
  QUIT: 0x07,
  FLUSH: 0x08,
  GETQ: 0x09,
  NOOP: 0x0a,
  VERSION: 0x0b,
  GETK: 0x0c,
  GETKQ: 0x0d,
  APPEND: 0x0e,
  PREPEND: 0x0f,
  STAT: 0x10,
  SETQ: 0x11,
  ADDQ: 0x12,
  REPLACEQ: 0x13,
  DELETEQ: 0x14,
  INCREMENTQ: 0x15,
  DECREMENTQ: 0x16,
  QUITQ: 0x17,
  FLUSHQ: 0x18,
  APPENDQ: 0x19,
  PREPENDQ: 0x1a,
  VERBOSITY: 0x1b,
  TOUCH: 0x1c,
  GAT: 0x1d,
  GATQ: 0x1e,
  SASL_LIST_MECHS: 0x20,
  SASL_AUTH: 0x21,
  SASL_STEP: 0x22,
  GATK: 0x23,
  GATKQ: 0x24,
} as const
export type Opcode = (typeof Opcode)[keyof typeof Opcode]

/** Response status codes (protocol_binary.h). */
export const BinStatus = {
  OK: 0x0000,
  KEY_ENOENT: 0x0001,
  KEY_EEXISTS: 0x0002,
  E2BIG: 0x0003,
  EINVAL: 0x0004,
  NOT_STORED: 0x0005,
  DELTA_BADVAL: 0x0006,
  NOT_MY_VBUCKET: 0x0007,
  // memcached sends 0x20 and 0x21 (protocol_binary.h); the old protocol spec listed 0x08 and 0x09.
  AUTH_ERROR: 0x0020,
  AUTH_CONTINUE: 0x0021,
  UNKNOWN_COMMAND: 0x0081,
  ENOMEM: 0x0082,
  NOT_SUPPORTED: 0x0083,
  EINTERNAL: 0x0084,
  EBUSY: 0x0085,
  ETMPFAIL: 0x0086,
} as const
export type BinStatus = (typeof BinStatus)[keyof typeof BinStatus]

/** The body memcached sends with each error status (write_bin_error). */
export const STATUS_TEXT: Readonly<Record<number, string>> = {
  [BinStatus.KEY_ENOENT]: 'Not found',
  [BinStatus.KEY_EEXISTS]: 'Data exists for key.',
  [BinStatus.E2BIG]: 'Too large.',
  [BinStatus.EINVAL]: 'Invalid arguments',
  [BinStatus.NOT_STORED]: 'Not stored.',
  [BinStatus.DELTA_BADVAL]: 'Non-numeric server-side value for incr or decr',
  [BinStatus.AUTH_ERROR]: 'Auth failure.',
  [BinStatus.UNKNOWN_COMMAND]: 'Unknown command',
  [BinStatus.ENOMEM]: 'Out of memory',
  [BinStatus.EINTERNAL]: 'Internal error',
}

/** incr/decr's expiration that means "do not create on a miss". */
export const NO_CREATE = 0xffffffff

/** The quiet opcodes and the command each is a quiet form of. */
const QUIET: ReadonlyMap<number, Opcode> = new Map<number, Opcode>([
  [Opcode.GETQ, Opcode.GET],
  [Opcode.GETKQ, Opcode.GETK],
  [Opcode.SETQ, Opcode.SET],
  [Opcode.ADDQ, Opcode.ADD],
  [Opcode.REPLACEQ, Opcode.REPLACE],
  [Opcode.DELETEQ, Opcode.DELETE],
  [Opcode.INCREMENTQ, Opcode.INCREMENT],
  [Opcode.DECREMENTQ, Opcode.DECREMENT],
  [Opcode.QUITQ, Opcode.QUIT],
  [Opcode.FLUSHQ, Opcode.FLUSH],
  [Opcode.APPENDQ, Opcode.APPEND],
  [Opcode.PREPENDQ, Opcode.PREPEND],
  [Opcode.GATQ, Opcode.GAT],
  [Opcode.GATKQ, Opcode.GATK],
])

/** A request's header fields. */
export interface BinHeader {
  magic: number
  opcode: number
  keyLength: number
  extrasLength: number
  dataType: number
  /** vbucket in a request, status in a response. */
  vbucketOrStatus: number
  bodyLength: number
  opaque: number
  cas: bigint
}

export function readHeader(b: Buffer, at = 0): BinHeader {
  return {
    magic: b[at]!,
    opcode: b[at + 1]!,
    keyLength: b.readUInt16BE(at + 2),
    extrasLength: b[at + 4]!,
    dataType: b[at + 5]!,
    vbucketOrStatus: b.readUInt16BE(at + 6),
    bodyLength: b.readUInt32BE(at + 8),
    opaque: b.readUInt32BE(at + 12),
    cas: b.readBigUInt64BE(at + 16),
  }
}

/** A request as the commands see it: the quiet form folded into `quiet`, extras decoded. */
export type BinRequest = {
  /** The opcode as sent (echoed in the response). */
  opcode: number
  /** The command it is (the quiet form's loud one). */
  command: Opcode
  quiet: boolean
  opaque: number
  cas: bigint
  key: Buffer
} & (
  | { kind: 'get'; withKey: boolean; touch?: number }
  | { kind: 'touch'; exptime: number }
  | { kind: 'store'; flags: number; exptime: number; value: Buffer }
  | { kind: 'concat'; value: Buffer }
  | { kind: 'delete' }
  | { kind: 'delta'; delta: bigint; initial: bigint; exptime: number }
  | { kind: 'flush'; delay: number }
  | { kind: 'noop' }
  | { kind: 'version' }
  | { kind: 'quit' }
  | { kind: 'stat' }
  | { kind: 'verbosity' }
)

/** What the parser found at the start of the input. */
export type BinParse =
  /** Not enough bytes yet: wait until the input holds `bytes` (a whole request). */
  | { kind: 'need'; bytes: number }
  /** A whole request of `bytes` bytes. Its key and value are views into the input. */
  | { kind: 'request'; bytes: number; req: BinRequest }
  /**
   * A request memcached refuses: answer `status` (echoing opcode and opaque) unless `silent`,
   * consume `bytes`, then discard `swallow` more, or hang up when `close`. Status 0 with
   * `close` and `silent`: not a request at all (bad magic); memcached hangs up without a word.
   */
  | {
      kind: 'reject'
      bytes: number
      swallow: number
      close: boolean
      silent?: boolean
      opcode: number
      opaque: number
      status: BinStatus
      key?: Buffer
      orDelete?: Buffer
    }

export interface BinLimits {
  maxKeyBytes: number
  maxValueBytes: number
  /** Largest body of a request that carries no value (stat's key, say); larger ones are swallowed. */
  maxOtherBodyBytes?: number
  /** Refuse keys starting with the tenant marker (a daemon with tenants). */
  refuseMarker?: boolean
}

/**
 * Parses the request at the start of `b` as memcached's dispatch_bin_command checks it. Total:
 * any bytes give one of the three answers, never an exception, and nothing past `bytes` (or the
 * swallowed body) is read.
 */
export function parseRequest(b: Buffer, limits: BinLimits): BinParse {
  if (b.length < HEADER_BYTES) return { kind: 'need', bytes: HEADER_BYTES }
  const h = readHeader(b)
  const reject = (
    status: BinStatus,
    bytes: number,
    swallow: number,
    close: boolean,
    extra: { silent?: boolean; key?: Buffer; orDelete?: Buffer } = {},
  ): BinParse => ({ kind: 'reject', bytes, swallow, close, opcode: h.opcode, opaque: h.opaque, status, ...extra })
  if (h.magic !== Magic.REQUEST) return reject(BinStatus.OK, 0, 0, true, { silent: true })
  const kl = h.keyLength
  const el = h.extrasLength
  const body = h.bodyLength
  if (kl + el > body) return reject(BinStatus.UNKNOWN_COMMAND, HEADER_BYTES, 0, true)
  const command = (QUIET.get(h.opcode) ?? h.opcode) as Opcode
  const quiet = QUIET.has(h.opcode)
  if (kl > limits.maxKeyBytes) return reject(BinStatus.EINVAL, HEADER_BYTES, 0, true)
  const head = HEADER_BYTES + el + kl
  // A key may not start with the tenant marker (0x00, protocol/tenant-keys.ts): it would name another tenant's.
  if (limits.refuseMarker && kl > 0 && b.length > HEADER_BYTES + el && b[HEADER_BYTES + el] === 0)
    return reject(BinStatus.EINVAL, HEADER_BYTES, 0, true)
  const valueLen = body - el - kl
  // Commands with a value: a value too large is refused without reading it (memcached swallows it).
  const withValue =
    command === Opcode.SET ||
    command === Opcode.ADD ||
    command === Opcode.REPLACE ||
    command === Opcode.APPEND ||
    command === Opcode.PREPEND
  if (withValue) {
    const storeShape = command === Opcode.APPEND || command === Opcode.PREPEND ? el === 0 && kl > 0 : el === 8 && kl > 0
    if (!storeShape) return reject(BinStatus.EINVAL, HEADER_BYTES, 0, true)
    if (valueLen > limits.maxValueBytes) {
      if (b.length < head) return { kind: 'need', bytes: head }
      // A set refused for its size drops the old value, as memcached does: no stale session outlives it.
      const key = Buffer.from(b.subarray(HEADER_BYTES + el, head))
      return reject(BinStatus.E2BIG, head, valueLen, false, command === Opcode.SET ? { orDelete: key } : {})
    }
  } else if (KNOWN.has(command)) {
    if (valueLen > (limits.maxOtherBodyBytes ?? 0) || !shapeOk(command, kl, el, valueLen))
      return reject(BinStatus.EINVAL, HEADER_BYTES, 0, true)
  } else {
    // Unknown (or SASL on a listener without logins: auth-gate.ts takes SASL before this parser where
    // memcacheTcpAccess is "auth"): answered, the body swallowed.
    return reject(BinStatus.UNKNOWN_COMMAND, HEADER_BYTES, body, false)
  }
  const total = HEADER_BYTES + body
  if (b.length < total) return { kind: 'need', bytes: total }
  const ex = HEADER_BYTES
  const key = b.subarray(head - kl, head)
  const base = { opcode: h.opcode, command, quiet, opaque: h.opaque, cas: h.cas, key }
  let req: BinRequest
  switch (command) {
    case Opcode.GET:
    case Opcode.GETK:
      req = { ...base, kind: 'get', withKey: command === Opcode.GETK }
      break
    case Opcode.GAT:
    case Opcode.GATK:
      req = { ...base, kind: 'get', withKey: command === Opcode.GATK, touch: b.readUInt32BE(ex) }
      break
    case Opcode.TOUCH:
      req = { ...base, kind: 'touch', exptime: b.readUInt32BE(ex) }
      break
    case Opcode.SET:
    case Opcode.ADD:
    case Opcode.REPLACE:
      req = { ...base, kind: 'store', flags: b.readUInt32BE(ex), exptime: b.readUInt32BE(ex + 4), value: b.subarray(head, total) }
      break
    case Opcode.APPEND:
    case Opcode.PREPEND:
      req = { ...base, kind: 'concat', value: b.subarray(head, total) }
      break
    case Opcode.DELETE:
      req = { ...base, kind: 'delete' }
      break
    case Opcode.INCREMENT:
    case Opcode.DECREMENT:
      req = { ...base, kind: 'delta', delta: b.readBigUInt64BE(ex), initial: b.readBigUInt64BE(ex + 8), exptime: b.readUInt32BE(ex + 16) }
      break
    case Opcode.FLUSH:
      req = { ...base, kind: 'flush', delay: el === 4 ? b.readUInt32BE(ex) : 0 }
      break
    case Opcode.NOOP:
      req = { ...base, kind: 'noop' }
      break
    case Opcode.VERSION:
      req = { ...base, kind: 'version' }
      break
    case Opcode.QUIT:
      req = { ...base, kind: 'quit' }
      break
    case Opcode.STAT:
      req = { ...base, kind: 'stat' }
      break
    default:
      req = { ...base, kind: 'verbosity' }
  }
  return { kind: 'request', bytes: total, req }
}

/** Commands without a value that this front end serves. */
const KNOWN: ReadonlySet<number> = new Set<number>([
  Opcode.GET,
  Opcode.GETK,
  Opcode.GAT,
  Opcode.GATK,
  Opcode.TOUCH,
  Opcode.DELETE,
  Opcode.INCREMENT,
  Opcode.DECREMENT,
  Opcode.FLUSH,
  Opcode.NOOP,
  Opcode.VERSION,
  Opcode.QUIT,
  Opcode.STAT,
  Opcode.VERBOSITY,
])

/** memcached's checks of key, extras and value lengths per command (dispatch_bin_command). */
function shapeOk(command: Opcode, kl: number, el: number, valueLen: number): boolean {
  switch (command) {
    case Opcode.GET:
    case Opcode.GETK:
    case Opcode.DELETE:
      return el === 0 && kl > 0 && valueLen === 0
    case Opcode.GAT:
    case Opcode.GATK:
    case Opcode.TOUCH:
      return el === 4 && kl > 0 && valueLen === 0
    case Opcode.INCREMENT:
    case Opcode.DECREMENT:
      return el === 20 && kl > 0 && valueLen === 0
    case Opcode.FLUSH:
      return kl === 0 && valueLen === 0 && (el === 0 || el === 4)
    case Opcode.NOOP:
    case Opcode.VERSION:
    case Opcode.QUIT:
      return kl === 0 && el === 0 && valueLen === 0
    case Opcode.STAT:
      return el === 0 && valueLen === 0
    case Opcode.VERBOSITY:
      return kl === 0 && el === 4 && valueLen === 0
    default:
      return false
  }
}

/** A response's parts; the value may be a session's bytes (the caller wipes its copy). */
export interface BinResponse {
  opcode: number
  status: number
  opaque: number
  cas?: bigint
  extras?: Buffer
  key?: Buffer
  value?: Buffer
}

/** The 24-byte header of a response whose body follows (extras, key, value). */
export function responseHeader(
  r: Omit<BinResponse, 'value' | 'extras' | 'key'> & { extrasLength?: number; keyLength?: number; valueLength?: number },
): Buffer {
  const h = Buffer.allocUnsafe(HEADER_BYTES)
  const el = r.extrasLength ?? 0
  const kl = r.keyLength ?? 0
  h[0] = Magic.RESPONSE
  h[1] = r.opcode
  h.writeUInt16BE(kl, 2)
  h[4] = el
  h[5] = 0
  h.writeUInt16BE(r.status, 6)
  h.writeUInt32BE(el + kl + (r.valueLength ?? 0), 8)
  h.writeUInt32BE(r.opaque >>> 0, 12)
  h.writeBigUInt64BE(BigInt.asUintN(64, r.cas ?? 0n), 16)
  return h
}

/** One buffer holding a whole response. */
export function encodeResponse(r: BinResponse): Buffer {
  const extras = r.extras ?? EMPTY
  const key = r.key ?? EMPTY
  const value = r.value ?? EMPTY
  const h = responseHeader({ ...r, extrasLength: extras.length, keyLength: key.length, valueLength: value.length })
  return Buffer.concat([h, extras, key, value])
}

/** An error response with memcached's text for the status. */
export function errorResponse(opcode: number, opaque: number, status: number, key?: Buffer): Buffer {
  return encodeResponse({
    opcode,
    status,
    opaque,
    ...(key ? { key } : {}),
    value: Buffer.from(key ? '' : (STATUS_TEXT[status] ?? ''), 'latin1'),
  })
}

const EMPTY: Buffer = Buffer.alloc(0)

/** A request's bytes (clients, tests, the bench). */
export function encodeRequest(r: {
  opcode: number
  opaque?: number
  cas?: bigint
  extras?: Buffer
  key?: Buffer
  value?: Buffer
  vbucket?: number
  dataType?: number
}): Buffer {
  const extras = r.extras ?? EMPTY
  const key = r.key ?? EMPTY
  const value = r.value ?? EMPTY
  const h = Buffer.allocUnsafe(HEADER_BYTES)
  h[0] = Magic.REQUEST
  h[1] = r.opcode
  h.writeUInt16BE(key.length, 2)
  h[4] = extras.length
  h[5] = r.dataType ?? 0
  h.writeUInt16BE(r.vbucket ?? 0, 6)
  h.writeUInt32BE(extras.length + key.length + value.length, 8)
  h.writeUInt32BE((r.opaque ?? 0) >>> 0, 12)
  h.writeBigUInt64BE(r.cas ?? 0n, 16)
  return Buffer.concat([h, extras, key, value])
}

/** The request's bytes again (the fuzz test checks that what parses round-trips). */
export function encodeParsed(req: BinRequest): Buffer {
  const u32 = (n: number) => {
    const b = Buffer.allocUnsafe(4)
    b.writeUInt32BE(n >>> 0)
    return b
  }
  let extras: Buffer = EMPTY
  let value: Buffer = EMPTY
  switch (req.kind) {
    case 'get':
      if (req.touch !== undefined) extras = u32(req.touch)
      break
    case 'touch':
      extras = u32(req.exptime)
      break
    case 'store':
      extras = Buffer.concat([u32(req.flags), u32(req.exptime)])
      value = req.value
      break
    case 'concat':
      value = req.value
      break
    case 'delta': {
      extras = Buffer.allocUnsafe(20)
      extras.writeBigUInt64BE(req.delta, 0)
      extras.writeBigUInt64BE(req.initial, 8)
      extras.writeUInt32BE(req.exptime, 16)
      break
    }
    case 'flush':
      if (req.delay !== 0) extras = u32(req.delay)
      break
    case 'verbosity':
      extras = u32(0)
      break
    default:
  }
  return encodeRequest({ opcode: req.opcode, opaque: req.opaque, cas: req.cas, extras, key: req.key, value })
}

/** Reads the responses in `b` (tests and the bench); stops at the first incomplete one. */
export function decodeResponses(b: Buffer): {
  responses: (BinResponse & { extras: Buffer; key: Buffer; value: Buffer; cas: bigint })[]
  rest: Buffer
} {
  const out: (BinResponse & { extras: Buffer; key: Buffer; value: Buffer; cas: bigint })[] = []
  let at = 0
  while (b.length - at >= HEADER_BYTES) {
    const h = readHeader(b, at)
    if (b.length - at < HEADER_BYTES + h.bodyLength) break
    const s = at + HEADER_BYTES
    const extras = b.subarray(s, s + h.extrasLength)
    const key = b.subarray(s + h.extrasLength, s + h.extrasLength + h.keyLength)
    const value = b.subarray(s + h.extrasLength + h.keyLength, s + h.bodyLength)
    out.push({ opcode: h.opcode, status: h.vbucketOrStatus, opaque: h.opaque, cas: h.cas, extras, key, value })
    at += HEADER_BYTES + h.bodyLength
  }
  return { responses: out, rest: b.subarray(at) }
}
