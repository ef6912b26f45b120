/**
 * A real memcached 1.6 as the control for the memcache front end's tests, and a raw exchange
 * of bytes with a memcache server (binary or text).
 */
import { spawn } from 'node:child_process'
import net from 'node:net'
import { eventually, freePort } from './daemon.js'

export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => (s.destroy(), resolve(true)))
    s.once('error', () => resolve(false))
  })
}

/** memcached on a free loopback port with its defaults (`args` added); killed at teardown. */
export async function startMemcached(t: { teardown(fn: () => unknown): void }, args: string[] = []): Promise<number> {
  const port = await freePort()
  const asRoot = process.getuid?.() === 0 ? ['-u', 'root'] : []
  const p = spawn('memcached', ['-l', '127.0.0.1', '-p', String(port), '-U', '0', '-m', '64', ...asRoot, ...args], { stdio: 'ignore' })
  const exited = new Promise((r) => p.once('close', r))
  t.teardown(async () => {
    p.kill('SIGKILL')
    await exited
  })
  await eventually(() => canConnect(port), 30_000, 'memcached listening')
  return port
}

/**
 * Sends `chunks` (each its own write, in order) on a new connection and collects what comes back
 * until `done(bytes)` says so, the server closes, or `ms` pass. `closed` tells which it was.
 */
export function exchange(
  port: number,
  chunks: Buffer[],
  done: (got: Buffer) => boolean,
  ms = 20_000,
): Promise<{ got: Buffer; closed: boolean; timedOut: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.setNoDelay(true)
    const parts: Buffer[] = []
    let finished = false
    const finish = (closed: boolean, timedOut: boolean) => {
      if (finished) return
      finished = true
      clearTimeout(timer)
      s.destroy()
      resolve({ got: Buffer.concat(parts), closed, timedOut })
    }
    const timer = setTimeout(() => finish(false, true), ms)
    s.on('data', (d: Buffer) => {
      parts.push(d)
      if (done(Buffer.concat(parts))) finish(false, false)
    })
    s.on('error', () => {})
    s.on('close', () => finish(true, false))
    s.on('connect', () => {
      const next = (i: number): void => {
        if (i >= chunks.length || s.destroyed) return
        s.write(chunks[i]!, () => setImmediate(() => next(i + 1)))
      }
      next(0)
    })
  })
}
