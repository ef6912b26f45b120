/**
 * Cost: what the session cache of a TLS fleet costs per handshake, statecast against one central
 * memcached serving the same operations in the same run. A load generator in its own process
 * (bench/cost-load.ts) replays the cache operations of handshakes behind a round-robin balancer
 * over 3 hosts, open-loop at a fixed rate, for two mixes (TLS 1.2 session ids; TLS 1.3 stateful
 * tickets, each used once). Per case: CPU of all daemons (or of memcached) per handshake from
 * /proc/PID/stat, voluntary context switches per handshake of their serving thread and of all
 * their threads (a proxy for wakeups: a thread counts one each time it blocks, in epoll_wait or
 * on a lock, and is woken again), latency percentiles per operation, and the peer datagrams each
 * handshake cost the fleet. Each case also measures the floor of any design with a Node process
 * per host: three bare Node servers (bench/echo-server.ts) that answer every request at once and
 * do nothing else. The scale case counts the peer datagrams each host receives and sends per fleet
 * handshake at 4 to 32 hosts.
 *
 * Environment: COST_SECONDS (timed seconds per case, 10), COST_WARM_SECONDS (untimed warm-up at
 * the same rate first, 3), COST_RATES (handshakes/s across the fleet, "1000,5000"), COST_MIXES
 * ("tls12,tls13"), COST_SCALE_HOSTS ("4,8,16,32"; "" skips the scale case), COST_SCALE_RATE (500),
 * COST_SCALE_SECONDS (5), COST_PUSH_TO_ALL ("0" skips the fleet that pushes every session to every host).
 */
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fork, spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { StatecastClient } from '../client/index.js'
import { freePortSync } from '../test/helpers/ports.js'
import { uniqueGroup, writeKeyFile } from '../test/helpers/cluster.js'
import { startDaemonProcess, startEchoProcess } from './local.js'
import { ensurePeers } from './peers.js'
import { cpuMs, warmDaemons } from './tls.js'
import type { LoadConfig, Target } from './cost-load.js'
import type { CostCase, CostResult, LoadResult, Mix, OpFigures, ScaleCase, TargetFigures } from '../test/helpers/bench-run.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const VALUE_BYTES = 200
/**
 * A median above this (the daemons' default lookup deadline) means the servers fell behind the
 * offered rate: requests queued, and the CPU read in the window is what they got, not what the
 * handshakes would cost.
 */
const KEPT_UP_P50_US = 50_000
const MIX_NAMES: Record<Mix, string> = { tls12: 'TLS 1.2 session ids', tls13: 'TLS 1.3 stateful tickets' }

/**
 * Voluntary context switches of `pid` so far: of all its threads, and of the thread that serves
 * requests (Node's main thread, memcached's worker; the others are V8's and libuv's helpers, and
 * memcached's LRU maintainer, crawler and logger).
 */
function wakeups(pid: number): { all: number; loop: number } {
  const n = { all: 0, loop: 0 }
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const m = /\nvoluntary_ctxt_switches:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'))
      const v = Number(m?.[1] ?? 0)
      n.all += v
      if (Number(tid) === pid || fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').startsWith('mc-worker')) n.loop += v
    } catch {
      // A thread that ended between the listing and the read.
    }
  }
  return n
}

interface Fleet {
  procs: ChildProcess[]
  sockets: string[]
  clients: StatecastClient[]
  stop(): void
}

/** `n` daemons on loopback multicast, each with its own sockets and unicast port, as in service (1 s heartbeat). */
async function startFleet(n: number, flags: string[] = []): Promise<Fleet> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sc-bench-cost-'))
  const keyFile = writeKeyFile(dir)
  const { group, port } = uniqueGroup()
  const procs: ChildProcess[] = []
  const clients: StatecastClient[] = []
  const stop = () => {
    for (const c of clients) c.destroy()
    for (const p of procs) p.kill('SIGKILL')
    fs.rmSync(dir, { recursive: true, force: true })
  }
  try {
    for (let i = 0; i < n; i++) {
      const d = await startDaemonProcess(dir, `h${i}`, [
        '--key-file',
        keyFile,
        '--group',
        group,
        '--port',
        String(port),
        '--node-name',
        `h${i}`,
        ...flags,
      ])
      procs.push(d.proc)
      clients.push(await StatecastClient.connect({ socketPath: d.socket, timeoutMs: 30_000 }))
    }
    // Trusted members, not just members: one in probation owns no keys and gets no copies.
    for (let i = 0; ; i++) {
      const s = await Promise.all(
        clients.map(async (c) => ((await c.stats()) as { cluster: { trustedMembers: number } }).cluster.trustedMembers),
      )
      if (s.every((m) => m === n - 1)) break
      if (i > 1200) throw new Error(`the ${n} cost-bench daemons did not all trust each other within 60 s`)
      await new Promise((r) => setTimeout(r, 50))
    }
    const sockets = procs.map((_, i) => path.join(dir, `h${i}.sock`))
    // A daemon in service runs compiled code; a fresh one spends its first tens of seconds at
    // 1,000 handshakes/s in V8's baseline tier and its optimizing compiler (about 800 µs per
    // handshake in the first 10 s, 510 µs from the third on): warmed the way the TLS bench does.
    await warmDaemons(sockets, [])
    return { procs, sockets, clients, stop }
  } catch (err) {
    stop()
    throw err
  }
}

async function startMemcached(): Promise<{ proc: ChildProcess; endpoint: string }> {
  const port = await freePortSync()
  // One worker thread, as in the other benches: the most frugal memcached for this load.
  const proc = spawn(
    'memcached',
    ['-l', '127.0.0.1', '-p', String(port), '-U', '0', '-t', '1', '-m', '256', ...(process.getuid?.() === 0 ? ['-u', 'root'] : [])],
    { stdio: 'ignore' },
  )
  for (let i = 0; ; i++) {
    if (proc.exitCode !== null) throw new Error(`memcached exited with ${proc.exitCode}`)
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)))
      s.once('error', () => resolve(false))
    })
    if (up) return { proc, endpoint: `127.0.0.1:${port}` }
    if (i > 400) throw new Error('memcached did not listen within 10 s')
    await new Promise((r) => setTimeout(r, 25))
  }
}

type Counters = { sent: number; received: number }

async function datagrams(clients: StatecastClient[]): Promise<Counters> {
  const all = (await Promise.all(clients.map((c) => c.stats()))) as unknown as {
    cluster: { datagramsSent: number; datagramsReceived: number }
  }[]
  return all.reduce((a, s) => ({ sent: a.sent + s.cluster.datagramsSent, received: a.received + s.cluster.datagramsReceived }), {
    sent: 0,
    received: 0,
  })
}

/**
 * One case against one target: forks the generator, reads the servers' CPU and wakeups (and the
 * daemons' datagram counters) when its timed window opens and when it closes.
 */
async function measure(
  target: Target,
  endpoints: string[],
  pids: number[],
  clients: StatecastClient[],
  mix: Mix,
  rate: number,
  warmSeconds: number,
  seconds: number,
): Promise<{ figures: TargetFigures; datagrams: Counters }> {
  const cfg: LoadConfig = { target, endpoints, mix, rate, warmSeconds, seconds, valueBytes: VALUE_BYTES }
  const gen = fork(path.join(here, 'cost-load.js'), [JSON.stringify(cfg)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const sample = () => {
    const w = pids.map(wakeups)
    return {
      cpu: pids.reduce((a, p) => a + cpuMs(p), 0),
      gen: cpuMs(gen.pid!),
      all: w.reduce((a, x) => a + x.all, 0),
      loop: w.reduce((a, x) => a + x.loop, 0),
    }
  }
  let at0 = { cpu: 0, gen: 0, all: 0, loop: 0 }
  let at1 = at0
  let d0: Promise<Counters> = Promise.resolve({ sent: 0, received: 0 })
  let d1 = d0
  const result = await new Promise<LoadResult>((resolve, reject) => {
    gen.on('message', (m: { type: string } & LoadResult) => {
      if (m.type === 'timed') {
        at0 = sample()
        d0 = datagrams(clients)
      } else if (m.type === 'end') {
        at1 = sample()
        d1 = datagrams(clients)
      } else if (m.type === 'result') {
        const { type: _, ...r } = m
        resolve(r)
      }
    })
    gen.once('exit', (code) => reject(new Error(`the cost load generator exited with ${code} before its result`)))
  })
  const [c0, c1] = await Promise.all([d0, d1])
  const hs = Math.max(1, result.handshakes)
  const per = (x: number) => +(x / hs).toFixed(2)
  const dg = { sent: c1.sent - c0.sent, received: c1.received - c0.received }
  const figures: TargetFigures = {
    ...result,
    achievedPerSec: Math.round(result.handshakes / result.timedSeconds),
    cpuUsPerHandshake: Math.round(((at1.cpu - at0.cpu) * 1000) / hs),
    keptUp: Object.values(result.ops).every((o) => !o.sent || o.p50Us < KEPT_UP_P50_US) && result.unanswered === 0 && result.dropped === 0,
    wakeupsPerHandshake: per(at1.all - at0.all),
    loopWakeupsPerHandshake: per(at1.loop - at0.loop),
    generatorCpuUsPerHandshake: Math.round(((at1.gen - at0.gen) * 1000) / hs),
    ...(target === 'statecast' ? { datagramsSentPerHandshake: per(dg.sent), datagramsReceivedPerHandshake: per(dg.received) } : {}),
  }
  return { figures, datagrams: dg }
}

function settings() {
  const list = (v: string | undefined, def: string) => (v ?? def).split(',').filter(Boolean)
  return {
    seconds: Number(process.env['COST_SECONDS'] ?? 10),
    warm: Number(process.env['COST_WARM_SECONDS'] ?? 3),
    rates: list(process.env['COST_RATES'], '1000,5000').map(Number),
    mixes: list(process.env['COST_MIXES'], 'tls12,tls13') as Mix[],
    scaleHosts: list(process.env['COST_SCALE_HOSTS'], '4,8,16,32').map(Number),
    scaleRate: Number(process.env['COST_SCALE_RATE'] ?? 500),
    scaleSeconds: Number(process.env['COST_SCALE_SECONDS'] ?? 5),
    pushToAll: process.env['COST_PUSH_TO_ALL'] !== '0',
  }
}

function loadNow(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')
}

export async function costRun(): Promise<CostResult> {
  const o = settings()
  const load = [`load average at start: ${loadNow()}`]
  const cases: CostCase[] = []
  const scale: ScaleCase[] = []
  const fleet = await startFleet(3)
  // The same three hosts with every session pushed to every host (replicationFactor 0): GETs local.
  const all = o.pushToAll
    ? await startFleet(3, ['--replication-factor', '0']).catch((err: unknown) => {
        fleet.stop()
        throw err
      })
    : undefined
  let mc: { proc: ChildProcess; endpoint: string } | undefined
  const floorDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sc-bench-floor-'))
  const floorSockets = [0, 1, 2].map((i) => path.join(floorDir, `floor${i}.sock`))
  const floorProcs: ChildProcess[] = []
  try {
    if (ensurePeers().memcached) mc = await startMemcached()
    for (const s of floorSockets) floorProcs.push(await startEchoProcess(s, VALUE_BYTES))
    const vs = (a: TargetFigures, b: TargetFigures | null) =>
      b ? +(a.cpuUsPerHandshake / Math.max(1, b.cpuUsPerHandshake)).toFixed(2) : null
    for (const mix of o.mixes) {
      for (const rate of o.rates) {
        const statecast = (
          await measure(
            'statecast',
            fleet.sockets,
            fleet.procs.map((p) => p.pid!),
            fleet.clients,
            mix,
            rate,
            o.warm,
            o.seconds,
          )
        ).figures
        const memcached = mc
          ? (
              await measure(
                'memcached',
                fleet.sockets.map(() => mc!.endpoint),
                [mc.proc.pid!],
                [],
                mix,
                rate,
                o.warm,
                o.seconds,
              )
            ).figures
          : null
        const pushed = all
          ? (
              await measure(
                'statecast',
                all.sockets,
                all.procs.map((p) => p.pid!),
                all.clients,
                mix,
                rate,
                o.warm,
                o.seconds,
              )
            ).figures
          : null
        const floor = (
          await measure(
            'statecast',
            floorSockets,
            floorProcs.map((p) => p.pid!),
            [],
            mix,
            rate,
            o.warm,
            o.seconds,
          )
        ).figures
        delete floor.datagramsSentPerHandshake
        delete floor.datagramsReceivedPerHandshake
        cases.push({
          mix,
          rate,
          hosts: 3,
          statecast,
          pushToAll: pushed,
          memcached,
          floor,
          cpuRatio: vs(statecast, memcached),
          pushToAllRatio: pushed ? vs(pushed, memcached) : null,
          floorRatio: vs(floor, memcached),
        })
      }
    }
  } finally {
    fleet.stop()
    all?.stop()
    mc?.proc.kill('SIGKILL')
    for (const p of floorProcs) p.kill('SIGKILL')
    fs.rmSync(floorDir, { recursive: true, force: true })
  }
  for (const hosts of o.scaleHosts) {
    const f = await startFleet(hosts)
    try {
      const pids = f.procs.map((p) => p.pid!)
      // What the hosts receive with no load: heartbeats and the ticket key, over two heartbeats.
      const i0 = await datagrams(f.clients)
      const t0 = performance.now()
      await new Promise((r) => setTimeout(r, 2000))
      const i1 = await datagrams(f.clients)
      const idlePerHostPerSec = (i1.received - i0.received) / hosts / ((performance.now() - t0) / 1000)
      for (const mix of o.mixes) {
        const { figures: r, datagrams: dg } = await measure(
          'statecast',
          f.sockets,
          pids,
          f.clients,
          mix,
          o.scaleRate,
          o.warm,
          o.scaleSeconds,
        )
        const hs = Math.max(1, r.handshakes)
        scale.push({
          hosts,
          mix,
          rate: o.scaleRate,
          handshakes: r.handshakes,
          achievedPerSec: r.achievedPerSec,
          receivedPerHostPerHandshake: +(dg.received / hosts / hs).toFixed(3),
          receivedPerHostPerHandshakeBeyondIdle: +((dg.received - idlePerHostPerSec * hosts * r.timedSeconds) / hosts / hs).toFixed(3),
          idleReceivedPerHostPerSec: +idlePerHostPerSec.toFixed(1),
          sentPerHostPerHandshake: +(dg.sent / hosts / hs).toFixed(3),
          cpuUsPerHandshake: r.cpuUsPerHandshake,
          keptUp: r.keptUp,
          getHits: r.getHits,
          getMisses: r.getMisses,
          errors: r.errors,
          unanswered: r.unanswered,
        })
      }
    } finally {
      f.stop()
    }
  }
  load.push(`at end: ${loadNow()}`)
  return { load: load.join(', '), cases, scale }
}

const lat = (f: OpFigures) => (f.sent ? `${f.p50Us} / ${f.p99Us}` : '-')

/** The result as table rows (npm run bench's convention). */
export function costRows(r: CostResult): Record<string, unknown>[] {
  const rows: Record<string, unknown>[] = []
  for (const c of r.cases) {
    const who = {
      statecast: ` (${c.hosts} daemons)`,
      'statecast push to all': ` (${c.hosts} daemons, replicationFactor 0)`,
      memcached: ' (central)',
      floor: ` (${c.hosts} bare Node servers, no peers)`,
    }
    for (const [name, f] of [
      ['statecast', c.statecast],
      ['statecast push to all', c.pushToAll],
      ['memcached', c.memcached],
      ['floor', c.floor],
    ] as const) {
      if (!f) continue
      rows.push({
        case: `cost, ${MIX_NAMES[c.mix]}, ${c.rate}/s, ${name}${who[name]}`,
        handshakesPerSec: f.achievedPerSec,
        keptUp: f.keptUp,
        cpuUsPerHandshake: f.cpuUsPerHandshake,
        vsMemcached: { statecast: c.cpuRatio, 'statecast push to all': c.pushToAllRatio, memcached: '', floor: c.floorRatio }[name],
        wakeupsLoopAndAll: `${f.loopWakeupsPerHandshake} / ${f.wakeupsPerHandshake}`,
        datagramsSentPerHandshake: f.datagramsSentPerHandshake ?? '',
        datagramsReceivedPerHandshake: f.datagramsReceivedPerHandshake ?? '',
        getUs: lat(f.ops.GET),
        setUs: lat(f.ops.SET),
        deleteUs: lat(f.ops.DELETE),
        resumed: `${f.getHits}/${f.getHits + f.getMisses}`,
        remoteFills: name.startsWith('statecast') ? f.remoteFills : '',
        generatorCpuUs: f.generatorCpuUsPerHandshake,
        unanswered: f.unanswered + f.dropped + f.errors,
      })
    }
  }
  for (const s of r.scale) {
    rows.push({
      case: `cost scale, ${MIX_NAMES[s.mix]}, ${s.hosts} hosts, ${s.rate}/s`,
      handshakesPerSec: s.achievedPerSec,
      keptUp: s.keptUp,
      receivedPerHostPerHandshake: s.receivedPerHostPerHandshake,
      beyondIdle: s.receivedPerHostPerHandshakeBeyondIdle,
      idlePerHostPerSec: s.idleReceivedPerHostPerSec,
      sentPerHostPerHandshake: s.sentPerHostPerHandshake,
      cpuUsPerHandshake: s.cpuUsPerHandshake,
      resumed: `${s.getHits}/${s.getHits + s.getMisses}`,
      unanswered: s.unanswered + s.errors,
    })
  }
  return rows
}

export async function benchCost(): Promise<Record<string, unknown>[]> {
  const r = await costRun()
  console.log(`cost-result ${JSON.stringify(r)}`)
  return costRows(r)
}

// `node dist/bench/cost.js`: the table, then the figures as one `cost-result {json}` line.
if (process.argv[1]?.endsWith('cost.js')) {
  const r = await costRun()
  console.table(costRows(r))
  console.log(r.load)
  console.log(`cost-result ${JSON.stringify(r)}`)
}
