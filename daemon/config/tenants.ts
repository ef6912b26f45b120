/**
 * The `tenants` config value: named sets of local servers, each with its own API socket, key
 * namespace (protocol/tenant-keys.ts), byte quota in the store, memcache listeners and ticket-key
 * consumers. Validated here, with the rest of the config (cross-key checks: config.ts `apply`).
 */
import fs from 'node:fs'
import path from 'node:path'
import { TENANT_NAME } from '../../protocol/tenant-keys.js'
import { parseListen } from './listen.js'
import { resolveGroup } from './ticket-consumers.js'

export interface TenantConfig {
  /** Name of the tenant: its key namespace, the same on every host of the cluster. */
  name: string
  /** The tenant's API socket. */
  socketPath: string
  /** Permission bits of the API socket and of the tenant's memcache sockets (default 0660). */
  socketMode: number
  /** Group owning the tenant's sockets (name or number; empty: the daemon's). */
  socketGroup: string
  /** The tenant's share of each host's store, in bytes: its writes evict only its own entries. */
  maxBytes: number
  /** The tenant's memcache listeners: socket paths (the documented way) or loopback HOST:PORT. */
  memcacheListen: string[]
  /** Users (uids) served as this tenant on memcache TCP listeners when memcacheTcpAccess = "uid". */
  memcacheUsers: number[]
  /** Names of the ticketConsumers whose ticket keys this tenant's clients may read. */
  ticketConsumers: string[]
  /** With memcacheTcpAccess = "auth": this tenant's memcache users (user:password lines); '' = none. */
  memcacheAuthFile: string
}

const TENANT_KEYS = [
  'name',
  'socketPath',
  'socketMode',
  'socketGroup',
  'maxBytes',
  'memcacheListen',
  'memcacheUsers',
  'ticketConsumers',
  'memcacheAuthFile',
] as const

/** Largest value of a tenant's maxBytes, as the top-level key's. */
const MAX_BYTES = 2 ** 50

/**
 * Validates the `tenants` config value: a list of tables ([[tenants]] in TOML, a JSON array on
 * the command line). Throws a message naming the entry and the key, for config.ts to prefix.
 */
export function parseTenants(raw: unknown): TenantConfig[] {
  const list = typeof raw === 'string' ? parseJson(raw) : raw
  if (!Array.isArray(list)) throw new Error('tenants must be a list of tables ([[tenants]] in TOML, a JSON array on the command line)')
  const seen = new Set<string>()
  return list.map((x: unknown, i) => {
    const at = `tenants[${i}]`
    if (!x || typeof x !== 'object' || Array.isArray(x))
      throw new Error(
        `${at} must be a table with name, socketPath, maxBytes and (optionally) socketMode, socketGroup, memcacheListen, memcacheUsers, ticketConsumers`,
      )
    const o = x as Record<string, unknown>
    for (const k of Object.keys(o))
      if (!(TENANT_KEYS as readonly string[]).includes(k))
        throw new Error(`${at}: unknown key ${JSON.stringify(k)}; known keys: ${TENANT_KEYS.join(', ')}`)
    const str = (k: string, def: string) => {
      const v = o[k] ?? def
      if (typeof v !== 'string') throw new Error(`${at}.${k} must be a string, got ${kindOf(v)}`)
      return v
    }
    const name = str('name', '')
    if (!TENANT_NAME.test(name))
      throw new Error(
        `${at}.name must be 1 to 32 letters, digits, '.', '_' or '-' (it is the tenant's key namespace), got ${JSON.stringify(name)}`,
      )
    if (seen.has(name)) throw new Error(`${at}.name ${JSON.stringify(name)} is used twice: tenants need distinct names`)
    seen.add(name)
    const socketPath = str('socketPath', '')
    if (!path.isAbsolute(socketPath))
      throw new Error(`${at}.socketPath must be an absolute path (the tenant's API socket), got ${JSON.stringify(socketPath)}`)
    const m = o['socketMode'] ?? '0660'
    const ms = typeof m === 'number' ? m.toString(8) : m
    if (typeof ms !== 'string' || !/^0?[0-7]{3}$/.test(ms))
      throw new Error(`${at}.socketMode must be an octal mode such as "0660", got ${kindOf(m)}`)
    const socketGroup = str('socketGroup', '')
    if (socketGroup) resolveGroup(socketGroup, `${at}.socketGroup`)
    const b = o['maxBytes']
    if (typeof b !== 'number' || !Number.isSafeInteger(b) || b < 0 || b > MAX_BYTES)
      throw new Error(
        `${at}.maxBytes must be an integer from 0 to ${MAX_BYTES} bytes (the tenant's share of each host's store), got ${kindOf(b)}`,
      )
    const listen = o['memcacheListen'] ?? []
    if (!Array.isArray(listen) || !listen.every((s) => typeof s === 'string'))
      throw new Error(`${at}.memcacheListen must be a list of socket paths or loopback HOST:PORT, got ${kindOf(listen)}`)
    listen.forEach((s: string, j) => {
      try {
        parseListen(s)
      } catch {
        throw new Error(
          `${at}.memcacheListen item ${j + 1} is neither a loopback HOST:PORT (127.0.0.1:PORT or [::1]:PORT) nor an absolute socket path`,
        )
      }
      if (!parseListen(s) && !path.isAbsolute(s)) throw new Error(`${at}.memcacheListen item ${j + 1} must be an absolute socket path`)
    })
    const users = parseUsers(o['memcacheUsers'] ?? [], `${at}.memcacheUsers`)
    const tc = o['ticketConsumers'] ?? []
    if (!Array.isArray(tc) || !tc.every((s) => typeof s === 'string' && s.length > 0))
      throw new Error(`${at}.ticketConsumers must be a list of ticketConsumers names, got ${kindOf(tc)}`)
    const memcacheAuthFile = str('memcacheAuthFile', '')
    return {
      name,
      memcacheAuthFile,
      socketPath,
      socketMode: parseInt(ms, 8),
      socketGroup,
      maxBytes: b,
      memcacheListen: listen,
      memcacheUsers: users,
      ticketConsumers: tc as string[],
    }
  })
}

/** A list of user names or uids to uids (names from /etc/passwd). */
export function parseUsers(raw: unknown, what: string): number[] {
  const list =
    typeof raw === 'string'
      ? raw
          .split(',')
          .map((x) => x.trim())
          .filter(Boolean)
      : raw
  if (!Array.isArray(list)) throw new Error(`${what} must be a list of user names or uids, got ${kindOf(raw)}`)
  return list.map((u: unknown) => {
    if (typeof u === 'number' && Number.isSafeInteger(u) && u >= 0 && u < 2 ** 32) return u
    if (typeof u === 'string' && /^\d{1,10}$/.test(u) && Number(u) < 2 ** 32) return Number(u)
    if (typeof u === 'string' && u.length > 0) return resolveUser(u, what)
    throw new Error(`${what} must hold user names or uids, got ${kindOf(u)}`)
  })
}

/** A user name to its uid, from /etc/passwd. */
export function resolveUser(user: string, what: string): number {
  let text = ''
  try {
    text = fs.readFileSync('/etc/passwd', 'utf8')
  } catch (err) {
    throw new Error(`${what}: cannot read /etc/passwd to find user ${JSON.stringify(user)}: ${(err as Error).message}`)
  }
  for (const line of text.split('\n')) {
    const [name, , id] = line.split(':')
    if (name === user && id && /^\d+$/.test(id)) return Number(id)
  }
  throw new Error(`${what}: no user ${JSON.stringify(user)} on this host`)
}

function kindOf(v: unknown): string {
  if (typeof v === 'string') return `a string of ${v.length} characters`
  if (Array.isArray(v)) return `a list of ${v.length} items`
  if (v === null || v === undefined) return 'nothing'
  return typeof v === 'object' ? 'a table' : `a ${typeof v}`
}

function parseJson(s: string): unknown {
  try {
    return JSON.parse(s)
  } catch {
    throw new Error('tenants on the command line must be a JSON array of tables')
  }
}
