/**
 * Scale: a cluster of N hosts as network namespaces on one bridge (root only), R=2, sessions
 * spread over every host. From one host: remote fills and "not found" answers, with their latency
 * percentiles and the datagrams each lookup cost (LOOKUPs sent, replies received). The 32-host
 * test (test/netns/netns-scale.test.ts) and the scale benchmark (bench/scale.ts) both run it.
 */
import crypto from 'node:crypto'
import { StatecastClient } from '../../client/index.js'
import { CLIENT_TIMEOUT_MS, writeKeyFile } from './cluster.js'
import { eventually, startDaemon, tmpDir } from './daemon.js'
import { NetLab } from './netlab.js'

export interface ScaleFigures {
  hosts: number
  sessions: number
  fills: number
  fillP50Us: number
  fillP99Us: number
  notFoundP50Us: number
  notFoundP99Us: number
  notFoundTimeouts: number
  /** LOOKUP datagrams sent per lookup (fills and "not found" together). */
  lookupDatagramsPerLookup: number
  missesPerNotFound: number
  repliesPerFill: number
  startupSeconds: number
  /**
   * Measurement windows run: a window in which the measuring host's membership changed (a
   * member's heartbeats late on a loaded machine) asks every candidate owner, not R; such a
   * window is run again, up to MAX_WINDOWS, so the figures are the settled cluster's.
   */
  windows: number
  /** Lookups of the reported window made while membership was changing (0 unless every window saw a change). */
  widenedLookups: number
}

const MAX_WINDOWS = 5

type Stats = { cluster: Record<string, number> }

/** Daemons started at once: enough to overlap their start-up, few enough not to starve each other. */
const START_BATCH = 8

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

/**
 * `warm`: fills and "not found" answers made untimed first, so the latency figures are of compiled
 * code, as in a cluster that has been serving (the datagram counts do not need them).
 */
export async function scaleRun(
  hosts: number,
  sessions: number,
  probes: number,
  extra: string[] = [],
  warm = Math.min(2000, Math.floor(sessions / 4)),
): Promise<ScaleFigures> {
  const teardowns: (() => unknown)[] = []
  const t = { teardown: (fn: () => unknown) => teardowns.push(fn) }
  const clients: StatecastClient[] = []
  const t0 = performance.now()
  try {
    const lab = NetLab.create(t, hosts)
    const dir = tmpDir('sc-scale-')
    const keyFile = writeKeyFile(dir)
    const group = `239.255.${crypto.randomInt(256)}.${1 + crypto.randomInt(250)}`
    const port = String(20000 + crypto.randomInt(40000))
    const start = async (i: number) => {
      const d = await startDaemon(t, {
        dir,
        name: `h${i}`,
        prefix: lab.exec(i),
        args: ['--interface', lab.addr(i), '--key-file', keyFile, '--group', group, '--port', port, '--lookup-timeout-ms', '100', ...extra],
      })
      // A request deadline above any lookup deadline: a busy machine answers late, not TIMEOUT.
      return StatecastClient.connect({ socketPath: d.socket, timeoutMs: CLIENT_TIMEOUT_MS })
    }
    for (let i = 1; i <= hosts; i += START_BATCH)
      clients.push(...(await Promise.all(Array.from({ length: Math.min(START_BATCH, hosts - i + 1) }, (_, j) => start(i + j)))))
    const stats = async (c: StatecastClient) => ((await c.stats()) as unknown as Stats).cluster
    await eventually(
      async () => (await Promise.all(clients.map(stats))).every((c) => c['members'] === hosts - 1),
      120_000,
      `every host sees ${hosts - 1} members`,
    )
    const startupSeconds = (performance.now() - t0) / 1000
    const value = (k: number) => Buffer.from(`session-${k}-`.padEnd(200, 'x'))
    for (let i = 0; i < sessions; i += 200)
      await Promise.all(
        Array.from({ length: Math.min(200, sessions - i) }, (_, j) => clients[(i + j) % hosts]!.set(`s${i + j}`, value(i + j))),
      )
    await eventually(
      async () => (await Promise.all(clients.map(stats))).every((c) => c['replicationPending'] === 0),
      120_000,
      'replication queues drained',
    ).catch(async (err: unknown) => {
      // What each host still had queued, and why it may not drain (members it lost, copies retried).
      const left = (await Promise.all(clients.map(stats))).map((c, i) => ({
        host: i + 1,
        pending: c['replicationPending'],
        members: c['members'],
        steady: c['membershipSteady'],
        retried: c['copiesRetried'],
        failed: c['copiesFailed'],
      }))
      const why = err instanceof Error ? err.message : String(err)
      throw new Error(`${why}; queues left: ${JSON.stringify(left.filter((l) => l.pending !== 0))}`)
    })
    await eventually(
      async () => (await Promise.all(clients.map(stats))).every((c) => (c['membershipSteady'] as unknown) === true),
      120_000,
      'every host steady (readers ask the owners alone)',
    )
    const me = clients[0]!
    // Untimed first (keys from the top of the range).
    for (let k = sessions - 1, n = 0; n < warm && k >= sessions / 2; k--)
      if (!(await me.get(`s${k}`, { localOnly: true }))) n += (await me.get(`s${k}`)) ? 1 : 0
    for (let k = 0; k < warm; k++) await me.get(`warm-absent-${k}`)
    let base: Record<string, number>, mid: Record<string, number>, end: Record<string, number>
    let fill: number[], nf: number[]
    let fills: number
    let windows = 0
    let next = 0
    do {
      windows++
      base = await stats(me)
      fill = []
      fills = 0
      for (; fills < probes && next < sessions; next++) {
        if (await me.get(`s${next}`, { localOnly: true })) continue
        const t1 = performance.now()
        const e = await me.getEntry(`s${next}`)
        fill.push((performance.now() - t1) * 1000)
        if (e?.remote && e.value.equals(value(next))) fills++
      }
      mid = await stats(me)
      nf = []
      for (let k = 0; k < probes; k++) {
        const t1 = performance.now()
        await me.get(`absent-${windows}-${k}`)
        nf.push((performance.now() - t1) * 1000)
      }
      end = await stats(me)
    } while (end['lookupsWidened']! > base['lookupsWidened']! && windows < MAX_WINDOWS)
    fill.sort((a, b) => a - b)
    nf.sort((a, b) => a - b)
    const d = (a: Record<string, number>, b: Record<string, number>, k: string) => b[k]! - a[k]!
    const lookups = d(base, end, 'lookups')
    return {
      hosts,
      sessions,
      fills,
      fillP50Us: Math.round(percentile(fill, 50)),
      fillP99Us: Math.round(percentile(fill, 99)),
      notFoundP50Us: Math.round(percentile(nf, 50)),
      notFoundP99Us: Math.round(percentile(nf, 99)),
      notFoundTimeouts: d(mid, end, 'timeouts'),
      lookupDatagramsPerLookup: +(d(base, end, 'lookupDatagrams') / lookups).toFixed(2),
      missesPerNotFound: +(d(mid, end, 'missesReceived') / probes).toFixed(2),
      repliesPerFill: +((d(base, mid, 'chunksReceived') + d(base, mid, 'missesReceived')) / Math.max(1, fill.length)).toFixed(2),
      startupSeconds: +startupSeconds.toFixed(1),
      windows,
      widenedLookups: d(base, end, 'lookupsWidened'),
    }
  } finally {
    for (const c of clients) c.destroy()
    for (const fn of teardowns.reverse()) await fn()
  }
}
