/**
 * Reply addresses in peer payloads (LOOKUP, ANNOUNCE):
 *
 *   family u8 (4 or 6) | address (4 or 16 bytes) | port u16
 */
import { ProtocolError, needBytes } from '../errors.js'
import { U16, U8 } from './constants.js'

export interface Address {
  family: 4 | 6
  address: string
  port: number
}

const IPV4_BYTES = 4
const IPV6_BYTES = 16
/** Bytes of a whole address of each family. */
const V4_LEN = U8 + IPV4_BYTES + U16
const V6_LEN = U8 + IPV6_BYTES + U16

export function addressLength(a: Address): number {
  return a.family === 4 ? V4_LEN : V6_LEN
}

export function writeAddress(buf: Buffer, off: number, a: Address): number {
  buf[off] = a.family
  if (a.family === 4) {
    const parts = a.address.split('.').map(Number)
    if (
      parts.length !== 4 ||
      !parts.every((x, i) => Number.isInteger(x) && x >= 0 && x <= 255 && /^\d{1,3}$/.test(a.address.split('.')[i]!))
    )
      throw new ProtocolError('BAD_FIELD', `not an IPv4 address: ${a.address}`)
    for (let i = 0; i < IPV4_BYTES; i++) buf[off + U8 + i] = parts[i]!
    off += U8 + IPV4_BYTES
  } else {
    if (!isIPv6Text(a.address)) throw new ProtocolError('BAD_FIELD', `not an IPv6 address: ${a.address}`)
    ipv6Bytes(a.address).copy(buf, off + U8)
    off += U8 + IPV6_BYTES
  }
  buf.writeUInt16BE(a.port, off)
  return off + U16
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

export function readAddress(buf: Buffer, off: number): [Address, number] {
  needBytes(buf.length - off, U8, 'address family')
  const family = buf[off]!
  if (family === 4) {
    needBytes(buf.length - off, V4_LEN, 'IPv4 address')
    return [
      {
        family: 4,
        address: `${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}.${buf[off + 4]}`,
        port: buf.readUInt16BE(off + U8 + IPV4_BYTES),
      },
      off + V4_LEN,
    ]
  }
  if (family === 6) {
    needBytes(buf.length - off, V6_LEN, 'IPv6 address')
    const parts: string[] = []
    for (let i = 0; i < IPV6_BYTES / U16; i++) parts.push(buf.readUInt16BE(off + U8 + i * U16).toString(16))
    // Canonical text form via the URL parser's normaliser.
    const text = new URL(`http://[${parts.join(':')}]/`).hostname.slice(1, -1)
    return [{ family: 6, address: text, port: buf.readUInt16BE(off + U8 + IPV6_BYTES) }, off + V6_LEN]
  }
  throw new ProtocolError('BAD_FIELD', `unknown address family ${family}`)
}
