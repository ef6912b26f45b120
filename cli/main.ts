#!/usr/bin/env node
/**
 * statecast: the admin command for a host's statecastd.
 *
 * Commands come from one table of {name, args, description, run}; usage and help are generated
 * from it. Exit codes: 0 done, 1 not found, 2 usage error, 3 daemon unreachable, 4 the daemon
 * refused the request (its message is printed).
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { createInterface } from 'node:readline/promises'
import { StatecastClient } from '../client/client.js'
import { StatecastError } from '../client/errors.js'
import { defaultAdminSocketPath } from '../protocol/paths.js'
import { STATS, type StatSpec } from '../protocol/stats.js'
import { UnixListenerError, checkPrivateDir, isUserDefaultDir } from '../daemon/local/unix-listener.js'
import { formatKey, formatKeyFile, newClusterKey } from '../protocol/keyfile.js'
import { TICKET_FORMATS, wipeRendered, type TicketFormat } from '../daemon/tickets/ticket-formats.js'
import { writeConsumerFiles } from '../daemon/tickets/ticket-export.js'

export const EXIT = { OK: 0, NOT_FOUND: 1, USAGE: 2, UNREACHABLE: 3, REFUSED: 4 } as const

class UsageError extends StatecastError<'USAGE'> {
  constructor(message: string) {
    super('USAGE', message)
    this.name = 'UsageError'
  }
}

interface Ctx {
  args: string[]
  flags: Record<string, string | boolean | undefined>
  json: boolean
  out: (s: string) => void
  client: () => Promise<StatecastClient>
}

interface Command {
  name: string
  args: string
  description: string
  /** Runs the command; resolves the exit code. */
  run(ctx: Ctx): Promise<number>
}

const uid = typeof process.getuid === 'function' ? process.getuid() : 1000

function arg(ctx: Ctx, i: number, name: string): string {
  const v = ctx.args[i]
  if (v === undefined) throw new UsageError(`missing ${name}`)
  return v
}

function noMoreArgs(ctx: Ctx, n: number): void {
  if (ctx.args.length > n) throw new UsageError(`unexpected argument ${JSON.stringify(ctx.args[n])}`)
}

function seconds(v: string | boolean | undefined, name: string): number | undefined {
  if (v === undefined) return undefined
  if (typeof v !== 'string' || !/^\d+(\.\d+)?$/.test(v)) throw new UsageError(`${name} takes a number of seconds, got ${JSON.stringify(v)}`)
  return Math.round(Number(v) * 1000)
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

/**
 * Human output with every control character shown as an escape: C0 (but newline and tab, unless
 * `fields`), DEL, C1, and the Unicode line separators and bidirectional overrides. Keys, values,
 * peer names and error texts come from whoever wrote them; printed raw, `statecast keys` let a key
 * set the terminal's title, clear the screen or fake lines (issue 21 point 15). `--json` output is
 * exact and not escaped (JSON escapes controls itself). `fields`: newline and tab escaped too, for
 * a value inside a line.
 */
export function escapeControls(s: string, fields = false): string {
  return s.replace(
    fields
      ? /[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g
      : /[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (c) => {
      const n = c.charCodeAt(0)
      if (c === '\n') return '\\n'
      if (c === '\t') return '\\t'
      return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`
    },
  )
}

/** stderr for people: escaped as human stdout is. */
const errOut = (s: string) => process.stderr.write(escapeControls(s))

/** Keys and values are bytes: show them as UTF-8 when they are, else as base64. */
function printable(b: Buffer): { text: string; encoding: 'utf8' | 'base64' } {
  const s = b.toString('utf8')
  return Buffer.from(s, 'utf8').equals(b) ? { text: s, encoding: 'utf8' } : { text: b.toString('base64'), encoding: 'base64' }
}

/**
 * Flattens nested stats into aligned `section.name  value` lines; a number gets the unit its
 * declaration gives (protocol/stats.ts: `bytes`, `ms`, ...; counts stand alone).
 */
export function formatStats(obj: unknown, prefix = ''): string[] {
  const lines: [string, string][] = []
  const declared = STATS as Readonly<Record<string, StatSpec>>
  const walk = (v: unknown, p: string) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      for (const [k, x] of Object.entries(v)) walk(x, p ? `${p}.${k}` : k)
    } else {
      const unit = typeof v === 'number' ? declared[p]?.unit : undefined
      const text = Array.isArray(v) ? JSON.stringify(v) : String(v)
      lines.push([p, unit && unit !== 'count' ? `${text} ${unit}` : text])
    }
  }
  walk(obj, prefix)
  const w = Math.max(0, ...lines.map(([k]) => k.length))
  return lines.map(([k, v]) => `${k.padEnd(w)}  ${v}`)
}

export const COMMANDS: Command[] = [
  {
    name: 'get',
    args: 'KEY',
    description: 'print the value of KEY (raw bytes; asks peers on a local miss)',
    async run(ctx) {
      const key = arg(ctx, 0, 'KEY')
      noMoreArgs(ctx, 1)
      const e = await (await ctx.client()).getEntry(key, { localOnly: ctx.flags['local'] === true })
      if (!e) {
        if (ctx.json) ctx.out(JSON.stringify({ key, found: false }) + '\n')
        return EXIT.NOT_FOUND
      }
      if (ctx.json) {
        const p = printable(e.value)
        ctx.out(JSON.stringify({ key, found: true, value: p.text, encoding: p.encoding, ttlMs: e.ttlMs, remote: e.remote }) + '\n')
      } else {
        // Raw bytes into a pipe or file (scripts read them back exactly); escaped on a terminal.
        if (process.stdout.isTTY) process.stdout.write(escapeControls(e.value.toString('utf8')) + '\n')
        else process.stdout.write(e.value)
      }
      return EXIT.OK
    },
  },
  {
    name: 'set',
    args: 'KEY [--file F] [--ttl SECONDS]',
    description:
      "store the value read from stdin (or file F) under KEY; default TTL is the daemon's. `set KEY VALUE` works too, but never for secrets (below)",
    async run(ctx) {
      const key = arg(ctx, 0, 'KEY')
      const raw = ctx.args[1]
      noMoreArgs(ctx, 2)
      const file = ctx.flags['file']
      if (file !== undefined && raw !== undefined)
        throw new UsageError('give the value in one way: --file F, stdin, or (not for secrets) a VALUE argument')
      if (file !== undefined && typeof file !== 'string') throw new UsageError('--file takes a path')
      const ttlMs = seconds(ctx.flags['ttl'], '--ttl')
      let value: Buffer
      if (typeof file === 'string') {
        try {
          value = fs.readFileSync(file)
        } catch (err) {
          throw new UsageError(`cannot read --file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'read failed'}`)
        }
      } else value = raw === undefined || raw === '-' ? await readStdin() : Buffer.from(raw, 'utf8')
      await (await ctx.client()).set(key, value, ttlMs === undefined ? {} : { ttlMs })
      if (ctx.json) ctx.out(JSON.stringify({ key, stored: true, bytes: value.length }) + '\n')
      return EXIT.OK
    },
  },
  {
    name: 'del',
    args: 'KEY',
    description: 'delete KEY on this host and every peer',
    async run(ctx) {
      const key = arg(ctx, 0, 'KEY')
      noMoreArgs(ctx, 1)
      const had = await (await ctx.client()).delete(key)
      if (ctx.json) ctx.out(JSON.stringify({ key, deleted: had }) + '\n')
      return had ? EXIT.OK : EXIT.NOT_FOUND
    },
  },
  {
    name: 'touch',
    args: 'KEY SECONDS',
    description: 'give KEY a new time to live from now',
    async run(ctx) {
      const key = arg(ctx, 0, 'KEY')
      const ttlMs = seconds(arg(ctx, 1, 'SECONDS'), 'SECONDS')!
      noMoreArgs(ctx, 2)
      const ok = await (await ctx.client()).touch(key, ttlMs)
      if (ctx.json) ctx.out(JSON.stringify({ key, touched: ok }) + '\n')
      return ok ? EXIT.OK : EXIT.NOT_FOUND
    },
  },
  {
    name: 'stats',
    args: '',
    description: "show the daemon's counters and gauges",
    async run(ctx) {
      noMoreArgs(ctx, 0)
      const s = await (await ctx.client()).stats()
      ctx.out(ctx.json ? JSON.stringify(s) + '\n' : formatStats(s).join('\n') + '\n')
      return EXIT.OK
    },
  },
  {
    name: 'peers',
    args: '',
    description: 'list the cluster members this daemon sees',
    async run(ctx) {
      noMoreArgs(ctx, 0)
      const peers = await (await ctx.client()).peers()
      if (ctx.json) ctx.out(JSON.stringify(peers) + '\n')
      else if (peers.length === 0) ctx.out('no peers\n')
      else {
        // Columns in order of first appearance (dual-stack members add otherAddress).
        const cols = [...new Set(peers.flatMap((p) => Object.keys(p)))]
        const rows = [cols, ...peers.map((p) => cols.map((c) => String(p[c] ?? '')))]
        const w = cols.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
        ctx.out(
          rows
            .map((r) =>
              r
                .map((x, i) => x.padEnd(w[i]!))
                .join('  ')
                .trimEnd(),
            )
            .join('\n') + '\n',
        )
      }
      return EXIT.OK
    },
  },
  {
    name: 'keys',
    args: '[--prefix P] [--limit N]',
    description: 'list stored keys with their remaining TTL (admin socket)',
    async run(ctx) {
      noMoreArgs(ctx, 0)
      const lim = ctx.flags['limit']
      if (lim !== undefined && (typeof lim !== 'string' || !/^\d+$/.test(lim))) throw new UsageError('--limit takes a whole number')
      const prefix = typeof ctx.flags['prefix'] === 'string' ? ctx.flags['prefix'] : ''
      const rows = await (await ctx.client()).keys({ prefix, limit: lim === undefined ? 1000 : Number(lim) })
      if (ctx.json)
        ctx.out(
          JSON.stringify(rows.map((r) => ({ key: printable(r.key).text, encoding: printable(r.key).encoding, ttlMs: r.ttlMs }))) + '\n',
        )
      else for (const r of rows) ctx.out(`${escapeControls(printable(r.key).text, true)}\t${Math.ceil(r.ttlMs / 1000)}s\n`)
      return EXIT.OK
    },
  },
  {
    name: 'flush',
    args: '[--yes]',
    description: 'delete every entry on this host (admin socket; asks first unless --yes)',
    async run(ctx) {
      noMoreArgs(ctx, 0)
      if (ctx.flags['yes'] !== true) {
        if (!process.stdin.isTTY) throw new UsageError('flush deletes every entry on this host: pass --yes to confirm')
        const rl = createInterface({ input: process.stdin, output: process.stderr })
        const answer = await rl.question('Delete every entry on this host? [y/N] ')
        rl.close()
        if (!/^y(es)?$/i.test(answer.trim())) {
          errOut('not flushed\n')
          return EXIT.USAGE
        }
      }
      const n = await (await ctx.client()).flush()
      ctx.out(ctx.json ? JSON.stringify({ flushed: n }) + '\n' : `flushed ${n} entries\n`)
      return EXIT.OK
    },
  },
  {
    name: 'watch',
    args: '[--interval S] [--count N]',
    description: 'a live view refreshed every second: rates, hit rate, remote fills, peers, memory',
    async run(ctx) {
      noMoreArgs(ctx, 0)
      const intervalMs = seconds(ctx.flags['interval'], '--interval') ?? 1000
      const countFlag = ctx.flags['count']
      if (countFlag !== undefined && (typeof countFlag !== 'string' || !/^\d+$/.test(countFlag)))
        throw new UsageError('--count takes a whole number')
      const count = countFlag === undefined ? Infinity : Number(countFlag)
      const client = await ctx.client()
      const history: number[] = []
      let prev = (await client.stats()) as Stats
      let prevAt = performance.now()
      let stop = false
      process.once('SIGINT', () => (stop = true))
      for (let i = 0; i < count && !stop; i++) {
        await new Promise((r) => setTimeout(r, intervalMs))
        const now = (await client.stats()) as Stats
        const at = performance.now()
        const screen = renderWatch(prev, now, (at - prevAt) / 1000, history, client.socketPath)
        // Our own clear-screen goes around ctx.out, which escapes every control character.
        if (process.stdout.isTTY) process.stdout.write('\x1b[H\x1b[2J')
        ctx.out(screen + '\n')
        prev = now
        prevAt = at
      }
      return EXIT.OK
    },
  },
  {
    name: 'tickets',
    args: '[export --format nginx|haproxy|apache|h2o --dir DIR [--name N] [--group G] [--allow-persistent-disk]]',
    description: "ticket keys: each consumer's key names, epochs and last delivery; export writes the current window once (admin socket)",
    async run(ctx) {
      if (ctx.args[0] === 'export') {
        noMoreArgs(ctx, 1)
        const format = ctx.flags['format']
        if (typeof format !== 'string' || !(TICKET_FORMATS as readonly string[]).includes(format))
          throw new UsageError(`--format takes one of ${TICKET_FORMATS.join(', ')}`)
        const dir = ctx.flags['dir']
        if (typeof dir !== 'string' || !path.isAbsolute(dir)) throw new UsageError('--dir takes an absolute directory path')
        const name = typeof ctx.flags['name'] === 'string' ? ctx.flags['name'] : format
        const group = typeof ctx.flags['group'] === 'string' ? ctx.flags['group'] : ''
        if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) throw new UsageError("--name takes 1 to 64 letters, digits, '.', '_' or '-'")
        // Derived in the daemon: the epoch secret never leaves it.
        const w = await (await ctx.client()).consumerKeys(format, name)
        if (!w) {
          errOut('statecast tickets: the daemon has no ticket key yet (it agrees one with the cluster shortly after start)\n')
          return EXIT.NOT_FOUND
        }
        const slot = (i: number) => {
          const k = w.keys.find((x) => x.slot === i)
          return k && { epoch: k.epoch, name: k.name, aes: k.aes, hmac: k.hmac, real: k.real }
        }
        const [previous, current, next] = [slot(0), slot(1), slot(2)]
        const wipe = () => w.keys.forEach((k) => [k.name, k.aes, k.hmac].forEach((b) => b.fill(0)))
        if (!previous || !current || !next || current.epoch !== w.epoch) {
          wipe()
          errOut('statecast tickets: the daemon holds no key for the current epoch yet\n')
          return EXIT.NOT_FOUND
        }
        let files: string[]
        let keys: { epoch: number; name: string }[]
        try {
          // The same checks as the daemon's own deliveries (prepareDir): owner, mode, setgid, symlinks, tmpfs.
          const written = writeConsumerFiles(
            { name, format: format as TicketFormat, dir, group, allowPersistentDisk: ctx.flags['allow-persistent-disk'] === true },
            { rotationMs: w.rotationMs, previous, current, next },
          )
          files = written.files.map((f) => path.join(dir, f.name))
          // Key names are public (every ticket carries its key's name); the keys are not.
          keys = written.keys.map((k) => ({ epoch: k.epoch, name: k.name.toString('hex') }))
          wipeRendered(written)
        } catch (err) {
          errOut(`statecast tickets: ${(err as Error).message}\n`)
          return EXIT.REFUSED
        } finally {
          wipe()
        }
        ctx.out(ctx.json ? JSON.stringify({ format, name, dir, files, keys }) + '\n' : files.map((f) => `wrote ${f}`).join('\n') + '\n')
        return EXIT.OK
      }
      noMoreArgs(ctx, 0)
      const s = (await (await ctx.client()).stats()) as {
        tickets?: {
          epoch: number | null
          rotationMs: number
          consumers: {
            name: string
            format: string
            dir: string
            notify: string
            keys: { epoch: number; name: string; role: string }[]
            deliveries: number
            failures: number
            lastDelivery: { at: string; ok: boolean; error?: string } | null
          }[]
        }
      }
      const t = s.tickets
      if (ctx.json) {
        ctx.out(JSON.stringify(t ?? null) + '\n')
        return EXIT.OK
      }
      if (!t) {
        ctx.out('this daemon does not report ticket keys\n')
        return EXIT.OK
      }
      ctx.out(`epoch ${t.epoch ?? '-'} (every ${Math.round(t.rotationMs / 1000)} s)\n`)
      if (t.consumers.length === 0) ctx.out('no ticket consumers configured (ticketConsumers)\n')
      for (const c of t.consumers) {
        const last = c.lastDelivery
          ? `${c.lastDelivery.ok ? 'ok' : 'FAILED'} at ${c.lastDelivery.at}${c.lastDelivery.error ? `: ${c.lastDelivery.error}` : ''}`
          : 'not yet'
        ctx.out(`${c.name} (${c.format}, ${c.notify}) ${c.dir}\n  last delivery ${last}; ${c.deliveries} delivered, ${c.failures} failed\n`)
        for (const k of c.keys) ctx.out(`  ${k.role.padEnd(8)} epoch ${k.epoch}  name ${k.name}\n`)
      }
      return EXIT.OK
    },
  },
  {
    name: 'check-config',
    args: 'FILE',
    description: 'validate a statecastd config file (exit 0 valid, 2 invalid)',
    async run(ctx) {
      const file = arg(ctx, 0, 'FILE')
      noMoreArgs(ctx, 1)
      const daemon = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'daemon', 'main.js')
      const r = spawnSync(process.execPath, [daemon, '--check-config', file], { encoding: 'utf8' })
      ctx.out(r.stdout ?? '')
      errOut((r.stderr ?? '').replace(/^statecastd: /gm, 'statecast check-config: '))
      return r.status === 0 ? EXIT.OK : EXIT.USAGE
    },
  },
  {
    name: 'keygen',
    args: '[--activate-in SECONDS]',
    description: "print a new cluster key file (add its line to every host's key file to rotate)",
    async run(ctx) {
      noMoreArgs(ctx, 0)
      const delayMs = seconds(ctx.flags['activate-in'], '--activate-in') ?? 0
      const key = newClusterKey(Math.floor((Date.now() + delayMs) / 1000))
      ctx.out(
        ctx.json
          ? JSON.stringify({ id: key.id.toString(16).padStart(8, '0'), createdAt: key.createdAt, line: formatKey(key) }) + '\n'
          : formatKeyFile([key]),
      )
      return EXIT.OK
    },
  },
  {
    name: 'ping',
    args: '',
    description: 'check that the daemon answers, and how fast',
    async run(ctx) {
      noMoreArgs(ctx, 0)
      const ms = await (await ctx.client()).ping()
      ctx.out(ctx.json ? JSON.stringify({ ok: true, rttMs: ms }) + '\n' : `pong in ${ms.toFixed(3)} ms\n`)
      return EXIT.OK
    },
  },
]

type Stats = {
  uptimeMs: number
  store: {
    entries: number
    bytes: number
    maxBytes: number
    hits: number
    misses: number
    sets: number
    evictions: number
    expirations: number
  }
  cluster: null | {
    members: number
    lookups: number
    remoteHits: number
    remoteMisses: number
    timeouts: number
    copiesPushed: number
    replicationPending: number
    dropped: Record<string, number>
  }
  process: { rssBytes: number }
}

const SPARKS = '▁▂▃▄▅▆▇█'
const mib = (b: number) => `${(b / 1048576).toFixed(1)} MiB`

/** One screen of `statecast watch`: rates over the last interval and a history of GETs/s. */
export function renderWatch(a: Stats, b: Stats, secs: number, history: number[], socket: string): string {
  const rate = (x: number, y: number) => (y - x) / secs
  const gets = rate(a.store.hits + a.store.misses, b.store.hits + b.store.misses)
  const hits = rate(a.store.hits, b.store.hits)
  history.push(gets)
  if (history.length > 40) history.shift()
  const max = Math.max(1, ...history)
  const spark = history.map((v) => SPARKS[Math.min(7, Math.floor((v / max) * 7.999))]).join('')
  const c = b.cluster
  const ca = a.cluster
  const lines = [
    `statecast watch  ${socket}  up ${Math.floor(b.uptimeMs / 1000)}s  (Ctrl-C to quit)`,
    '',
    `GET/s        ${gets.toFixed(0).padStart(8)}   local hit rate ${gets ? ((100 * hits) / gets).toFixed(1) : '  - '}%`,
    `stored/s     ${rate(a.store.sets, b.store.sets).toFixed(0).padStart(8)}   (SETs, copies from peers and remote fills)`,
    `GET/s, last ${history.length}s  ${spark}  (max ${max.toFixed(0)})`,
    '',
  ]
  if (c && ca) {
    lines.push(
      `remote fills/s ${rate(ca.remoteHits, c.remoteHits).toFixed(0).padStart(6)}   lookups/s ${rate(ca.lookups, c.lookups).toFixed(0)}   not found/s ${rate(ca.remoteMisses + ca.timeouts, c.remoteMisses + c.timeouts).toFixed(0)}   timeouts ${c.timeouts}`,
      `peers        ${String(c.members).padStart(8)}   copies pushed/s ${rate(ca.copiesPushed, c.copiesPushed).toFixed(0)}   pending ${c.replicationPending}`,
      `dropped      ${
        Object.entries(c.dropped)
          .filter(([, v]) => v > 0)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ') || 'none'
      }`,
    )
  } else lines.push('cluster      off')
  lines.push(
    '',
    `sessions     ${String(b.store.entries).padStart(8)}   store ${mib(b.store.bytes)} of ${mib(b.store.maxBytes)} (${((100 * b.store.bytes) / b.store.maxBytes).toFixed(1)}%)`,
    `evictions    ${String(b.store.evictions).padStart(8)}   expirations ${b.store.expirations}   daemon RSS ${mib(b.process.rssBytes)}`,
  )
  return lines.join('\n')
}

function usage(): string {
  const w = Math.max(...COMMANDS.map((c) => `${c.name} ${c.args}`.length))
  return [
    'Usage: statecast [--socket PATH] [--json] [--timeout MS] COMMAND [ARGS]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${`${c.name} ${c.args}`.padEnd(w)}  ${c.description}`),
    '',
    'Options:',
    `  --socket PATH   daemon socket (default: $STATECAST_ADMIN_SOCKET or ${defaultAdminSocketPath(process.env, uid, os.tmpdir())})`,
    '  --json          machine-readable output',
    '  --timeout MS    request deadline (default 2000)',
    '  --local         get: this host only, do not ask peers',
    '  --file F        set: read the value from file F (else from stdin)',
    '',
    'Secrets (session values) go in through stdin or --file: an argument on the command line is',
    'visible to every local user in /proc/PID/cmdline while the command runs.',
    '',
    'Exit codes: 0 done, 1 not found, 2 usage error, 3 daemon unreachable, 4 daemon refused.',
  ].join('\n')
}

/**
 * The default admin socket, if its directory is this user's default one and private: a directory
 * another user created first could hold their socket, which would receive our requests (values
 * included). A path given with --socket or STATECAST_ADMIN_SOCKET is the caller's choice.
 */
function privateDefault(socketPath: string): string {
  const dir = path.dirname(socketPath)
  if (!process.env['STATECAST_ADMIN_SOCKET'] && isUserDefaultDir(dir) && fs.existsSync(dir)) checkPrivateDir(dir)
  return socketPath
}

export async function main(argv: string[]): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        socket: { type: 'string' },
        json: { type: 'boolean' },
        timeout: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        ttl: { type: 'string' },
        file: { type: 'string' },
        prefix: { type: 'string' },
        limit: { type: 'string' },
        yes: { type: 'boolean', short: 'y' },
        local: { type: 'boolean' },
        'activate-in': { type: 'string' },
        interval: { type: 'string' },
        count: { type: 'string' },
        format: { type: 'string' },
        dir: { type: 'string' },
        name: { type: 'string' },
        group: { type: 'string' },
        'allow-persistent-disk': { type: 'boolean' },
      },
    })
  } catch (err) {
    errOut(`statecast: ${(err as Error).message}\n\n${usage()}\n`)
    return EXIT.USAGE
  }
  const { values, positionals } = parsed
  const [name, ...args] = positionals
  if (values.help || name === 'help' || name === undefined) {
    ;(name === undefined && !values.help ? process.stderr : process.stdout).write(usage() + '\n')
    return name === undefined && !values.help ? EXIT.USAGE : EXIT.OK
  }
  const cmd = COMMANDS.find((c) => c.name === name)
  if (!cmd) {
    errOut(`statecast: unknown command ${JSON.stringify(name)}\n\n${usage()}\n`)
    return EXIT.USAGE
  }
  const timeout = values.timeout
  if (timeout !== undefined && !/^\d+$/.test(timeout)) {
    errOut('statecast: --timeout takes a whole number of ms\n')
    return EXIT.USAGE
  }
  let client: StatecastClient | undefined
  const ctx: Ctx = {
    args,
    flags: values,
    json: values.json === true,
    out: (s) => process.stdout.write(values.json === true ? s : escapeControls(s)),
    client: async () =>
      (client ??= await StatecastClient.connect({
        socketPath: values.socket ?? privateDefault(defaultAdminSocketPath(process.env, uid, os.tmpdir())),
        timeoutMs: timeout === undefined ? 2000 : Number(timeout),
        reconnect: false,
      })),
  }
  try {
    return await cmd.run(ctx)
  } catch (err) {
    if (err instanceof UsageError) {
      errOut(`statecast ${cmd.name}: ${err.message}\nUsage: statecast ${cmd.name} ${cmd.args}\n`)
      return EXIT.USAGE
    }
    if (err instanceof UnixListenerError) {
      errOut(`statecast ${cmd.name}: refusing to connect: ${err.message}\n`)
      return EXIT.UNREACHABLE
    }
    if (err instanceof StatecastError) {
      errOut(`statecast ${cmd.name}: ${err.message}\n`)
      if (err.code === 'UNREACHABLE' || err.code === 'CONNECTION_LOST' || err.code === 'TIMEOUT') return EXIT.UNREACHABLE
      if (err.code === 'BAD_ARGUMENT') return EXIT.USAGE
      return EXIT.REFUSED
    }
    throw err
  } finally {
    client?.destroy()
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (err: unknown) => {
    errOut(`statecast: ${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  },
)
