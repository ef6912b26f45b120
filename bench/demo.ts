/**
 * npm run demo: three daemons and three HTTPS servers on loopback, clients behind a round-robin
 * "load balancer" that reconnect and try to resume, once with per-server session caches only and
 * once with statecast. Prints one screen: resumption rate and mean handshake time.
 */
import crypto from 'node:crypto'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
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

const here = path.dirname(fileURLToPath(import.meta.url))
const DAEMON = path.resolve(here, '..', 'daemon', 'main.js')
const CLIENTS = Number(process.env['DEMO_CLIENTS'] ?? 30)
const ROUNDS = Number(process.env['DEMO_ROUNDS'] ?? 10)

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

/** Three servers in this process, one per daemon, and the clients; every connection timed. */
export async function run(
  version: Version,
  mode: CacheMode | boolean,
  creds: { key: Buffer; cert: Buffer },
  sockets: string[],
  opts: { clients?: number; rounds?: number; concurrency?: number; memcached?: string } = {},
): Promise<DriveResult> {
  const m: CacheMode = mode === true ? 'statecast' : mode === false ? 'per-server' : mode
  const servers = await Promise.all(sockets.slice(0, 3).map((socketPath) => startTlsServer(version, m, creds, socketPath, opts.memcached)))
  try {
    return await drive(
      servers.map((s) => s.port),
      version,
      creds.cert,
      { clients: opts.clients ?? CLIENTS, rounds: opts.rounds ?? ROUNDS, concurrency: opts.concurrency ?? 1, timedFrom: 0 },
    )
  } finally {
    await Promise.all(servers.map((s) => s.close()))
  }
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'statecast-demo-'))
  const creds = makeCert(dir)
  const { procs, sockets } = await startDaemons(dir)
  try {
    await untilJoined(sockets)
    const lines = [
      `statecast demo: 3 daemons + 3 HTTPS servers on loopback, ${CLIENTS} clients x ${ROUNDS} connections,`,
      'each reconnect lands on the next server in turn (round-robin balancer)',
      '',
      `${''.padEnd(26)}${'resumed'.padStart(18)}${'mean handshake'.padStart(18)}`,
    ]
    for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
      lines.push(version === 'TLSv1.3' ? 'TLS 1.3 (session tickets)' : 'TLS 1.2 (session ids)')
      for (const withStatecast of [false, true]) {
        const r = await run(version, withStatecast, creds, sockets)
        const label = withStatecast ? '  statecast' : '  per-server caches only'
        lines.push(
          `${label.padEnd(26)}${`${(r.rate * 100).toFixed(1)}% (${r.resumed}/${r.attempts})`.padStart(18)}${`${r.meanMs.toFixed(2)} ms`.padStart(18)}`,
        )
      }
    }
    process.stdout.write(lines.join('\n') + '\n')
  } finally {
    for (const p of procs) p.kill('SIGTERM')
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
