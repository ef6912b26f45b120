/**
 * A memcached front end on the same store and cluster, for servers that already keep their
 * sessions in memcached (PHP's session handlers, Apache mod_ssl's `SSLSessionCache memcache:`,
 * OpenResty, h2o, pymemcache, memjs, libmemcached): the text, meta and binary protocols as
 * memcached 1.6 speaks them, on the same listeners (connection.ts tells them apart by the first
 * byte). The files of this folder, one concern each:
 *
 *   numbers.ts         numbers as memcached reads them
 *   input-buffer.ts    a connection's unread input
 *   text.ts            the text protocol's command lines
 *   binary.ts          the binary protocol's framing (pure) and binary-commands.ts its answers
 *   meta.ts            the meta protocol's lines (pure) and meta-commands.ts its answers
 *   commands.ts        the commands all three share (store, cas, incr, touch, flush, lookups)
 *   connection.ts      one connection: order of answers, flow control, memory bounds
 *   server.ts          this file: listeners, connection caps, stats, shutdown
 *
 * No authentication, so TCP listeners are refused unless they are on a loopback address.
 */
import net from 'node:net'
import { BoundedMap } from '../../../protocol/bounded.js'
import type { ClusterHooks } from '../../cluster/hooks.js'
import type { Config } from '../../config/config.js'
import { listenAddresses } from '../../config/listen.js'
import type { Log } from '../../host/log.js'
import type { SessionStore } from '../../store/session-store.js'
import { UnixListener } from '../unix-listener.js'
import type { BinLimits } from './binary.js'
import { MemcacheCommands, type CommandCounters } from './commands.js'
import { MIN_BUDGET_SHARE, McConnection } from './connection.js'
import type { FrontEnd, Wakeable } from './sink.js'

/** The memcached release whose protocols this front end speaks; the start of its VERSION reply. */
export const MEMCACHED_PROTOCOL_VERSION = '1.6.18'
/** How long a refused connection may take to receive its error before it is destroyed, in ms. */
const REFUSED_LINGER_MS = 1000
/** Keys whose meta win/stale state is remembered (meta-commands.ts); the oldest are forgotten. */
export const META_STATE_ENTRIES = 4096

/**
 * The front end's config keys (unit and default: FIELDS in config/config.ts; the command timeout
 * does not run while a connection is not read), and its parts.
 */
export interface MemcacheOptions extends Pick<
  Config,
  | 'memcacheListen'
  | 'memcacheMaxConnections'
  | 'memcacheIdleTimeoutMs'
  | 'memcacheCommandTimeoutMs'
  | 'memcacheMaxBufferedBytes'
  | 'memcacheFlushAll'
  | 'memcacheLookupTimeoutMs'
  | 'maxKeyBytes'
> {
  /** statecast's own version, shown after the memcached protocol version and in `stats`. */
  version: string
  store: SessionStore
  cluster: () => ClusterHooks | undefined
  /**
   * Remote lookups the whole front end has in flight at once; more wait their turn in order (never
   * answered "not found" for want of room). The daemon gives it a quarter of `maxInflightLookups`.
   */
  maxRemoteLookups: number
  log: Log
  /** Wall clock in ms, for absolute exptimes. */
  wallMs?: () => number
  /** Permission bits of the front end's socket files. Default 0o660. */
  socketMode?: number
  /** Refuse keys starting with the tenant marker (a daemon with tenants: they name another tenant's). */
  refuseMarker?: boolean
}

export interface MemcacheCounters extends CommandCounters {
  connections: number
  commands: number
  /** Binary requests, served or refused. */
  binaryCommands: number
  /** Meta commands (mg, ms, md, ma, mn, me). */
  metaCommands: number
  /** Requests answered Unknown command (binary opcodes this front end does not serve; SASL on a listener without logins). */
  unknownCommands: number
  /** Bytes read from and written to memcache clients. */
  bytesRead: number
  bytesWritten: number
  /** Connections refused because their listener was at `memcacheMaxConnections`. */
  refused: number
  /** Connections closed by the idle timeout. */
  idleClosed: number
  /** Connections closed because a command line or data block did not arrive whole within `commandTimeoutMs`. */
  commandTimeouts: number
  /** Times a connection's socket stopped being read because its replies were not taken. */
  paused: number
  /** Connections not read right now, for that reason. */
  readingPaused: number
  /** Connections whose unsent replies exceed the bound right now: the daemon waits for the client to read. */
  waitingForClient: number
  /** Bytes all connections hold right now (input, read-ahead, unsent replies), against `maxBufferedBytes`. */
  bufferedBytes: number
  /** Times a connection stopped being read and answered because the front end was over `maxBufferedBytes`. */
  overBudget: number
  /** Remote lookups of the front end in flight right now (at most its share, `maxRemoteLookups`). */
  remoteLookups: number
  /** Remote lookups waiting for the front end's share right now. */
  lookupsWaiting: number
  /** Times a remote lookup had to wait for the front end's share. */
  lookupsQueued: number
}

export class MemcacheServer implements FrontEnd {
  readonly counters: MemcacheCounters = {
    connections: 0,
    commands: 0,
    getHits: 0,
    getMisses: 0,
    remoteHits: 0,
    errors: 0,
    refused: 0,
    idleClosed: 0,
    commandTimeouts: 0,
    paused: 0,
    readingPaused: 0,
    waitingForClient: 0,
    bufferedBytes: 0,
    overBudget: 0,
    remoteLookups: 0,
    lookupsWaiting: 0,
    lookupsQueued: 0,
    binaryCommands: 0,
    metaCommands: 0,
    unknownCommands: 0,
    bytesRead: 0,
    bytesWritten: 0,
    cmdTouch: 0,
    touchHits: 0,
    touchMisses: 0,
    cmdFlush: 0,
    deleteHits: 0,
    deleteMisses: 0,
    incrHits: 0,
    incrMisses: 0,
    decrHits: 0,
    decrMisses: 0,
    casHits: 0,
    casMisses: 0,
    casBadval: 0,
  }
  /** The commands all three protocols share. */
  readonly commands: MemcacheCommands
  /** Limits of a binary request (key, value; the largest body of a request without a value: stat's key). */
  readonly binaryLimits: BinLimits
  /** mg's win and stale flags, per key and version (meta-commands.ts). */
  readonly metaState = new BoundedMap<string, { version: bigint; stale: boolean; won: boolean }>(META_STATE_ENTRIES)
  /** The VERSION reply: memcached's protocol version (libmemcached checks it), then statecast's. */
  readonly version: string
  readonly maxValueBytes: number
  readonly maxKeyBytes: number
  readonly flushAllowed: boolean
  readonly commandTimeoutMs: number
  readonly refuseMarker: boolean
  readonly #o: MemcacheOptions
  /** Connections accepted by a listener shared by tenants (tenant-memcache.ts), served here. */
  readonly #adopted = new Set<net.Socket>()
  readonly #servers: { server: net.Server; unix?: UnixListener; sockets: Set<net.Socket> }[] = []
  readonly #conns = new Map<net.Socket, McConnection>()
  #wallMs: () => number
  /** Connections stopped for the budget, woken when the front end is under it again. */
  #squeezed = new Set<Wakeable>()
  #waking = false

  constructor(o: MemcacheOptions) {
    this.#o = o
    this.version = `${MEMCACHED_PROTOCOL_VERSION}-statecast-${o.version}`
    this.maxValueBytes = o.store.options.maxValueBytes
    this.maxKeyBytes = o.maxKeyBytes
    this.flushAllowed = o.memcacheFlushAll
    this.commandTimeoutMs = o.memcacheCommandTimeoutMs
    this.refuseMarker = o.refuseMarker ?? false
    this.#wallMs = o.wallMs ?? Date.now
    this.commands = new MemcacheCommands({
      store: o.store,
      cluster: o.cluster,
      maxRemoteLookups: o.maxRemoteLookups,
      lookupTimeoutMs: o.memcacheLookupTimeoutMs,
      log: o.log,
      ...(o.wallMs ? { wallMs: o.wallMs } : {}),
      counters: this.counters,
    })
    this.binaryLimits = {
      maxKeyBytes: Math.min(o.maxKeyBytes, 0xffff),
      maxValueBytes: this.maxValueBytes,
      maxOtherBodyBytes: 0,
      refuseMarker: this.refuseMarker,
    }
  }

  /**
   * Whether a connection that held `reported` bytes when it last said so and holds `held` now
   * must stop: the front end is over `maxBufferedBytes`, and it holds more than MIN_BUDGET_SHARE.
   * Those holding less carry on, so a client that takes its replies is served while others hog.
   * (A share of the budget per open connection let the first connections keep far more than the
   * budget between them.)
   */
  squeezes(reported: number, held: number, conn: Wakeable): boolean {
    const max = this.#o.memcacheMaxBufferedBytes
    if (this.counters.bufferedBytes - reported + held <= max) return false
    if (held <= MIN_BUDGET_SHARE) return false
    if (!this.#squeezed.has(conn)) {
      this.#squeezed.add(conn)
      this.counters.overBudget++
    }
    return true
  }

  /** A connection's holding changed by `delta` bytes. */
  account(delta: number): void {
    const c = this.counters
    c.bufferedBytes += delta
    // Woken a little under the budget, so that connections do not flap at its edge.
    if (delta >= 0 || this.#waking || this.#squeezed.size === 0 || c.bufferedBytes > this.#o.memcacheMaxBufferedBytes * 0.875) return
    this.#waking = true
    try {
      const woken = [...this.#squeezed]
      this.#squeezed.clear()
      for (const conn of woken) conn.wake()
    } finally {
      this.#waking = false
    }
  }

  forget(conn: Wakeable): void {
    this.#squeezed.delete(conn)
  }

  get currentConnections(): number {
    return [...new Set(this.#servers.map((s) => s.sockets))].reduce((n, s) => n + s.size, this.#adopted.size)
  }

  /**
   * `stats` and `stats <sub>` as rows (text: STAT lines; binary: one response each), 'reset'
   * after a reset, undefined for a subcommand this front end does not answer. The fields are
   * those memcached clients read (memjs, pymemcache, php-memcached's getStats, libmemcached).
   */
  stats(sub: string): [string, number | string][] | 'reset' | undefined {
    const o = this.#o
    const c = this.counters
    switch (sub) {
      case '': {
        const s = o.store.stats()
        const ru = process.resourceUsage()
        return [
          ['pid', process.pid],
          ['uptime', Math.floor(process.uptime())],
          ['time', Math.floor(this.#wallMs() / 1000)],
          ['version', this.version],
          ['statecast_version', o.version],
          ['libevent', 'none'],
          ['pointer_size', 64],
          ['rusage_user', (ru.userCPUTime / 1e6).toFixed(6)],
          ['rusage_system', (ru.systemCPUTime / 1e6).toFixed(6)],
          ['max_connections', o.memcacheMaxConnections],
          ['curr_connections', this.currentConnections],
          ['total_connections', c.connections],
          ['rejected_connections', c.refused],
          ['connection_structures', this.currentConnections],
          ['cmd_get', c.getHits + c.getMisses + c.remoteHits],
          ['cmd_set', s.sets],
          ['cmd_flush', c.cmdFlush],
          ['cmd_touch', c.cmdTouch],
          ['get_hits', c.getHits + c.remoteHits],
          ['get_misses', c.getMisses],
          ['get_expired', 0],
          ['get_flushed', 0],
          ['delete_misses', c.deleteMisses],
          ['delete_hits', c.deleteHits],
          ['incr_misses', c.incrMisses],
          ['incr_hits', c.incrHits],
          ['decr_misses', c.decrMisses],
          ['decr_hits', c.decrHits],
          ['cas_misses', c.casMisses],
          ['cas_hits', c.casHits],
          ['cas_badval', c.casBadval],
          ['touch_hits', c.touchHits],
          ['touch_misses', c.touchMisses],
          ['auth_cmds', 0],
          ['auth_errors', 0],
          ['bytes_read', c.bytesRead],
          ['bytes_written', c.bytesWritten],
          ['limit_maxbytes', s.maxBytes],
          ['accepting_conns', 1],
          ['threads', 1],
          ['conn_yields', 0],
          ['idle_kicks', c.idleClosed],
          ['remote_hits', c.remoteHits],
          ['curr_items', s.entries],
          ['total_items', s.sets],
          ['bytes', s.bytes],
          ['evictions', s.evictions],
          ['reclaimed', s.expirations],
          ['expired_unfetched', s.expirations],
        ]
      }
      case 'settings':
        return [
          ['maxbytes', o.store.options.maxBytes],
          ['maxconns', o.memcacheMaxConnections],
          ['item_size_max', this.maxValueBytes],
          ['idle_timeout', Math.ceil(o.memcacheIdleTimeoutMs / 1000)],
          ['flush_enabled', this.flushAllowed ? 'yes' : 'no'],
          ['cas_enabled', 'yes'],
          ['evictions', 'on'],
          ['binding_protocol', 'auto-negotiate'],
          ['auth_enabled_sasl', 'no'],
          ['auth_enabled_ascii', 'no'],
        ]
      case 'items':
      case 'slabs':
        // No slab classes: the store is not memcached's allocator.
        return []
      case 'sizes':
        return [['sizes_status', 'disabled']]
      case 'reset':
        for (const k of [
          'commands',
          'getHits',
          'getMisses',
          'remoteHits',
          'errors',
          'cmdTouch',
          'touchHits',
          'touchMisses',
          'cmdFlush',
          'deleteHits',
          'deleteMisses',
          'incrHits',
          'incrMisses',
          'decrHits',
          'decrMisses',
          'casHits',
          'casMisses',
          'casBadval',
          'bytesRead',
          'bytesWritten',
          'binaryCommands',
          'metaCommands',
          'unknownCommands',
        ] as const)
          this.counters[k] = 0
        return 'reset'
      default:
        return undefined
    }
  }

  async listen(): Promise<void> {
    for (const spec of this.#o.memcacheListen) {
      const tcp = listenAddresses(spec)
      // One cap per listen spec: `localhost:PORT`'s two addresses share it.
      const sockets = new Set<net.Socket>()
      if (tcp) {
        for (const addr of tcp) {
          const server = net.createServer((s) => this.#onConnection(s, sockets))
          try {
            await new Promise<void>((resolve, reject) => {
              server.once('error', (err) => reject(new Error(`memcache front end cannot listen on ${spec}: ${err.message}`)))
              server.listen(addr.port, addr.host, () => resolve())
            })
          } catch (err) {
            // localhost's ::1 on a host without IPv6: 127.0.0.1 alone serves it.
            if (addr.optional) continue
            throw err
          }
          this.#servers.push({ server, sockets })
        }
      } else {
        const server = net.createServer((s) => this.#onConnection(s, sockets))
        // The API socket's listener: stale-socket check, umask, mode 0660, never clobbers a live one.
        this.#servers.push({ server, sockets, unix: await UnixListener.listen(server, { path: spec, mode: this.#o.socketMode ?? 0o660 }) })
      }
      this.#o.log.info({ listen: spec }, 'memcache front end listening')
    }
  }

  /** Serves a connection another listener accepted (one shared by tenants, that picked this one). */
  adopt(s: net.Socket): void {
    this.#onConnection(s, this.#adopted)
  }

  /** Each listener has its own cap, so clients of one (say a busy TCP port) never shut out another's. */
  #onConnection(s: net.Socket, sockets: Set<net.Socket>): void {
    if (sockets.size >= this.#o.memcacheMaxConnections) {
      this.counters.refused++
      s.on('error', () => {})
      // The error, a FIN, then the descriptor is released: a refused client that never closes its
      // end must not hold one of the daemon's file descriptors (20,000 such exhausted them).
      // Destroyed once the kernel has the reply, or after REFUSED_LINGER_MS if it never takes it.
      const t = setTimeout(() => s.destroy(), REFUSED_LINGER_MS)
      t.unref()
      s.once('close', () => clearTimeout(t))
      s.end('SERVER_ERROR too many connections\r\n', () => s.destroy())
      return
    }
    this.counters.connections++
    sockets.add(s)
    s.once('close', () => sockets.delete(s))
    if (this.#o.memcacheIdleTimeoutMs > 0) {
      s.setTimeout(this.#o.memcacheIdleTimeoutMs)
      s.on('timeout', () => {
        this.counters.idleClosed++
        s.destroy()
      })
    }
    const conn = new McConnection(this, s)
    this.#conns.set(s, conn)
    s.once('close', () => this.#conns.delete(s))
  }

  /**
   * Stops listening; each connection answers the commands it read (a SET waiting for a copy's ACK
   * included: it is stored, and its client is told so) and closes; those still open after
   * `graceMs` are destroyed.
   */
  async close(graceMs = 2000): Promise<void> {
    this.commands.close()
    const closing = this.#servers.map(({ server, unix }) => {
      unix?.close()
      return new Promise<void>((r) => server.close(() => r()))
    })
    const all = [...new Set([...this.#servers.flatMap(({ sockets }) => [...sockets]), ...this.#adopted])]
    for (const s of all) {
      const conn = this.#conns.get(s)
      if (conn) conn.finish()
      else s.end()
    }
    const t = setTimeout(() => all.forEach((s) => s.destroy()), graceMs)
    t.unref()
    await Promise.all(closing)
    clearTimeout(t)
  }
}
