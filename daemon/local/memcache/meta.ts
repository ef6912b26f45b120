/**
 * memcached's meta protocol (protocol.txt, "Meta Commands", memcached 1.6): the parser of one
 * command line, pure. The connection reads the line (and an `ms` data block of `datalen` bytes);
 * the commands (commands.ts) do what it says and format the answer with `metaFlagsOut`.
 *
 *   mg <key> <flags>*            get: v value, c cas, f flags, k key, s size, t ttl, O opaque,
 *                                q (no EN on a miss), b base64 key, T ttl update, N vivify,
 *                                R recache window, u (accepted), h/l (reported as 0: not tracked)
 *   ms <key> <datalen> <flags>*  set: F flags, T ttl, C compare cas, M mode E/A/P/R/S, I
 *                                invalidate, c, k, O, q (no HD), b
 *   md <key> <flags>*            delete: C, I (mark stale), T (with I), k, O, q, b
 *   ma <key> <flags>*            arithmetic: N auto-create ttl, J initial, D delta, M mode I/+/D/-,
 *                                T, C, t, c, v, k, O, q, b
 *   mn                           no-op: MN
 *   me <key>                     debug: ME <key> exp=.. la=.. cas=.. fetch=.. cls=.. size=..
 *
 * Errors are memcached's texts (checked against memcached 1.6.18): ERROR for an unknown or
 * key-less command, CLIENT_ERROR invalid flag / duplicate flag / bad command line format / bad
 * token in command line format / invalid mode for ms M token / opaque token too long / error
 * decoding key.
 */

/** The meta commands' codes. */
export const MetaCmd = {
  GET: 'mg',
  SET: 'ms',
  DELETE: 'md',
  ARITHMETIC: 'ma',
  NOOP: 'mn',
  DEBUG: 'me',
} as const
export type MetaCmd = (typeof MetaCmd)[keyof typeof MetaCmd]

/** Longest opaque token memcached copies back. */
export const MAX_OPAQUE_BYTES = 32

/** The flags each command takes; a token-taking flag is upper case (or O), as memcached lists them. */
const ALLOWED: Record<string, string> = {
  mg: 'bcfhklOqstuvNRTPL',
  ms: 'bcCFIkOqTMPL',
  md: 'bCIkOqTPL',
  ma: 'bCNJDTMqtcvkOPL',
}
/** Flags whose token is a number (validated as memcached does). */
const NUMERIC = new Set(['N', 'R', 'T', 'F', 'C', 'J', 'D'])
/** Flags that take a token at all. */
const TOKEN = new Set(['O', 'N', 'R', 'T', 'F', 'C', 'J', 'D', 'M', 'P', 'L', 'S'])

export type MetaFlag = { f: string; token: string }

export type MetaRequest =
  | { cmd: 'mn' }
  | { cmd: 'me'; key: Buffer; base64: boolean }
  | { cmd: 'mg' | 'md' | 'ma'; key: Buffer; base64: boolean; flags: MetaFlag[]; has: Set<string>; quiet: boolean }
  | {
      cmd: 'ms'
      key: Buffer
      base64: boolean
      flags: MetaFlag[]
      has: Set<string>
      quiet: boolean
      datalen: number
      mode: 'S' | 'E' | 'A' | 'P' | 'R'
    }

/** A refused line: `text` is the reply; `swallow` bytes of an ms data block follow and are dropped. */
export type MetaError = { error: string; swallow?: number }

const BAD_FORMAT = 'CLIENT_ERROR bad command line format\r\n'
const BAD_TOKEN = 'CLIENT_ERROR bad token in command line format\r\n'

/** Whether `line` (without its newline) starts with a meta command. */
export function isMetaLine(line: string): boolean {
  return line.length >= 2 && (line.length === 2 || line.charCodeAt(2) === 32) && META_CODES.has(line.slice(0, 2))
}
const META_CODES = new Set(Object.values(MetaCmd) as string[])

const DIGITS = /^\d{1,20}$/
const SIGNED = /^-?\d{1,20}$/

/**
 * Parses a meta line. Total: any line gives a request or a MetaError; `maxKeyBytes` bounds the
 * key (decoded, for base64 keys) and `maxValueBytes` an ms data block.
 */
export function parseMeta(
  line: string,
  limits: { maxKeyBytes: number; maxValueBytes: number; refuseMarker?: boolean },
): MetaRequest | MetaError {
  const tok = line.split(' ').filter((x) => x.length > 0)
  const cmd = tok[0] as MetaCmd
  if (cmd === 'mn') return { cmd }
  if (tok.length < 2) return { error: 'ERROR\r\n' }
  const rawKey = tok[1]!
  if (cmd === 'me') {
    if (tok.length > 3 || (tok.length === 3 && tok[2] !== 'b')) return { error: BAD_FORMAT }
    const key = decodeKey(rawKey, tok.length === 3, limits)
    return typeof key === 'string' ? { error: key } : { cmd, key, base64: tok.length === 3 }
  }
  let at = 2
  let datalen = 0
  if (cmd === 'ms') {
    const d = tok[2]
    if (d === undefined || !DIGITS.test(d)) return { error: BAD_FORMAT }
    datalen = Number(d)
    at = 3
    if (rawKey.length > limits.maxKeyBytes * 2) return { error: BAD_FORMAT }
  }
  const swallow = cmd === 'ms' ? datalen + 2 : 0
  const fail = (error: string): MetaError => (swallow > 0 ? { error, swallow } : { error })
  const allowed = ALLOWED[cmd]
  if (!allowed) return { error: 'ERROR\r\n' }
  const flags: MetaFlag[] = []
  const has = new Set<string>()
  for (let i = at; i < tok.length; i++) {
    const t = tok[i]!
    const f = t[0]!
    if (!allowed.includes(f)) return fail('CLIENT_ERROR invalid flag\r\n')
    if (has.has(f)) return fail('CLIENT_ERROR duplicate flag\r\n')
    has.add(f)
    const token = t.slice(1)
    if (TOKEN.has(f)) {
      if (f === 'O' && token.length > MAX_OPAQUE_BYTES) return fail('CLIENT_ERROR opaque token too long\r\n')
      if (NUMERIC.has(f)) {
        const ok = f === 'T' || f === 'N' || f === 'R' ? SIGNED.test(token) : DIGITS.test(token)
        if (!ok) return fail(f === 'F' ? BAD_FORMAT : BAD_TOKEN)
        if ((f === 'F' && BigInt(token) > 0xffffffffn) || ((f === 'C' || f === 'J' || f === 'D') && BigInt(token) > 0xffffffffffffffffn))
          return fail(BAD_TOKEN)
      }
    } else if (token.length > 0) return fail('CLIENT_ERROR invalid flag\r\n')
    flags.push({ f, token })
  }
  const base64 = has.has('b')
  const key = decodeKey(rawKey, base64, limits)
  if (typeof key === 'string') return fail(key)
  const quiet = has.has('q')
  if (cmd === 'ms') {
    const m = flags.find((x) => x.f === 'M')
    const mode = (m?.token.toUpperCase() ?? 'S') as 'S' | 'E' | 'A' | 'P' | 'R'
    if (m && (m.token.length !== 1 || !'SEAPR'.includes(mode))) return fail('CLIENT_ERROR invalid mode for ms M token\r\n')
    if (datalen > limits.maxValueBytes) return { error: 'SERVER_ERROR object too large for cache\r\n', swallow }
    return { cmd, key, base64, flags, has, quiet, datalen, mode }
  }
  if (cmd === 'ma') {
    const m = flags.find((x) => x.f === 'M')
    if (m && (m.token.length !== 1 || !'IiDd+-'.includes(m.token))) return fail('CLIENT_ERROR invalid mode for ma M token\r\n')
  }
  return { cmd, key, base64, flags, has, quiet }
}

function decodeKey(raw: string, base64: boolean, limits: { maxKeyBytes: number; refuseMarker?: boolean }): Buffer | string {
  const maxKeyBytes = limits.maxKeyBytes
  if (!base64) {
    if (raw.length > maxKeyBytes) return BAD_FORMAT
    // A key may not start with the tenant marker (0x00, protocol/tenant-keys.ts): it would name another tenant's.
    if (limits.refuseMarker && raw.charCodeAt(0) === 0) return BAD_FORMAT
    return Buffer.from(raw, 'latin1')
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(raw) || raw.length % 4 !== 0) return 'CLIENT_ERROR error decoding key\r\n'
  const key = Buffer.from(raw, 'base64')
  if (key.length === 0 || key.length > maxKeyBytes) return key.length === 0 ? 'CLIENT_ERROR error decoding key\r\n' : BAD_FORMAT
  if (limits.refuseMarker && key[0] === 0) return BAD_FORMAT
  return key
}

/** The token of flag `f`, or undefined. */
export function flagToken(r: { flags: MetaFlag[] }, f: string): string | undefined {
  return r.flags.find((x) => x.f === f)?.token
}

/** What an answer may report, by return flag. */
export interface MetaFacts {
  cas?: bigint
  flags?: number
  size?: number
  /** Remaining TTL in seconds; -1 for none. */
  ttl?: number
  key: Buffer
  base64: boolean
}

/**
 * The return flags of an answer, in the order the request gave them (memcached's order), then
 * the win/stale flags. `which` lists the flags this command reports.
 */
export function metaFlagsOut(r: { flags: MetaFlag[] }, which: string, facts: MetaFacts, extra = ''): string {
  let s = ''
  for (const { f, token } of r.flags) {
    if (!which.includes(f)) continue
    switch (f) {
      case 'O':
        s += ` O${token}`
        break
      case 'k':
        s += ` k${facts.base64 ? facts.key.toString('base64') : facts.key.toString('latin1')}`
        if (facts.base64) s += ' b'
        break
      case 'c':
        if (facts.cas !== undefined) s += ` c${facts.cas}`
        break
      case 'f':
        if (facts.flags !== undefined) s += ` f${facts.flags}`
        break
      case 's':
        if (facts.size !== undefined) s += ` s${facts.size}`
        break
      case 't':
        if (facts.ttl !== undefined) s += ` t${facts.ttl}`
        break
      case 'h':
      case 'l':
        s += ` ${f}0`
        break
      default:
    }
  }
  return s + extra
}
