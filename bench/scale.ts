/**
 * Scale: clusters of 4, 8, 16 and 32 hosts as network namespaces on one bridge (root only), R=2,
 * sessions spread over every host. From one host: remote fills and "not found" answers, with
 * their latency percentiles and the datagrams each lookup cost (LOOKUPs sent, replies received),
 * against the same measures at the smallest size. Also used by test/netns/netns-scale.test.ts.
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { StatecastClient } from '../client/index.js'
import { formatKeyFile } from '../protocol/keyfile.js'
import { NetLab } from '../test/helpers/netlab.js'
import { percentile, startDaemonProcess } from './local.js'

export interface ScaleFigures {
  hosts: number
  sessions: number
  fills: number
  fillP50Us: number
  fillP99Us: number
  notFoundP50Us: number
  notFoundP99Us: number
  notFoundTimeouts: number
  lookupDatagramsPerLookup: number
  missesPerNotFound: number
  repliesPerFill: number
  startupSeconds: number
}

type Stats = { cluster: Record<string, number> }

export async function scaleRun(hosts: number, sessions: number, probes: number, extra: string[] = []): Promise<ScaleFigures> {
  const teardowns: (() => unknown)[] = []
  const t = { teardown: (fn: () => unknown) => teardowns.push(fn) }
  const procs: ChildProcess[] = []
  const clients: StatecastClient[] = []
  const t0 = performance.now()
  try {
    const lab = NetLab.create(t, hosts)
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sc-scale-'))
    const keyFile = path.join(dir, 'cluster.key')
    fs.writeFileSync(keyFile, formatKeyFile([{ id: 5, createdAt: 0, key: crypto.randomBytes(32) }]), { mode: 0o600 })
    const group = `239.255.${crypto.randomInt(256)}.${1 + crypto.randomInt(250)}`
    const port = String(20000 + crypto.randomInt(40000))
    for (let i = 1; i <= hosts; i++) {
      const d = await startDaemonProcess(dir, `h${i}`, ['--interface', lab.addr(i), '--key-file', keyFile, '--group', group, '--port', port, '--lookup-timeout-ms', '100', ...extra], lab.exec(i))
      procs.push(d.proc)
      clients.push(await StatecastClient.connect({ socketPath: d.socket, timeoutMs: 10_000 }))
    }
    const stats = async (c: StatecastClient) => ((await c.stats()) as unknown as Stats).cluster
    for (let i = 0; i < 600; i++) {
      const m = await Promise.all(clients.map(stats))
      if (m.every((c) => c['members'] === hosts - 1)) break
      await new Promise((r) => setTimeout(r, 50))
    }
    const startupSeconds = (performance.now() - t0) / 1000
    const value = (k: number) => Buffer.from(`session-${k}-`.padEnd(200, 'x'))
    for (let i = 0; i < sessions; i += 200) await Promise.all(Array.from({ length: Math.min(200, sessions - i) }, (_, j) => clients[(i + j) % hosts]!.set(`s${i + j}`, value(i + j))))
    for (let i = 0; i < 600; i++) {
      const m = await Promise.all(clients.map(stats))
      if (m.every((c) => c['replicationPending'] === 0)) break
      await new Promise((r) => setTimeout(r, 50))
    }
    const me = clients[0]!
    // Untimed first: fills (keys from the top of the range) and "not found" answers, so the
    // owners' answering path and ours run compiled code, as in a cluster that has been serving.
    const warm = Math.min(2000, Math.floor(sessions / 4))
    for (let k = sessions - 1, n = 0; n < warm && k >= sessions / 2; k--) if (!(await me.get(`s${k}`, { localOnly: true }))) n += (await me.get(`s${k}`)) ? 1 : 0
    for (let k = 0; k < warm; k++) await me.get(`warm-absent-${k}`)
    const base = await stats(me)
    const fill: number[] = []
    let fills = 0
    for (let k = 0; fills < probes && k < sessions; k++) {
      if (await me.get(`s${k}`, { localOnly: true })) continue
      const t1 = performance.now()
      const e = await me.getEntry(`s${k}`)
      fill.push((performance.now() - t1) * 1000)
      if (e?.remote && e.value.equals(value(k))) fills++
    }
    const mid = await stats(me)
    const nf: number[] = []
    for (let k = 0; k < probes; k++) {
      const t1 = performance.now()
      await me.get(`absent-${k}`)
      nf.push((performance.now() - t1) * 1000)
    }
    const end = await stats(me)
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
    }
  } finally {
    for (const c of clients) c.destroy()
    for (const p of procs) p.kill('SIGKILL')
    for (const fn of teardowns.reverse()) await fn()
  }
}

export async function benchScale(sizes = [4, 8, 16, 32]): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = []
  let base: ScaleFigures | undefined
  for (const n of sizes) {
    const f = await scaleRun(n, n === 32 ? 10_000 : 2_000, 500)
    base ??= f
    rows.push({ case: `scale, ${n} hosts (R=2)`, ...f, fillP99VsSmallest: +(f.fillP99Us / base.fillP99Us).toFixed(2) })
  }
  return rows
}

// `node dist/bench/scale.js HOSTS SESSIONS PROBES [DAEMON FLAGS...]`: one scale run, its figures as
// one JSON line (the 32-host test in npm test runs it so).
if (process.argv[1]?.endsWith('scale.js')) {
  const [hosts, sessions, probes, ...extra] = process.argv.slice(2)
  console.log(`scale-result ${JSON.stringify(await scaleRun(Number(hosts ?? 32), Number(sessions ?? 10_000), Number(probes ?? 300), extra))}`)
}
