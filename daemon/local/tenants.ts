/**
 * Tenants at the local front ends: the key boundary between a tenant's clients and the store.
 *
 * A client key K of tenant T is the store key `tenantPrefix(T) + K` (protocol/tenant-keys.ts);
 * every path behind the front ends (the store, lookups, HITs, copies, deletes, handoff) sees only
 * store keys, so the namespace travels with the key to every host. The default tenant has no
 * prefix, so a daemon without tenants stores and sends what it always did. `view` gives a front
 * end (the API handler, a memcache server) a store and cluster hooks in the tenant's namespace:
 * it cannot name another tenant's key, and listing, usage and flushing are its own.
 */
import type { ClusterHooks } from '../cluster/hooks.js'
import type { Config } from '../config/config.js'
import type { TenantConfig } from '../config/tenants.js'
import type { TicketRights } from '../config/ticket-consumers.js'
import type { SessionStore, StoreEntry, StoreStats } from '../store/session-store.js'
import { DEFAULT_TENANT, markerProblem, tenantPrefix } from '../../protocol/tenant-keys.js'

export interface Tenant {
  /** DEFAULT_TENANT ('') for the default tenant. */
  readonly name: string
  /** The tenant's store-key prefix ('' for the default tenant). */
  readonly prefix: string
  /** Longest client key of this tenant: maxKeyBytes less its prefix. */
  readonly maxKeyBytes: number
  /** The tenant's store share in bytes. */
  readonly maxBytes: number
  /** Names of the ticket consumers whose keys the tenant's clients may read. */
  readonly consumers: readonly string[]
  /** Uids served as this tenant on memcache TCP listeners with memcacheTcpAccess = "uid". */
  readonly memcacheUsers: readonly number[]
  /** The tenant's own config entry (undefined for the default tenant). */
  readonly config: TenantConfig | undefined
}

/** The store key of a client key of `t`. */
export function toStoreKey(t: Tenant, key: string): string {
  return t.prefix === '' ? key : t.prefix + key
}

/** The client key of a store key of `t`, or undefined when it is not one of `t`'s keys. */
export function fromStoreKey(t: Tenant, storeKey: string): string | undefined {
  if (t.prefix === '') return markerProblem(storeKey) ? undefined : storeKey
  return storeKey.startsWith(t.prefix) ? storeKey.slice(t.prefix.length) : undefined
}

/** Why a client key of `t` is refused: empty, too long for the tenant, or starting with the marker. */
export function clientKeyProblem(t: Tenant, key: Buffer | string): string | undefined {
  if (key.length === 0) return 'key is empty'
  if (key.length > t.maxKeyBytes) return `key is ${key.length} bytes, at most ${t.maxKeyBytes}`
  return markerProblem(key)
}

/** The tenants of a config: the default tenant first, then each of `tenants`. */
export function tenantsOf(c: Pick<Config, 'tenants' | 'maxBytes' | 'maxKeyBytes' | 'memcacheUsers'>): Tenant[] {
  const named = c.tenants.reduce((n, t) => n + t.maxBytes, 0)
  const def: Tenant = {
    name: DEFAULT_TENANT,
    prefix: '',
    maxKeyBytes: c.maxKeyBytes,
    maxBytes: c.maxBytes - named,
    consumers: [],
    memcacheUsers: c.memcacheUsers,
    config: undefined,
  }
  return [
    def,
    ...c.tenants.map((t) => {
      const prefix = tenantPrefix(t.name)
      return {
        name: t.name,
        prefix,
        maxKeyBytes: c.maxKeyBytes - prefix.length,
        maxBytes: t.maxBytes,
        consumers: t.ticketConsumers,
        memcacheUsers: t.memcacheUsers,
        config: t,
      }
    }),
  ]
}

/** The store's per-tenant shares (StoreOptions.tenantQuotas) for a config. */
export function tenantQuotas(c: Pick<Config, 'tenants' | 'maxBytes' | 'maxKeyBytes' | 'memcacheUsers'>): Map<string, number> {
  return new Map(tenantsOf(c).map((t) => [t.name, t.maxBytes]))
}

/**
 * The ticket-key consumers `tenant`'s API socket may read, by name (the names go through
 * `mayReadConsumer`, ticket-consumers.ts, with the format check): a named tenant those its table
 * lists; the default tenant (the main API socket) those `apiTicketConsumers` names, with or
 * without tenants. No socket reads an epoch secret; the admin socket reads every consumer.
 */
export function consumersFor(tenant: Tenant, c: Pick<Config, 'apiTicketConsumers'>): string[] {
  if (tenant.name === DEFAULT_TENANT) return [...c.apiTicketConsumers]
  return [...tenant.consumers]
}

/** The ticket rights (HandlerDeps.ticketRights) of `tenant`'s API socket: exactly `consumersFor`. */
export function ticketRightsFor(tenant: Tenant, c: Pick<Config, 'apiTicketConsumers'>): TicketRights {
  return {
    who: tenant.name === DEFAULT_TENANT ? 'API socket' : `API socket of tenant ${JSON.stringify(tenant.name)}`,
    consumers: new Set(consumersFor(tenant, c)),
  }
}

/**
 * The store as one tenant sees it: its keys only, under their client names. Usage and flushing
 * are the tenant's; `stats` is the store's counters with the tenant's entries, bytes and share.
 */
export function tenantStore(store: SessionStore, t: Tenant): SessionStore {
  if (t.prefix === '' && store.usage(DEFAULT_TENANT)?.maxBytes === store.options.maxBytes) return store
  const k = (key: string) => toStoreKey(t, key)
  const view: SessionStore = {
    get options() {
      return store.options
    },
    get counters() {
      return store.counters
    },
    effectiveTtl: (ttlMs) => store.effectiveTtl(ttlMs),
    get: (key) => store.get(k(key)),
    peek: (key) => store.peek(k(key)),
    remainingTtl: (key) => store.remainingTtl(k(key)),
    has: (key) => store.has(k(key)),
    set: (key, value, ttlMs, flags) => store.set(k(key), value, ttlMs, flags),
    setFromPeer: (key, value, ttlMs, flags, version) => store.setFromPeer(k(key), value, ttlMs, flags, version),
    delete: (key) => store.delete(k(key)),
    deleteFromPeer: (key, version) => store.deleteFromPeer(k(key), version),
    version: (key) => store.version(k(key)),
    touch: (key, ttlMs) => store.touch(k(key), ttlMs),
    keys: (prefix = '', limit = Infinity) => {
      const out: string[] = []
      for (const s of store.keys(t.prefix + prefix, Infinity)) {
        const c = fromStoreKey(t, s)
        if (c === undefined) continue
        out.push(c)
        if (out.length >= limit) break
      }
      return out
    },
    *entries(): Generator<[key: string, entry: StoreEntry, ttlMs: number]> {
      for (const [s, e, ttl] of store.entries()) {
        const c = fromStoreKey(t, s)
        if (c !== undefined) yield [c, e, ttl]
      }
    },
    flush: () => store.flushTenant(t.name),
    flushTenant: (name) => (name === t.name ? store.flushTenant(name) : 0),
    usage: (name) => (name === t.name ? store.usage(name) : undefined),
    purgeStale: () => store.purgeStale(),
    newestPeerVersion: () => store.newestPeerVersion(),
    // Only the cluster forgets copies, through the daemon's whole store: a tenant's view has no part in it.
    forgetOlderThan: () => 0,
    get size() {
      return store.usage(t.name)?.entries ?? 0
    },
    get bytes() {
      return store.usage(t.name)?.bytes ?? 0
    },
    stats: (): StoreStats => {
      const u = store.usage(t.name)
      return { ...store.stats(), entries: u?.entries ?? 0, bytes: u?.bytes ?? 0, maxBytes: u?.maxBytes ?? 0 }
    },
  }
  return view
}

/** The cluster hooks as one tenant's front end calls them: its client keys, sent as store keys. */
export function tenantCluster(cluster: ClusterHooks | undefined, t: Tenant): ClusterHooks | undefined {
  if (!cluster || t.prefix === '') return cluster
  return {
    lookup: (key, timeoutMs) => cluster.lookup(toStoreKey(t, key), timeoutMs),
    stored: (key) => cluster.stored(toStoreKey(t, key)),
    decide: (key, op) => cluster.decide(toStoreKey(t, key), op),
    deleted: (key) => cluster.deleted(toStoreKey(t, key)),
    flush: () => cluster.flush(),
    peers: () => cluster.peers(),
  }
}
