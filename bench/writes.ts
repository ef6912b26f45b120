/**
 * Writes at light load (issue 22): one writer, one SET at a time, what a SET costs on a daemon in a
 * 3-daemon loopback cluster (default settings: R = 2, awaited copies) against its floors, measured
 * in the same run: a SET on a daemon alone (no peers), and a bare UDP round trip between two Node
 * processes (bench/udp-echo.ts), which is what one owner's acknowledgement can cost at the least.
 * Both front ends: the Unix-socket API through the client library, and memcache text through a
 * minimal client (one `set`, one `STORED`). In the cluster the writer is either not an owner of the
 * key (its copies go to both other daemons) or one of its two owners (one copy).
 *
 * The rise is a cluster SET's p50 less the lone daemon's, in µs and as a multiple of the UDP round
 * trip's p50: issue 22 asks that it stay within one round trip to one owner. Two more yardsticks
 * from the same run: the slower of two UDP round trips made at once (a writer that is not an
 * owner waits for both owners; `riseInFloor` divides by this one for that case and by the single
 * round trip otherwise), and one daemon round trip to one owner: a remote fill on the writer (a
 * LOOKUP to the key's first owner, its HIT) less a GET the writer answers itself.
 *
 * WRITES_OTHER_DIST names the dist/ directory of another build (e.g. one made from main before the
 * awaited writes): its daemons (a cluster and a lone one of their own) are measured too, sample
 * for sample interleaved with this build's, so both see the same machine. Every timed step takes
 * one SET of each case, in a shuffled order, and one UDP round trip.
 *
 * A second phase counts, per case, the peer datagrams sent and received by the build's daemons and
 * their main threads' wakeups (voluntary context switches) and CPU, per SET, over WRITES_COUNT
 * SETs one after another, less what the same daemons did idle for as long.
 *
 * Environment: WRITES_N (timed steps, 3000), BENCH_WARM (untimed steps first, 1500), WRITES_COUNT
 * (SETs per case in the counting phase, 500), WRITES_OTHER_DIST, WRITES_GROUP_OCTET (the third
 * octet of the multicast groups, random by default). `node dist/bench/writes.js` prints the table
 * and a `writes-result {json}` line.
 */
import crypto from 'node:crypto'
import dgram from 'node:dgram'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { StatecastClient } from '../client/index.js'
import { freePortSync } from '../test/helpers/ports.js'
import { writeKeyFile } from '../test/helpers/cluster.js'
import { DAEMON, percentile, startDaemonProcess } from './local.js'
import { cpuMs, warmDaemons } from './tls.js'
import type { OwnerRoundTrip, WritesCase, WritesResult } from '../test/helpers/bench-run.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const VALUE = Buffer.alloc(200, 0x61)
/** Keys written through the writer to find which it owns: about a third of them it does not. */
const POOL = 900

type Where = WritesCase['where']
type Via = WritesCase['via']

/** A memcache text client for one request at a time: `set`, then wait for `STORED`. */
class TextClient {
  readonly #sock: net.Socket
  #buf = ''
  #wait: ((err?: Error) => void) | undefined

  private constructor(sock: net.Socket) {
    this.#sock = sock
    sock.setNoDelay(true)
    sock.on('data', (chunk: Buffer) => {
      this.#buf += chunk.toString('latin1')
      if (!this.#buf.endsWith('\r\n')) return
      const line = this.#buf
      this.#buf = ''
      const w = this.#wait
      this.#wait = undefined
      w?.(line === 'STORED\r\n' ? undefined : new Error(`memcache set answered ${JSON.stringify(line)}`))
    })
    sock.on('error', (err) => this.#wait?.(err))
  }

  static connect(port: number): Promise<TextClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new TextClient(s)))
      s.once('error', reject)
    })
  }

  set(key: string, value: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#wait = (err) => (err ? reject(err) : resolve())
      this.#sock.write(Buffer.concat([Buffer.from(`set ${key} 0 0 ${value.length}\r\n`, 'latin1'), value, Buffer.from('\r\n')]))
    })
  }

  close(): void {
    this.#sock.destroy()
  }
}

/**
 * Round trips to `n` UDP echo processes, each in its own process: once() sends one datagram to
 * each at once and resolves, in µs, when every one has answered (with two: the slower of two
 * round trips, what a write to two owners waits for at the least).
 */
async function udpProbe(n: number): Promise<{ once(): Promise<number>; close(): void }> {
  const procs = Array.from({ length: n }, () =>
    spawn(process.execPath, [path.join(here, 'udp-echo.js')], { stdio: ['ignore', 'pipe', 'inherit'] }),
  )
  const ports = await Promise.all(
    procs.map((p) => new Promise<number>((r) => p.stdout.once('data', (d: Buffer) => r(Number(d.toString()))))),
  )
  const s = dgram.createSocket('udp4')
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r))
  // About a REPLICATE of a 200-byte session, sealed.
  const payload = Buffer.alloc(300, 1)
  let left = 0
  let done: (() => void) | undefined
  s.on('message', () => {
    if (--left === 0) done?.()
  })
  return {
    once() {
      return new Promise((resolve) => {
        const t0 = performance.now()
        left = n
        done = () => resolve((performance.now() - t0) * 1000)
        for (const port of ports) s.send(payload, port, '127.0.0.1')
      })
    },
    close() {
      s.close()
      for (const p of procs) p.kill('SIGTERM')
    },
  }
}

/** Voluntary context switches of `pid`'s main thread (the event loop) so far. */
function loopWakeups(pid: number): number {
  const m = /\nvoluntary_ctxt_switches:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/task/${pid}/status`, 'utf8'))
  return Number(m?.[1] ?? 0)
}

interface Counters {
  sent: number
  received: number
  wakeups: number
  /** CPU (user + system) of the same daemons, µs. */
  cpuUs: number
}

interface Build {
  label: string
  dist: string
  daemon: string
  dir: string
  procs: ChildProcess[]
  /** The cluster's three daemons' API clients (0 is the writer), then the lone daemon's. */
  cluster: StatecastClient[]
  lone: StatecastClient
  mc: { cluster: TextClient; lone: TextClient }
  pools: { notOwner: string[]; owner: string[] }
  /** Keys the writer holds no copy of and does not own (both other daemons do): one remote fill each. */
  fills: string[]
}

function groupOf(): { group: string; port: number } {
  const b = crypto.randomBytes(3)
  const octet = process.env['WRITES_GROUP_OCTET'] ?? String(b[0])
  return { group: `239.255.${octet}.${1 + (b[1]! % 250)}`, port: 20000 + (b.readUInt16BE(1) % 40000) }
}

async function startBuild(label: string, dist: string, fillsWanted: number): Promise<Build> {
  const daemon = path.join(dist, 'daemon', 'main.js')
  if (!fs.existsSync(daemon)) throw new Error(`no daemon at ${daemon}: build it first (npm run build)`)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `sc-bench-writes-${label}-`))
  const keyFile = writeKeyFile(dir)
  const { group, port } = groupOf()
  const procs: ChildProcess[] = []
  const cluster: StatecastClient[] = []
  const mcPorts: number[] = []
  const b = { label, dist, daemon, dir, procs, cluster } as Partial<Build> & { procs: ChildProcess[]; cluster: StatecastClient[] }
  try {
    for (let i = 0; i < 3; i++) {
      const mcPort = await freePortSync()
      mcPorts.push(mcPort)
      const d = await startDaemonProcess(
        dir,
        `h${i}`,
        [
          '--key-file',
          keyFile,
          '--group',
          group,
          '--port',
          String(port),
          '--node-name',
          `h${i}`,
          '--memcache-listen',
          `127.0.0.1:${mcPort}`,
        ],
        [],
        daemon,
      )
      procs.push(d.proc)
      cluster.push(await StatecastClient.connect({ socketPath: d.socket, timeoutMs: 30_000 }))
    }
    const loneMc = await freePortSync()
    const lone = await startDaemonProcess(
      dir,
      'lone',
      ['--cluster-enabled', 'false', '--memcache-listen', `127.0.0.1:${loneMc}`],
      [],
      daemon,
    )
    procs.push(lone.proc)
    b.lone = await StatecastClient.connect({ socketPath: lone.socket, timeoutMs: 30_000 })
    // Trusted members: one in probation owns no keys and gets no copies.
    for (let i = 0; ; i++) {
      const s = await Promise.all(
        cluster.map(async (c) => ((await c.stats()) as { cluster: { trustedMembers: number } }).cluster.trustedMembers),
      )
      if (s.every((m) => m === 2)) break
      if (i > 1200) throw new Error(`the ${label} cluster's daemons did not all trust each other within 60 s`)
      await new Promise((r) => setTimeout(r, 50))
    }
    await warmDaemons([...procs.map((_, i) => path.join(dir, `${i < 3 ? `h${i}` : 'lone'}.sock`))], [...mcPorts, loneMc])
    b.mc = { cluster: await TextClient.connect(mcPorts[0]!), lone: await TextClient.connect(loneMc) }
    // Which keys the writer owns: written once through it, then looked for (locally only) on the
    // other two. Both hold a copy: the writer is not an owner; one does: it is one of the two.
    const keys = Array.from({ length: POOL }, (_, i) => `w:${i}`)
    for (const k of keys) await cluster[0]!.set(k, VALUE)
    for (let i = 0; i < 400; i++) {
      const s = (await Promise.all(cluster.map((x) => x.stats()))) as { cluster: { replicationPending: number } }[]
      if (s.every((x) => x.cluster.replicationPending === 0)) break
      await new Promise((r) => setTimeout(r, 25))
    }
    const pools = { notOwner: [] as string[], owner: [] as string[] }
    for (const k of keys) {
      const held = Number(!!(await cluster[1]!.get(k, { localOnly: true }))) + Number(!!(await cluster[2]!.get(k, { localOnly: true })))
      if (held === 2) pools.notOwner.push(k)
      else if (held === 1) pools.owner.push(k)
    }
    if (pools.notOwner.length === 0 || pools.owner.length === 0)
      throw new Error(
        `${label}: of ${POOL} keys, ${pools.notOwner.length} not owned by the writer and ${pools.owner.length} owned: expected both`,
      )
    b.pools = pools
    // Keys for remote fills: written through another daemon, kept where the writer lacks them.
    const fills: string[] = []
    for (let i = 0; fills.length < fillsWanted && i < 20 * fillsWanted + 300; i += 100) {
      const batch = Array.from({ length: 100 }, (_, j) => `f:${i + j}`)
      await Promise.all(batch.map((k) => cluster[1]!.set(k, VALUE)))
      for (const k of batch) if (!(await cluster[0]!.get(k, { localOnly: true }))) fills.push(k)
    }
    b.fills = fills.slice(0, fillsWanted)
    return b as Build
  } catch (err) {
    await stopBuild(b)
    throw err
  }
}

/**
 * Stops the build's daemons with SIGTERM, so that one run with --cpu-prof (BENCH_DAEMON_NODE_ARGS)
 * writes its profile; SIGKILL after 10 s.
 */
async function stopBuild(b: Partial<Build>): Promise<void> {
  for (const c of b.cluster ?? []) c.destroy()
  b.lone?.destroy()
  b.mc?.cluster.close()
  b.mc?.lone.close()
  await Promise.all(
    (b.procs ?? []).map(async (p) => {
      if (p.exitCode !== null || p.signalCode !== null) return
      const exited = new Promise((r) => p.once('exit', r))
      p.kill('SIGTERM')
      const timer = setTimeout(() => p.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    }),
  )
  if (b.dir) fs.rmSync(b.dir, { recursive: true, force: true })
}

interface Case {
  build: Build
  /** A SET, or one of the two GETs whose difference is one daemon round trip to one owner. */
  kind: 'set' | 'localGet' | 'fill'
  where: Where
  via: Via
  lat: number[]
  /** GETs answered with a copy fetched from a peer (the fill case). */
  remote: number
  op(i: number): Promise<void>
}

function casesOf(b: Build): Case[] {
  const out: Case[] = []
  for (const where of ['lone', 'notOwner', 'owner'] as const)
    for (const via of ['api', 'memcache'] as const) {
      const pool = where === 'lone' ? b.pools.notOwner : b.pools[where]
      const api = where === 'lone' ? b.lone : b.cluster[0]!
      const mc = where === 'lone' ? b.mc.lone : b.mc.cluster
      out.push({
        build: b,
        kind: 'set',
        where,
        via,
        lat: [],
        remote: 0,
        op: via === 'api' ? (i) => api.set(pool[i % pool.length]!, VALUE) : (i) => mc.set(pool[i % pool.length]!, VALUE),
      })
    }
  const writer = b.cluster[0]!
  const local = b.pools.owner[0]!
  out.push({
    build: b,
    kind: 'localGet',
    where: 'owner',
    via: 'api',
    lat: [],
    remote: 0,
    op: async () => void (await writer.get(local)),
  })
  const fill: Case = {
    build: b,
    kind: 'fill',
    where: 'notOwner',
    via: 'api',
    lat: [],
    remote: 0,
    op: async (i) => {
      if ((await writer.getEntry(b.fills[i % b.fills.length]!))?.remote) fill.remote++
    },
  }
  out.push(fill)
  return out
}

/** The build's daemons' peer datagrams and main-thread wakeups so far (the lone daemon's or the cluster's). */
async function counters(b: Build, where: Where): Promise<Counters> {
  const clients = where === 'lone' ? [b.lone] : b.cluster
  const pids = (where === 'lone' ? b.procs.slice(3) : b.procs.slice(0, 3)).map((p) => p.pid!)
  const s = (await Promise.all(clients.map((c) => c.stats()))) as { cluster?: { datagramsSent: number; datagramsReceived: number } }[]
  return {
    sent: s.reduce((a, x) => a + (x.cluster?.datagramsSent ?? 0), 0),
    received: s.reduce((a, x) => a + (x.cluster?.datagramsReceived ?? 0), 0),
    wakeups: pids.reduce((a, pid) => a + loopWakeups(pid), 0),
    cpuUs: pids.reduce((a, pid) => a + cpuMs(pid) * 1000, 0),
  }
}

const minus = (a: Counters, b: Counters): Counters => ({
  sent: a.sent - b.sent,
  received: a.received - b.received,
  wakeups: a.wakeups - b.wakeups,
  cpuUs: a.cpuUs - b.cpuUs,
})
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Datagrams and wakeups per SET of one case, less the same daemons' idle rate over as long. */
async function count(c: Case, n: number): Promise<Counters> {
  const i0 = await counters(c.build, c.where)
  const t0 = performance.now()
  await sleep(500)
  const idle = minus(await counters(c.build, c.where), i0)
  const idleMs = performance.now() - t0
  const a = await counters(c.build, c.where)
  const t1 = performance.now()
  for (let i = 0; i < n; i++) await c.op(i)
  // Late acknowledgements (the ACKS delay) belong to these SETs too.
  await sleep(50)
  const d = minus(await counters(c.build, c.where), a)
  const f = (performance.now() - t1) / idleMs
  const per = (x: number, idleX: number) => +((x - idleX * f) / n).toFixed(2)
  return {
    sent: per(d.sent, idle.sent),
    received: per(d.received, idle.received),
    wakeups: per(d.wakeups, idle.wakeups),
    cpuUs: Math.round(per(d.cpuUs, idle.cpuUs)),
  }
}

interface WriterCounters {
  setsAwaitingCopy: number
  copiesRetried: number
}

/** The writer's own counters: SETs that waited for an owner's acknowledgement, copies sent again. */
async function writerCounters(b: Build): Promise<WriterCounters> {
  const s = (await b.cluster[0]!.stats()) as { cluster: Partial<WriterCounters> }
  return { setsAwaitingCopy: s.cluster.setsAwaitingCopy ?? 0, copiesRetried: s.cluster.copiesRetried ?? 0 }
}

const minusWriter = (a: WriterCounters, b: WriterCounters): WriterCounters => ({
  setsAwaitingCopy: a.setsAwaitingCopy - b.setsAwaitingCopy,
  copiesRetried: a.copiesRetried - b.copiesRetried,
})

function load(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')
}

export async function writesRun(): Promise<WritesResult> {
  const n = Number(process.env['WRITES_N'] ?? 3000)
  const warm = Number(process.env['BENCH_WARM'] ?? 1500)
  const countN = Number(process.env['WRITES_COUNT'] ?? 500)
  const other = process.env['WRITES_OTHER_DIST']
  const loadAtStart = load()
  const builds: Build[] = []
  let probe: Awaited<ReturnType<typeof udpProbe>> | undefined
  let probe2: Awaited<ReturnType<typeof udpProbe>> | undefined
  try {
    builds.push(await startBuild('this', path.dirname(path.dirname(DAEMON)), warm + n))
    if (other) builds.push(await startBuild('other', path.resolve(other), warm + n))
    probe = await udpProbe(1)
    probe2 = await udpProbe(2)
    const cases = builds.flatMap(casesOf)
    const before = new Map<Build, WriterCounters>()
    const rtt: number[] = []
    const rtt2: number[] = []
    for (let step = 0; step < warm + n; step++) {
      if (step === warm) {
        rtt.length = 0
        rtt2.length = 0
        for (const c of cases) {
          c.lat.length = 0
          c.remote = 0
        }
        for (const b of builds) before.set(b, await writerCounters(b))
      }
      const order = [...cases.keys(), -1, -2]
      for (let i = order.length - 1; i > 0; i--) {
        const j = crypto.randomInt(i + 1)
        ;[order[i], order[j]] = [order[j]!, order[i]!]
      }
      for (const k of order) {
        if (k < 0) {
          if (k === -1) rtt.push(await probe.once())
          else rtt2.push(await probe2.once())
          continue
        }
        const c = cases[k]!
        const t0 = performance.now()
        await c.op(step)
        c.lat.push((performance.now() - t0) * 1000)
      }
    }
    const waited = new Map<Build, WriterCounters>()
    for (const b of builds) waited.set(b, minusWriter(await writerCounters(b), before.get(b)!))
    const p = (lat: number[], q: number) =>
      Math.round(
        percentile(
          [...lat].sort((a, b) => a - b),
          q,
        ),
      )
    const rttP50 = p(rtt, 50)
    const roundTrips: OwnerRoundTrip[] = builds.map((b) => {
      const get = cases.find((c) => c.build === b && c.kind === 'localGet')!
      const fill = cases.find((c) => c.build === b && c.kind === 'fill')!
      return {
        build: b.label,
        localGetP50Us: p(get.lat, 50),
        fillP50Us: p(fill.lat, 50),
        fillP99Us: p(fill.lat, 99),
        remoteFills: fill.remote,
        roundTripP50Us: p(fill.lat, 50) - p(get.lat, 50),
        ...waited.get(b)!,
      }
    })
    const out: WritesCase[] = []
    for (const c of cases) {
      if (c.kind !== 'set') continue
      const per = countN > 0 ? await count(c, countN) : { sent: 0, received: 0, wakeups: 0, cpuUs: 0 }
      const lone = cases.find((x) => x.build === c.build && x.where === 'lone' && x.via === c.via)!
      const p50 = p(c.lat, 50)
      const rise = p50 - p(lone.lat, 50)
      out.push({
        build: c.build.label,
        dist: c.build.dist,
        where: c.where,
        via: c.via,
        n: c.lat.length,
        p50Us: p50,
        p99Us: p(c.lat, 99),
        riseP50Us: rise,
        riseInRoundTrips: +(rise / rttP50).toFixed(2),
        riseInFloor: +(rise / (c.where === 'notOwner' ? p(rtt2, 50) : rttP50)).toFixed(2),
        riseInOwnerRoundTrips: +(rise / roundTrips.find((x) => x.build === c.build.label)!.roundTripP50Us).toFixed(2),
        datagramsSentPerSet: per.sent,
        datagramsReceivedPerSet: per.received,
        wakeupsPerSet: per.wakeups,
        cpuUsPerSet: per.cpuUs,
      })
    }
    return {
      load: `load average ${loadAtStart} at start, ${load()} at end`,
      n,
      warm,
      rttP50Us: rttP50,
      rttP99Us: p(rtt, 99),
      rtt2P50Us: p(rtt2, 50),
      rtt2P99Us: p(rtt2, 99),
      daemons: builds.map((b) => ({ build: b.label, pids: b.procs.map((x) => x.pid!) })),
      roundTrips,
      cases: out,
    }
  } finally {
    probe?.close()
    probe2?.close()
    await Promise.all(builds.map(stopBuild))
  }
}

const WHERE: Record<Where, string> = {
  lone: 'alone (no peers)',
  notOwner: 'cluster, writer not an owner',
  owner: 'cluster, writer an owner',
}

export function writesRows(r: WritesResult): Record<string, unknown>[] {
  return [
    { case: 'UDP round trip between two Node processes (floor)', n: r.n, p50Us: r.rttP50Us, p99Us: r.rttP99Us },
    { case: 'UDP round trips to two processes at once, the slower (floor)', n: r.n, p50Us: r.rtt2P50Us, p99Us: r.rtt2P99Us },
    ...r.roundTrips.flatMap((t) => [
      { case: 'GET hit on the writer (API)', build: t.build, n: r.n, p50Us: t.localGetP50Us },
      {
        case: 'GET remote fill on the writer from one owner (API)',
        build: t.build,
        n: r.n,
        p50Us: t.fillP50Us,
        p99Us: t.fillP99Us,
        riseP50Us: t.roundTripP50Us,
        riseInRoundTrips: +(t.roundTripP50Us / r.rttP50Us).toFixed(2),
        remote: t.remoteFills,
        setsAwaitingCopy: t.setsAwaitingCopy,
        copiesRetried: t.copiesRetried,
      },
    ]),
    ...r.cases.map((c) => ({
      case: `SET ${c.via === 'api' ? 'API' : 'memcache text'}, ${WHERE[c.where]}`,
      build: c.build,
      n: c.n,
      p50Us: c.p50Us,
      p99Us: c.p99Us,
      riseP50Us: c.where === 'lone' ? '' : c.riseP50Us,
      riseInRoundTrips: c.where === 'lone' ? '' : c.riseInRoundTrips,
      riseInOwnerRoundTrips: c.where === 'lone' ? '' : c.riseInOwnerRoundTrips,
      riseInFloor: c.where === 'lone' ? '' : c.riseInFloor,
      datagramsSentPerSet: c.datagramsSentPerSet,
      datagramsReceivedPerSet: c.datagramsReceivedPerSet,
      wakeupsPerSet: c.wakeupsPerSet,
      cpuUsPerSet: c.cpuUsPerSet,
    })),
  ]
}

export async function benchWrites(): Promise<Record<string, unknown>[]> {
  const r = await writesRun()
  console.log(`writes-result ${JSON.stringify(r)}`)
  return writesRows(r)
}

// `node dist/bench/writes.js`: the table, then the figures as one `writes-result {json}` line.
if (process.argv[1]?.endsWith('writes.js')) {
  const r = await writesRun()
  console.table(writesRows(r))
  console.log(r.load)
  for (const b of new Set(r.cases.map((c) => `${c.build}: ${c.dist}`))) console.log(b)
  console.log(`writes-result ${JSON.stringify(r)}`)
}
