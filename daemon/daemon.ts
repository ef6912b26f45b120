/**
 * The daemon: the store, the cluster (peer sockets), the API and admin sockets, and the timers
 * that keep them tidy.
 * Start order: store -> cluster (join) -> API sockets. Stop order is the reverse: API sockets
 * (drain) -> cluster (LEAVE, close) -> store (wipe).
 */
import path from 'node:path'
import { ApiServer } from './local/api-server.js'
import { prepareSocketDir } from './local/unix-listener.js'
import { RELOAD_IN_PLACE, maxFrameBytes, type Config } from './config/config.js'
import { createHandler } from './local/handler.js'
import type { Log } from './host/log.js'
import { LruStore } from './store/lru-store.js'
import type { SessionStore } from './store/session-store.js'
import { CompactStore } from './store/compact-store.js'
import { Cluster } from './cluster/cluster.js'
import { tombstoneLifetimeMs } from './store/versions.js'
import { MemcacheServer } from './local/memcache/server.js'
import { TenantMemcache } from './local/tenant-memcache.js'
import { consumersFor, tenantCluster, tenantQuotas, tenantStore, tenantsOf, ticketRightsFor, type Tenant } from './local/tenants.js'
import { resolveGroup } from './config/ticket-consumers.js'
import fs from 'node:fs'
import { Metrics } from './local/metrics.js'
import { TicketKeys } from './cluster/ticket-keys.js'
import { TicketExporter, consumerDir, secretWindow } from './tickets/ticket-export.js'
import { NODE_CONSUMER, deriveKey, deriveWindow, nodeTicketKey, wipeKey } from './tickets/ticket-formats.js'
import { isKeyFormat } from './config/ticket-consumers.js'
import crypto from 'node:crypto'
import dns from 'node:dns/promises'
import net from 'node:net'
import type { Address } from '../protocol/wire.js'
import { HOW_TO_MAKE_A_KEY, KeyError, devKey, loadKeyFile } from './cluster/cluster-keys.js'
import type { ClusterKey } from '../protocol/keyfile.js'

export const VERSION = '0.1.0'

/**
 * `HOST:PORT` (IPv6 as `[ADDR]:PORT`) peers to addresses of the cluster's family; a name that
 * does not resolve fails start-up (or the reload), naming it.
 */
async function resolvePeers(peers: string[], families: (4 | 6)[]): Promise<Address[]> {
  const family = families[0]!
  return Promise.all(
    peers.map(async (p) => {
      const i = p.lastIndexOf(':')
      const host = p.slice(0, i).replace(/^\[|\]$/g, '')
      const literal = net.isIP(host)
      // Dual stack: an address literal of either family is taken as it is; names resolve to the first.
      if (literal && !families.includes(literal as 4 | 6))
        throw new Error(`peer ${p}: an IPv${literal} address, but the cluster speaks IPv${families.join(' and IPv')} here`)
      if (literal) return { family: literal as 4 | 6, address: host, port: Number(p.slice(i + 1)) }
      try {
        const { address } = await dns.lookup(host, { family })
        return { family, address, port: Number(p.slice(i + 1)) }
      } catch (err) {
        throw new Error(`peer ${p}: cannot resolve ${host} to an IPv${family} address: ${(err as Error).message}`)
      }
    }),
  )
}

const familyOf = (addr: string): 4 | 6 => (net.isIPv6(addr.split('%')[0]!) ? 6 : 4)
/** The IP families the cluster speaks: the interface's, then (dual stack) the second one's. */
const familiesOf = (c: Config): (4 | 6)[] => [familyOf(c.interface), ...(c.dualStackInterface ? [familyOf(c.dualStackInterface)] : [])]

export interface DaemonDeps {
  log: Log
  /** Monotonic ms clock for the store's TTLs (tests inject one). */
  now?: () => number
  /** Listening fds handed over by systemd socket activation, by name ('api', 'admin'). */
  listenFds?: { api?: number; admin?: number }
}

export class Daemon {
  config: Config
  readonly store: SessionStore
  readonly log: Log
  readonly startedAt = Date.now()
  cluster: Cluster | undefined
  #api: ApiServer | undefined
  #admin: ApiServer | undefined
  #memcache: TenantMemcache | undefined
  /** The tenants: the default one first (tenants.ts). */
  readonly tenants: Tenant[]
  /** Each named tenant's API socket, by tenant name. */
  readonly #tenantApis = new Map<string, ApiServer>()
  #metrics: Metrics | undefined
  #purge: NodeJS.Timeout | undefined
  /** Ticket keys of a daemon without a cluster (a cluster keeps its own). */
  #soloTickets: TicketKeys | undefined
  #ticketTimer: NodeJS.Timeout | undefined
  #ticketExporter: TicketExporter | undefined
  #deps: DaemonDeps
  #stopped: Promise<void> | undefined

  constructor(config: Config, deps: DaemonDeps) {
    this.config = config
    this.log = deps.log
    this.#deps = deps
    this.tenants = tenantsOf(config)
    this.store = new (config.storeEngine === 'lru-cache' ? LruStore : CompactStore)({
      ...config,
      // Each tenant's share: its writes evict only its own entries (none configured: one share).
      ...(config.tenants.length > 0 ? { tenantQuotas: tenantQuotas(config) } : {}),
      // Long enough that no copy of a deleted value can still be accepted (versions.ts).
      tombstoneLifetimeMs: tombstoneLifetimeMs(config),
      ...(deps.now ? { now: deps.now } : {}),
    })
  }

  /** The ticket consumers a tenant's clients may read, by name (tenants.ts). */
  consumersFor(tenant: string): string[] {
    const t = this.tenants.find((x) => x.name === tenant)
    return t ? consumersFor(t, this.config) : []
  }

  #server(name: string, socketPath: string, mode: number, tenant: Tenant | undefined = this.tenants[0]): ApiServer {
    const c = this.config
    const daemon = this
    const admin = name === 'admin'
    return new ApiServer({
      ...c,
      name,
      path: socketPath,
      mode,
      maxFrameBytes: maxFrameBytes(c),
      maxPendingPerConnection: 4096,
      log: this.log,
      beforeReplies: () => this.cluster?.flush(),
      handler: createHandler({
        ...c,
        // The admin socket sees every tenant; an API socket, its tenant's namespace alone.
        ...(admin ? {} : { maxKeyBytes: tenant!.maxKeyBytes }),
        store: admin ? this.store : tenantStore(this.store, tenant!),
        admin,
        refuseMarker: c.tenants.length > 0,
        // One check of ticket rights (mayReadConsumer): the admin socket reads every consumer, an
        // API socket exactly its tenant's (the default tenant's: apiTicketConsumers).
        ticketRights: admin ? { who: 'admin socket', consumers: 'all' } : ticketRightsFor(tenant!, c),
        ticketConsumers: c.ticketConsumers,
        stats: () => (admin || this.config.tenants.length === 0 ? this.stats() : this.#statsOf(tenant!)),
        ticketKey: () => {
          const t = this.#tickets()
          const cur = t?.current
          if (!t || !cur) return undefined
          const k = deriveKey('node', NODE_CONSUMER, { epoch: cur.epoch, secret: cur.key })
          const key = nodeTicketKey(k)
          wipeKey(k)
          return { epoch: cur.epoch, remainingMs: t.remainingMs(), key }
        },
        consumerKeys: (format, consumer) => {
          const t = this.#tickets()
          const sw = t && secretWindow(t.window(), t.rotationMs)
          if (!t || !sw || !isKeyFormat(format)) return undefined
          const w = deriveWindow(format, consumer, sw)
          return {
            epoch: t.epochNow(),
            rotationMs: t.rotationMs,
            keys: [w.previous, w.current, w.next].map((k, slot) => ({
              slot,
              real: k.real,
              epoch: k.epoch,
              name: k.name,
              aes: k.aes,
              hmac: k.hmac,
            })),
          }
        },
        // Read at request time: the handlers are made here, the cluster only in start().
        get cluster() {
          return admin ? daemon.cluster : tenantCluster(daemon.cluster, tenant!)
        },
      }),
    })
  }

  #tickets(): TicketKeys | undefined {
    return this.cluster?.tickets ?? this.#soloTickets
  }

  /**
   * The cluster keys: the configured key file; without one, on a loopback interface only, a
   * development key beside the sockets (created loudly); otherwise a refusal that says what to do.
   */
  #keys(): ClusterKey[] {
    const c = this.config
    if (c.keyFile) return loadKeyFile(c.keyFile)
    if (!(c.interface.startsWith('127.') || c.interface === '::1')) {
      throw new KeyError('NO_KEY', `refusing to join the network on ${c.interface} without a cluster key: ${HOW_TO_MAKE_A_KEY}`)
    }
    const file = path.join(path.dirname(c.socketPath), 'dev-cluster.key')
    const { keys, created } = devKey(file)
    this.log.warn(
      { keyFile: file, created },
      'NO CLUSTER KEY CONFIGURED: using a development key for loopback only; set keyFile before joining a network',
    )
    return keys
  }

  async start(): Promise<void> {
    const c = this.config
    for (const p of [c.socketPath, c.adminSocketPath, ...c.tenants.map((t) => t.socketPath)]) prepareSocketDir(p)
    if (c.clusterEnabled) {
      this.cluster = new Cluster(
        {
          ...c,
          // The transport's addresses, as it names them: the interface, the second family's group
          // and interface (dual stack), and the peers resolved to addresses.
          iface: c.interface,
          ...(c.dualStackGroup ? { second: { group: c.dualStackGroup, iface: c.dualStackInterface } } : {}),
          peers: await resolvePeers(c.peers, familiesOf(c)),
        },
        this.#keys(),
        this.store,
        this.log,
      )
      await this.cluster.start()
    } else {
      const solo = new TicketKeys({ rotationMs: c.ticketKeyRotationMs, graceMs: 0, selfId: crypto.randomBytes(8) })
      solo.tick([], Infinity)
      this.#ticketTimer = setInterval(() => solo.tick([], Infinity), 1000)
      this.#ticketTimer.unref()
      this.#soloTickets = solo
    }
    this.#ticketExporter = new TicketExporter({
      consumers: c.ticketConsumers.map((x) => ({ ...x, dir: consumerDir(x, c.ticketDir) })),
      tickets: () => this.#tickets(),
      log: this.log,
    })
    this.#ticketExporter.start()
    this.#api = this.#server('api', c.socketPath, c.socketMode)
    this.#admin = this.#server('admin', c.adminSocketPath, c.adminSocketMode)
    for (const t of this.tenants.slice(1))
      this.#tenantApis.set(t.name, this.#server(`api:${t.name}`, t.config!.socketPath, t.config!.socketMode, t))
    const memcache = new TenantMemcache({
      ...c,
      version: VERSION,
      tenants: this.tenants,
      store: this.store,
      cluster: () => this.cluster,
      // A quarter of the lookup table: memcache clients cannot take the room API GETs need.
      maxRemoteLookups: Math.max(1, Math.floor(c.maxInflightLookups / 4)),
      log: this.log,
    })
    if (memcache.any) this.#memcache = memcache
    try {
      await this.#api.listen(this.#deps.listenFds?.api)
      await this.#admin.listen(this.#deps.listenFds?.admin)
      for (const t of this.tenants.slice(1)) {
        await this.#tenantApis.get(t.name)!.listen()
        if (t.config!.socketGroup)
          fs.chownSync(t.config!.socketPath, -1, resolveGroup(t.config!.socketGroup, `tenants ${t.name} socketGroup`))
      }
      await this.#memcache?.listen()
      if (c.metricsListen) {
        this.#metrics = new Metrics(() => this.stats(), this.log)
        if (this.cluster) {
          const m = this.#metrics
          this.cluster.lookups.observe = (s, outcome) => m.lookupSeconds.observe({ outcome }, s)
          this.cluster.replicator.observeAck = (s) => m.copyAckSeconds.observe(s)
        }
        await this.#metrics.listen(c.metricsListen)
      }
    } catch (err) {
      await Promise.all([
        this.#api.close(0),
        this.#admin.close(0),
        ...[...this.#tenantApis.values()].map((s) => s.close(0)),
        this.#memcache?.close(),
        this.#metrics?.close(),
        this.cluster?.stop(),
      ])
      throw err
    }
    this.#purge = setInterval(() => this.store.purgeStale(), c.purgeIntervalMs)
    this.#purge.unref()
    if (c.tenants.length > 0)
      this.log.info(
        {
          tenants: this.tenants.map((t) => ({
            name: t.name || '(default)',
            maxBytes: t.maxBytes,
            socket: t.config?.socketPath ?? c.socketPath,
          })),
        },
        'tenants',
      )
    this.log.info(
      {
        socket: c.socketPath,
        adminSocket: c.adminSocketPath,
        maxBytes: c.maxBytes,
        nodeId: this.cluster?.nodeId ?? null,
        version: VERSION,
      },
      'statecastd ready',
    )
  }

  /** Graceful stop, idempotent: stop accepting, finish in-flight requests, wipe the store. */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop()
    return this.#stopped
  }

  async #stop(): Promise<void> {
    const grace = this.config.shutdownGraceMs
    this.log.info({ graceMs: grace }, 'statecastd stopping')
    clearInterval(this.#purge)
    clearInterval(this.#ticketTimer)
    this.#ticketExporter?.close()
    this.#soloTickets?.wipe()
    await Promise.all([
      this.#api?.close(grace),
      this.#admin?.close(grace),
      ...[...this.#tenantApis.values()].map((s) => s.close(grace)),
      this.#memcache?.close(grace),
      this.#metrics?.close(),
    ])
    await this.cluster?.stop()
    const wiped = this.store.flush()
    this.log.info({ wiped }, 'statecastd stopped')
  }

  /**
   * Applies a new configuration without dropping the cache or any connection. Everything is
   * checked first (the key file read, peer names resolved); on any error nothing changes and the
   * error says why. Keys that only a restart can change are reported, not applied.
   */
  async reload(next: Config): Promise<{ applied: string[]; needsRestart: string[] }> {
    const prev = this.config
    const changed = (Object.keys(next) as (keyof Config)[]).filter((k) => JSON.stringify(next[k]) !== JSON.stringify(prev[k]))
    const keys = this.cluster ? (next.keyFile ? loadKeyFile(next.keyFile) : undefined) : undefined
    const peers = this.cluster ? await resolvePeers(next.peers, this.cluster.transport.families) : undefined
    const applied: string[] = []
    const needsRestart: string[] = []
    for (const k of changed) (RELOAD_IN_PLACE.has(k) ? applied : needsRestart).push(k)
    if (keys) {
      this.cluster!.setKeys(keys)
      applied.push(`keys (${keys.length} in ${next.keyFile})`)
    }
    if (peers) this.cluster!.transport.setPeers(peers)
    if (changed.includes('logLevel') && 'level' in this.log) this.log.level = next.logLevel
    if (changed.includes('maxConnections'))
      for (const s of [this.#api, this.#admin, ...this.#tenantApis.values()]) if (s) s.options.maxConnections = next.maxConnections
    // What could not be applied stays as it runs, so `config` keeps describing the process.
    const merged = { ...next } as Record<string, unknown>
    for (const k of needsRestart) merged[k] = prev[k as keyof Config]
    this.config = merged as unknown as Config
    return { applied, needsRestart }
  }

  /** Ticket epochs, key names and deliveries: never key bytes. */
  #ticketStats(): Record<string, unknown> {
    const t = this.#tickets()
    const w = t?.window()
    return {
      epoch: w?.epoch ?? null,
      rotationMs: this.config.ticketKeyRotationMs,
      epochs: w ? { previous: w.previous?.epoch ?? null, current: w.current?.epoch ?? null, next: w.next?.epoch ?? null } : null,
      consumers: this.#ticketExporter?.status() ?? [],
    }
  }

  /** Per tenant: its share of the store, its API socket's and memcache front end's counters. */
  #tenantStats(): Record<string, unknown> {
    const out: Record<string, unknown> = {}
    for (const t of this.tenants) {
      const api = t.config ? this.#tenantApis.get(t.name) : this.#api
      out[t.name || '(default)'] = {
        store: this.store.usage(t.name) ?? null,
        api: { ...api?.counters, connections: api?.connections ?? 0 },
        memcache: this.#memcache?.servers.get(t.name)?.counters ?? null,
        consumers: consumersFor(t, this.config),
      }
    }
    return { ...out, memcacheUid: this.#memcache?.uid ?? null }
  }

  /**
   * STATS as a tenant's API socket answers it: its own share of the store, front ends and ticket
   * consumers, nothing of the other tenants' (the store's and cluster's counters stay daemon-wide).
   */
  #statsOf(t: Tenant): Record<string, unknown> {
    const s = this.stats()
    const name = t.name || '(default)'
    const mine = new Set(consumersFor(t, this.config))
    const tickets = s['tickets'] as { consumers: { name: string }[] }
    const api = t.config ? this.#tenantApis.get(t.name) : this.#api
    return {
      ...s,
      store: tenantStore(this.store, t).stats(),
      api: { ...api?.counters, connections: api?.connections ?? 0 },
      admin: undefined,
      memcache: this.#memcache?.servers.get(t.name)?.counters ?? null,
      tickets: { ...tickets, consumers: tickets.consumers.filter((c) => mine.has(c.name)) },
      tenants: { [name]: (s['tenants'] as Record<string, unknown>)[name] },
    }
  }

  stats(): Record<string, unknown> {
    const mem = process.memoryUsage()
    return {
      version: VERSION,
      pid: process.pid,
      uptimeMs: Date.now() - this.startedAt,
      store: this.store.stats(),
      api: { ...this.#api?.counters, connections: this.#api?.connections ?? 0 },
      admin: { ...this.#admin?.counters, connections: this.#admin?.connections ?? 0 },
      cluster: this.cluster?.stats() ?? null,
      memcache: this.#memcache?.counters ?? null,
      ...(this.config.tenants.length > 0 || this.config.memcacheTcpAccess === 'uid' ? { tenants: this.#tenantStats() } : {}),
      tickets: this.#ticketStats(),
      process: { rssBytes: mem.rss, heapUsedBytes: mem.heapUsed, externalBytes: mem.external },
    }
  }
}
