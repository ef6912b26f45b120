/**
 * Runs a built benchmark program (dist/bench/NAME.js) as its own process and returns the figures it
 * prints on its `NAME-result {json}` line: tests use the benchmarks' workloads without importing
 * bench/.
 */
import { execFile } from 'node:child_process'
import path from 'node:path'
import { ROOT } from './daemon.js'

export function runBench<T>(name: string, args: string[] = [], env: NodeJS.ProcessEnv = {}, timeoutMs = 600_000): Promise<T> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(ROOT, 'dist', 'bench', `${name}.js`), ...args], { env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const line = stdout.split('\n').find((l) => l.startsWith(`${name}-result `))
      if (line) return resolve(JSON.parse(line.slice(name.length + 8)) as T)
      reject(new Error(`bench ${name} printed no result${err ? `: ${err.message}` : ''}\n${stderr.slice(-2000)}`))
    })
  })
}

/** What `npm run soak` (bench/soak.ts) measures. */
export interface SoakResult {
  seconds: number
  ops: number
  opsPerSec: number
  errors: number
  wrong: number
  getP50Us: number
  getP99Us: number
  rssMiB: number[][]
  fds: number[][]
  /** Resident memory growth from the end of warm-up to the end, per daemon, in %. */
  rssGrowthPct: number[]
  fdGrowth: number[]
}
