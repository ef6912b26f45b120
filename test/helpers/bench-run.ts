/**
 * Runs a built benchmark program (dist/bench/NAME.js) as its own process and returns the figures it
 * prints on its `NAME-result {json}` line: tests use the benchmarks' workloads without importing
 * bench/.
 */
import { execFile } from 'node:child_process'
import path from 'node:path'
import { ROOT, nodeCommand } from './daemon.js'

export function runBench<T>(name: string, args: string[] = [], env: NodeJS.ProcessEnv = {}, timeoutMs = 600_000): Promise<T> {
  // Without tap's process-info hook: the program starts daemons of its own, which would inherit it.
  const [cmd, ...pre] = nodeCommand()
  return new Promise((resolve, reject) => {
    execFile(
      cmd!,
      [...pre, path.join(ROOT, 'dist', 'bench', `${name}.js`), ...args],
      { env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const line = stdout.split('\n').find((l) => l.startsWith(`${name}-result `))
        if (line) return resolve(JSON.parse(line.slice(name.length + 8)) as T)
        reject(new Error(`bench ${name} printed no result${err ? `: ${err.message}` : ''}\n${stderr.slice(-2000)}`))
      },
    )
  })
}

/** What `npm run soak` (bench/soak.ts) measures. */
export interface SoakResult {
  seconds: number
  ops: number
  opsPerSec: number
  errors: number
  wrong: number
  getP50Us: number
  getP99Us: number
  rssMiB: number[][]
  fds: number[][]
  /** Resident memory growth from the end of warm-up to the end, per daemon, in %. */
  rssGrowthPct: number[]
  fdGrowth: number[]
}

/** The cost benchmark (bench/cost.ts): a TLS session-cache mix, TLS 1.2 session ids or TLS 1.3 stateful tickets. */
export type Mix = 'tls12' | 'tls13'

export interface OpFigures {
  sent: number
  answered: number
  p50Us: number
  p99Us: number
}

export interface LoadResult {
  /** Handshakes issued in the timed window. */
  handshakes: number
  timedSeconds: number
  ops: { GET: OpFigures; SET: OpFigures; DELETE: OpFigures }
  getHits: number
  getMisses: number
  /** GETs that statecast answered with a copy fetched from a peer (REMOTE flag). */
  remoteFills: number
  /** Replies with a status other than found / not found, and requests never answered. */
  errors: number
  unanswered: number
  /** Handshakes (or their second requests) not issued because every request slot was taken (the servers fell behind). */
  dropped: number
  /** How late (ms) the generator issued a handshake at worst: how far it fell behind its schedule. */
  maxTickGapMs: number
}

export interface TargetFigures extends LoadResult {
  /** Handshakes per second actually issued in the timed window. */
  achievedPerSec: number
  /** Every operation's median under 50 ms, nothing dropped or unanswered: the servers kept up with the offered rate. */
  keptUp: boolean
  cpuUsPerHandshake: number
  /** Voluntary context switches of all the servers' threads, per handshake. */
  wakeupsPerHandshake: number
  /** The same, of the threads that serve requests only (Node's main thread, memcached's worker). */
  loopWakeupsPerHandshake: number
  /** The load generator's own CPU per handshake: what it takes from the servers' two cores. */
  generatorCpuUsPerHandshake: number
  /** statecast only: peer datagrams sent and received by all daemons together, per handshake. */
  datagramsSentPerHandshake?: number
  datagramsReceivedPerHandshake?: number
}

export interface CostCase {
  mix: Mix
  rate: number
  hosts: number
  statecast: TargetFigures
  /** The same fleet with every session pushed to every host (replicationFactor 0); null when skipped. */
  pushToAll: TargetFigures | null
  memcached: TargetFigures | null
  /**
   * The floor of any design with a Node process per host: one bare Node server per host
   * (bench/echo-server.ts) answering every request at once, with no store, no peers and no timers.
   */
  floor: TargetFigures | null
  /** statecast's CPU per handshake over memcached's, both from this run. */
  cpuRatio: number | null
  pushToAllRatio: number | null
  /** The floor's CPU per handshake over memcached's: what no per-host Node daemon can go below. */
  floorRatio: number | null
}

export interface ScaleCase {
  hosts: number
  mix: Mix
  rate: number
  handshakes: number
  achievedPerSec: number
  /** Peer datagrams each host received (on average) per handshake anywhere in the fleet. */
  receivedPerHostPerHandshake: number
  /** The same, less what the hosts receive when idle (heartbeats, ticket key), measured first. */
  receivedPerHostPerHandshakeBeyondIdle: number
  idleReceivedPerHostPerSec: number
  sentPerHostPerHandshake: number
  cpuUsPerHandshake: number
  keptUp: boolean
  getHits: number
  getMisses: number
  errors: number
  unanswered: number
}

export interface CostResult {
  load: string
  cases: CostCase[]
  scale: ScaleCase[]
}

/** One case of the writes benchmark (bench/writes.ts): SETs one at a time through one front end. */
export interface WritesCase {
  /** 'this' (the build running the bench) or 'other' (WRITES_OTHER_DIST). */
  build: string
  dist: string
  /** The daemon alone, or the writer in a 3-daemon cluster that is not / is one of the key's owners. */
  where: 'lone' | 'notOwner' | 'owner'
  via: 'api' | 'memcache'
  n: number
  p50Us: number
  p99Us: number
  /** p50 less the same build's lone daemon's p50 through the same front end (0 for the lone case). */
  riseP50Us: number
  /** riseP50Us over the UDP round trip's p50. */
  riseInRoundTrips: number
  /** riseP50Us over its floor: the slower of two UDP round trips at once (notOwner: two owners) or one. */
  riseInFloor: number
  /** riseP50Us over the same build's daemon round trip to one owner (OwnerRoundTrip.roundTripP50Us). */
  riseInOwnerRoundTrips: number
  /** Peer datagrams of the build's daemons (the cluster's three, or the lone one), less idle, per SET. */
  datagramsSentPerSet: number
  datagramsReceivedPerSet: number
  /** Voluntary context switches of the same daemons' main threads, less idle, per SET. */
  wakeupsPerSet: number
  /** CPU of the same daemons (/proc, 10 ms ticks), less idle, per SET, µs. */
  cpuUsPerSet: number
}

/**
 * One daemon round trip to one owner, per build: a remote fill on the writer (a LOOKUP to the
 * key's first owner and its HIT) less a GET the writer answers itself, both through the API,
 * sampled between the SETs. Also the writer's counters over the timed window.
 */
export interface OwnerRoundTrip {
  build: string
  localGetP50Us: number
  fillP50Us: number
  fillP99Us: number
  /** Fills answered with a copy from a peer (REMOTE): all of them when the keys were placed as expected. */
  remoteFills: number
  roundTripP50Us: number
  /** The writer's SETs that waited for an owner's acknowledgement, and its copies sent again, in the timed window. */
  setsAwaitingCopy: number
  copiesRetried: number
}

export interface WritesResult {
  load: string
  n: number
  warm: number
  /** A bare UDP round trip between two Node processes on loopback, sampled between the SETs. */
  rttP50Us: number
  rttP99Us: number
  /** The slower of two UDP round trips made at once, to two echo processes. */
  rtt2P50Us: number
  rtt2P99Us: number
  /** Each build's daemons' pids: the cluster's h0 (the writer), h1, h2, then the lone one (to match --cpu-prof files). */
  daemons: { build: string; pids: number[] }[]
  roundTrips: OwnerRoundTrip[]
  cases: WritesCase[]
}
