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
