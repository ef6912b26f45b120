/**
 * TLS handshakes per second across three HTTPS servers behind a round-robin balancer, clients
 * resuming their sessions: per-server caches only (the baseline), one central memcached shared
 * by the servers (TLS 1.2 session ids), and statecast. RSA-2048 certificates, as most fleets use.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { makeCert, run, startDaemons, untilJoined, type CacheMode } from './demo.js'
import { freePortSync } from './ports.js'
import { ensurePeers } from './peers.js'

export async function benchTls(): Promise<Record<string, unknown>[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sc-bench-tls-'))
  const creds = makeCert(dir, 'rsa')
  const { procs, sockets } = await startDaemons(dir)
  const extra: ChildProcess[] = []
  const rows: Record<string, unknown>[] = []
  const opts = { clients: 60, rounds: 5, concurrency: 4 }
  try {
    await untilJoined(sockets)
    let memcached: string | undefined
    if (ensurePeers().memcached) {
      const port = await freePortSync()
      extra.push(spawn('memcached', ['-l', '127.0.0.1', '-p', String(port), '-U', '0', '-t', '1', ...(process.getuid?.() === 0 ? ['-u', 'root'] : [])], { stdio: 'ignore' }))
      await new Promise((r) => setTimeout(r, 300))
      memcached = `127.0.0.1:${port}`
    }
    const cases: ['TLSv1.2' | 'TLSv1.3', CacheMode][] = [
      ['TLSv1.2', 'per-server'],
      ...(memcached ? ([['TLSv1.2', 'central-memcached']] as ['TLSv1.2', CacheMode][]) : []),
      ['TLSv1.2', 'statecast'],
      ['TLSv1.3', 'per-server'],
      ['TLSv1.3', 'statecast'],
    ]
    const base: Record<string, number> = {}
    for (const [version, mode] of cases) {
      await run(version, mode, creds, sockets, { ...opts, rounds: 1, memcached }) // warm-up
      const r = await run(version, mode, creds, sockets, { ...opts, memcached })
      if (mode === 'per-server') base[version] = r.handshakesPerSec
      rows.push({ case: `TLS handshakes/s, ${version}, ${mode}`, handshakesPerSec: Math.round(r.handshakesPerSec), resumed: `${(r.rate * 100).toFixed(1)}%`, meanHandshakeMs: +r.meanMs.toFixed(2), vsPerServer: +(r.handshakesPerSec / base[version]!).toFixed(2) })
    }
  } finally {
    for (const p of [...procs, ...extra]) p.kill('SIGTERM')
  }
  return rows
}
