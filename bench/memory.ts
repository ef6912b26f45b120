/**
 * Memory per stored session: resident size of a daemon (no cluster) before and after storing N
 * 200-byte sessions, against the bytes of the keys and values themselves, for each store engine.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { StatecastClient } from '../client/index.js'
import { startDaemonProcess } from './local.js'

function rssOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024
}

export async function benchMemory(counts: number[], engines = ['compact', 'lru-cache']): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = []
  for (const engine of engines)
    for (const n of counts) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sc-bench-mem-'))
      const d = await startDaemonProcess(dir, 'mem', [
        '--cluster-enabled',
        'false',
        '--store-engine',
        engine,
        '--max-bytes',
        String(4 * 1024 ** 3),
      ])
      try {
        const c = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: 30_000 })
        const value = Buffer.alloc(200, 7)
        await c.set('warm', value)
        await new Promise((r) => setTimeout(r, 300))
        const before = rssOf(d.proc.pid!)
        const keyBytes = `session:${String(0).padStart(10, '0')}`.length
        for (let i = 0; i < n; i += 1000) {
          await Promise.all(
            Array.from({ length: Math.min(1000, n - i) }, (_, j) => c.set(`session:${String(i + j).padStart(10, '0')}`, value)),
          )
        }
        // Let the daemon's allocator settle before reading its resident size.
        await new Promise((r) => setTimeout(r, 1000))
        const after = rssOf(d.proc.pid!)
        const perEntry = (after - before) / n
        rows.push({
          case: `memory, ${engine}, ${n.toLocaleString('en')} sessions of 200 B`,
          n,
          rssBeforeMiB: +(before / 1048576).toFixed(1),
          rssAfterMiB: +(after / 1048576).toFixed(1),
          bytesPerEntry: Math.round(perEntry),
          keyPlusValue: keyBytes + 200,
          overheadPerEntry: Math.round(perEntry - keyBytes - 200),
        })
        c.destroy()
      } finally {
        d.proc.kill('SIGKILL')
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }
  return rows
}
