/**
 * Starts real statecastd processes (the built dist/ binary) on temporary sockets for integration
 * tests, waits for their ready line instead of sleeping, and stops them when the test ends.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ROOT } from './root.js'

export { ROOT }
export const DAEMON = path.join(ROOT, 'dist', 'daemon', 'main.js')
export const CLI = path.join(ROOT, 'dist', 'cli', 'main.js')

export interface Running {
  proc: ChildProcess
  socket: string
  adminSocket: string
  dir: string
  /** Every JSON log line so far. */
  logs: Record<string, unknown>[]
  /** What the daemon wrote on stderr so far (config errors go there, before any log exists). */
  stderr(): string
  /** Resolves the first log line matching `pred` (already seen or yet to come), or rejects after `ms`. */
  waitLog(pred: (l: Record<string, unknown>) => boolean, ms?: number): Promise<Record<string, unknown>>
  /** SIGTERM and wait for exit; resolves the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>
  exited: Promise<number | null>
}

/**
 * The command that runs Node for the CLI or a bench program, after `prefix` (such as `ip netns
 * exec NS`). tap adds its process-info hook (a module loader on a thread of its own, there for
 * coverage) to NODE_OPTIONS of every process a test starts, and puts it back on each spawn whatever
 * env is given: about half a second of CPU more per Node start, hundreds of times in a run. With
 * coverage off the hook records nothing anyone reads, so Node starts through `env` with
 * NODE_OPTIONS as it was without it (env and `ip netns exec` exec, so the pid is still Node's).
 */
export function nodeCommand(prefix: string[] = []): string[] {
  if (process.env['_TAPJS_PROCESSINFO_COVERAGE_'] !== '0') return [...prefix, process.execPath]
  const options = (process.env['NODE_OPTIONS'] ?? '')
    .replace(/(^|\s)"?--(import|loader|require)[= ][^\s"]*@tapjs\/processinfo[^\s"]*"?/g, '')
    .trim()
  return ['env', `NODE_OPTIONS=${options}`, ...prefix, process.execPath]
}

interface Teardown {
  teardown(fn: () => unknown): void
}

export function tmpDir(prefix = 'sc-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix))
}

/**
 * `paths`: which socket flags the daemon gets: 'both' (default: `--socket DIR/NAME.sock
 * --admin-socket DIR/NAME-admin.sock`), 'api' (only `--socket`; the admin socket is then
 * DIR/admin.sock) or 'none' (the built-in defaults; `socket` and `adminSocket` are then empty).
 */
export async function startDaemon(
  t: Teardown,
  opts: {
    args?: string[]
    dir?: string
    env?: NodeJS.ProcessEnv
    wait?: boolean
    name?: string
    prefix?: string[]
    paths?: 'both' | 'api' | 'none'
  } = {},
): Promise<Running> {
  const dir = opts.dir ?? tmpDir()
  const name = opts.name ?? 'd'
  const paths = opts.paths ?? 'both'
  const socket = paths === 'none' ? '' : path.join(dir, `${name}.sock`)
  const adminSocket = paths === 'none' ? '' : path.join(dir, paths === 'api' ? 'admin.sock' : `${name}-admin.sock`)
  const extra = opts.args ?? []
  // A group and port of its own, so daemons of tests running side by side never meet by accident.
  const isolate = extra.includes('--port')
    ? []
    : ['--group', `239.254.${crypto.randomInt(256)}.${1 + crypto.randomInt(250)}`, '--port', String(20000 + crypto.randomInt(40000))]
  const pathArgs = paths === 'none' ? [] : paths === 'api' ? ['--socket', socket] : ['--socket', socket, '--admin-socket', adminSocket]
  const args = [DAEMON, ...pathArgs, ...isolate, ...extra]
  // `prefix` runs the daemon through another command, such as `ip netns exec NS` (which execs, so
  // the pid is the daemon's own).
  // Without tap's hook (see nodeCommand), whose own signal handlers once hid that statecastd took
  // SIGHUP only after logging ready (a reload sent on that line killed it; main.ts now takes
  // signals before start-up).
  const [cmd, ...pre] = nodeCommand(opts.prefix)
  const proc = spawn(cmd!, [...pre, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } })
  const logs: Record<string, unknown>[] = []
  const waiters: { pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = []
  let buf = ''
  let stderr = ''
  proc.stdout.setEncoding('utf8').on('data', (s: string) => {
    buf += s
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      let obj: Record<string, unknown>
      try {
        obj = JSON.parse(line) as Record<string, unknown>
      } catch {
        obj = { raw: line }
      }
      logs.push(obj)
      for (const w of [...waiters])
        if (w.pred(obj)) {
          waiters.splice(waiters.indexOf(w), 1)
          w.resolve(obj)
        }
    }
  })
  proc.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
  const exited = new Promise<number | null>((resolve) => proc.once('close', (code) => resolve(code)))
  const waitLog = (pred: (l: Record<string, unknown>) => boolean, ms = 30_000) => {
    const seen = logs.find(pred)
    if (seen) return Promise.resolve(seen)
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      const w = { pred, resolve: (l: Record<string, unknown>) => (clearTimeout(timer), resolve(l)) }
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1)
        reject(new Error(`log line not seen within ${ms} ms; stderr: ${stderr}; logs: ${JSON.stringify(logs.slice(-5))}`))
      }, ms)
      waiters.push(w)
      // exited never rejects (it resolves on 'close'), so nothing here can go unhandled.
      void exited.then((code) => {
        if (waiters.includes(w)) {
          clearTimeout(timer)
          waiters.splice(waiters.indexOf(w), 1)
          reject(new Error(`daemon exited (${code}) before the log line; stderr: ${stderr}`))
        }
      })
    })
  }
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal)
    return exited
  }
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await exited
    }
  })
  const r: Running = { proc, socket, adminSocket, dir, logs, stderr: () => stderr, waitLog, stop, exited }
  // Start-up is a new process loading its modules: on a busy machine that alone takes seconds.
  if (opts.wait !== false) await waitLog((l) => l['msg'] === 'statecastd ready', 120_000)
  return r
}

/** Runs the CLI to completion. */
export function runCli(
  args: string[],
  opts: { input?: string | Buffer; env?: NodeJS.ProcessEnv; prefix?: string[] } = {},
): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    const [cmd, ...pre] = nodeCommand(opts.prefix)
    const p = spawn(cmd!, [...pre, CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } })
    const out: Buffer[] = []
    let err = ''
    p.stdout.on('data', (b: Buffer) => out.push(b))
    p.stderr.setEncoding('utf8').on('data', (s: string) => (err += s))
    p.stdin.end(opts.input ?? '')
    p.once('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }))
  })
}

/** Polls `fn` until it returns a truthy value or `ms` passes. For conditions no event announces. */
export async function eventually<T>(fn: () => T | Promise<T>, ms = 20_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + ms
  let last: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) throw new Error(`${what} not reached within ${ms} ms${last ? `: ${String(last)}` : ''}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

export { freePortSync as freePort } from './ports.js'
