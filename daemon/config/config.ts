/**
 * The daemon's configuration: one table of fields drives the `Config` type, defaults, validation,
 * the TOML file, command-line overrides and the documentation, so they never disagree.
 *
 * Precedence: built-in defaults < config file (TOML) < command-line flags.
 * A bad value fails start-up with a message naming the key and what it expects.
 */
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import { TomlError, parse as parseToml } from 'smol-toml'
import { adminSocketBeside, defaultAdminSocketPath, defaultRuntimeDir, defaultSocketPath } from '../../protocol/paths.js'
import { MAX_KEY_BYTES } from '../../protocol/local.js'
import { StatecastError } from '../../protocol/errors.js'
import {
  AnnounceFlag,
  MIN_DATAGRAM_BYTES,
  MsgType,
  NONCE_BYTES,
  SENDER_ID_BYTES,
  datagramLength,
  hitChunkBytes,
  replicateChunkBytes,
  type Message,
} from '../../protocol/wire.js'
import { LOG_LEVELS, type LogLevel } from '../host/log.js'
import { parseListen } from './listen.js'
import { parseConsumers, type TicketConsumer } from './ticket-consumers.js'
import { parseTenants, parseUsers, type TenantConfig } from './tenants.js'

/** What each kind of field holds once parsed: the type of its keys in `Config`. */
interface KindValues {
  engine: 'compact' | 'lru-cache'
  int: number
  string: string
  optstring: string
  mode: number
  level: LogLevel
  bool: boolean
  ipaddr: string
  mcast: string
  list: string[]
  consumers: TicketConsumer[]
  tenants: TenantConfig[]
  access: 'open' | 'uid' | 'auth'
  users: number[]
}

type Kind = keyof KindValues

/**
 * One config key: how its value is parsed and checked, its default, unit and meaning. One of these
 * per kind, so that a default of the wrong type does not compile.
 */
type FieldSpec = {
  [K in Kind]: {
    key: string
    kind: K
    /** Default as a function of the environment (paths depend on who runs the daemon). */
    def: () => KindValues[K]
    min?: number
    max?: number
    unit: string
    doc: string
    /** The value the example file shows, where the default depends on who runs the daemon. */
    example?: string
    /** An empty string is allowed and means "off" (addresses only). */
    optional?: boolean
    /** A reload (SIGHUP) applies it in place (daemon.ts `reload`); the others need a restart. */
    reloads?: boolean
  }
}[Kind]

const uid = () => (typeof process.getuid === 'function' ? process.getuid() : 1000)

/**
 * The default ticketDir. Never a shared fixed path (another user could make it first): root's
 * /run/statecast/tickets; under systemd (RuntimeDirectory= sets $RUNTIME_DIRECTORY, and the unit's
 * PrivateTmp hides /tmp from every TLS server) tickets/ in that directory; otherwise tickets/ in
 * the user's private runtime directory, which the daemon checks (protocol/paths.ts).
 */
export function defaultTicketDir(env: NodeJS.ProcessEnv, id: number, tmpdir: string): string {
  if (id === 0) return '/run/statecast/tickets'
  const rt = env['RUNTIME_DIRECTORY']?.split(':')[0]
  if (rt && rt.startsWith('/')) return `${rt.replace(/\/+$/, '')}/tickets`
  return `${defaultRuntimeDir(env, id, tmpdir)}/tickets`
}

/**
 * Every key of the daemon's configuration. `Config` is derived from this table, so a new key is one
 * line here (README documents it too) and its use.
 */
export const FIELDS = [
  {
    key: 'socketPath',
    kind: 'string',
    def: () => defaultSocketPath(process.env, uid(), os.tmpdir()),
    unit: 'path',
    doc: 'API socket for local servers (root: /run/statecast/statecast.sock; users: $XDG_RUNTIME_DIR/statecast/statecast.sock)',
    example: '"/run/statecast/statecast.sock"',
  },
  { key: 'socketMode', kind: 'mode', def: () => 0o660, unit: 'octal mode', doc: 'permission bits of the API socket' },
  {
    key: 'adminSocketPath',
    kind: 'string',
    def: () => defaultAdminSocketPath(process.env, uid(), os.tmpdir()),
    unit: 'path',
    doc: 'admin socket used by the statecast CLI (lists, flushes and reads any key); default: admin.sock beside socketPath, wherever that is',
    example: '"/run/statecast/admin.sock"',
  },
  { key: 'adminSocketMode', kind: 'mode', def: () => 0o600, unit: 'octal mode', doc: 'permission bits of the admin socket' },
  {
    key: 'maxConnections',
    kind: 'int',
    def: () => 1024,
    min: 1,
    max: 1_000_000,
    reloads: true,
    unit: 'connections',
    doc: 'connections open at once on each socket; more are refused with BUSY',
  },
  {
    key: 'maxBytes',
    kind: 'int',
    def: () => 64 * 1024 * 1024,
    min: 1024 * 1024,
    max: 2 ** 50,
    unit: 'bytes',
    doc: 'store bound: keys + values + per-entry overhead; least recently used entries are evicted beyond it',
  },
  {
    key: 'maxValueBytes',
    kind: 'int',
    def: () => 1024 * 1024,
    min: 1,
    max: 16 * 1024 * 1024,
    unit: 'bytes',
    doc: "largest value accepted (memcached's item limit, 1 MiB); larger: SERVER_ERROR object too large for cache (memcache), TOO_LARGE (API)",
  },
  {
    key: 'storeEngine',
    kind: 'engine',
    def: () => 'compact',
    unit: 'name',
    doc: 'store engine: "compact" (slab-backed, about 100 bytes per entry beyond key and value) or "lru-cache" (the lru-cache package, about 360)',
  },
  { key: 'maxKeyBytes', kind: 'int', def: () => MAX_KEY_BYTES, min: 1, max: MAX_KEY_BYTES, unit: 'bytes', doc: 'longest key accepted' },
  { key: 'defaultTtlMs', kind: 'int', def: () => 300_000, min: 1, max: 2 ** 32 - 1, unit: 'ms', doc: 'TTL of an entry stored without one' },
  {
    key: 'maxTtlMs',
    kind: 'int',
    def: () => 2_592_000_000,
    min: 1,
    max: 2 ** 32 - 1,
    unit: 'ms',
    doc: 'longest TTL an entry may have (30 days: memcached clients store sessions with exptime 0, no expiry, and sessions may outlive a day); longer requests are capped',
  },
  {
    key: 'purgeIntervalMs',
    kind: 'int',
    def: () => 10_000,
    min: 100,
    max: 3_600_000,
    unit: 'ms',
    doc: 'how often expired entries are wiped and dropped',
  },
  {
    key: 'shutdownGraceMs',
    kind: 'int',
    def: () => 5_000,
    min: 0,
    max: 600_000,
    unit: 'ms',
    doc: 'how long a graceful shutdown waits for in-flight requests',
  },
  {
    key: 'logLevel',
    kind: 'level',
    def: () => 'info',
    reloads: true,
    unit: 'level',
    doc: `least severe level logged: ${LOG_LEVELS.join(', ')}`,
  },
  {
    key: 'clusterEnabled',
    kind: 'bool',
    def: () => true,
    unit: 'true/false',
    doc: 'join the cluster; false runs this host alone with no peer sockets',
  },
  {
    key: 'group',
    kind: 'mcast',
    def: () => '239.255.77.77',
    unit: 'multicast address',
    doc: 'multicast group of the cluster: IPv4 (239.255.0.0/16 is site-local) or IPv6 (ff02::/16 link, ff05::/16 site), the family of interface',
  },
  { key: 'port', kind: 'int', def: () => 47700, min: 1, max: 65535, unit: 'UDP port', doc: 'UDP port of the multicast group' },
  {
    key: 'interface',
    kind: 'ipaddr',
    def: () => '127.0.0.1',
    unit: 'IP address',
    doc: 'address of the interface the cluster uses (multicast and unicast replies); IPv6 may name the interface: fd00::5%eth0; loopback = one machine',
  },
  {
    key: 'dualStackGroup',
    kind: 'mcast',
    optional: true,
    def: () => '',
    unit: 'multicast address',
    doc: 'dual stack: a second multicast group, of the other IP family, used beside group on the same port (for example ff05::5c:1 beside 239.255.77.77); empty = one family',
    example: '"ff05::5c:1"',
  },
  {
    key: 'dualStackInterface',
    kind: 'ipaddr',
    optional: true,
    def: () => '',
    unit: 'IP address',
    doc: 'dual stack: address of the interface for dualStackGroup, of its family; set both or neither',
    example: '"fd00::5%eth0"',
  },
  {
    key: 'unicastPort',
    kind: 'int',
    def: () => 0,
    min: 0,
    max: 65535,
    unit: 'UDP port',
    doc: 'UDP port for unicast replies; 0 picks a free one',
  },
  {
    key: 'multicastTtl',
    kind: 'int',
    def: () => 1,
    min: 0,
    max: 255,
    unit: 'hops',
    doc: 'multicast TTL; 1 keeps datagrams on this subnet',
  },
  { key: 'multicastLoopback', kind: 'bool', def: () => true, unit: 'true/false', doc: 'deliver multicast to daemons on this machine too' },
  {
    key: 'keyFile',
    kind: 'optstring',
    def: () => '',
    reloads: true,
    unit: 'path',
    doc: 'cluster key file (statecast keygen); required unless the interface is loopback',
  },
  {
    key: 'nodeName',
    kind: 'string',
    def: () => os.hostname(),
    unit: 'name',
    doc: 'name shown to other members; default: the host name',
    example: '"web-01"',
  },
  {
    key: 'lookupTimeoutMs',
    kind: 'int',
    def: () => 50,
    min: 1,
    max: 60_000,
    unit: 'ms',
    doc: 'longest a remote lookup of an API GET may take before "not found" (a TLS server then makes a full handshake: a wait would cost more); see memcacheLookupTimeoutMs',
  },
  {
    key: 'memcacheLookupTimeoutMs',
    kind: 'int',
    def: () => 1000,
    min: 1,
    max: 60_000,
    unit: 'ms',
    doc: "longest a remote lookup of the memcache front end may wait for owners that have not answered (at least lookupTimeoutMs): a session store's false miss loses the session (a PHP user logged out), so a slow owner is waited for; owners that all MISS answer at once. Retransmits past lookupTimeoutMs back off to at most 200 ms apart",
  },
  {
    key: 'lookupHedgeMs',
    kind: 'int',
    def: () => 1,
    min: 0,
    max: 60_000,
    unit: 'ms',
    doc: "with replication, a lookup asks the first owner alone and the others after the hedge delay (or on its MISS): this value at start and at least, then the 95th percentile of the first owners' recent reply times, at most the retransmit interval (lookupTimeoutMs / (lookupRetries + 1)); 0 asks all at once",
  },
  {
    key: 'lookupRetries',
    kind: 'int',
    def: () => 5,
    min: 0,
    max: 50,
    unit: 'retransmits',
    doc: 'LOOKUP retransmits spread over the deadline',
  },
  { key: 'heartbeatMs', kind: 'int', def: () => 1000, min: 50, max: 60_000, unit: 'ms', doc: 'interval between membership heartbeats' },
  { key: 'deadAfterMs', kind: 'int', def: () => 3000, min: 100, max: 600_000, unit: 'ms', doc: 'a member silent for this long is dead' },
  {
    key: 'replayWindowMs',
    kind: 'int',
    def: () => 30_000,
    min: 1000,
    max: 3_600_000,
    unit: 'ms',
    doc: 'datagrams whose send time is further than this from our clock are dropped',
  },
  {
    key: 'maxDatagramBytes',
    kind: 'int',
    def: () => 1400,
    min: MIN_DATAGRAM_BYTES,
    max: 65_000,
    unit: 'bytes',
    doc: 'largest datagram sent or accepted; larger values travel in chunks',
  },
  {
    key: 'maxInflightLookups',
    kind: 'int',
    def: () => 1024,
    min: 1,
    max: 1_000_000,
    unit: 'lookups',
    doc: 'remote lookups in flight at once; more answer "not found" at once',
  },
  // The floor is low so tests can watch rotations; it must stay well above heartbeatMs, since the
  // next epoch's key is agreed by heartbeats during the epoch before it.
  {
    key: 'ticketKeyRotationMs',
    kind: 'int',
    def: () => 3_600_000,
    min: 2_000,
    max: 7 * 86_400_000,
    unit: 'ms',
    doc: 'how often the cluster-wide TLS session ticket key changes; servers keep the previous and next key too, so a ticket resumes for one to two periods (at least 10 heartbeats)',
  },
  {
    key: 'ticketDir',
    kind: 'string',
    def: () => defaultTicketDir(process.env, uid(), os.tmpdir()),
    unit: 'path',
    doc: "directory (on tmpfs) under which each ticket consumer without a dir of its own gets <ticketDir>/<name>/; default: root and the shipped unit (systemd's $RUNTIME_DIRECTORY) /run/statecast/tickets, where every TLS server can reach it; other users tickets/ in their private runtime directory",
    example: '"/run/statecast/tickets"',
  },
  {
    key: 'ticketConsumers',
    kind: 'consumers',
    def: () => [],
    unit: 'list of tables',
    doc: "TLS servers fed the cluster's ticket keys: [[ticketConsumers]] tables with name (default: the format; the same on every host), format (nginx, haproxy, apache, h2o), dir (default <ticketDir>/<name>), group (owns the 0640 files), reloadCommand (argv run after each write, no shell), adminSocket (HAProxy, instead of a reload), timeoutMs (default 10000), allowPersistentDisk (default false); see docs/tls-servers.md",
    example: '[{ name = "nginx", format = "nginx", group = "www-data", reloadCommand = ["systemctl", "reload", "nginx"] }]',
  },
  {
    key: 'apiTicketConsumers',
    kind: 'list',
    def: () => ['node'],
    unit: 'names',
    doc: 'ticket-key consumers whose derived keys the API socket may read (CONSUMER_KEYS; TICKET_KEY is "node", the Node helper\'s): names of ticketConsumers or of Node consumers, comma-separated; the admin socket reads all; no socket ever returns an epoch secret',
  },
  {
    key: 'multicastEnabled',
    kind: 'bool',
    def: () => true,
    unit: 'true/false',
    doc: 'use the multicast group; false = listed peers only (networks without multicast)',
  },
  {
    key: 'peers',
    kind: 'list',
    def: () => [],
    reloads: true,
    unit: 'HOST:PORT',
    doc: 'peers reached by unicast (their unicastPort); names are resolved at start',
  },
  {
    key: 'replicationFactor',
    kind: 'int',
    def: () => 2,
    min: 0,
    max: 16,
    unit: 'copies',
    doc: "copies of each session in the cluster, this host's included (1 = no replication); 0 = every trusted member holds every session (push to all: GETs are local, but each host holds the whole fleet's sessions, N times the store of replicationFactor 1, and every SET costs N - 1 copies; for segments of a few hosts, see docs/scaling.md)",
  },
  {
    key: 'replicationAckTimeoutMs',
    kind: 'int',
    def: () => 100,
    min: 5,
    max: 60_000,
    unit: 'ms',
    doc: "wait for a copy's acknowledgement before the first retry (doubling)",
  },
  {
    key: 'replicationAckDelayMs',
    kind: 'int',
    def: () => 10,
    min: 0,
    max: 15_000,
    unit: 'ms',
    doc: 'a receiver of copies and deletes acknowledges them together, in one ACKS datagram per sender, this long after the first it owes (or at once when one datagram is full); at most a quarter of replicationAckTimeoutMs; 0 = each at once by its own ACK (as daemons before ACKS did: use it while a fleet is upgraded)',
  },
  {
    key: 'replicationRetries',
    kind: 'int',
    def: () => 10,
    min: 0,
    max: 50,
    unit: 'retries',
    doc: 'retries of an unacknowledged copy before it is counted as failed',
  },
  {
    key: 'maxReplicationInflight',
    kind: 'int',
    def: () => 256,
    min: 1,
    max: 100_000,
    unit: 'copies',
    doc: 'copies awaiting acknowledgement at once: the rate bound of re-placement and handoff',
  },
  {
    key: 'maxReplicationQueue',
    kind: 'int',
    def: () => 1_000_000,
    min: 1,
    max: 100_000_000,
    unit: 'copies',
    doc: 'copies waiting to be sent; more are dropped and counted',
  },
  {
    key: 'handoffTimeoutMs',
    kind: 'int',
    def: () => 5000,
    min: 0,
    max: 600_000,
    unit: 'ms',
    doc: 'longest a clean shutdown spends handing sessions to their new owners',
  },
  {
    key: 'metricsListen',
    kind: 'optstring',
    def: () => '',
    unit: 'HOST:PORT',
    doc: 'Prometheus metrics at http://HOST:PORT/metrics (loopback only); empty = off',
  },
  {
    key: 'memcacheListen',
    kind: 'list',
    def: () => [],
    unit: 'addresses',
    doc: 'memcached front end (text, meta and binary protocols): 127.0.0.1:PORT, [::1]:PORT, localhost:PORT, a bare PORT (loopback) and/or socket paths, comma-separated; empty = off',
  },
  {
    key: 'memcacheTcpAccess',
    kind: 'access',
    def: () => 'open',
    unit: 'open/uid/auth',
    doc: 'who a memcache TCP listener (loopback) serves: "open" = every local user, as the tenant that lists it (the default tenant for memcacheListen; start-up logs a warning per listener); "uid" = each connection\'s client uid (Linux: /proc/net/tcp) picks the tenant whose memcacheUsers list it (memcacheListen: any tenant, or the default tenant by memcacheUsers; a tenant\'s own listener: that tenant), other uids are refused; "auth" = each connection logs in first, as memcached with SASL or -Y (binary SASL PLAIN, or the text auth set: `set KEY 0 0 N` with data `user password`), as a user of a memcacheAuthFile, which picks the tenant (memcacheListen: any tenant; a tenant\'s own listener: that tenant); socket paths are guarded by their mode, not by this key',
  },
  {
    key: 'memcacheAuthFile',
    kind: 'optstring',
    def: () => '',
    unit: 'path',
    reloads: true,
    doc: "with memcacheTcpAccess = \"auth\": the default tenant's memcache users, a file of user:password lines (memcached's -Y file), owned by root or the daemon's user, mode 0640 or 0600 (refused otherwise); a [[tenants]] table has its own; re-read on SIGHUP; empty = no users for the default tenant",
  },
  {
    key: 'memcacheUsers',
    kind: 'users',
    def: () => [],
    unit: 'user names or uids',
    doc: 'with memcacheTcpAccess = "uid": the users a memcacheListen TCP listener serves as the default tenant',
  },
  {
    key: 'tenants',
    kind: 'tenants',
    def: () => [],
    unit: 'list of tables',
    doc: 'tenants: [[tenants]] tables with name (the key namespace; the same on every host), socketPath (its API socket), socketMode (default "0660", its sockets), socketGroup (owns its sockets), maxBytes (its share of this host\'s store, bytes; the default tenant, served on socketPath and memcacheListen, gets what maxBytes leaves), memcacheListen (its memcache listeners: socket paths, or loopback HOST:PORT), memcacheUsers (uids it is on TCP listeners with memcacheTcpAccess = "uid"), ticketConsumers (names of the ticketConsumers whose keys its socket may read, or "node" for TICKET_KEY); see docs/tenants.md',
    example:
      '[{ name = "web", socketPath = "/run/statecast/web.sock", socketGroup = "www-data", maxBytes = 16777216, memcacheListen = ["/run/statecast/web-mc.sock"], ticketConsumers = ["nginx"] }]',
  },
  {
    key: 'memcacheMaxConnections',
    kind: 'int',
    def: () => 1024,
    min: 1,
    max: 1_000_000,
    unit: 'connections',
    doc: 'connections open at once on each memcache listener (each has its own count); more get SERVER_ERROR too many connections',
  },
  {
    key: 'memcacheIdleTimeoutMs',
    kind: 'int',
    def: () => 0,
    min: 0,
    max: 2 ** 31 - 1,
    unit: 'ms',
    doc: 'a memcache connection with no traffic either way for this long is closed; 0 = never, as memcached by default (clients keep connections open between requests; the connection cap and the command timeout still guard against hogs)',
  },
  {
    key: 'memcacheCommandTimeoutMs',
    kind: 'int',
    def: () => 30_000,
    min: 0,
    max: 2 ** 31 - 1,
    unit: 'ms',
    doc: 'longest a memcache command line or data block may take to arrive once its first byte came (the idle timeout restarts on every byte, so one byte now and then held a connection forever); the connection is closed; 0 = no limit',
  },
  {
    key: 'memcacheMaxBufferedBytes',
    kind: 'int',
    def: () => 16 * 1024 * 1024,
    min: 1024 * 1024,
    max: 2 ** 40,
    unit: 'bytes',
    doc: 'bytes all memcache connections together may hold (unread input, commands read ahead, replies not yet taken by their clients); above it the connections holding the most are no longer read until their clients take their replies',
  },
  {
    key: 'memcacheFlushAll',
    kind: 'bool',
    def: () => true,
    unit: 'true/false',
    doc: "memcached's flush_all (and the binary flush) empties this host's store, as memcached does; false refuses it: CLIENT_ERROR flush_all not allowed (binary: Auth failure), for hosts where any local user can reach the front end",
  },
  {
    key: 'maxReassemblyBytes',
    kind: 'int',
    def: () => 8 * 1024 * 1024,
    min: 65_536,
    max: 2 ** 40,
    unit: 'bytes',
    doc: 'bytes of partly received values held at once (values, chunk indexes and per-chunk overhead)',
  },
  {
    key: 'maxMembers',
    kind: 'int',
    def: () => 512,
    min: 1,
    max: 65_535,
    unit: 'members',
    doc: 'members held at once; ANNOUNCEs from more senders are refused and counted (membersRefused)',
  },
  {
    key: 'memberProbationMs',
    kind: 'int',
    def: () => 2000,
    min: 0,
    max: 600_000,
    unit: 'ms',
    doc: 'a new member is pushed session copies (and owns keys) only once it has announced itself again at least this long after it first appeared; the default is two default heartbeats',
  },
  {
    key: 'maxTombstones',
    kind: 'int',
    def: () => 65_536,
    min: 1,
    max: 100_000_000,
    unit: 'tombstones',
    doc: 'deleted keys remembered at once, each for 2 x replayWindowMs plus the copy retry span, so an old copy cannot bring a deleted session back; when full, the oldest goes and older copies of unknown keys of its bucket (1 of 65,536) are refused until it would have expired; deletes of keys held nothing of have a table of their own, whose oldest goes with no floor',
  },
  {
    key: 'maxHolderRecords',
    kind: 'int',
    def: () => 262_144,
    min: 1,
    max: 100_000_000,
    unit: 'records',
    doc: "hosts remembered as holding a copy of a key (they fetched it here, or a copy went between them and here), each for the copy's remaining TTL, so a delete reaches them; when full, new ones are not remembered and counted (holdersUnrecorded)",
  },
] as const satisfies readonly FieldSpec[]

type FieldOf = (typeof FIELDS)[number]

/** The daemon's configuration: one property per row of FIELDS, of the type its kind parses to. */
export type Config = { [F in FieldOf as F['key']]: KindValues[F['kind']] }

/** A row of FIELDS, as the code that walks the table sees it. */
type Field = FieldSpec & { key: keyof Config }

export class ConfigError extends StatecastError<'BAD_CONFIG'> {
  constructor(message: string) {
    super('BAD_CONFIG', message)
    this.name = 'ConfigError'
  }
}

/** The part of a config a module takes: the keys it names, nothing else. */
export function pickConfig<K extends keyof Config>(c: Config, keys: readonly K[]): Pick<Config, K> {
  return Object.fromEntries(keys.map((k) => [k, c[k]])) as Pick<Config, K>
}

export function defaults(): Config {
  const out: Partial<Record<keyof Config, unknown>> = {}
  for (const f of FIELDS) out[f.key] = f.def()
  return out as Config
}

/**
 * What a rejected value was, without its text: a config file may be the wrong file (a key file
 * passed to --config), so no error ever repeats what it read.
 */
function kindOf(raw: unknown): string {
  if (typeof raw === 'string') return `a string of ${raw.length} characters`
  if (Array.isArray(raw)) return `a list of ${raw.length} items`
  if (raw === null || raw === undefined) return 'nothing'
  return typeof raw === 'object' ? 'a table' : `a ${typeof raw}`
}

function coerce(f: Field, raw: unknown, where: string): unknown {
  const bad = (expects: string) => new ConfigError(`${where}: ${f.key} must be ${expects} (${f.doc}); got ${kindOf(raw)}`)
  switch (f.kind) {
    case 'int': {
      const n = typeof raw === 'string' && /^-?\d+$/.test(raw.trim()) ? Number(raw) : raw
      const range = `an integer from ${f.min} to ${f.max} ${f.unit}`
      if (typeof n !== 'number' || !Number.isSafeInteger(n)) throw bad(range)
      if ((f.min !== undefined && n < f.min) || (f.max !== undefined && n > f.max)) throw bad(range)
      return n
    }
    case 'string':
      if (typeof raw !== 'string' || raw.length === 0) throw bad(`a non-empty string (${f.unit})`)
      return raw
    case 'optstring':
      if (typeof raw !== 'string') throw bad(`a string (${f.unit})`)
      return raw
    case 'list': {
      const items = Array.isArray(raw)
        ? raw
        : typeof raw === 'string'
          ? raw
              .split(',')
              .map((x) => x.trim())
              .filter(Boolean)
          : undefined
      if (!items || !items.every((x) => typeof x === 'string' && x.length > 0))
        throw bad(`a list of ${f.unit} (a TOML array, or comma-separated on the command line)`)
      if (f.key === 'peers') {
        ;(items as string[]).forEach((x, i) => {
          const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(x)
          if (!m || (m[1] && !net.isIPv6(m[1])) || Number(m[3]) < 1 || Number(m[3]) > 65535)
            throw new ConfigError(`${where}: peers: item ${i + 1} is not HOST:PORT (IPv6 as [ADDR]:PORT, port 1 to 65535)`)
        })
      }
      if (f.key === 'memcacheListen') {
        ;(items as string[]).forEach((x, i) => {
          try {
            parseListen(x)
          } catch {
            throw new ConfigError(
              `${where}: memcacheListen: item ${i + 1} is neither a loopback HOST:PORT (127.0.0.1:PORT, [::1]:PORT or localhost:PORT, port 1 to 65535; the front end has no authentication), a bare PORT (loopback), nor an absolute socket path`,
            )
          }
        })
      }
      return items
    }
    case 'bool':
      if (raw === true || raw === 'true') return true
      if (raw === false || raw === 'false') return false
      throw bad('true or false')
    case 'ipaddr': {
      if (f.optional && raw === '') return ''
      const addr = typeof raw === 'string' ? raw.split('%')[0]! : ''
      if (typeof raw !== 'string' || !(net.isIPv4(raw) || net.isIPv6(addr))) throw bad('an IP address such as "10.0.0.5" or "fd00::5%eth0"')
      return raw
    }
    case 'mcast': {
      if (f.optional && raw === '') return ''
      const v4 = typeof raw === 'string' && net.isIPv4(raw) ? Number(raw.split('.')[0]) : -1
      const v6 = typeof raw === 'string' && net.isIPv6(raw) && /^ff/i.test(raw)
      if (!v6 && (v4 < 224 || v4 > 239))
        throw bad(
          'a multicast address: IPv4 224.0.0.0 to 239.255.255.255 (such as "239.255.77.77") or IPv6 ff00::/8 (such as "ff02::5c:1")',
        )
      return raw
    }
    case 'mode': {
      const s = typeof raw === 'number' ? raw.toString(8) : raw
      if (typeof s !== 'string' || !/^0?[0-7]{3}$/.test(s)) throw bad('an octal mode such as "0660"')
      return parseInt(s, 8)
    }
    case 'engine':
      if (raw !== 'compact' && raw !== 'lru-cache') throw bad('"compact" or "lru-cache"')
      return raw
    case 'consumers':
      try {
        return parseConsumers(raw)
      } catch (err) {
        throw new ConfigError(`${where}: ${(err as Error).message}`)
      }
    case 'tenants':
      try {
        return parseTenants(raw)
      } catch (err) {
        throw new ConfigError(`${where}: ${(err as Error).message}`)
      }
    case 'users':
      try {
        return parseUsers(raw, f.key)
      } catch (err) {
        throw new ConfigError(`${where}: ${(err as Error).message}`)
      }
    case 'access':
      if (raw !== 'open' && raw !== 'uid' && raw !== 'auth') throw bad('"open", "uid" or "auth"')
      return raw
    case 'level':
      if (typeof raw !== 'string' || !(LOG_LEVELS as readonly string[]).includes(raw)) throw bad(`one of ${LOG_LEVELS.join(', ')}`)
      return raw
  }
}

/**
 * Merges `overrides` (from a file or flags) into `base`, validating each value. Unknown keys are
 * errors, so a typo never silently leaves a default in force.
 */
export function apply(
  base: Config,
  overrides: Record<string, unknown>,
  where: string,
  lineOf: (key: string) => number | undefined = () => undefined,
): Config {
  const out: Record<string, unknown> = { ...base }
  const at = (k: string) => {
    const line = lineOf(k)
    return line === undefined ? where : `${where}:${line}`
  }
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) continue
    const f = FIELDS.find((x) => x.key === k)
    if (!f) {
      // The name is not repeated either (it is text from the file); a near miss is named instead.
      const near = FIELDS.find(
        (x) => x.key.toLowerCase() === k.toLowerCase() || (Math.abs(x.key.length - k.length) <= 2 && editDistance(x.key, k) <= 2),
      )
      throw new ConfigError(
        `${at(k)}: unknown key${near ? `; did you mean ${near.key}?` : ''} (known keys: ${FIELDS.map((x) => x.key).join(', ')})`,
      )
    }
    out[k] = coerce(f, v, at(k))
  }
  // An admin socket nobody chose follows the API socket into its directory, so two daemons given
  // only --socket in two directories never contend for one admin path.
  if (
    overrides['socketPath'] !== undefined &&
    overrides['adminSocketPath'] === undefined &&
    base.adminSocketPath === adminSocketBeside(base.socketPath)
  ) {
    out['adminSocketPath'] = adminSocketBeside(out['socketPath'] as string)
  }
  const c = out as unknown as Config
  if (c.defaultTtlMs > c.maxTtlMs)
    throw new ConfigError(`${where}: defaultTtlMs (${c.defaultTtlMs}) must not exceed maxTtlMs (${c.maxTtlMs})`)
  if (c.maxValueBytes + c.maxKeyBytes > c.maxBytes)
    throw new ConfigError(`${where}: maxBytes (${c.maxBytes}) must hold at least one entry of maxValueBytes (${c.maxValueBytes})`)
  // A copy or a fetched value is reassembled from datagrams: the bound must hold a whole value, with its chunks' overhead.
  if (c.maxReassemblyBytes < 2 * c.maxValueBytes)
    throw new ConfigError(
      `${where}: maxReassemblyBytes (${c.maxReassemblyBytes}) must hold at least two values of maxValueBytes (${c.maxValueBytes}), or large values could never be copied or fetched`,
    )
  if (c.socketPath === c.adminSocketPath) throw new ConfigError(`${where}: socketPath and adminSocketPath must differ`)
  if (c.metricsListen) {
    try {
      if (!parseListen(c.metricsListen)) throw new Error('a socket path is not allowed here')
    } catch (err) {
      throw new ConfigError(
        `${where}: metricsListen must be a loopback HOST:PORT (127.0.0.1:PORT or [::1]:PORT, port 1 to 65535): ${err instanceof Error && err.message === 'a socket path is not allowed here' ? err.message : 'it is not one'}`,
      )
    }
  }
  const v6 = (addr: string) => net.isIPv6(addr.split('%')[0]!)
  if (v6(c.group) !== v6(c.interface))
    throw new ConfigError(`${where}: group ${c.group} and interface ${c.interface} must be of the same IP family`)
  if ((c.dualStackGroup === '') !== (c.dualStackInterface === ''))
    throw new ConfigError(`${where}: dualStackGroup and dualStackInterface go together: set both (dual stack) or neither`)
  if (c.dualStackGroup) {
    if (v6(c.dualStackGroup) !== v6(c.dualStackInterface))
      throw new ConfigError(
        `${where}: dualStackGroup ${c.dualStackGroup} and dualStackInterface ${c.dualStackInterface} must be of the same IP family`,
      )
    if (v6(c.dualStackGroup) === v6(c.group))
      throw new ConfigError(`${where}: dualStackGroup ${c.dualStackGroup} must be of the other IP family than group ${c.group}`)
  }
  if (c.peers.length > 0 && c.unicastPort === 0)
    throw new ConfigError(`${where}: peers are listed, so unicastPort must be a fixed port (the one the other hosts list)`)
  if (!c.multicastEnabled && c.peers.length === 0 && c.clusterEnabled)
    throw new ConfigError(`${where}: multicastEnabled is false and no peers are listed: list peers, or set clusterEnabled = false`)
  if (c.ticketKeyRotationMs < 10 * c.heartbeatMs)
    throw new ConfigError(
      `${where}: ticketKeyRotationMs (${c.ticketKeyRotationMs}) must be at least 10 times heartbeatMs (${c.heartbeatMs}): the next key is agreed by heartbeats during the epoch before it`,
    )
  checkTenants(c, where)
  checkAuth(c, where)
  const datagrams = datagramProblem(c)
  if (datagrams) throw new ConfigError(`${where}: ${datagrams}`)
  if (4 * c.replicationAckDelayMs > c.replicationAckTimeoutMs)
    throw new ConfigError(
      `${where}: replicationAckDelayMs (${c.replicationAckDelayMs}) must be at most a quarter of replicationAckTimeoutMs (${c.replicationAckTimeoutMs}): an acknowledgement held longer makes the sender retry copies that arrived`,
    )
  if (c.deadAfterMs < 2 * c.heartbeatMs)
    throw new ConfigError(
      `${where}: deadAfterMs (${c.deadAfterMs}) must be at least twice heartbeatMs (${c.heartbeatMs}), or one lost heartbeat kills a member`,
    )
  checkLimits(c, where)
  return c
}

/**
 * Why the peer datagrams of `c` could not carry what they must, or undefined: a LOOKUP for a key of
 * maxKeyBytes with the longest owner list it sends, a HIT and a REPLICATE of such a key with at least
 * one value byte, and our ANNOUNCE. Measured with the codec's own lengths, at the larger (IPv6) reply
 * address and dual stack, so no address a daemon may get makes a datagram too large at run time.
 */
export function datagramProblem(c: Config): string | undefined {
  if (!c.clusterEnabled) return undefined
  const key = Buffer.alloc(c.maxKeyBytes)
  const v6 = { family: 6 as const, address: '::', port: 0 }
  const v4 = { family: 4 as const, address: '0.0.0.0', port: 0 }
  // Push to all (0) names as many members as fit and asks every member (no names) beyond that:
  // every member is an owner, so the two mean the same, and the shortest LOOKUP is the limit.
  const named = Math.max(0, c.replicationFactor - 1)
  const lookup: Message = {
    type: MsgType.LOOKUP,
    reqId: 0,
    nonce: Buffer.alloc(NONCE_BYTES),
    reply: v6,
    expect: Array.from({ length: named }, () => Buffer.alloc(SENDER_ID_BYTES)),
    key,
  }
  const announce: Message = { type: MsgType.ANNOUNCE, reply: v6, also: v4, entries: 0, flags: AnnounceFlag.DUAL_STACK, name: c.nodeName }
  const needs = [
    { what: `a LOOKUP for a ${c.maxKeyBytes}-byte key naming ${named} owner${named === 1 ? '' : 's'}`, bytes: datagramLength(lookup) },
    {
      what: `a REPLICATE of a ${c.maxKeyBytes}-byte key with one value byte`,
      bytes: c.maxDatagramBytes - replicateChunkBytes(c.maxDatagramBytes, c.maxKeyBytes) + 1,
    },
    { what: 'a HIT with one value byte', bytes: c.maxDatagramBytes - hitChunkBytes(c.maxDatagramBytes) + 1 },
    { what: `an ANNOUNCE of the ${Buffer.byteLength(c.nodeName)}-byte nodeName`, bytes: datagramLength(announce) },
  ]
  const over = needs.filter((n) => n.bytes > c.maxDatagramBytes)
  if (over.length === 0) return undefined
  return `maxDatagramBytes (${c.maxDatagramBytes}) is too small for ${over.map((n) => `${n.what} (${n.bytes} bytes)`).join(', ')}: raise maxDatagramBytes to at least ${Math.max(...over.map((n) => n.bytes))}, or lower maxKeyBytes${over.some((n) => n.what.includes('LOOKUP')) ? ' or replicationFactor' : ''}`
}

/**
 * Checks across keys that tenants need: quotas within maxBytes (the default tenant gets the
 * rest), room for keys after the namespace, consumers that exist, and no socket or listener used
 * twice.
 */
function checkTenants(c: Config, where: string): void {
  if (c.tenants.length === 0) return
  const sum = c.tenants.reduce((n, t) => n + t.maxBytes, 0)
  if (sum > c.maxBytes)
    throw new ConfigError(
      `${where}: tenants: the tenants' maxBytes add up to ${sum} bytes, more than maxBytes (${c.maxBytes}): each host's store holds every tenant's share`,
    )
  const names = new Set(c.ticketConsumers.map((x) => x.name))
  const used = new Map<string, string>([
    [c.socketPath, 'socketPath'],
    [c.adminSocketPath, 'adminSocketPath'],
  ])
  c.memcacheListen.forEach((x, i) => used.set(x, `memcacheListen item ${i + 1}`))
  c.tenants.forEach((t, i) => {
    const at = `tenants[${i}]`
    if (t.maxBytes < c.maxValueBytes + c.maxKeyBytes)
      throw new ConfigError(
        `${where}: ${at}.maxBytes (${t.maxBytes}) must hold at least one entry of maxValueBytes (${c.maxValueBytes}) and maxKeyBytes (${c.maxKeyBytes})`,
      )
    if (Buffer.byteLength(t.name) + 3 > c.maxKeyBytes)
      throw new ConfigError(
        `${where}: ${at}.name leaves no room for keys within maxKeyBytes (${c.maxKeyBytes}): a tenant's keys are at most maxKeyBytes minus the name's length plus 2`,
      )
    for (const n of t.ticketConsumers)
      if (!names.has(n) && n !== 'node')
        throw new ConfigError(
          `${where}: ${at}.ticketConsumers names ${JSON.stringify(n)}, which is neither "node" (the Node helper's keys, TICKET_KEY) nor the name of any ticketConsumers entry`,
        )
    for (const [p, what] of [
      [t.socketPath, `${at}.socketPath`],
      ...t.memcacheListen.map((x, j) => [x, `${at}.memcacheListen item ${j + 1}`]),
    ] as [string, string][]) {
      const other = used.get(p)
      if (other) throw new ConfigError(`${where}: ${what} is the same socket or listener as ${other}: each serves one tenant`)
      used.set(p, what)
    }
  })
}

/** memcacheAuthFile is used exactly with memcacheTcpAccess = "auth", which needs at least one. */
function checkAuth(c: Config, where: string): void {
  const files = [c.memcacheAuthFile, ...c.tenants.map((t) => t.memcacheAuthFile)].filter((f) => f !== '')
  if (c.memcacheTcpAccess === 'auth' && files.length === 0)
    throw new ConfigError(
      `${where}: memcacheTcpAccess is "auth" but no memcacheAuthFile is set (top level for the default tenant, or in a [[tenants]] table): no client could log in`,
    )
  if (c.memcacheTcpAccess !== 'auth' && files.length > 0)
    throw new ConfigError(
      `${where}: memcacheAuthFile is set but memcacheTcpAccess is "${c.memcacheTcpAccess}", not "auth": it would not be used`,
    )
  for (const f of files)
    if (!f.startsWith('/')) throw new ConfigError(`${where}: memcacheAuthFile must be an absolute path (a file of user:password lines)`)
}

/** Longest Unix socket path Linux can bind (sun_path holds 108 bytes with the terminating zero). */
export const MAX_SOCKET_PATH_BYTES = 107
/** Longest node name: ANNOUNCE carries its length in one byte. */
export const MAX_NODE_NAME_BYTES = 255

/**
 * Limits on single keys, checked with the config itself so that --check-config accepts exactly what
 * start-up accepts: each concerns one key, so a config file alone can be judged.
 */
function checkLimits(c: Config, where: string): void {
  const nameBytes = Buffer.byteLength(c.nodeName, 'utf8')
  if (nameBytes > MAX_NODE_NAME_BYTES)
    throw new ConfigError(
      `${where}: nodeName must be at most ${MAX_NODE_NAME_BYTES} bytes of UTF-8 (ANNOUNCE carries its length in one byte); got ${nameBytes} bytes`,
    )
  const paths: [string, string][] = [
    ['socketPath', c.socketPath],
    ['adminSocketPath', c.adminSocketPath],
  ]
  c.memcacheListen.forEach((x, i) => {
    if (x.startsWith('/')) paths.push([`memcacheListen item ${i + 1}`, x])
  })
  c.tenants.forEach((t, i) => {
    paths.push([`tenants[${i}].socketPath`, t.socketPath])
    t.memcacheListen.forEach((x, j) => {
      if (x.startsWith('/')) paths.push([`tenants[${i}].memcacheListen item ${j + 1}`, x])
    })
  })
  for (const [name, p] of paths) {
    const n = Buffer.byteLength(p, 'utf8')
    if (n > MAX_SOCKET_PATH_BYTES)
      throw new ConfigError(
        `${where}: ${name} must be at most ${MAX_SOCKET_PATH_BYTES} bytes (the longest Unix socket path); got ${n} bytes`,
      )
  }
}

/**
 * Checks of the complete configuration (file and flags together) that start-up, a reload and
 * --check-config (with the flags given alongside) make: a peer address literal must be of a
 * family the cluster speaks. (A missing key file off loopback is refused at start-up: the key
 * often comes from the command line, as in the systemd unit.)
 */
export function checkStartable(c: Config, where: string): void {
  if (!c.clusterEnabled) return
  const v6 = (addr: string) => net.isIPv6(addr.split('%')[0]!)
  const families = new Set([v6(c.interface) ? 6 : 4, ...(c.dualStackInterface ? [v6(c.dualStackInterface) ? 6 : 4] : [])])
  c.peers.forEach((p, i) => {
    const host = p.slice(0, p.lastIndexOf(':')).replace(/^\[|\]$/g, '')
    const family = net.isIP(host)
    if (family && !families.has(family))
      throw new ConfigError(
        `${where}: peers: item ${i + 1} is an IPv${family} address, but the cluster speaks IPv${[...families].join(' and IPv')} (interface${c.dualStackInterface ? ' and dualStackInterface' : ''})`,
      )
  })
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]!
    d[0] = i
    for (let j = 1; j <= b.length; j++) {
      const cur = d[j]!
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = cur
    }
  }
  return d[b.length]!
}

/** A TOML parser's reason, kept only if it is one of its fixed sentences (no quoted input). */
function tomlReason(err: TomlError): string {
  const reason = err.message.split('\n')[0]!.replace(/^Invalid TOML document: /, '')
  return /^[a-z][a-z ,:;.()-]{0,100}$/i.test(reason) ? reason : 'malformed'
}

/**
 * Reads and validates a TOML config file on top of the defaults. Errors name the file, the line
 * and what was expected, never the text of the line: the file may not be a config at all (a key
 * file given by mistake), and errors reach stderr and the log.
 */
/**
 * The text of a config file, read once through one descriptor, refused unless it is safe and
 * whole. Issue 21 points 12 and 13:
 * - writable by group or others, or owned by someone other than root or this process's user:
 *   whoever can write it picks `adminSocketMode`, `reloadCommand` (run as this daemon's user) and
 *   `ticketDir`, so it is as sensitive as the daemon itself;
 * - empty (or only white space): a file being written (an editor truncates, then writes) read by a
 *   SIGHUP parsed as valid TOML with every key at its default and emptied `peers` without a word;
 *   a config with every default is a file of comments, never an empty one;
 * - changed while read (size or mtime of the descriptor differ before and after): half-written.
 * The owner and mode are those of the descriptor read (fstat), not of a path looked up again.
 */
export function readConfigFile(path: string): string {
  let fd: number
  try {
    fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as NodeJS.ErrnoException).code ?? 'read failed'}`)
  }
  try {
    const before = fs.fstatSync(fd)
    if (!before.isFile()) throw new ConfigError(`config file ${path} is not a regular file; refusing it`)
    if (before.mode & 0o022)
      throw new ConfigError(
        `config file ${path} has mode 0${(before.mode & 0o777).toString(8)}: group or others may write it, and whoever writes it chooses what this daemon runs (reloadCommand) and who reaches its admin socket; refusing it: run chmod go-w ${path}`,
      )
    const me = typeof process.getuid === 'function' ? process.getuid() : -1
    if (me >= 0 && before.uid !== 0 && before.uid !== me)
      throw new ConfigError(
        `config file ${path} belongs to uid ${before.uid}, not to root or this daemon's user (uid ${me}), who could rewrite it; refusing it: run chown root ${path}`,
      )
    let bytes: Buffer
    try {
      bytes = fs.readFileSync(fd)
    } catch (err) {
      throw new ConfigError(`cannot read config file ${path}: ${(err as NodeJS.ErrnoException).code ?? 'read failed'}`)
    }
    const after = fs.fstatSync(fd)
    // A file renamed into place meanwhile is no matter: what was read is the old one, whole.
    if (bytes.length !== before.size || after.size !== before.size || after.mtimeMs !== before.mtimeMs) {
      throw new ConfigError(
        `config file ${path} changed while it was read (being written?); refusing it: write the new config to another file and rename it into place`,
      )
    }
    const text = bytes.toString('utf8')
    if (text.trim() === '')
      throw new ConfigError(
        `config file ${path} is empty (${bytes.length} bytes); refusing it (a file being written? write it elsewhere and rename it into place; a config with every default is a file of comments)`,
      )
    return text
  } finally {
    fs.closeSync(fd)
  }
}

export function loadFile(path: string, base: Config = defaults()): Config {
  const text = readConfigFile(path)
  let doc: Record<string, unknown>
  try {
    doc = parseToml(text)
  } catch (err) {
    if (err instanceof TomlError)
      throw new ConfigError(
        `${path}:${err.line}:${err.column}: not valid TOML (${tomlReason(err)}); expected lines of KEY = VALUE (statecastd --example-config shows every key)`,
      )
    throw new ConfigError(`${path}: not valid TOML; expected lines of KEY = VALUE (statecastd --example-config shows every key)`)
  }
  const lines = text.split(/\r?\n/)
  const lineOf = (key: string) => {
    const i = lines.findIndex((l) => {
      const m = /^\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*=/.exec(l)
      return m !== null && (m[1] ?? m[2] ?? m[3]) === key
    })
    return i < 0 ? undefined : i + 1
  }
  return apply(base, doc, path, lineOf)
}

function tomlValue(f: Field, v: unknown): string {
  if (f.example) return f.example
  if (f.kind === 'mode') return `"0${(v as number).toString(8)}"`
  if (typeof v === 'string' || Array.isArray(v)) return JSON.stringify(v)
  return String(v)
}

/**
 * The example config file (`statecastd --example-config`, shipped as
 * systemd/statecast.conf.example): every key with its unit, default and meaning, commented out.
 */
export function exampleToml(): string {
  const d = defaults()
  const lines = [
    '# statecastd configuration (TOML). Every key is optional: shown here with its default.',
    '# Command-line flags (--kebab-case-key VALUE) override this file. Validate with:',
    '#   statecastd --check-config /etc/statecast/statecast.conf',
    '# SIGHUP (systemctl reload statecast) re-reads it; keys marked [restart] need a restart.',
    '',
  ]
  for (const f of FIELDS) {
    lines.push(`# ${f.doc}. Unit: ${f.unit}.${RELOAD_IN_PLACE.has(f.key) ? '' : ' [restart]'}`)
    lines.push(`#${f.key} = ${tomlValue(f, d[f.key])}`, '')
  }
  return lines.join('\n')
}

/** Keys a reload (SIGHUP) applies in place; the rest need a restart. */
export const RELOAD_IN_PLACE: ReadonlySet<keyof Config> = new Set(FIELDS.filter((f: Field) => f.reloads).map((f) => f.key))

/** Largest frame the API accepts: a SET of the largest key and value, with headers. */
export function maxFrameBytes(c: Config): number {
  return c.maxValueBytes + c.maxKeyBytes + 64
}
