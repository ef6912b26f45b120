/**
 * Field helpers the message records share: checks on write, bounds on read. Each throws
 * ProtocolError only.
 */
import { ProtocolError, needBytes } from '../errors.js'
import { U16, VERSION_MAX } from './constants.js'

/** Writes a session version (u64) at `off`; BAD_FIELD unless it is a bigint in 0..VERSION_MAX. */
export function writeVersion(buf: Buffer, off: number, v: bigint): void {
  if (typeof v !== 'bigint' || v < 0n || v > VERSION_MAX) throw new ProtocolError('BAD_FIELD', 'a version is a u64')
  buf.writeBigUInt64BE(v, off)
}

/** BAD_FIELD unless `b` is `len` bytes. */
export function fixedBuffer(b: Buffer, len: number, what: string): void {
  if (b.length !== len) throw new ProtocolError('BAD_FIELD', `${what} must be ${len} bytes`)
}

/** Bytes of a key with its u16 length. */
export function keyLength(key: Buffer): number {
  return U16 + key.length
}

/** Writes `key` with its u16 length at `off`. */
export function writeKey(buf: Buffer, off: number, key: Buffer): void {
  buf.writeUInt16BE(key.length, off)
  key.copy(buf, off + U16)
}

/** Reads a non-empty key with its u16 length at `off`, which must end exactly at the end of `buf`. */
export function keyAt(buf: Buffer, off: number, what: string): Buffer {
  needBytes(buf.length - off, U16, `${what} key length`)
  const len = buf.readUInt16BE(off)
  if (len === 0) throw new ProtocolError('BAD_FIELD', `${what} with an empty key`)
  if (buf.length - off - U16 !== len)
    throw new ProtocolError(
      buf.length - off - U16 < len ? 'TRUNCATED' : 'TRAILING',
      `${what} key length ${len} does not match the ${buf.length - off - U16} bytes present`,
    )
  return buf.subarray(off + U16)
}

/** TRUNCATED or TRAILING unless `buf` is exactly `len` bytes. */
export function exactly(buf: Buffer, len: number, what: string): void {
  needBytes(buf.length, len, what)
  if (buf.length !== len) throw new ProtocolError('TRAILING', `${what}: ${buf.length - len} bytes too many`)
}

/** BAD_FIELD unless chunk `index` of `count`, of `chunkLen` bytes, can belong to a value of `totalLen`. */
export function checkChunking(what: string, totalLen: number, index: number, count: number, chunkLen: number): void {
  if (count === 0 || index >= count) throw new ProtocolError('BAD_FIELD', `${what} chunk ${index} of ${count}`)
  // Every chunk carries at least one byte unless the value is empty: a count beyond the value's
  // length could only announce empty chunks, which cost the receiver an index slot each.
  if (count > Math.max(1, totalLen)) throw new ProtocolError('BAD_FIELD', `${what}: ${count} chunks for a value of ${totalLen} bytes`)
  if (chunkLen === 0 && totalLen > 0) throw new ProtocolError('BAD_FIELD', `${what}: an empty chunk of a value of ${totalLen} bytes`)
  if (chunkLen > totalLen) throw new ProtocolError('BAD_FIELD', `${what} chunk of ${chunkLen} bytes exceeds the value's ${totalLen}`)
}
