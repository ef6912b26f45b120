/**
 * npm run demo: three daemons and three HTTPS servers (one process each) on loopback, each server
 * behind a proxy that simulates a round-trip time (--rtt-ms, 20 by default), and clients behind a
 * round-robin "load balancer" that reconnect and try to resume, once with per-server session
 * caches only and once with statecast, for TLS 1.2 and 1.3. Prints one screen: the share resumed,
 * the mean handshake time at that RTT and the servers' CPU per handshake.
 */
import crypto from 'node:crypto'
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import https from 'node:https'
import os from 'node:os'
import path from 'node:path'
import tls from 'node:tls'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { attachSessionCache, type SessionCache } from '../client/tls.js'
import { StatecastClient } from '../client/index.js'
import Memcached from 'memcached'
import { formatKeyFile, newClusterKey } from '../protocol/keyfile.js'
import { untilAccepting } from './local.js'
import { startDelayProxy, type DelayProxy } from './delay-proxy.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const DAEMON = path.resolve(here, '..', 'daemon', 'main.js')
const CLIENTS = Number(process.env['DEMO_CLIENTS'] ?? 30)
const ROUNDS = Number(process.env['DEMO_ROUNDS'] ?? 10)
const CONCURRENCY = Number(process.env['DEMO_CONCURRENCY'] ?? 2)
const WARM_ROUNDS = Number(process.env['DEMO_WARM_ROUNDS'] ?? 2)
const TICK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100

export type Version = 'TLSv1.2' | 'TLSv1.3'

export function makeCert(dir: string, kind: 'ec' | 'rsa' = 'ec'): { key: Buffer; cert: Buffer } {
  const key = path.join(dir, 'key.pem')
  const cert = path.join(dir, 'cert.pem')
  const alg = kind === 'ec' ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'] : ['-newkey', 'rsa:2048']
  try {
    execFileSync('openssl', ['req', '-x509', ...alg, '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost'], {
      stdio: 'ignore',
    })
  } catch {
    throw new Error('the demo needs the openssl command to make a throwaway certificate (apt-get install openssl)')
  }
  return { key: fs.readFileSync(key), cert: fs.readFileSync(cert) }
}

export async function startDaemons(
  dir: string,
  extra: (i: number) => string[] = () => [],
): Promise<{ procs: ChildProcess[]; sockets: string[] }> {
  const keyFile = path.join(dir, 'cluster.key')
  fs.writeFileSync(keyFile, formatKeyFile([newClusterKey(0)]), { mode: 0o600 })
  const group = `239.255.${crypto.randomInt(256)}.${1 + crypto.randomInt(250)}`
  const port = String(20000 + crypto.randomInt(40000))
  const procs: ChildProcess[] = []
  const sockets: string[] = []
  for (const [i, n] of ['a', 'b', 'c'].entries()) {
    // Quick heartbeats, so the demo's cluster forms at once, unless the caller sets its own.
    const more = extra(i)
    const beats = more.includes('--heartbeat-ms') ? [] : ['--heartbeat-ms', '200', '--dead-after-ms', '1000']
    const socket = path.join(dir, `${n}.sock`)
    const p = spawn(
      process.execPath,
      [
        DAEMON,
        '--socket',
        socket,
        '--admin-socket',
        path.join(dir, `${n}-admin.sock`),
        '--key-file',
        keyFile,
        '--group',
        group,
        '--port',
        port,
        '--node-name',
        `host-${n}`,
        ...beats,
        '--log-level',
        'warn',
        ...more,
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    )
    procs.push(p)
    sockets.push(socket)
  }
  for (const [i, s] of sockets.entries()) await untilAccepting(s, procs[i]!, `statecastd ${String.fromCharCode(97 + i)}`)
  return { procs, sockets }
}

/** Waits (bounded) until every daemon sees the two others. */
export async function untilJoined(sockets: string[]): Promise<void> {
  const clients = await Promise.all(sockets.map((socketPath) => StatecastClient.connect({ socketPath })))
  try {
    for (let i = 0; i < 400; i++) {
      // Trusted members, not just members: a member still in probation owns no keys and is
      // answered no LOOKUPs, so sessions written then are not found on the other hosts.
      const trusted = await Promise.all(
        clients.map(async (c) => ((await c.stats()) as { cluster: { trustedMembers: number } }).cluster.trustedMembers),
      )
      if (trusted.every((m) => m === sockets.length - 1)) return
      await new Promise((r) => setTimeout(r, 25))
    }
    throw new Error('the demo daemons did not find each other within 10 s (is multicast on loopback blocked?)')
  } finally {
    for (const c of clients) c.destroy()
  }
}

/** A server's own session-id cache, as each server would have without statecast. */
function perServerCache(server: tls.Server): void {
  const cache = new Map<string, Buffer>()
  server.on('newSession', (id: Buffer, data: Buffer, cb: () => void) => {
    cache.set(id.toString('hex'), data)
    cb()
  })
  server.on('resumeSession', (id: Buffer, cb: (e: Error | null, d: Buffer | null) => void) =>
    cb(null, cache.get(id.toString('hex')) ?? null),
  )
}

async function connectOnce(
  port: number,
  version: Version,
  ca: Buffer,
  session: Buffer | undefined,
): Promise<{ ms: number; reused: boolean; session: Buffer | undefined }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const s = tls.connect({
      port,
      host: '127.0.0.1',
      servername: 'localhost',
      ca,
      minVersion: version,
      maxVersion: version,
      ...(session ? { session } : {}),
    })
    let ms = 0
    let reused = false
    let next: Buffer | undefined
    s.on('session', (sess: Buffer) => (next = sess))
    s.once('secureConnect', () => {
      ms = performance.now() - t0
      reused = s.isSessionReused()
      s.write('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
    })
    s.on('data', () => {})
    s.once('error', reject)
    s.once('close', () => resolve({ ms, reused, session: next ?? session }))
  })
}

export type CacheMode = 'per-server' | 'statecast' | 'central-memcached'

/** One central memcached shared by every server (session ids), as some fleets do instead. */
function centralMemcachedCache(server: tls.Server, location: string): () => void {
  const mc = new Memcached(location, { retries: 0, timeout: 500, poolSize: 4 })
  server.on('newSession', (id: Buffer, data: Buffer, cb: () => void) => {
    cb()
    mc.set(`tls:${id.toString('hex')}`, data.toString('base64'), 300, () => {})
  })
  server.on('resumeSession', (id: Buffer, cb: (e: Error | null, d: Buffer | null) => void) =>
    mc.get(`tls:${id.toString('hex')}`, (err: unknown, v: unknown) =>
      cb(null, !err && typeof v === 'string' ? Buffer.from(v, 'base64') : null),
    ),
  )
  return () => mc.end()
}

/** One HTTPS server with the session cache of `mode`; resolves once it listens on a loopback port. */
export async function startTlsServer(
  version: Version,
  mode: CacheMode,
  creds: { key: Buffer; cert: Buffer },
  socketPath: string,
  memcached?: string,
): Promise<{ port: number; close(): Promise<void> }> {
  const tickets = version === 'TLSv1.3' && mode === 'statecast'
  const serverOpts: https.ServerOptions = {
    ...creds,
    sessionIdContext: 'statecast-demo',
    minVersion: version,
    maxVersion: version,
    ...(tickets || version === 'TLSv1.3' ? {} : { secureOptions: crypto.constants.SSL_OP_NO_TICKET }),
  }
  const server = https.createServer(serverOpts, (_req, res) => res.end('hello\n'))
  let cache: SessionCache | undefined
  let closeMemcached = () => {}
  if (mode === 'statecast') cache = attachSessionCache(server, { socketPath })
  else if (mode === 'central-memcached') closeMemcached = centralMemcachedCache(server, memcached!)
  else perServerCache(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  if (cache && version === 'TLSv1.3') await cache.ready()
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      closeMemcached()
      await cache?.close()
      await new Promise((r) => server.close(r))
    },
  }
}

export interface DriveResult {
  /** Resumed / attempted among the connections timed (every client had a session to offer). */
  rate: number
  meanMs: number
  resumed: number
  attempts: number
  /** Connections timed and the wall time they took. */
  conns: number
  seconds: number
  handshakesPerSec: number
}

/**
 * Clients behind a round-robin balancer over `ports`: every round, each client connects once (in a
 * new order each round) offering the session it got last time. Rounds before `timedFrom` warm up
 * (every client's first visit is a full handshake whatever the cache) and are not timed.
 */
export async function drive(
  ports: number[],
  version: Version,
  ca: Buffer,
  opts: { clients: number; rounds: number; concurrency: number; timedFrom: number; onTimed?: () => void },
): Promise<DriveResult> {
  const sessions: (Buffer | undefined)[] = new Array<Buffer | undefined>(opts.clients).fill(undefined)
  let lb = 0
  let resumed = 0
  let attempts = 0
  let totalMs = 0
  let conns = 0
  let t0 = performance.now()
  for (let round = 0; round < opts.rounds; round++) {
    if (round === opts.timedFrom) {
      opts.onTimed?.()
      t0 = performance.now()
    }
    const timed = round >= opts.timedFrom
    const order = [...Array(opts.clients).keys()].sort(() => Math.random() - 0.5)
    let next = 0
    await Promise.all(
      Array.from({ length: opts.concurrency }, async () => {
        while (next < order.length) {
          const c = order[next++]!
          const port = ports[lb++ % ports.length]!
          const r = await connectOnce(port, version, ca, sessions[c])
          if (timed) {
            if (sessions[c]) {
              attempts++
              if (r.reused) resumed++
            }
            totalMs += r.ms
            conns++
          }
          sessions[c] = r.session
        }
      }),
    )
  }
  const seconds = (performance.now() - t0) / 1000
  return {
    rate: attempts ? resumed / attempts : 0,
    meanMs: conns ? totalMs / conns : 0,
    resumed,
    attempts,
    conns,
    seconds,
    handshakesPerSec: conns / seconds,
  }
}

/** CPU time (user + system) a process has used so far, in ms, from /proc. */
export function cpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // After the command name: state is field 3 of stat(5); utime and stime are fields 14 and 15.
  return ((Number(f[11]) + Number(f[12])) * 1000) / TICK
}

/**
 * `n` HTTPS servers, each in its own process (bench/tls-server.ts) as on its own host, server i
 * using daemon `sockets[i]`; resolves with their ports once all listen.
 */
export async function startServers(
  n: number,
  version: Version,
  mode: CacheMode,
  sockets: string[],
  keyPem: string,
  certPem: string,
  memcached = '',
): Promise<{ procs: ChildProcess[]; ports: number[]; stop(): Promise<void> }> {
  const procs: ChildProcess[] = []
  const stop = async () => {
    for (const p of procs) if (p.connected) p.send('close')
    await Promise.all(procs.map((p) => new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once('exit', r)))))
  }
  try {
    const ports = await Promise.all(
      Array.from({ length: n }, (_, i) => {
        const p = fork(path.join(here, 'tls-server.js'), [version, mode, sockets[i]!, keyPem, certPem, memcached], {
          stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
        })
        procs.push(p)
        return new Promise<number>((resolve, reject) => {
          p.once('message', (m) => resolve((m as { port: number }).port))
          p.once('exit', (code) => reject(new Error(`TLS server exited with ${code} before listening`)))
        })
      }),
    )
    return { procs, ports, stop }
  } catch (err) {
    for (const p of procs) p.kill('SIGTERM')
    throw err
  }
}

export interface DemoRow extends DriveResult {
  /** CPU of the three server processes, and of the three daemons when they serve the cache, in ms. */
  serverCpuMs: number
  daemonCpuMs: number
}

/**
 * One case of the demo: three server processes with the cache of `mode`, each behind a proxy that
 * adds `rttMs` of round trip, and the clients. The first round is every client's first visit (a
 * full handshake whatever the cache) and warms the servers up; the rounds after it are timed, and
 * the servers' and daemons' CPU is read over them.
 */
export async function run(
  version: Version,
  mode: CacheMode,
  dir: string,
  daemons: { procs: ChildProcess[]; sockets: string[] },
  opts: { clients: number; rounds: number; concurrency: number; rttMs: number },
): Promise<DemoRow> {
  const servers = await startServers(3, version, mode, daemons.sockets, path.join(dir, 'key.pem'), path.join(dir, 'cert.pem'))
  const proxies: DelayProxy[] = []
  try {
    for (const port of servers.ports) proxies.push(await startDelayProxy(port, opts.rttMs))
    const serverPids = servers.procs.map((p) => p.pid!)
    const daemonPids = mode === 'statecast' ? daemons.procs.map((p) => p.pid!) : []
    const cpuNow = () => [serverPids, daemonPids].map((pids) => pids.reduce((a, pid) => a + cpuMs(pid), 0)) as [number, number]
    const ports = proxies.map((p) => p.port)
    const ca = fs.readFileSync(path.join(dir, 'cert.pem'))
    // Warm-up, untimed: the servers' and daemons' code paths (full handshakes, stores, lookups)
    // get compiled, as in a fleet in service.
    await drive(ports, version, ca, { clients: opts.clients, rounds: WARM_ROUNDS, concurrency: opts.concurrency, timedFrom: WARM_ROUNDS })
    let cpu0: [number, number] = [0, 0]
    const r = await drive(ports, version, ca, {
      clients: opts.clients,
      rounds: opts.rounds,
      concurrency: opts.concurrency,
      timedFrom: 1,
      onTimed: () => (cpu0 = cpuNow()),
    })
    const [serverCpu, daemonCpu] = cpuNow()
    return { ...r, serverCpuMs: serverCpu - cpu0[0], daemonCpuMs: daemonCpu - cpu0[1] }
  } finally {
    await Promise.all(proxies.map((p) => p.close()))
    await servers.stop()
  }
}

/** `b` against `a` in words: "36% less" or "5% more". */
function change(b: number, a: number): string {
  const pct = a > 0 ? Math.round((1 - b / a) * 100) : 0
  return pct >= 0 ? `${pct}% less` : `${-pct}% more`
}

/** The simulated round-trip time: `--rtt-ms N` on the command line, else DEMO_RTT_MS, else 20. */
function rttFromArgs(argv: string[]): number {
  const i = argv.indexOf('--rtt-ms')
  const raw = i >= 0 ? argv[i + 1] : process.env['DEMO_RTT_MS']
  const rtt = Number(raw ?? 20)
  if (!Number.isFinite(rtt) || rtt < 0) throw new Error(`--rtt-ms wants a number of milliseconds >= 0, not ${raw}`)
  return rtt
}

async function main(): Promise<void> {
  const rttMs = rttFromArgs(process.argv.slice(2))
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'statecast-demo-'))
  // RSA-2048, as most fleets use: a full handshake's signature is then what resumption saves in CPU.
  makeCert(dir, 'rsa')
  const daemons = await startDaemons(dir)
  const opts = { clients: CLIENTS, rounds: ROUNDS, concurrency: CONCURRENCY, rttMs }
  try {
    await untilJoined(daemons.sockets)
    const lines = [
      `statecast demo: 3 daemons + 3 HTTPS servers (one process each, RSA-2048) on loopback,`,
      `${CLIENTS} clients x ${ROUNDS} connections, ${CONCURRENCY} at a time; each reconnect lands on the next server`,
      'in turn (round-robin balancer) and offers the session it got last time.',
      `Round-trip time ${rttMs} ms, SIMULATED: each server sits behind a proxy that holds the bytes`,
      `${rttMs / 2} ms each way (--rtt-ms N to change it; loopback itself has none, and the TCP handshake`,
      'is not delayed). Timed: every reconnection after the first visit, which is a full handshake anyway.',
      '',
      `${''.padEnd(26)}${'resumed'.padStart(18)}${'mean handshake'.padStart(17)}${'CPU/handshake'.padStart(16)}`,
    ]
    const mean: Record<string, number> = {}
    for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
      lines.push(version === 'TLSv1.3' ? 'TLS 1.3 (session tickets)' : 'TLS 1.2 (session ids)')
      for (const mode of ['per-server', 'statecast'] as const) {
        const r = await run(version, mode, dir, daemons, opts)
        mean[`${version} ${mode}`] = r.meanMs
        const label = mode === 'statecast' ? '  statecast' : '  per-server caches only'
        const us = ((r.serverCpuMs + r.daemonCpuMs) * 1000) / r.conns
        const daemonUs = (r.daemonCpuMs * 1000) / r.conns
        lines.push(
          `${label.padEnd(26)}${`${(r.rate * 100).toFixed(1)}% (${r.resumed}/${r.attempts})`.padStart(18)}` +
            `${`${r.meanMs.toFixed(2)} ms`.padStart(17)}${`${us.toFixed(0)} µs`.padStart(16)}` +
            (mode === 'statecast' ? ` (daemons ${daemonUs.toFixed(0)} µs)` : ''),
        )
      }
    }
    const [a, b] = [mean['TLSv1.2 per-server']!, mean['TLSv1.2 statecast']!]
    lines.push(
      '',
      `CPU/handshake: the three servers' processes, plus the three daemons with statecast (from /proc).`,
      `At ${rttMs} ms RTT a resumed TLS 1.2 handshake takes one round trip instead of two: with statecast the`,
      `mean TLS 1.2 handshake is ${b.toFixed(1)} ms against ${a.toFixed(1)} ms (${change(b, a)}). TLS 1.3 takes one round trip`,
      'either way: there resumption can save only CPU (no certificate signature), and the CPU column shows',
      "whether the daemons' share eats that saving.",
    )
    process.stdout.write(lines.join('\n') + '\n')
  } finally {
    for (const p of daemons.procs) p.kill('SIGTERM')
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

// Run as a program (npm run demo), not when the benchmark suite imports run().
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  main().catch((err: unknown) => {
    process.stderr.write(`demo: ${(err as Error).message}\n`)
    process.exit(1)
  })
}
