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
 * The body inside is body.ts's; each payload is its record's in messages.ts.
 */
import crypto from 'node:crypto'
import { ProtocolError, needBytes } from '../errors.js'
import type { ClusterKey } from '../keyfile.js'
import { BoundedMap } from '../bounded.js'
import { HEADER_BYTES, KEY_DIGEST_BYTES, MAGIC, MAX_COUNTER, SENDER_ID_BYTES, TAG_BYTES, U32, U8, VERSION } from './constants.js'
import { type Message } from './messages.js'
import { bodyLength } from './body.js'

/** Receiver id of a datagram to the group (or to listed peers in its stead). */
export const NO_RECEIVER: Buffer = Buffer.alloc(SENDER_ID_BYTES)

export interface Header {
  keyId: number
  senderId: Buffer
  counter: number
  /** The daemon the datagram is for; NO_RECEIVER for the group. */
  receiverId: Buffer
}

/** Offsets in the clear header (the diagram above). */
const H_MAGIC = 0
const H_VERSION = H_MAGIC + U32
const H_RESERVED = H_VERSION + U8
const H_KEY_ID = H_RESERVED + U8
const H_SENDER_ID = H_KEY_ID + U32
/** The u64 counter, as two u32, high first. */
const H_COUNTER_HI = H_SENDER_ID + SENDER_ID_BYTES
const H_COUNTER_LO = H_COUNTER_HI + U32
const H_RECEIVER_ID = H_COUNTER_LO + U32
if (H_RECEIVER_ID + SENDER_ID_BYTES !== HEADER_BYTES) throw new Error('the header offsets do not add up to HEADER_BYTES')

/** The digest of a key that binds a HIT or MISS to the key asked for. */
export function keyDigest(key: Buffer): Buffer {
  return crypto.createHash('sha256').update(key).digest().subarray(0, KEY_DIGEST_BYTES)
}

// ---- the sealing envelope ----

const HKDF_INFO = Buffer.from('statecast/1 datagram')
/** Bytes of a sender's subkey (AES-256). */
const SUBKEY_BYTES = 32

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
    return { subkey: Buffer.from(crypto.hkdfSync('sha256', ck.key, senderId, HKDF_INFO, SUBKEY_BYTES)), uncached: cacheKey }
  }

  /** Caches a subkey `subkey` returned as uncached, under the name it gave. */
  remember(cacheKey: string, subkey: Buffer): void {
    this.#subkeys.set(cacheKey, subkey)
  }
}

/** An AES-GCM nonce: 4 zero bytes | counter u64 (two u32, high first). */
const GCM_NONCE_BYTES = 12
const NONCE_COUNTER_HI = U32
const NONCE_COUNTER_LO = NONCE_COUNTER_HI + U32

/** One nonce buffer for every seal and open: the cipher copies its IV when it is made. */
const scratchNonce = Buffer.alloc(GCM_NONCE_BYTES)

function nonceFor(counter: number): Buffer {
  scratchNonce.writeUInt32BE(Math.floor(counter / 2 ** 32), NONCE_COUNTER_HI)
  scratchNonce.writeUInt32BE(counter >>> 0, NONCE_COUNTER_LO)
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

/**
 * Writes the clear header of `h` at the start of `buf` (HEADER_BYTES). Throws ProtocolError
 * (BAD_FIELD) for ids of the wrong size or a counter outside 0..MAX_COUNTER.
 */
export function writeHeader(buf: Buffer, h: Header): void {
  if (h.senderId.length !== SENDER_ID_BYTES || h.receiverId.length !== SENDER_ID_BYTES)
    throw new ProtocolError('BAD_FIELD', `sender and receiver ids are ${SENDER_ID_BYTES} bytes`)
  if (!Number.isSafeInteger(h.counter) || h.counter < 0) throw new ProtocolError('BAD_FIELD', 'datagram counter out of range')
  buf.writeUInt32BE(MAGIC, H_MAGIC)
  buf[H_VERSION] = VERSION
  buf[H_RESERVED] = 0
  buf.writeUInt32BE(h.keyId, H_KEY_ID)
  h.senderId.copy(buf, H_SENDER_ID)
  buf.writeUInt32BE(Math.floor(h.counter / 2 ** 32), H_COUNTER_HI)
  buf.writeUInt32BE(h.counter >>> 0, H_COUNTER_LO)
  h.receiverId.copy(buf, H_RECEIVER_ID)
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
  if (dgram.readUInt32BE(H_MAGIC) !== MAGIC) throw new ProtocolError('BAD_MAGIC', 'not a statecast datagram')
  if (dgram[H_VERSION] !== VERSION)
    throw new ProtocolError('BAD_VERSION', `protocol version ${dgram[H_VERSION]}, this daemon speaks ${VERSION}`)
  const ctrHi = dgram.readUInt32BE(H_COUNTER_HI)
  // Counters stay below 2^53 so they are exact as numbers (a sender would need 2^53 datagrams).
  if (ctrHi * 2 ** 32 > MAX_COUNTER) throw new ProtocolError('BAD_FIELD', 'datagram counter out of range')
  // The ids are views, not copies: read on every datagram, kept by none beyond it.
  return {
    keyId: dgram.readUInt32BE(H_KEY_ID),
    senderId: dgram.subarray(H_SENDER_ID, H_COUNTER_HI),
    counter: ctrHi * 2 ** 32 + dgram.readUInt32BE(H_COUNTER_LO),
    receiverId: dgram.subarray(H_RECEIVER_ID, HEADER_BYTES),
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
