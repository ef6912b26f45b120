/**
 * The memcache front ends of every tenant: one MemcacheServer per tenant, on the tenant's view of
 * the store and cluster (tenants.ts), serving the tenant's listeners. With memcacheTcpAccess =
 * "uid", TCP listeners are this module's: each connection's client uid (peer-uid.ts) picks the
 * tenant that lists it in memcacheUsers, among those the listener may serve (a memcacheListen
 * listener: any tenant, the default one by the top-level memcacheUsers; a tenant's own listener:
 * that tenant), and a connection of any other uid is refused. With "open", each TCP listener
 * serves its tenant to every local user, and start-up says so in a warning.
 */
import fs from 'node:fs'
import net from 'node:net'
import type { ClusterHooks } from '../cluster/hooks.js'
import type { Config } from '../config/config.js'
import { parseListen } from '../config/listen.js'
import { resolveGroup } from '../config/ticket-consumers.js'
import type { Log } from '../host/log.js'
import type { SessionStore } from '../store/session-store.js'
import { MemcacheServer, type MemcacheCounters } from './memcache/server.js'
import { peerUid } from './peer-uid.js'
import { tenantCluster, tenantStore, type Tenant } from './tenants.js'
import { readAuthFile } from '../config/auth-file.js'
import { AuthUsers } from './memcache/auth.js'
import { gate, type AuthCounters } from './memcache/auth-gate.js'

/** How long a refused connection may take to receive its error before it is destroyed, in ms. */
const REFUSED_LINGER_MS = 1000

export interface TenantMemcacheOptions extends Pick<
  Config,
  | 'memcacheListen'
  | 'memcacheMaxConnections'
  | 'memcacheIdleTimeoutMs'
  | 'memcacheCommandTimeoutMs'
  | 'memcacheMaxBufferedBytes'
  | 'memcacheFlushAll'
  | 'memcacheLookupTimeoutMs'
  | 'memcacheTcpAccess'
  | 'memcacheAuthFile'
> {
  version: string
  tenants: Tenant[]
  store: SessionStore
  cluster: () => ClusterHooks | undefined
  /** Remote lookups all front ends together have in flight; shared out among the tenants' servers. */
  maxRemoteLookups: number
  log: Log
  /** Where the client uid of a TCP connection comes from (peer-uid.ts); tests may point it elsewhere. */
  peerUid?: (s: net.Socket) => Promise<number | undefined>
}

export interface UidCounters {
  /** TCP connections served as the tenant their client uid maps to. */
  accepted: number
  /** TCP connections refused: their uid maps to no tenant the listener serves (or was not found). */
  refused: number
}

export class TenantMemcache {
  readonly #o: TenantMemcacheOptions
  /** Each tenant's server, by tenant name; only tenants with a listener or memcache users have one. */
  readonly servers = new Map<string, MemcacheServer>()
  readonly uid: UidCounters = { accepted: 0, refused: 0 }
  readonly auth: AuthCounters = { succeeded: 0, failed: 0, unauthenticated: 0, timeouts: 0 }
  /** With memcacheTcpAccess = "auth": the users of every tenant's memcacheAuthFile (reloadAuth re-reads them). */
  #users: AuthUsers | undefined
  readonly #routers: { server: net.Server; sockets: Set<net.Socket> }[] = []
  readonly #tcp: { spec: string; serves: Tenant[] }[] = []

  constructor(o: TenantMemcacheOptions) {
    this.#o = o
    const byUid = o.memcacheTcpAccess === 'uid'
    const byAuth = o.memcacheTcpAccess === 'auth'
    // TCP listeners are routers of this module's (by uid or by login), not of a tenant's server.
    const routed = byUid || byAuth
    const [def, ...named] = o.tenants
    const own = (t: Tenant) => (t.config ? t.config.memcacheListen : o.memcacheListen)
    if (byAuth) this.#users = readUsers(o.tenants, o.memcacheAuthFile)
    const authFile = (t: Tenant) => (t.config ? t.config.memcacheAuthFile : o.memcacheAuthFile)
    const needed = o.tenants.filter((t) => own(t).length > 0 || (byUid && t.memcacheUsers.length > 0) || (byAuth && authFile(t) !== ''))
    const share = Math.max(1, Math.floor(o.maxRemoteLookups / Math.max(1, needed.length)))
    for (const t of needed) {
      const listen = own(t).filter((x) => !(routed && parseListen(x)))
      this.servers.set(
        t.name,
        new MemcacheServer({
          ...o,
          memcacheListen: listen,
          maxKeyBytes: t.maxKeyBytes,
          refuseMarker: o.tenants.length > 1,
          ...(t.config ? { socketMode: t.config.socketMode } : {}),
          store: tenantStore(o.store, t),
          cluster: () => tenantCluster(o.cluster(), t),
          maxRemoteLookups: share,
        }),
      )
    }
    if (routed) {
      for (const x of o.memcacheListen) if (parseListen(x)) this.#tcp.push({ spec: x, serves: [def!, ...named] })
      for (const t of named) for (const x of t.config!.memcacheListen) if (parseListen(x)) this.#tcp.push({ spec: x, serves: [t] })
    }
  }

  /**
   * Re-reads every tenant's memcacheAuthFile (a SIGHUP): all of them or, on any error, none (the
   * running users stay, and the error says why).
   */
  reloadAuth(memcacheAuthFile: string): void {
    if (this.#o.memcacheTcpAccess !== 'auth') return
    this.#users = readUsers(this.#o.tenants, memcacheAuthFile)
  }

  /** Users known to the auth listeners, or undefined without memcacheTcpAccess = "auth". */
  get authUsers(): number | undefined {
    return this.#users?.size
  }

  /** Whether any memcache front end is configured. */
  get any(): boolean {
    return this.servers.size > 0 || this.#tcp.length > 0
  }

  /** The counters of the default tenant's front end (as before tenants), or null. */
  get counters(): MemcacheCounters | null {
    return this.servers.get('')?.counters ?? null
  }

  async listen(): Promise<void> {
    const o = this.#o
    for (const t of o.tenants) {
      const server = this.servers.get(t.name)
      if (!server) continue
      await server.listen()
      const listen = t.config ? t.config.memcacheListen : o.memcacheListen
      for (const x of listen) {
        const tcp = parseListen(x)
        if (!tcp && t.config?.socketGroup) fs.chownSync(x, -1, resolveGroup(t.config.socketGroup, `tenants ${t.name} socketGroup`))
        if (tcp && o.memcacheTcpAccess === 'open')
          o.log.warn(
            { listen: x, tenant: t.name || '(default)' },
            'memcache TCP listener open to every local user: any uid on this host reads and writes this tenant\'s sessions through it; use a socket path, or memcacheTcpAccess = "uid"',
          )
      }
    }
    for (const { spec, serves } of this.#tcp) {
      const tcp = parseListen(spec)!
      const sockets = new Set<net.Socket>()
      const byAuth = o.memcacheTcpAccess === 'auth'
      const server = net.createServer((s) => (byAuth ? this.#login(s, serves, sockets) : this.#route(s, serves, sockets)))
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err) => reject(new Error(`memcache front end cannot listen on ${spec}: ${err.message}`)))
        server.listen(tcp.port, tcp.host, () => resolve())
      })
      this.#routers.push({ server, sockets })
      if (byAuth) {
        o.log.info(
          { listen: spec, tenants: serves.map((t) => t.name || '(default)') },
          'memcache front end listening; clients authenticate (binary SASL PLAIN, or the text auth set) as users of memcacheAuthFile',
        )
        continue
      }
      const served = serves.filter((t) => t.memcacheUsers.length > 0)
      if (served.length === 0)
        o.log.warn(
          { listen: spec },
          'memcache TCP listener with memcacheTcpAccess = "uid" but no memcacheUsers for any tenant it serves: every connection is refused',
        )
      o.log.info(
        { listen: spec, tenants: served.map((t) => t.name || '(default)') },
        'memcache front end listening; clients are served by uid',
      )
    }
  }

  /** Finds the client's uid, then hands the connection to its tenant's server, or refuses it. */
  #route(s: net.Socket, serves: Tenant[], sockets: Set<net.Socket>): void {
    s.on('error', () => {})
    // Connections waiting for their uid are bounded like a listener's (the tenant's server counts the rest).
    if (sockets.size >= this.#o.memcacheMaxConnections) return this.#refuse(s, 'SERVER_ERROR too many connections\r\n')
    // Not read until its tenant is known: what it sends waits in the socket.
    s.pause()
    sockets.add(s)
    s.once('close', () => sockets.delete(s))
    const find = this.#o.peerUid ?? peerUid
    find(s).then(
      (uid) => this.#hand(s, serves, uid, sockets),
      () => this.#hand(s, serves, undefined, sockets),
    )
  }

  /** Reads the client's login (auth-gate.ts), then hands the connection to its user's tenant's server. */
  #login(s: net.Socket, serves: Tenant[], sockets: Set<net.Socket>): void {
    s.on('error', () => {})
    if (sockets.size >= this.#o.memcacheMaxConnections) return this.#refuse(s, 'SERVER_ERROR too many connections\r\n')
    sockets.add(s)
    s.once('close', () => sockets.delete(s))
    gate(s, {
      users: () => this.#users!,
      serves: new Set(serves.filter((t) => this.servers.has(t.name)).map((t) => t.name)),
      version: this.servers.values().next().value?.version ?? '',
      timeoutMs: this.#o.memcacheCommandTimeoutMs,
      counters: this.auth,
      hand: (sock, tenant) => {
        sockets.delete(sock)
        if (sock.destroyed) return
        this.servers.get(tenant)!.adopt(sock)
        sock.resume()
      },
    })
  }

  #hand(s: net.Socket, serves: Tenant[], uid: number | undefined, sockets: Set<net.Socket>): void {
    if (s.destroyed) return
    const tenant = uid === undefined ? undefined : serves.find((t) => t.memcacheUsers.includes(uid))
    const server = tenant && this.servers.get(tenant.name)
    if (!server) {
      this.uid.refused++
      return this.#refuse(s, 'SERVER_ERROR access denied: this uid is no tenant of this listener\r\n')
    }
    this.uid.accepted++
    sockets.delete(s)
    server.adopt(s)
    s.resume()
  }

  /** The error, a FIN, and the descriptor released once the kernel has it (or after REFUSED_LINGER_MS). */
  #refuse(s: net.Socket, text: string): void {
    const t = setTimeout(() => s.destroy(), REFUSED_LINGER_MS)
    t.unref()
    s.once('close', () => clearTimeout(t))
    s.end(text, () => s.destroy())
  }

  async close(graceMs = 2000): Promise<void> {
    const closing = this.#routers.map(({ server, sockets }) => {
      for (const s of sockets) s.destroy()
      return new Promise<void>((r) => server.close(() => r()))
    })
    await Promise.all([...closing, ...[...this.servers.values()].map((m) => m.close(graceMs))])
  }
}

/** The users of every tenant's memcacheAuthFile, each the tenant whose file lists it. */
function readUsers(tenants: Tenant[], defaultFile: string): AuthUsers {
  const byTenant = new Map<string, ReturnType<typeof readAuthFile>>()
  for (const t of tenants) {
    const file = t.config ? t.config.memcacheAuthFile : defaultFile
    if (file) byTenant.set(t.name, readAuthFile(file, t.config ? `tenants ${t.name} memcacheAuthFile` : 'memcacheAuthFile'))
  }
  try {
    return new AuthUsers(byTenant)
  } finally {
    for (const users of byTenant.values()) for (const u of users) u.password.fill(0)
  }
}
