/**
 * Prometheus metrics on an optional loopback HTTP listener (`metricsListen`): every counter and
 * gauge of `statecast stats`, plus latency histograms of remote lookups and replication copies.
 * Counters are read from the daemon's own counters at scrape time, so the hot paths only ever
 * increment plain numbers.
 */
import http from 'node:http'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import { parseListen } from '../config/listen.js'
import type { Log } from '../host/log.js'
import { STATS, metricName, statLeaves, type StatSpec } from '../../protocol/stats.js'

/**
 * Bounds of the metrics listener, which any local user reaches. Issue 21 point 8: 1,100 idle
 * connections held 1,100 descriptors (no cap, Node's default timeouts are minutes), and every API
 * connect was refused (EMFILE) for 67 s. A scraper needs one connection for well under a second;
 * past the cap a new connection is closed at once (counted), and a connection idle, or slow to
 * send its request, is closed within seconds.
 */
export const METRICS_LIMITS = {
  /** Connections open at once; one more is closed as soon as it is accepted. */
  maxConnections: 32,
  /** A connection with no request in flight and nothing received for this long is closed, in ms. */
  idleTimeoutMs: 5_000,
  /** The whole request head must arrive within this, in ms. */
  headersTimeoutMs: 5_000,
  /** The whole request, within this, in ms. */
  requestTimeoutMs: 10_000,
  /** How often Node checks the two timeouts above, in ms. */
  checkIntervalMs: 1_000,
} as const

export class Metrics {
  readonly registry = new Registry()
  readonly lookupSeconds: Histogram<'outcome'>
  readonly copyAckSeconds: Histogram
  #server: http.Server | undefined
  /** Connections closed on arrival because METRICS_LIMITS.maxConnections were open. */
  readonly refused: Counter
  #snapshot = new Map<string, number>()
  readonly #stats: () => unknown
  readonly #log: Log

  constructor(stats: () => unknown, log: Log) {
    this.#stats = stats
    this.#log = log
    const buckets = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]
    this.lookupSeconds = new Histogram({
      name: 'statecast_remote_lookup_seconds',
      help: 'Remote lookups from the first LOOKUP to the answer, by outcome',
      labelNames: ['outcome'],
      buckets,
      registers: [this.registry],
    })
    this.copyAckSeconds = new Histogram({
      name: 'statecast_replication_ack_seconds',
      help: 'Replication copies from first send to acknowledgement',
      buckets,
      registers: [this.registry],
    })
    this.refused = new Counter({
      name: 'statecast_metrics_connections_refused_total',
      help: `Connections to this listener closed on arrival: ${METRICS_LIMITS.maxConnections} were open`,
      registers: [this.registry],
    })
    // Every declared number, whether or not this daemon reports it yet (cluster counters appear
    // with the cluster): a name, TYPE and HELP from STATS; an unreported one reads 0.
    for (const [path, spec] of Object.entries(STATS) as [string, StatSpec][]) if (spec.kind !== 'info') this.#define(path, spec)
  }

  #define(path: string, spec: StatSpec): void {
    const read = () => this.#snapshot.get(path) ?? 0
    const help = `${spec.meaning.replace(/\.$/, '')} (stats ${path}${spec.unit && spec.unit !== 'count' ? `, ${spec.unit}` : ''})`
    const name = metricName(path)
    if (spec.kind === 'gauge') {
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(read())
        },
      })
    } else {
      new Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.reset()
          this.inc(read())
        },
      })
    }
  }

  /** The exposition text of a scrape. */
  async scrape(): Promise<string> {
    this.#snapshot = statLeaves(this.#stats())
    return this.registry.metrics()
  }

  async listen(spec: string): Promise<void> {
    const addr = parseListen(spec)
    if (!addr) throw new Error(`metricsListen must be HOST:PORT on loopback, got ${spec}`)
    const L = METRICS_LIMITS
    const server = http.createServer(
      {
        headersTimeout: L.headersTimeoutMs,
        requestTimeout: L.requestTimeoutMs,
        keepAliveTimeout: L.idleTimeoutMs,
        connectionsCheckingInterval: L.checkIntervalMs,
      },
      (req, res) => {
        if (req.method !== 'GET' || (req.url !== '/metrics' && req.url !== '/')) {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('statecast: metrics are at /metrics\n')
          return
        }
        this.scrape().then(
          (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
          (err: unknown) => res.writeHead(500).end(String(err)),
        )
      },
    )
    server.maxConnections = L.maxConnections
    server.on('drop', () => this.refused.inc())
    // Inactivity on the socket, whatever the request state: no listener for 'timeout', so Node
    // destroys the socket.
    server.setTimeout(L.idleTimeoutMs)
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new Error(`metrics listener cannot listen on ${spec}: ${err.message}`)))
      server.listen(addr.port, addr.host, () => resolve())
    })
    this.#server = server
    this.#log.info({ listen: spec }, 'metrics listening')
  }

  async close(): Promise<void> {
    const s = this.#server
    this.#server = undefined
    if (s) {
      const closed = new Promise<void>((r) => s.close(() => r()))
      // Idle keep-alive connections would hold close() for their timeout.
      s.closeAllConnections()
      await closed
    }
  }
}
