/**
 * Authentication before a memcache connection is served, as memcached does it: pure parsing, no
 * sockets (auth-gate.ts drives it).
 *
 * Binary (memcached -S, proto_bin.c): SASL_LIST_MECHS answers "PLAIN"; SASL_AUTH with key
 * "PLAIN" and the value `[authzid] NUL user NUL password` (RFC 4616) answers "Authenticated" or
 * Auth failure (status 0x20, the connection kept); SASL_STEP is Auth failure (PLAIN has one
 * step); VERSION is answered; any other request gets Auth failure and the connection is closed.
 *
 * Text (memcached -Y, proto_text.c): the first command must be `set <key> <flags> <exptime>
 * <bytes>` whose data is `user password`: STORED, or CLIENT_ERROR authentication failure; any
 * other line gets CLIENT_ERROR unauthenticated.
 */
import crypto from 'node:crypto'
import { BinStatus, HEADER_BYTES, Magic, Opcode, encodeResponse, errorResponse, readHeader } from './binary.js'

/** The only SASL mechanism offered. */
export const SASL_MECHS = 'PLAIN'
/** Largest SASL request body read (mechanism and PLAIN message); larger: Invalid arguments and a hangup. */
export const MAX_SASL_BODY_BYTES = 1024
/** memcached's MAX_AUTH_REQ_LEN: the longest auth set data block. */
export const MAX_TEXT_AUTH_BYTES = 16384
/** memcached: no newline in the first 2,048 bytes of a line, and the connection is closed. */
const MAX_LINE_BYTES = 2048

/** A SASL PLAIN message's user and password, or why it is malformed. */
export function parsePlain(msg: Buffer): { user: Buffer; password: Buffer } | { error: string } {
  const a = msg.indexOf(0)
  if (a < 0) return { error: 'no NUL' }
  const b = msg.indexOf(0, a + 1)
  if (b < 0) return { error: 'one NUL' }
  if (msg.indexOf(0, b + 1) >= 0) return { error: 'more than two NULs' }
  const authzid = msg.subarray(0, a)
  const user = msg.subarray(a + 1, b)
  const password = msg.subarray(b + 1)
  if (user.length === 0) return { error: 'no user' }
  if (password.length === 0) return { error: 'no password' }
  if (user.length > 255 || password.length > 255 || authzid.length > 255) return { error: 'a field longer than 255 bytes' }
  // Acting for another user (an authorization id) is not offered.
  if (authzid.length > 0 && !authzid.equals(user)) return { error: 'authzid differs from the user' }
  return { user, password }
}

/** What the start of a not yet authenticated connection's input asks for. */
export type AuthStep =
  /** More bytes are needed. */
  | { kind: 'need' }
  /** Consume `bytes`, send `reply`; hang up after it when `close`. `failure`: a failed attempt, counted. */
  | { kind: 'reply'; bytes: number; reply: Buffer; close: boolean; failure?: boolean; refused?: boolean }
  /** Consume `bytes`; check the credentials, then answer with `ok` or `fail`. */
  | { kind: 'login'; bytes: number; user: Buffer; password: Buffer; ok: Buffer; fail: Buffer }

const text = (s: string) => Buffer.from(s, 'latin1')

/** One step of the auth exchange on `b` (the unread input). Total: any bytes give a step, never an exception. */
export function authStep(b: Buffer, version: string): AuthStep {
  if (b.length === 0) return { kind: 'need' }
  return b[0] === Magic.REQUEST ? binaryStep(b, version) : textStep(b)
}

function binaryStep(b: Buffer, version: string): AuthStep {
  if (b.length < HEADER_BYTES) return { kind: 'need' }
  const h = readHeader(b)
  const { opcode, opaque } = h
  const bad = (status: number): AuthStep => ({
    kind: 'reply',
    bytes: HEADER_BYTES,
    reply: errorResponse(opcode, opaque, status),
    close: true,
    refused: true,
  })
  if (h.keyLength + h.extrasLength > h.bodyLength) return bad(BinStatus.UNKNOWN_COMMAND)
  const total = HEADER_BYTES + h.bodyLength
  switch (opcode) {
    case Opcode.SASL_LIST_MECHS:
      if (h.bodyLength !== 0) return bad(BinStatus.EINVAL)
      return {
        kind: 'reply',
        bytes: HEADER_BYTES,
        reply: encodeResponse({ opcode, status: BinStatus.OK, opaque, value: text(SASL_MECHS) }),
        close: false,
      }
    case Opcode.VERSION:
      if (h.bodyLength !== 0) return bad(BinStatus.EINVAL)
      return {
        kind: 'reply',
        bytes: HEADER_BYTES,
        reply: encodeResponse({ opcode, status: BinStatus.OK, opaque, value: text(version) }),
        close: false,
      }
    case Opcode.SASL_AUTH:
    case Opcode.SASL_STEP: {
      if (h.extrasLength !== 0 || h.keyLength === 0 || h.bodyLength > MAX_SASL_BODY_BYTES) return bad(BinStatus.EINVAL)
      if (b.length < total) return { kind: 'need' }
      const fail = errorResponse(opcode, opaque, BinStatus.AUTH_ERROR)
      const mech = b.subarray(HEADER_BYTES, HEADER_BYTES + h.keyLength)
      if (opcode === Opcode.SASL_STEP || mech.toString('latin1') !== SASL_MECHS)
        return { kind: 'reply', bytes: total, reply: fail, close: false, failure: true }
      const p = parsePlain(b.subarray(HEADER_BYTES + h.keyLength, total))
      if ('error' in p) return { kind: 'reply', bytes: total, reply: fail, close: false, failure: true }
      return {
        kind: 'login',
        bytes: total,
        user: Buffer.from(p.user),
        password: Buffer.from(p.password),
        ok: encodeResponse({ opcode, status: BinStatus.OK, opaque, value: text('Authenticated') }),
        fail,
      }
    }
    default:
      // memcached: every other command before authentication is Auth failure, and a hangup.
      return bad(BinStatus.AUTH_ERROR)
  }
}

function textStep(b: Buffer): AuthStep {
  const eol = b.indexOf(10)
  if (eol < 0) {
    if (b.length > MAX_LINE_BYTES)
      return { kind: 'reply', bytes: b.length, reply: text('CLIENT_ERROR line too long\r\n'), close: true, refused: true }
    return { kind: 'need' }
  }
  const line = b.toString('latin1', 0, eol > 0 && b[eol - 1] === 13 ? eol - 1 : eol)
  const tok = line.split(' ').filter((x) => x.length > 0)
  const size = tok.length >= 5 && tok[0] === 'set' && /^\d{1,10}$/.test(tok[4]!) ? Number(tok[4]) : undefined
  if (size === undefined || size > 0xffffffff)
    return { kind: 'reply', bytes: eol + 1, reply: text('CLIENT_ERROR unauthenticated\r\n'), close: false, refused: true }
  // Its data cannot be skipped safely unread: answered, and the connection closed.
  if (size > MAX_TEXT_AUTH_BYTES)
    return { kind: 'reply', bytes: b.length, reply: text('CLIENT_ERROR auth token too long\r\n'), close: true, failure: true }
  const total = eol + 1 + size + 2
  if (b.length < total) return { kind: 'need' }
  const data = b.subarray(eol + 1, eol + 1 + size)
  const fail = text('CLIENT_ERROR authentication failure\r\n')
  if (b[total - 2] !== 13 || b[total - 1] !== 10)
    return { kind: 'reply', bytes: total, reply: text('CLIENT_ERROR bad command line termination\r\n'), close: false, failure: true }
  const sp = data.indexOf(32)
  if (sp < 0)
    return { kind: 'reply', bytes: total, reply: text('CLIENT_ERROR bad authentication token format\r\n'), close: false, failure: true }
  return {
    kind: 'login',
    bytes: total,
    user: Buffer.from(data.subarray(0, sp)),
    password: Buffer.from(data.subarray(sp + 1)),
    ok: text('STORED\r\n'),
    fail,
  }
}

/** Users by tenant, checked in constant time per entry (the time does not depend on which entry, if any, matches). */
export class AuthUsers {
  readonly #entries: { user: Buffer; password: Buffer; tenant: string }[]

  constructor(byTenant: ReadonlyMap<string, readonly { user: Buffer; password: Buffer }[]>) {
    this.#entries = []
    const seen = new Map<string, string>()
    for (const [tenant, users] of byTenant)
      for (const u of users) {
        const name = u.user.toString('latin1')
        const other = seen.get(name)
        if (other !== undefined)
          throw new Error(
            `the memcache user ${JSON.stringify(name)} is listed for tenant ${other || '(default)'} and tenant ${tenant || '(default)'}: a user is one tenant`,
          )
        seen.set(name, tenant)
        this.#entries.push({ user: digest(u.user), password: digest(u.password), tenant })
      }
  }

  get size(): number {
    return this.#entries.length
  }

  /** The tenant whose user this is with this password, or undefined. */
  check(user: Buffer, password: Buffer): string | undefined {
    const u = digest(user)
    const p = digest(password)
    let found: string | undefined
    for (const e of this.#entries) {
      // Both compared every time: no early exit on the user name.
      const a = crypto.timingSafeEqual(u, e.user)
      const b = crypto.timingSafeEqual(p, e.password)
      if (a && b) found = e.tenant
    }
    return found
  }
}

function digest(b: Buffer): Buffer {
  return crypto.createHash('sha256').update(b).digest()
}
