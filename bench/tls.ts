/**
 * TLS handshakes per second across three HTTPS servers behind a round-robin balancer, clients
 * resuming their sessions: per-server caches only (the baseline), one central memcached shared by
 * the servers (TLS 1.2 session ids), and statecast. RSA-2048 certificates, as most fleets use.
 *
 * Each server runs in its own process (one per "host", each with its daemon), apart from the load
 * generator. Every client's first visit is a full handshake whatever the cache, so it is a warm-up
 * round, not timed: the figures are the steady state of clients that come back. Two figures per
 * case: wall-clock handshakes per second (the load generator shares this machine's two cores with
 * the servers), and the fleet's capacity: handshakes per CPU-second spent by the servers and
 * their caches (daemons, or the central memcached), read from /proc.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { cpuMs, drive, makeCert, startDaemons, startServers, untilJoined, type CacheMode, type Version } from './demo.js'
import { freePortSync } from '../test/helpers/ports.js'
import { haveApache, startApache, type Apache } from '../test/helpers/apache.js'
import { ensurePeers } from './peers.js'
import net from 'node:net'
import { StatecastClient } from '../client/index.js'

// cpuMs lives in demo.ts (the demo reads CPU too); cost.ts imports it from here.
export { cpuMs }

type Kind = 'node' | 'apache'

/** Three TLS terminators of `kind`, one per host, with the session cache of `mode`. */
async function startFleet(
  kind: Kind,
  version: Version,
  mode: CacheMode,
  f: { dir: string; sockets: string[]; memcachePorts: number[]; memcached: string | undefined },
): Promise<{ ports: number[]; pids(): number[]; stop(): Promise<void> }> {
  if (kind === 'node') {
    const s = await startServers(3, version, mode, f.sockets, path.join(f.dir, 'key.pem'), path.join(f.dir, 'cert.pem'), f.memcached)
    return { ports: s.ports, pids: () => s.procs.map((p) => p.pid!), stop: s.stop }
  }
  const tag = `${version}-${mode}-${f.memcachePorts[0]}`.replace(/[^a-z0-9]+/gi, '-')
  const cache = (i: number) =>
    mode === 'statecast'
      ? `memcache:127.0.0.1:${f.memcachePorts[i]}`
      : mode === 'central-memcached'
        ? `memcache:${f.memcached}`
        : `shmcb:${f.dir}/apache-${tag}-${i}/scache(512000)`
  const servers: Apache[] = []
  try {
    for (let i = 0; i < 3; i++) servers.push(await startApache(f.dir, `apache-${tag}-${i}`, cache(i)))
  } catch (err) {
    for (const a of servers) a.stop()
    throw err
  }
  return {
    ports: servers.map((a) => a.port),
    pids: () => servers.flatMap((a) => a.pids()),
    stop: async () => servers.forEach((a) => a.stop()),
  }
}

/**
 * A daemon in service has answered millions of requests and V8 has compiled its hot paths; fresh
 * ones run them in the interpreter for the first few thousand calls, at several times the cost.
 * Before anything is timed, each daemon serves session-sized SETs and GETs (local and remote, so
 * lookups, answers and replication warm up too) through the API and the memcache front end.
 */
export async function warmDaemons(
  sockets: string[],
  memcachePorts: number[],
  n = Number(process.env['BENCH_WARM'] ?? 6000),
): Promise<void> {
  const value = Buffer.alloc(200, 7)
  // A deadline a loaded machine meets: the client's default (1 s) is for interactive use, and a
  // "not found" among 50 concurrent lookups can take longer here when other work shares the cores.
  const clients = await Promise.all(sockets.map((socketPath) => StatecastClient.connect({ socketPath, timeoutMs: 30_000 })))
  try {
    for (let i = 0; i < n; i += 50) {
      await Promise.all(
        Array.from({ length: 50 }, async (_, j) => {
          const k = `warm:${i + j}`
          await clients[(i + j) % clients.length]!.set(k, value)
          await clients[(i + j + 1) % clients.length]!.get(k)
          await clients[(i + j + 2) % clients.length]!.get(`absent:${i + j}`)
        }),
      )
    }
  } finally {
    for (const c of clients) c.destroy()
  }
  await Promise.all(
    memcachePorts.map(
      (port, d) =>
        new Promise<void>((resolve, reject) => {
          const s = net.connect(port, '127.0.0.1')
          let sent = 0
          let got = ''
          // A batch of SET, GET (here and from the next daemon) and DELETE, ended by "version": its
          // reply comes last, so it marks the batch answered.
          const send = () => {
            const lines: string[] = []
            for (let j = 0; j < 50; j++, sent++)
              lines.push(
                `set mw:${d}:${sent} 0 300 200\r\n${'x'.repeat(200)}\r\nget mw:${d}:${sent}\r\nget mw:${(d + 1) % memcachePorts.length}:${sent}\r\ndelete mw:${d}:${sent - 25}\r\n`,
              )
            s.write(lines.join('') + 'version\r\n')
          }
          s.on('data', (b: Buffer) => {
            got = (got + b.toString('latin1')).slice(-64)
            if (!got.includes('VERSION ')) return
            got = ''
            if (sent >= n) {
              s.destroy()
              resolve()
            } else send()
          })
          s.once('error', reject)
          s.once('connect', send)
        }),
    ),
  )
}

export async function benchTls(): Promise<Record<string, unknown>[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sc-bench-tls-'))
  fs.chmodSync(dir, 0o755) // Apache's workers (www-data) read the certificate here
  const creds = makeCert(dir, 'rsa')
  const memcachePorts = [await freePortSync(), await freePortSync(), await freePortSync()]
  // The daemons' default heartbeat (1 s), as in service: their CPU is part of the figures.
  const { procs, sockets } = await startDaemons(dir, (i) => [
    '--memcache-listen',
    `127.0.0.1:${memcachePorts[i]}`,
    '--heartbeat-ms',
    '1000',
    '--dead-after-ms',
    '3000',
  ])
  // A second fleet of daemons that pushes every session to every host (replicationFactor 0).
  const allDir = path.join(dir, 'push-to-all')
  fs.mkdirSync(allDir)
  const allPorts = [await freePortSync(), await freePortSync(), await freePortSync()]
  const all = await startDaemons(allDir, (i) => [
    '--memcache-listen',
    `127.0.0.1:${allPorts[i]}`,
    '--heartbeat-ms',
    '1000',
    '--dead-after-ms',
    '3000',
    '--replication-factor',
    '0',
  ]).catch((err: unknown) => {
    for (const p of procs) p.kill('SIGTERM')
    throw err
  })
  const extra: ChildProcess[] = []
  const rows: Record<string, unknown>[] = []
  const clients = Number(process.env['BENCH_TLS_CLIENTS'] ?? 90)
  const opts = { clients, rounds: 1 + Number(process.env['BENCH_TLS_ROUNDS'] ?? 6), concurrency: 6, timedFrom: 1 }
  try {
    await untilJoined(sockets)
    await untilJoined(all.sockets)
    await warmDaemons(sockets, memcachePorts)
    await warmDaemons(all.sockets, allPorts)
    let memcached: string | undefined
    if (ensurePeers().memcached) {
      const port = await freePortSync()
      extra.push(
        spawn(
          'memcached',
          ['-l', '127.0.0.1', '-p', String(port), '-U', '0', '-t', '1', ...(process.getuid?.() === 0 ? ['-u', 'root'] : [])],
          { stdio: 'ignore' },
        ),
      )
      await new Promise((r) => setTimeout(r, 300))
      memcached = `127.0.0.1:${port}`
    }
    const kinds: Kind[] = haveApache() ? ['node', 'apache'] : ['node']
    const cases: [Kind, Version, CacheMode, boolean][] = []
    for (const kind of kinds) {
      for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
        cases.push([kind, version, 'per-server', false])
        // Node's TLS 1.3 resumes by ticket, which no external cache sees; Apache (tickets off) resumes both through its cache.
        if (memcached && (kind === 'apache' || version === 'TLSv1.2')) cases.push([kind, version, 'central-memcached', false])
        cases.push([kind, version, 'statecast', false])
        // Pushing to all changes nothing for tickets: only where resumption goes through the cache.
        if (kind === 'apache' || version === 'TLSv1.2') cases.push([kind, version, 'statecast', true])
      }
    }
    const base: Record<string, { wall: number; capacity: number }> = {}
    for (const [kind, version, mode, pushToAll] of cases) {
      const daemons = pushToAll ? { procs: all.procs, sockets: all.sockets, memcachePorts: allPorts } : { procs, sockets, memcachePorts }
      const fleet = await startFleet(kind, version, mode, {
        dir,
        sockets: daemons.sockets,
        memcachePorts: daemons.memcachePorts,
        memcached,
      })
      // The fleet's CPU: the three servers and what serves their cache.
      const cachePids = (mode === 'statecast' ? daemons.procs : mode === 'central-memcached' ? extra : []).map((p) => p.pid!)
      const cpuNow = () => [fleet.pids(), cachePids].map((pids) => pids.reduce((a, pid) => a + cpuMs(pid), 0))
      try {
        await drive(fleet.ports, version, creds.cert, { ...opts, rounds: 2 }) // warm-up: JIT, connections to the caches
        let cpu0 = [0, 0]
        const r = await drive(fleet.ports, version, creds.cert, { ...opts, onTimed: () => (cpu0 = cpuNow()) })
        const [serverCpu, cacheCpu] = cpuNow().map((ms, i) => ms - cpu0[i]!) as [number, number]
        const cpu = serverCpu + cacheCpu
        const capacity = r.conns / (cpu / 1000)
        const b = `${kind} ${version}`
        if (mode === 'per-server') base[b] = { wall: r.handshakesPerSec, capacity }
        rows.push({
          case: `TLS handshakes/s, ${kind === 'node' ? 'Node https' : 'Apache mod_ssl'}, ${version}, ${mode}${pushToAll ? ', push to all' : ''}`,
          handshakesPerSec: Math.round(r.handshakesPerSec),
          vsPerServer: +(r.handshakesPerSec / base[b]!.wall).toFixed(2),
          resumed: `${(r.rate * 100).toFixed(1)}%`,
          serverCpuUs: Math.round((serverCpu * 1000) / r.conns),
          cacheCpuUs: Math.round((cacheCpu * 1000) / r.conns),
          handshakesPerCpuSecond: Math.round(capacity),
          capacityVsPerServer: +(capacity / base[b]!.capacity).toFixed(2),
        })
      } finally {
        await fleet.stop()
      }
    }
  } finally {
    for (const p of [...procs, ...all.procs, ...extra]) p.kill('SIGTERM')
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return rows
}
