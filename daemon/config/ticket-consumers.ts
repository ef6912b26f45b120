/**
 * The `ticketConsumers` config value: the TLS servers fed the cluster's ticket keys
 * (tickets/ticket-export.ts writes their files). Validated here, with the rest of the config.
 */
import fs from 'node:fs'
import path from 'node:path'
import { KEY_FORMATS, TICKET_FORMATS, unsafePathReason, type KeyFormat, type TicketFormat } from '../tickets/ticket-formats.js'

export interface TicketConsumer {
  /** Name in the key derivation and in status; the same on every host of the cluster. */
  name: string
  format: TicketFormat
  /** Directory of the consumer's files; empty: ticketDir/name (see `consumerDir`). */
  dir: string
  /** Group owning the files (name or number; empty: the daemon's). */
  group: string
  /** Command run after each write, as argv (no shell); empty: none. */
  reloadCommand: string[]
  /** HAProxy: its admin socket (`stats socket ... level admin`); keys change without a reload. */
  adminSocket: string
  /** Longest a reload command or admin socket exchange may take, in ms. */
  timeoutMs: number
  /** Write even where the directory is not on tmpfs (key material then persists on disk). */
  allowPersistentDisk: boolean
}

const CONSUMER_KEYS = ['name', 'format', 'dir', 'group', 'reloadCommand', 'adminSocket', 'timeoutMs', 'allowPersistentDisk'] as const

/**
 * Validates the `ticketConsumers` config value: a list of tables. Throws a message naming the
 * entry and the key, for config.ts to prefix with the file.
 */
export function parseConsumers(raw: unknown): TicketConsumer[] {
  const list = typeof raw === 'string' ? parseJson(raw) : raw
  if (!Array.isArray(list))
    throw new Error('ticketConsumers must be a list of tables ([[ticketConsumers]] in TOML, a JSON array on the command line)')
  const seen = new Set<string>()
  return list.map((x: unknown, i) => {
    const at = `ticketConsumers[${i}]`
    if (!x || typeof x !== 'object' || Array.isArray(x))
      throw new Error(`${at} must be a table with name, format and (optionally) dir, group, reloadCommand, adminSocket`)
    const o = x as Record<string, unknown>
    for (const k of Object.keys(o))
      if (!(CONSUMER_KEYS as readonly string[]).includes(k))
        throw new Error(`${at}: unknown key ${JSON.stringify(k)}; known keys: ${CONSUMER_KEYS.join(', ')}`)
    const str = (k: string, def: string) => {
      const v = o[k] ?? def
      if (typeof v !== 'string') throw new Error(`${at}.${k} must be a string, got ${JSON.stringify(v)}`)
      return v
    }
    const format = str('format', '')
    if (!(TICKET_FORMATS as readonly string[]).includes(format))
      throw new Error(`${at}.format must be one of ${TICKET_FORMATS.join(', ')}, got ${JSON.stringify(o['format'])}`)
    const name = str('name', format)
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name))
      throw new Error(`${at}.name must be 1 to 64 letters, digits, '.', '_' or '-' (it names a directory), got ${JSON.stringify(name)}`)
    if (seen.has(name)) throw new Error(`${at}.name ${JSON.stringify(name)} is used twice: consumers need distinct names`)
    seen.add(name)
    const dir = str('dir', '')
    if (dir && !path.isAbsolute(dir)) throw new Error(`${at}.dir must be an absolute path, got ${JSON.stringify(dir)}`)
    const unsafe = dir ? unsafePathReason(dir) : undefined
    if (unsafe) throw new Error(`${at}.dir: ${unsafe}`)
    const group = str('group', '')
    if (group) resolveGroup(group, `${at}.group`)
    const rc = o['reloadCommand'] ?? []
    if (!Array.isArray(rc) || !rc.every((a) => typeof a === 'string' && a.length > 0))
      throw new Error(
        `${at}.reloadCommand must be a list of arguments such as ["systemctl", "reload", "nginx"] (run without a shell), got ${JSON.stringify(rc)}`,
      )
    const adminSocket = str('adminSocket', '')
    if (adminSocket && format !== 'haproxy') throw new Error(`${at}.adminSocket is for format "haproxy" only`)
    if (adminSocket && !path.isAbsolute(adminSocket))
      throw new Error(`${at}.adminSocket must be an absolute path, got ${JSON.stringify(adminSocket)}`)
    if (adminSocket && rc.length > 0)
      throw new Error(`${at}: set adminSocket or reloadCommand, not both (the socket changes keys without a reload)`)
    const t = o['timeoutMs'] ?? 10_000
    if (typeof t !== 'number' || !Number.isSafeInteger(t) || t < 100 || t > 600_000)
      throw new Error(`${at}.timeoutMs must be an integer from 100 to 600000 ms, got ${JSON.stringify(t)}`)
    const apd = o['allowPersistentDisk'] ?? false
    if (typeof apd !== 'boolean') throw new Error(`${at}.allowPersistentDisk must be true or false, got ${JSON.stringify(apd)}`)
    return {
      name,
      format: format as TicketFormat,
      dir,
      group,
      reloadCommand: rc as string[],
      adminSocket,
      timeoutMs: t,
      allowPersistentDisk: apd,
    }
  })
}

function parseJson(s: string): unknown {
  try {
    return JSON.parse(s)
  } catch {
    throw new Error('ticketConsumers on the command line must be a JSON array of tables')
  }
}

/** A group name or number to its gid, from /etc/group. */
export function resolveGroup(group: string, what: string): number {
  if (/^\d+$/.test(group)) return Number(group)
  let text = ''
  try {
    text = fs.readFileSync('/etc/group', 'utf8')
  } catch (err) {
    throw new Error(`${what}: cannot read /etc/group to find group ${JSON.stringify(group)}: ${(err as Error).message}`)
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':')
    if (name === group && gid && /^\d+$/.test(gid)) return Number(gid)
  }
  throw new Error(`${what}: no group ${JSON.stringify(group)} on this host`)
}

/**
 * What one connection may read of the ticket keys: the consumers it may ask for (CONSUMER_KEYS,
 * and TICKET_KEY, which is the "node" consumer). The admin socket reads all; the main API socket
 * (the default tenant) those `apiTicketConsumers` names; a tenant's API socket those its
 * [[tenants]] table lists (daemon/local/tenants.ts `ticketRightsFor`).
 */
export interface TicketRights {
  /** Who asks, for messages: "api socket", "admin socket", a tenant's name. */
  who: string
  consumers: 'all' | ReadonlySet<string>
}

/**
 * The one check of who reads which ticket keys. A consumer is a name and a format: a name of
 * `ticketConsumers` has that entry's format and no other (the same name under another format
 * would be another key, which some other host may use); any other name is a Node consumer.
 */
export function mayReadConsumer(
  rights: TicketRights,
  format: string,
  name: string,
  configured: readonly Pick<TicketConsumer, 'name' | 'format'>[],
): boolean {
  if (!(KEY_FORMATS as readonly string[]).includes(format)) return false
  if (rights.consumers === 'all') return true
  if (!rights.consumers.has(name)) return false
  const c = configured.find((x) => x.name === name)
  return format === (c?.format ?? 'node')
}

/** Whether `format` names a key format (a file format, or "node"). */
export function isKeyFormat(format: string): format is KeyFormat {
  return (KEY_FORMATS as readonly string[]).includes(format)
}
