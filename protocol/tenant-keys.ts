/**
 * Tenant namespaces in store keys. A tenant's key K is stored (and travels to peers: LOOKUP,
 * HIT digests, REPLICATE, DELETE, handoff) as
 *
 *   0x00 | tenant name (1..MAX_TENANT_NAME_BYTES of [A-Za-z0-9._-]) | 0x00 | K
 *
 * The default tenant (a daemon with no tenants, and the main API socket and memcache listeners of
 * one with tenants) stores K as it is, so its keys, on the wire and in the store, are as before.
 * No client key may start with TENANT_MARKER (every front end refuses it), so no client of one
 * tenant can name a key of another.
 */

/** First byte of every namespaced store key; refused as the first byte of any client key. */
export const TENANT_MARKER = 0
/** Longest tenant name, in bytes. */
export const MAX_TENANT_NAME_BYTES = 32
/** A tenant's name: letters, digits, '.', '_', '-'. */
export const TENANT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$/
/** The default tenant's name in counters and listings (it has no prefix). */
export const DEFAULT_TENANT = ''

/** The store-key prefix of tenant `name` ('' for the default tenant). */
export function tenantPrefix(name: string): string {
  return name === DEFAULT_TENANT ? '' : `\u0000${name}\u0000`
}

/**
 * The tenant a store key belongs to: DEFAULT_TENANT for a key without the marker, the name for a
 * well-formed namespaced key, undefined for a key that starts with the marker but is not one.
 */
export function tenantOfStoreKey(key: string): string | undefined {
  if (key.charCodeAt(0) !== TENANT_MARKER) return DEFAULT_TENANT
  const end = key.indexOf('\u0000', 1)
  if (end < 2 || end > MAX_TENANT_NAME_BYTES + 1) return undefined
  return key.slice(1, end)
}

/** Why a client key may not be used, beyond its length: it starts with the tenant marker. */
export function markerProblem(key: Buffer | string): string | undefined {
  const first = typeof key === 'string' ? key.charCodeAt(0) : key[0]
  return first === TENANT_MARKER ? 'key starts with byte 0x00, which is reserved for tenant namespaces' : undefined
}
