/**
 * Local GET-hit and SET throughput and latency through the client library, against a floor: a
 * bare Node Unix-socket server in its own process that answers every frame with a canned reply,
 * driven by the same client.
 */
import os from 'node:os'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { StatecastClient } from '../client/index.js'

const here = path.dirname(fileURLToPath(import.meta.url))
/** The built daemon, whether this module runs compiled (dist/bench) or from source (tests). */
export const DAEMON = [path.resolve(here, '..', 'daemon', 'main.js'), path.resolve(here, '..', 'dist', 'daemon', 'main.js')].find((p) =>
  fs.existsSync(p),
)!

export interface Figures {
  ops: number
  opsPerSec: number
  p50Us: number
  p99Us: number
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

/** Runs `op` from `concurrency` loops for `ms`; latency of every call in µs. */
export async function drive(op: () => Promise<unknown>, concurrency: number, ms: number): Promise<Figures> {
  const lat: number[] = []
  const end = performance.now() + ms
  let ops = 0
  const loop = async () => {
    while (performance.now() < end) {
      const t0 = performance.now()
      await op()
      lat.push((performance.now() - t0) * 1000)
      ops++
    }
  }
  const t0 = performance.now()
  await Promise.all(Array.from({ length: concurrency }, loop))
  const secs = (performance.now() - t0) / 1000
  lat.sort((a, b) => a - b)
  return { ops, opsPerSec: Math.round(ops / secs), p50Us: Math.round(percentile(lat, 50)), p99Us: Math.round(percentile(lat, 99)) }
}

/** Starts the floor (bench/echo-server) as its own process, like the daemon. */
export async function startEchoProcess(socketPath: string, valueBytes: number): Promise<ChildProcess> {
  const proc = spawn(process.execPath, [path.join(here, 'echo-server.js'), socketPath, String(valueBytes)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  await new Promise((r) => proc.stdout.once('data', r))
  return proc
}

/**
 * Node options for the benches' daemons, e.g. BENCH_DAEMON_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/p"
 * to profile them (NODE_OPTIONS refuses --cpu-prof).
 */
const DAEMON_NODE_ARGS = (process.env['BENCH_DAEMON_NODE_ARGS'] ?? '').split(' ').filter(Boolean)

export async function startDaemonProcess(
  dir: string,
  name: string,
  extra: string[] = [],
  prefix: string[] = [],
  daemon = DAEMON,
): Promise<{ proc: ChildProcess; socket: string }> {
  const socket = path.join(dir, `${name}.sock`)
  const [cmd, ...pre] = [...prefix, process.execPath]
  const proc = spawn(
    cmd,
    [
      ...pre,
      ...DAEMON_NODE_ARGS,
      daemon,
      '--socket',
      socket,
      '--admin-socket',
      path.join(dir, `${name}-admin.sock`),
      '--log-level',
      'warn',
      ...extra,
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  )
  await untilAccepting(socket, proc, `statecastd ${name}`)
  return { proc, socket }
}

/** Resolves once `proc` accepts connections on `socket`: the file appears at bind(), a moment before listen(). */
export async function untilAccepting(socket: string, proc: ChildProcess, what: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${what} exited with ${proc.exitCode} before listening`)
    if (fs.existsSync(socket) && (await accepts(socket))) return
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`${what} did not listen on ${socket} within 15 s`)
}

function accepts(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath, () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

export async function benchLocal(ms: number, concurrencies: number[]): Promise<Record<string, unknown>[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sc-bench-'))
  const value = Buffer.alloc(200, 7)
  const echoPath = path.join(dir, 'echo.sock')
  const echo = await startEchoProcess(echoPath, value.length)
  const d = await startDaemonProcess(dir, 'daemon')
  const rows: Record<string, unknown>[] = []
  try {
    const ce = await StatecastClient.connect({ socketPath: echoPath })
    const cd = await StatecastClient.connect({ socketPath: d.socket })
    await cd.set('session', value)
    for (const c of concurrencies) {
      await drive(() => ce.get('session'), c, 200) // warm-up
      await drive(() => cd.get('session'), c, 200)
      const floor = await drive(() => ce.get('session'), c, ms)
      const got = await drive(() => cd.get('session'), c, ms)
      rows.push({
        case: 'local GET hit',
        concurrency: c,
        floorOpsPerSec: floor.opsPerSec,
        opsPerSec: got.opsPerSec,
        ratio: +(got.opsPerSec / floor.opsPerSec).toFixed(2),
        p50Us: got.p50Us,
        p99Us: got.p99Us,
        floorP50Us: floor.p50Us,
      })
      const setFig = await drive(() => cd.set('session', value), c, ms)
      rows.push({
        case: 'local SET',
        concurrency: c,
        floorOpsPerSec: floor.opsPerSec,
        opsPerSec: setFig.opsPerSec,
        ratio: +(setFig.opsPerSec / floor.opsPerSec).toFixed(2),
        p50Us: setFig.p50Us,
        p99Us: setFig.p99Us,
        floorP50Us: floor.p50Us,
      })
    }
    ce.destroy()
    cd.destroy()
  } finally {
    d.proc.kill('SIGTERM')
    echo.kill('SIGTERM')
  }
  return rows
}

/**
 * The memcache front end beside memcached 1.6 with the same clients, in the same run: binary GET
 * through memjs and text GET through the `memcached` package, 200-byte values. The ratio is
 * statecast's ops/s over memcached's for that client; the binary ratio should not fall below the
 * text one.
 */
export async function benchMemcache(ms: number, concurrencies: number[]): Promise<Record<string, unknown>[]> {
  const { default: memjs } = await import('memjs')
  const { default: Memcached } = await import('memcached')
  const { freePortSync } = await import('../test/helpers/ports.js')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sc-bench-mc-'))
  const [mcPort, scPort] = [await freePortSync(), await freePortSync()]
  const asRoot = process.getuid?.() === 0 ? ['-u', 'root'] : []
  const mc = spawn('memcached', ['-l', '127.0.0.1', '-p', String(mcPort), '-U', '0', '-t', '1', ...asRoot], { stdio: 'ignore' })
  const d = await startDaemonProcess(dir, 'mc', ['--memcache-listen', `127.0.0.1:${scPort}`, '--cluster-enabled', 'false'])
  const rows: Record<string, unknown>[] = []
  try {
    for (
      let i = 0;
      i < 200 &&
      !(await new Promise<boolean>((r) => {
        const s = net.connect(mcPort, '127.0.0.1', () => (s.destroy(), r(true)))
        s.once('error', () => r(false))
      }));
      i++
    )
      await new Promise((r) => setTimeout(r, 25))
    const value = Buffer.alloc(200, 0x61)
    for (const c of concurrencies) {
      const bin = [mcPort, scPort].map((p) => memjs.Client.create(`127.0.0.1:${p}`, { retries: 0, timeout: 10, logger: { log: () => {} } }))
      const txt = [mcPort, scPort].map((p) => new Memcached(`127.0.0.1:${p}`, { poolSize: c, retries: 0, timeout: 10_000 }))
      await bin[0]!.set('session', value)
      await bin[1]!.set('session', value)
      const tget = (m: InstanceType<typeof Memcached>) => () =>
        new Promise((res, rej) => m.get('session', (e: Error | undefined, v: unknown) => (e ? rej(e) : res(v))))
      const figs: Figures[] = []
      for (const op of [() => bin[0]!.get('session'), () => bin[1]!.get('session'), tget(txt[0]!), tget(txt[1]!)]) {
        await drive(op, c, 200)
        figs.push(await drive(op, c, ms))
      }
      const [mb, sb, mt, st] = figs as [Figures, Figures, Figures, Figures]
      rows.push({
        case: 'memcache binary GET (memjs)',
        concurrency: c,
        floorOpsPerSec: mb.opsPerSec,
        opsPerSec: sb.opsPerSec,
        ratio: +(sb.opsPerSec / mb.opsPerSec).toFixed(2),
        p50Us: sb.p50Us,
        p99Us: sb.p99Us,
        floorP50Us: mb.p50Us,
      })
      rows.push({
        case: 'memcache text GET (memcached pkg)',
        concurrency: c,
        floorOpsPerSec: mt.opsPerSec,
        opsPerSec: st.opsPerSec,
        ratio: +(st.opsPerSec / mt.opsPerSec).toFixed(2),
        p50Us: st.p50Us,
        p99Us: st.p99Us,
        floorP50Us: mt.p50Us,
      })
      for (const b of bin) b.close()
      for (const m of txt) m.end()
    }
  } finally {
    d.proc.kill('SIGTERM')
    mc.kill('SIGKILL')
  }
  return rows
}
