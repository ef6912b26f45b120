/**
 * Session ticket keys for TLS servers other than Node, derived from the cluster's epoch secrets,
 * and the files each server reads. Pure: no fs, no clock.
 *
 * Every consumer gets its own bytes: HKDF-SHA256 of the epoch's secret with the consumer's
 * format, name and the epoch in the label, so no two consumers (Node's helper included: format
 * "node") ever hold the same key, a leaked nginx key says nothing about HAProxy's, and no
 * consumer holds the secret itself (which never leaves the daemon).
 * The key name is derived the same way, so every host of the cluster writes the same name for the
 * same epoch and a host's server recognises the others' tickets.
 *
 * Layouts, as each server reads them (checked against its source):
 *   nginx   `ssl_session_ticket_key FILE`, 80 bytes: name 16 | HMAC-SHA256 key 32 | AES-256 key 32
 *           (ngx_ssl_session_ticket_keys); the first directive encrypts, all decrypt.
 *   HAProxy `tls-ticket-keys FILE`, base64 lines of 80 bytes: name 16 | AES-256 key 32 | HMAC key 32
 *           (struct tls_sess_key_256); the last three lines load, the middle one encrypts.
 *   Apache  `SSLSessionTicketKeyFile FILE`, 48 bytes: name 16 | HMAC key 16 | AES-128 key 16
 *           (mod_ssl ssl_engine_config.c); one key, which both encrypts and decrypts.
 *   h2o     `ticket-file`, a YAML sequence of {name (32 hex), cipher, hash, key (hex: AES key, then
 *           the HMAC key of the hash's block size), not_before, not_after (Unix seconds)}; h2o
 *           encrypts with the newest entry whose not_before has passed, so it turns to the next
 *           key at its epoch on its own clock, without re-reading the file.
 *   Node    `setTicketKeys`, 48 bytes: name 16 | HMAC key 16 | AES-128 key 16 (no file: the
 *           helper reads it from the API socket, TICKET_KEY).
 */
import crypto from 'node:crypto'

/**
 * Characters a ticket directory's path may hold: it is written into nginx's keys.conf and sent
 * in HAProxy's admin-socket commands, where a space, quote, semicolon, backslash, '#' or newline
 * would end or change the directive. Anything else is refused, not quoted.
 */
const SAFE_PATH = /^\/[A-Za-z0-9._+@%=,:/-]*$/

/** Why `p` cannot be a ticket directory's path (undefined: it can). */
export function unsafePathReason(p: string): string | undefined {
  if (!SAFE_PATH.test(p))
    return `${JSON.stringify(p)} holds a character that is not a letter, digit or one of . _ + @ % = , : / - (it is written into server configs and admin-socket commands)`
  if (p.split('/').includes('..')) return `${JSON.stringify(p)} holds a '..' component`
  return undefined
}

/** Formats written to files by the exporter (ticketConsumers). */
export const TICKET_FORMATS = ['nginx', 'haproxy', 'apache', 'h2o'] as const
export type TicketFormat = (typeof TICKET_FORMATS)[number]
/** Every format a key is derived for: the files' and Node's (served on the API socket). */
export const KEY_FORMATS = [...TICKET_FORMATS, 'node'] as const
export type KeyFormat = (typeof KEY_FORMATS)[number]
/** The consumer Node's helper reads by default (TICKET_KEY). */
export const NODE_CONSUMER = 'node'

/** One epoch's secret, as the window holds it. */
export interface EpochSecret {
  epoch: number
  secret: Buffer
}

/** The secrets a consumer is written from: `current` encrypts. */
export interface SecretWindow {
  rotationMs: number
  previous: EpochSecret | undefined
  current: EpochSecret
  next: EpochSecret | undefined
}

/** A derived key: what every format is cut from. */
export interface DerivedKey {
  epoch: number
  name: Buffer
  aes: Buffer
  hmac: Buffer
  /** False for a filler in a slot whose epoch has no secret yet (HAProxy always loads three). */
  real: boolean
}

const SALT = Buffer.from('statecast ticket keys v1')

/** Bytes of the AES and HMAC keys per format. */
const SIZES: Record<KeyFormat, { aes: number; hmac: number }> = {
  nginx: { aes: 32, hmac: 32 },
  haproxy: { aes: 32, hmac: 32 },
  apache: { aes: 16, hmac: 16 },
  // h2o's HMAC key is the hash's block size: 64 bytes for SHA-256.
  h2o: { aes: 32, hmac: 64 },
  // Node (OpenSSL's default ticket callback): AES-128-CBC and an HMAC-SHA256 key of 16 bytes.
  node: { aes: 16, hmac: 16 },
}

function hkdf(secret: Buffer, info: string, bytes: number): Buffer {
  // A view on the ArrayBuffer HKDF returns, so wiping the view wipes the only copy.
  return Buffer.from(crypto.hkdfSync('sha256', secret, SALT, Buffer.from(info), bytes))
}

/** The key a consumer uses for one epoch. `consumer` must be spelled the same on every host. */
export function deriveKey(format: KeyFormat, consumer: string, s: EpochSecret, label = 'key'): DerivedKey {
  const { aes, hmac } = SIZES[format]
  const info = `${label}\0${format}\0${consumer}\0${s.epoch}`
  const name = hkdf(s.secret, `name\0${info}`, 16)
  const material = hkdf(s.secret, `material\0${info}`, aes + hmac)
  return { epoch: s.epoch, name, aes: material.subarray(0, aes), hmac: material.subarray(aes), real: label === 'key' }
}

export function wipeKey(k: DerivedKey): void {
  k.name.fill(0)
  k.aes.fill(0)
  k.hmac.fill(0)
}

/** One file a consumer reads: a name inside its directory and the bytes. */
export interface TicketFile {
  name: string
  data: Buffer
}

export interface Rendered {
  files: TicketFile[]
  /** The keys written, encrypting first (for status: their names and epochs). */
  keys: DerivedKey[]
  /** HAProxy: the three lines as they load (previous, current, next), base64. */
  ring?: string[]
}

/**
 * The keys a consumer holds at one moment, derived from the secrets: previous, current and next,
 * a slot whose epoch has no secret yet filled with a key derived from the current secret under
 * another label (nobody ever encrypts with it, so it decrypts nothing; HAProxy always loads three).
 */
export interface KeyWindow {
  rotationMs: number
  previous: DerivedKey
  current: DerivedKey
  next: DerivedKey
}

export function deriveWindow(format: KeyFormat, consumer: string, w: SecretWindow): KeyWindow {
  const slot = (s: EpochSecret | undefined, epoch: number) =>
    s ? deriveKey(format, consumer, s) : deriveKey(format, consumer, { epoch, secret: w.current.secret }, 'filler')
  return {
    rotationMs: w.rotationMs,
    previous: slot(w.previous, w.current.epoch - 1),
    current: deriveKey(format, consumer, w.current),
    next: slot(w.next, w.current.epoch + 1),
  }
}

export function wipeWindow(w: KeyWindow): void {
  for (const k of [w.previous, w.current, w.next]) wipeKey(k)
}

/** Node's `setTicketKeys` bytes of a key: name, HMAC key, AES key. The caller wipes them. */
export function nodeTicketKey(k: DerivedKey): Buffer {
  return Buffer.concat([k.name, k.hmac, k.aes])
}

/** Every file of `format` for the keys `w`. Wipe with `wipeRendered` once written. */
export function render(format: TicketFormat, dir: string, w: KeyWindow): Rendered {
  const cur = w.current
  const real = (k: DerivedKey) => (k.real ? k : undefined)
  switch (format) {
    case 'nginx': {
      const keys = [cur, real(w.next), real(w.previous)].filter((k): k is DerivedKey => k !== undefined)
      const files = keys.map((k) => ({ name: `${k.epoch}.key`, data: Buffer.concat([k.name, k.hmac, k.aes]) }))
      const conf = [
        "# Written by statecastd: the cluster's session ticket keys, the encrypting one first.",
        ...keys.map((k) => `ssl_session_ticket_key ${dir}/${k.epoch}.key;`),
        '',
      ].join('\n')
      return { files: [...files, { name: 'keys.conf', data: Buffer.from(conf) }], keys }
    }
    case 'haproxy': {
      const prev = w.previous
      const next = w.next
      const lines = [prev, cur, next].map((k) => {
        const raw = Buffer.concat([k.name, k.aes, k.hmac])
        const b64 = raw.toString('base64')
        raw.fill(0)
        return b64
      })
      return { files: [{ name: 'tls-ticket-keys', data: Buffer.from(lines.join('\n') + '\n') }], keys: [cur, next, prev], ring: lines }
    }
    case 'apache':
      return { files: [{ name: 'ticket.key', data: Buffer.concat([cur.name, cur.hmac, cur.aes]) }], keys: [cur] }
    case 'h2o': {
      const sec = (ms: number) => Math.floor(ms / 1000)
      const keys = [real(w.next), cur, real(w.previous)].filter((k): k is DerivedKey => k !== undefined)
      const entries = keys.map((k) =>
        [
          `- name: ${k.name.toString('hex')}`,
          '  cipher: aes-256-cbc',
          '  hash: sha256',
          `  key: ${Buffer.concat([k.aes, k.hmac]).toString('hex')}`,
          `  not_before: ${sec(k.epoch * w.rotationMs)}`,
          // Encrypting past its epoch only if the next key never came: better than none at all.
          `  not_after: ${sec((k.epoch + 2) * w.rotationMs) - 1}`,
        ].join('\n'),
      )
      return {
        files: [{ name: 'tickets.yaml', data: Buffer.from(entries.join('\n') + '\n') }],
        keys: [cur, ...keys.filter((k) => k !== cur)],
      }
    }
  }
}

export function wipeRendered(r: Rendered): void {
  for (const f of r.files) f.data.fill(0)
  for (const k of r.keys) wipeKey(k)
}
