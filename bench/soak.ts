/**
 * npm run soak: three daemons on loopback under sustained mixed load (GET with remote fills,
 * SET, DELETE) for SOAK_SECONDS (default 300). Samples each daemon's resident memory and open
 * file descriptors every few seconds and reports latency percentiles, errors and wrong answers.
 * Passes when memory is flat after warm-up, no descriptor leaks, and every answer was right.
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { StatecastClient } from '../client/index.js'
import { formatKeyFile } from '../protocol/keyfile.js'
import { percentile, startDaemonProcess } from './local.js'
import type { SoakResult } from '../test/helpers/bench-run.js'

function rss(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024
}
function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length
}

export async function soak(seconds: number, sampleEveryMs = 5000, maxBytes = 8 * 1024 * 1024): Promise<SoakResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sc-soak-'))
  const keyFile = path.join(dir, 'cluster.key')
  fs.writeFileSync(keyFile, formatKeyFile([{ id: 7, createdAt: 0, key: crypto.randomBytes(32) }]), { mode: 0o600 })
  const group = `239.255.${crypto.randomInt(256)}.${1 + crypto.randomInt(250)}`
  const port = String(20000 + crypto.randomInt(40000))
  const procs: ChildProcess[] = []
  const clients: StatecastClient[] = []
  try {
    for (const n of ['a', 'b', 'c']) {
      // A small store, so the soak also runs evictions continuously.
      const d = await startDaemonProcess(dir, n, [
        '--key-file',
        keyFile,
        '--group',
        group,
        '--port',
        port,
        '--heartbeat-ms',
        '200',
        '--dead-after-ms',
        '1000',
        '--max-bytes',
        String(maxBytes),
      ])
      procs.push(d.proc)
      clients.push(await StatecastClient.connect({ socketPath: d.socket, timeoutMs: 5000 }))
    }
    await new Promise((r) => setTimeout(r, 1500))
    const keySpace = 50_000
    const valueOf = (k: number, gen: number) => Buffer.from(`v${k}:${gen}:`.padEnd(200 + (k % 300), '#'))
    const gens = new Map<number, number>()
    let ops = 0
    let errors = 0
    let wrong = 0
    const getLat: number[] = []
    const samples: { rss: number[]; fds: number[] }[] = []
    const end = performance.now() + seconds * 1000
    const sampler = setInterval(
      () => samples.push({ rss: procs.map((p) => rss(p.pid!)), fds: procs.map((p) => fdCount(p.pid!)) }),
      sampleEveryMs,
    )
    const worker = async (w: number) => {
      let x = w * 7919 + 1
      const rnd = () => (x = (x * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff
      while (performance.now() < end) {
        const k = Math.floor(rnd() * keySpace)
        const c = clients[Math.floor(rnd() * clients.length)]!
        const dice = rnd()
        try {
          if (dice < 0.25) {
            const gen = (gens.get(k) ?? 0) + 1
            gens.set(k, gen)
            await c.set(`soak:${k}`, valueOf(k, gen), { ttlMs: 60_000 })
          } else if (dice < 0.3) {
            gens.set(k, (gens.get(k) ?? 0) + 1)
            await c.delete(`soak:${k}`)
          } else {
            const t0 = performance.now()
            const v = await c.get(`soak:${k}`)
            getLat.push((performance.now() - t0) * 1000)
            // A value, when there is one, must be one this key was given (any generation: writes race).
            if (v && !v.toString('latin1').startsWith(`v${k}:`)) wrong++
          }
          ops++
        } catch {
          errors++
        }
      }
    }
    const t0 = performance.now()
    await Promise.all(Array.from({ length: 8 }, (_, i) => worker(i)))
    const secs = (performance.now() - t0) / 1000
    clearInterval(sampler)
    samples.push({ rss: procs.map((p) => rss(p.pid!)), fds: procs.map((p) => fdCount(p.pid!)) })
    getLat.sort((a, b) => a - b)
    // Warm-up: the first half of the run, while the store fills to its bound.
    const warm = samples[Math.min(samples.length - 1, Math.max(1, Math.floor(samples.length / 2)))]!
    const last = samples[samples.length - 1]!
    return {
      seconds: Math.round(secs),
      ops,
      opsPerSec: Math.round(ops / secs),
      errors,
      wrong,
      getP50Us: Math.round(percentile(getLat, 50)),
      getP99Us: Math.round(percentile(getLat, 99)),
      rssMiB: samples.map((s) => s.rss.map((v) => Math.round(v))),
      fds: samples.map((s) => s.fds),
      rssGrowthPct: last.rss.map((v, i) => +((100 * (v - warm.rss[i]!)) / warm.rss[i]!).toFixed(1)),
      fdGrowth: last.fds.map((v, i) => v - warm.fds[i]!),
    }
  } finally {
    for (const c of clients) c.destroy()
    for (const p of procs) p.kill('SIGTERM')
  }
}

if (process.argv[1]?.endsWith('soak.js')) {
  const seconds = Number(process.env['SOAK_SECONDS'] ?? 300)
  const sampleMs = Number(process.env['SOAK_SAMPLE_MS'] ?? 5000)
  const maxBytes = Number(process.env['SOAK_MAX_BYTES'] ?? 8 * 1024 * 1024)
  console.log(`soak: 3 daemons, 8 workers, mixed GET/SET/DELETE over 50,000 keys for ${seconds} s`)
  const r = await soak(seconds, sampleMs, maxBytes)
  // For programs that run the soak (the short soak in npm test): the figures on one line.
  console.log(`soak-result ${JSON.stringify(r)}`)
  console.log(
    `ops ${r.ops} (${r.opsPerSec}/s), errors ${r.errors}, wrong answers ${r.wrong}, GET p50 ${r.getP50Us} us, p99 ${r.getP99Us} us`,
  )
  console.log('RSS MiB per sample (a, b, c):', r.rssMiB.map((s) => s.join('/')).join('  '))
  console.log('open fds per sample:', r.fds.map((s) => s.join('/')).join('  '))
  console.log(`RSS growth after warm-up: ${r.rssGrowthPct.join('%, ')}%; fd growth: ${r.fdGrowth.join(', ')}`)
  const ok = r.errors === 0 && r.wrong === 0 && r.fdGrowth.every((g) => g <= 0) && r.rssGrowthPct.every((g) => g < 15)
  console.log(ok ? 'soak passed' : 'soak FAILED')
  process.exit(ok ? 0 : 1)
}
