/**
 * npm run fuzz: a mutation fuzzer for both codecs, seeded with valid messages. Each input is a
 * seed mangled by bit flips, byte overwrites, truncation, extension, extreme length fields or a
 * splice with another seed. The only failure a decoder may show is its own ProtocolError; a
 * request that decodes must encode back to bytes that decode to the same request.
 * FUZZ_INPUTS sets the number of inputs per target (default 2,000,000); FUZZ_SEED the PRNG seed.
 */
import { ProtocolError } from '../../protocol/errors.js'
import { FrameDecoder, Op, Status, decodeReply, decodeRequest, encodeReply, encodeRequest, type Request } from '../../protocol/local.js'
import { Keyring, MsgType, decodeMessages, encodeBatch, encodeBody, open, seal, type Message } from '../../protocol/wire.js'

/**
 * Runs a decoder on bytes that may be anything: true when it returned or failed with its own
 * ProtocolError; any other exception propagates (for fast-check properties and the fuzzer).
 */
export function onlyProtocolErrors(decode: () => unknown): true {
  try {
    decode()
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e
  }
  return true
}

/** xorshift32: fast, seedable, good enough to pick mutations. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    return x
  }
}

const b = (s: string) => Buffer.from(s)
export const requestSeeds: Request[] = [
  { op: Op.PING, id: 1, flags: 0 },
  { op: Op.GET, id: 2, flags: 1, key: b('session:0001') },
  { op: Op.SET, id: 3, flags: 0, ttlMs: 300000, key: b('k'), value: Buffer.alloc(300, 7) },
  { op: Op.DELETE, id: 4, flags: 2, key: b('gone') },
  { op: Op.TOUCH, id: 5, flags: 0, ttlMs: 1, key: b('t') },
  { op: Op.KEYS, id: 6, flags: 0, limit: 10, prefix: b('p') },
  { op: Op.STATS, id: 7, flags: 0 },
  { op: Op.TICKET_KEY, id: 8, flags: 0 },
]
const addr = { family: 4 as const, address: '10.0.0.1', port: 47700 }
export const messageSeeds: Message[] = [
  { type: MsgType.LOOKUP, reqId: 1, nonce: Buffer.alloc(8, 5), reply: addr, expect: [Buffer.alloc(8, 4)], key: b('session') },
  {
    type: MsgType.HIT,
    reqId: 1,
    nonce: Buffer.alloc(8, 5),
    digest: Buffer.alloc(16, 6),
    ttlMs: 1000,
    flags: 0,
    totalLen: 500,
    index: 0,
    count: 2,
    version: 0x0190e1a2b3c40102n,
    chunk: Buffer.alloc(250, 1),
  },
  { type: MsgType.MISS, reqId: 1, nonce: Buffer.alloc(8, 5), digest: Buffer.alloc(16, 6) },
  { type: MsgType.INVALIDATE, version: 0x0190e1a2b3c40203n, key: b('k') },
  { type: MsgType.ANNOUNCE, reply: { family: 6, address: 'fd00::1', port: 1 }, entries: 3, flags: 1, name: 'host' },
  { type: MsgType.LEAVE },
  { type: MsgType.TICKET_KEY, epoch: 9, creator: Buffer.alloc(8, 1), key: Buffer.alloc(48, 2) },
  { type: MsgType.TICKET_PUB, period: 9, pub: Buffer.alloc(32, 3), held: [{ epoch: 9, holder: Buffer.alloc(8, 1) }] },
  {
    type: MsgType.TICKET_SEAL,
    epoch: 9,
    sealerPub: Buffer.alloc(32, 3),
    recipientPub: Buffer.alloc(32, 4),
    nonce: Buffer.alloc(12, 5),
    sealed: Buffer.alloc(48, 6),
    tag: Buffer.alloc(16, 7),
  },
  {
    type: MsgType.REPLICATE,
    replId: 3,
    ttlMs: 9,
    flags: 0,
    totalLen: 4,
    index: 0,
    count: 1,
    version: 0x0190e1a2b3c40001n,
    key: b('k'),
    chunk: b('abcd'),
  },
  { type: MsgType.ACK, replId: 3 },
  { type: MsgType.DELETE, replId: 4, version: 0x0190e1a2b3c40304n, key: b('k') },
  { type: MsgType.ACKS, replIds: [3, 4, 5] },
]

export function mutate(seed: Buffer, other: Buffer, r: () => number): Buffer {
  let buf = Buffer.from(seed)
  const n = 1 + (r() % 4)
  for (let i = 0; i < n; i++) {
    switch (r() % 7) {
      case 0: // flip a bit
        if (buf.length) buf[r() % buf.length]! ^= 1 << (r() % 8)
        break
      case 1: // overwrite a byte
        if (buf.length) buf[r() % buf.length] = r() & 0xff
        break
      case 2: // truncate
        buf = buf.subarray(0, r() % (buf.length + 1))
        break
      case 3: // extend
        buf = Buffer.concat([buf, Buffer.from(Array.from({ length: 1 + (r() % 16) }, () => r() & 0xff))])
        break
      case 4: {
        // an extreme value in a 16- or 32-bit field
        if (buf.length >= 4) {
          const at = r() % (buf.length - 3)
          const v = [0, 1, 0xffff, 0xffffffff, buf.length, buf.length + 1, buf.length - 1][r() % 7]!
          if (r() % 2) buf.writeUInt32BE(v >>> 0, at)
          else buf.writeUInt16BE(v & 0xffff, at)
        }
        break
      }
      case 5: // splice with another seed
        buf = Buffer.concat([buf.subarray(0, r() % (buf.length + 1)), other.subarray(r() % (other.length + 1))])
        break
      default: // duplicate a slice
        if (buf.length) {
          const at = r() % buf.length
          buf = Buffer.concat([buf.subarray(0, at), buf.subarray(at, at + 1 + (r() % 8)), buf.subarray(at)])
        }
    }
  }
  return buf
}

function own(fn: () => unknown): unknown {
  try {
    return fn()
  } catch (err) {
    if (err instanceof ProtocolError) return undefined
    throw err
  }
}

export interface FuzzResult {
  target: string
  inputs: number
  decoded: number
  perSecond: number
}

/** Runs `inputs` mutated inputs against each target; throws on the first foreign exception. */
export function fuzz(inputs: number, seed = 1): FuzzResult[] {
  const r = prng(seed)
  const key = { id: 1, createdAt: 0, key: Buffer.alloc(32, 9) }
  const ring = new Keyring([key])
  const sender = Buffer.alloc(8, 3)
  const reqBytes = requestSeeds.map(encodeRequest)
  const replyBytes = [
    encodeReply(Op.GET, 1, Status.OK, Buffer.alloc(200, 1), 0, 1000),
    encodeReply(Op.STATS, 2, Status.OK, b('{}')),
    encodeReply(Op.SET, 3, Status.TOO_LARGE, b('too large')),
  ]
  // Batches too: their mutations cut, nest and mislabel entries.
  const bodies = [
    ...messageSeeds.map((m) => encodeBody(m, 1_764_000_000_000)),
    encodeBatch(messageSeeds.slice(0, 3), 1_764_000_000_000),
    encodeBatch(messageSeeds.slice(-3), 1_764_000_000_000),
  ]
  const sealed = bodies.map((body, i) => seal(ring, key.id, sender, i + 1, body))
  const pick = (arr: Buffer[]) => arr[r() % arr.length]!
  const results: FuzzResult[] = []
  const targets: [string, () => boolean][] = [
    [
      'local request',
      () => {
        const req = own(() => decodeRequest(mutate(pick(reqBytes), pick(reqBytes), r))) as Request | undefined
        if (req) {
          const again = decodeRequest(encodeRequest(req))
          if (JSON.stringify(again) !== JSON.stringify(req)) throw new Error(`request does not round-trip: ${JSON.stringify(req)}`)
        }
        return req !== undefined
      },
    ],
    ['local reply', () => own(() => decodeReply(mutate(pick(replyBytes), pick(replyBytes), r))) !== undefined],
    [
      'frame stream',
      () => {
        const stream = mutate(Buffer.concat([pick(reqBytes), pick(reqBytes)]), pick(reqBytes), r)
        const dec = new FrameDecoder(4096)
        let frames = 0
        own(() => {
          let off = 0
          while (off < stream.length) {
            const n = 1 + (r() % 32)
            dec.push(stream.subarray(off, off + n), (f) => {
              frames++
              own(() => decodeRequest(f))
            })
            off += n
          }
        })
        return frames > 0
      },
    ],
    ['peer body (authenticated but malformed)', () => own(() => decodeMessages(mutate(pick(bodies), pick(bodies), r))) !== undefined],
    ['sealed datagram', () => own(() => open(ring, mutate(pick(sealed), pick(sealed), r))) !== undefined],
  ]
  for (const [name, fn] of targets) {
    let decoded = 0
    const t0 = performance.now()
    for (let i = 0; i < inputs; i++) if (fn()) decoded++
    const secs = (performance.now() - t0) / 1000
    results.push({ target: name, inputs, decoded, perSecond: Math.round(inputs / secs) })
  }
  return results
}
