/**
 * Remote fills among three daemons on loopback multicast, and "not found" with every peer alive,
 * against a floor measured in the same run, sample for sample between the measured requests: a
 * Unix round trip (the echo server) plus a multicast-request/unicast-reply round trip between two
 * processes. Cases: R=1 (LOOKUP to the group), and R=2 (LOOKUP to the key's owners) hedged, as
 * by default, and to all owners at once; with R=2 only keys C holds no copy of are probed.
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { DgramAsPromised } from 'dgram-as-promised'
import { StatecastClient } from '../client/index.js'
import { formatKeyFile } from '../protocol/keyfile.js'
import { percentile, startDaemonProcess, startEchoProcess } from './local.js'

const here = path.dirname(fileURLToPath(import.meta.url))

function summary(lat: number[]): { p50Us: number; p99Us: number } {
  lat.sort((a, b) => a - b)
  return { p50Us: Math.round(percentile(lat, 50)), p99Us: Math.round(percentile(lat, 99)) }
}

/** A multicast-request/unicast-reply round trip to an echo process, one sample per call. */
async function multicastProbe(group: string, port: number): Promise<{ once(): Promise<number>; close(): Promise<void> }> {
  const echo = spawn(process.execPath, [path.join(here, 'mcast-echo.js'), group, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] })
  await new Promise((r) => echo.stdout.once('data', r))
  const s = DgramAsPromised.createSocket({ type: 'udp4' })
  await s.bind(0, '127.0.0.1')
  s.setMulticastInterface('127.0.0.1')
  s.setMulticastLoopback(true)
  const payload = Buffer.alloc(300, 1)
  return {
    async once() {
      const t0 = performance.now()
      const got = new Promise((r) => s.socket.once('message', r))
      await s.send(payload, port, group)
      await got
      return (performance.now() - t0) * 1000
    },
    async close() {
      await s.close()
      echo.kill('SIGTERM')
    },
  }
}

export async function benchRemote(n: number, replication = 1, hedgeMs?: number): Promise<Record<string, unknown>[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sc-bench-remote-'))
  const keyFile = path.join(dir, 'cluster.key')
  fs.writeFileSync(keyFile, formatKeyFile([{ id: 1, createdAt: 0, key: crypto.randomBytes(32) }]), { mode: 0o600 })
  const group = `239.255.${crypto.randomInt(256)}.${1 + crypto.randomInt(250)}`
  const port = 20000 + crypto.randomInt(40000)
  const procs: ChildProcess[] = []
  const rows: Record<string, unknown>[] = []
  try {
    const nodes = []
    for (const name of ['a', 'b', 'c']) {
      const d = await startDaemonProcess(dir, name, [
        '--key-file',
        keyFile,
        '--group',
        group,
        '--port',
        String(port),
        '--heartbeat-ms',
        '200',
        '--dead-after-ms',
        '1000',
        '--replication-factor',
        String(replication),
        ...(hedgeMs === undefined ? [] : ['--lookup-hedge-ms', String(hedgeMs)]),
      ])
      procs.push(d.proc)
      nodes.push(await StatecastClient.connect({ socketPath: d.socket }))
    }
    const [a, , c] = nodes as [StatecastClient, StatecastClient, StatecastClient]
    // Wait until C sees both peers, so "not found" can come from their MISSes.
    for (let i = 0; i < 100; i++) {
      const s = (await c.stats()) as { cluster: { members: number } }
      if (s.cluster.members === 2) break
      await new Promise((r) => setTimeout(r, 50))
    }
    const value = Buffer.alloc(200, 9)
    // With replication, C already holds some keys: write more and probe only the ones it lacks.
    // The first WARM fills and "not found" answers are not timed: every process in the path (the
    // daemons, the echo processes, this client) runs compiled code by then, as a daemon in service does.
    const WARM = Number(process.env['BENCH_WARM'] ?? 1500)
    const written = (replication > 1 ? 3 : 1) * (n + WARM)
    for (let i = 0; i < written; i += 100)
      await Promise.all(Array.from({ length: Math.min(100, written - i) }, (_, j) => a.set(`r${i + j}`, value)))
    if (replication > 1) {
      for (let i = 0; i < 200; i++) {
        const s = (await Promise.all(nodes.map((x) => x.stats()))) as { cluster: { replicationPending: number } }[]
        if (s.every((x) => x.cluster.replicationPending === 0)) break
        await new Promise((r) => setTimeout(r, 25))
      }
    }
    const probes: string[] = []
    for (let i = 0; i < written && probes.length < n + WARM; i++) if (!(await c.get(`r${i}`, { localOnly: true }))) probes.push(`r${i}`)

    // The floor: a Unix round trip plus a multicast round trip. Its samples are taken interleaved
    // with the fills (one of each per step), so drift in this machine's speed hits both alike.
    const echoPath = path.join(dir, 'echo.sock')
    const echo = await startEchoProcess(echoPath, 200)
    procs.push(echo)
    const ce = await StatecastClient.connect({ socketPath: echoPath })
    const mc = await multicastProbe(`239.255.${crypto.randomInt(256)}.${1 + crypto.randomInt(250)}`, 20000 + crypto.randomInt(40000))
    const floorLat: number[] = []
    // Each sample starts on a quiet machine: late replies and the other daemons' work from the
    // step before (a second owner's HIT, a MISS after the HIT) must not land inside the next one.
    const quiet = () => new Promise((r) => setTimeout(r, 1))
    const floorOnce = async () => {
      await quiet()
      const t0 = performance.now()
      await ce.get('x')
      floorLat.push((performance.now() - t0) * 1000 + (await mc.once()))
    }
    const fill: number[] = []
    let remote = 0
    for (const [i, k] of probes.entries()) {
      if (i === WARM) {
        fill.length = 0
        floorLat.length = 0
        remote = 0
      }
      await floorOnce()
      await quiet()
      const t0 = performance.now()
      const e = await c.getEntry(k)
      fill.push((performance.now() - t0) * 1000)
      if (e?.remote) remote++
    }
    const f = summary(fill)
    let floor = summary(floorLat)
    floorLat.length = 0
    const how =
      replication === 1
        ? 'R=1, LOOKUP to group'
        : hedgeMs === 0
          ? `R=${replication}, LOOKUP to all owners at once`
          : `R=${replication}, LOOKUP to the first owner, hedged`
    rows.push({
      case: `remote fill (3 daemons, ${how})`,
      n: fill.length,
      remote,
      p50Us: f.p50Us,
      p99Us: f.p99Us,
      floorP50Us: floor.p50Us,
      floorP99Us: floor.p99Us,
      p50Ratio: +(f.p50Us / floor.p50Us).toFixed(2),
    })

    const nf: number[] = []
    let st0 = { timeouts: 0, remoteMisses: 0 }
    for (let i = 0; i < n + WARM; i++) {
      if (i === WARM) {
        nf.length = 0
        floorLat.length = 0
        st0 = ((await c.stats()) as { cluster: typeof st0 }).cluster
      }
      await floorOnce()
      await quiet()
      const t0 = performance.now()
      await c.get(`absent-${i}`)
      nf.push((performance.now() - t0) * 1000)
    }
    ce.destroy()
    await mc.close()
    floor = summary(floorLat)
    const s = summary(nf)
    const st = ((await c.stats()) as { cluster: { timeouts: number; remoteMisses: number } }).cluster
    rows.push({
      case: `not found, all peers alive (${how})`,
      n,
      p50Us: s.p50Us,
      p99Us: s.p99Us,
      floorP50Us: floor.p50Us,
      floorP99Us: floor.p99Us,
      p50Ratio: +(s.p50Us / floor.p50Us).toFixed(2),
      byAllMisses: st.remoteMisses - st0.remoteMisses,
      byDeadline: st.timeouts - st0.timeouts,
    })
    for (const x of nodes) x.destroy()
  } finally {
    for (const p of procs) p.kill('SIGTERM')
  }
  return rows
}
