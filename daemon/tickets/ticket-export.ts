/**
 * Hands the cluster's ticket keys to the TLS servers of this host: for each configured consumer,
 * its files (see ticket-formats.ts) in its directory, rewritten whenever the window of previous,
 * current and next secret changes (a new epoch, or a secret agreed for the next one), then the
 * server told: a reload command, HAProxy's admin socket, or nothing (h2o re-reads its file).
 *
 * Files go to tmpfs only (key material must not outlive the machine's power on a disk), unless
 * the consumer allows persistent disk explicitly; each is written to a temporary name, fsynced,
 * given mode 0640 and the consumer's group, renamed over the old one, and the directory fsynced.
 * Buffers holding keys are zeroed once written. Nothing here logs key bytes or a server's output.
 */
import { execFile } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import type { Log } from '../host/log.js'
import { StatecastError, type CodeOf } from '../../protocol/errors.js'
import type { TicketKeys, TicketWindow } from '../cluster/ticket-keys.js'
import { resolveGroup, type TicketConsumer } from '../config/ticket-consumers.js'
import {
  deriveWindow,
  render,
  unsafePathReason,
  wipeRendered,
  wipeWindow,
  type KeyWindow,
  type Rendered,
  type SecretWindow,
  type TicketFormat,
} from './ticket-formats.js'

export class TicketExportError extends StatecastError<CodeOf<'TicketExportError'>> {
  constructor(code: CodeOf<'TicketExportError'>, message: string) {
    super(code, message)
    this.name = 'TicketExportError'
  }
}

/** Where a consumer's files go. */
export function consumerDir(c: Pick<TicketConsumer, 'dir' | 'name'>, ticketDir: string): string {
  return c.dir || path.join(ticketDir, c.name)
}

const TMPFS_MAGIC = 0x01021994
const RAMFS_MAGIC = 0x858458f6

/** Mode bits: sticky, setgid. */
const S_ISVTX = 0o1000
const S_ISGID = 0o2000

const myUid = (): number => process.getuid?.() ?? 0
const myGid = (): number => process.getegid?.() ?? 0

/**
 * Whether a directory we pass through (not the consumer's own) is safe: a real directory of root
 * or ours, writable by nobody else unless sticky (then nobody else can replace what is in it that
 * is not theirs, and what is theirs we refuse below).
 */
function trustedParent(st: fs.Stats): boolean {
  if (st.uid !== 0 && st.uid !== myUid()) return false
  return (st.mode & 0o022) === 0 || (st.mode & S_ISVTX) !== 0
}

/** Most symlinks followed in one path (each must belong to root or us, in a trusted directory). */
const MAX_LINKS = 8

/**
 * Walks `dir`'s parents from '/': each existing one must be trusted (trustedParent), a symlink
 * only when root or we own it and its directory is trusted (then its target is walked the same
 * way); missing ones are made (0755: servers must pass through) and checked as found. Returns
 * the real path of the parent.
 */
function safeParent(dir: string, links = 0): string {
  const parts = path
    .dirname(dir)
    .split('/')
    .filter((x) => x.length > 0)
  let at = '/'
  for (let i = 0; i < parts.length; i++) {
    const next = path.join(at, parts[i]!)
    let st = fs.lstatSync(next, { throwIfNoEntry: false })
    if (!st) {
      try {
        fs.mkdirSync(next, { mode: 0o755 })
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      st = fs.lstatSync(next)
    }
    if (st.isSymbolicLink()) {
      if ((st.uid !== 0 && st.uid !== myUid()) || links >= MAX_LINKS)
        throw new TicketExportError(
          'UNSAFE_DIR',
          `${next} is a symlink of uid ${st.uid}: a ticket directory's path may pass only through symlinks of root or this daemon`,
        )
      // Its target is walked like the rest, from '/', itself included.
      at = safeParent(path.join(path.resolve(at, fs.readlinkSync(next)), 'x'), links + 1)
      continue
    }
    if (!st.isDirectory()) throw new TicketExportError('UNSAFE_DIR', `${next} is not a directory`)
    if (!trustedParent(st))
      throw new TicketExportError(
        'UNSAFE_DIR',
        `${next} belongs to uid ${st.uid} with mode 0${(st.mode & 0o7777).toString(8)}: a ticket directory's parents must belong to root or this daemon and be writable by no one else (or sticky)`,
      )
    at = next
  }
  return at
}

/** A consumer's directory, opened: files are made, replaced and removed through it only. */
export interface OpenDir {
  readonly path: string
  readonly fd: number
  /** The path of `name` inside the opened directory, whatever happens to `path` meanwhile. */
  at(name: string): string
  close(): void
}

/**
 * Opens a consumer's directory as carefully as the socket directory (unix-listener.ts): its
 * parents walked from '/' (safeParent: no symlink of anyone but root or us, no directory others
 * may write), the directory itself made (0750) if missing, then opened with O_NOFOLLOW and
 * O_DIRECTORY and checked on the descriptor: a directory of ours, writable by no one else,
 * setgid only to the consumer's group, on tmpfs unless allowed. Only then is it given the
 * consumer's group and mode 0750, through the descriptor (fchown, fchmod: no path to swap).
 * Files are written through /proc/self/fd/N/..., the directory the descriptor holds, so a
 * rename of the path meanwhile cannot send them elsewhere.
 *
 * Residual race: none from other users, since every directory on the way is writable by root or
 * us only; a process of our own uid (or root) could still swap the path, and could anyway read
 * the keys.
 */
export function prepareDir(dir: string, gid: number | undefined, allowPersistentDisk: boolean): OpenDir {
  if (!path.isAbsolute(dir)) throw new TicketExportError('UNSAFE_DIR', `${dir}: a ticket directory must be an absolute path`)
  const bad = unsafePathReason(dir)
  if (bad) throw new TicketExportError('UNSAFE_DIR', `ticket directory ${bad}`)
  let fd: number
  let real: string
  try {
    real = path.join(safeParent(dir), path.basename(dir))
    try {
      fs.mkdirSync(real, { mode: 0o750 })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    if (fs.lstatSync(real).isSymbolicLink())
      throw new TicketExportError(
        'UNSAFE_DIR',
        `cannot prepare ${dir}: it is a symlink; a ticket directory is used only as the daemon made it`,
      )
    fd = fs.openSync(real, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW)
  } catch (err) {
    if (err instanceof TicketExportError) throw err
    const e = err as NodeJS.ErrnoException
    // O_NOFOLLOW on a symlink: ELOOP; O_DIRECTORY on anything else: ENOTDIR.
    const why = e.code === 'ELOOP' ? 'it is a symlink' : e.code === 'ENOTDIR' ? 'it is not a directory' : (e.code ?? e.message)
    throw new TicketExportError(e.code === 'ELOOP' || e.code === 'ENOTDIR' ? 'UNSAFE_DIR' : 'DIR', `cannot prepare ${dir}: ${why}`)
  }
  try {
    const st = fs.fstatSync(fd)
    const want = gid ?? myGid()
    const fix = `remove it (or have its owner remove it) and let statecastd make it`
    if (st.uid !== myUid())
      throw new TicketExportError(
        'UNSAFE_DIR',
        `ticket directory ${dir} belongs to uid ${st.uid}, not to this daemon (uid ${myUid()}): ${fix}`,
      )
    if ((st.mode & 0o022) !== 0)
      throw new TicketExportError(
        'UNSAFE_DIR',
        `ticket directory ${dir} has mode 0${(st.mode & 0o7777).toString(8)}: others could replace the key files in it: ${fix}`,
      )
    if ((st.mode & S_ISGID) !== 0 && st.gid !== want)
      throw new TicketExportError(
        'UNSAFE_DIR',
        `ticket directory ${dir} is setgid to group ${st.gid}, not the consumer's (${want}): files made in it would belong to that group: ${fix}`,
      )
    const type = fs.statfsSync(`/proc/self/fd/${fd}`).type
    if (type !== TMPFS_MAGIC && type !== RAMFS_MAGIC && !allowPersistentDisk) {
      throw new TicketExportError(
        'NOT_TMPFS',
        `${dir} is not on tmpfs (filesystem type 0x${type.toString(16)}): ticket keys must not be written to persistent disk; use a directory under /run (or /dev/shm), or set allowPersistentDisk = true for this consumer`,
      )
    }
    // Parents hold no secrets and must be traversable by the server's user (h2o reads its file
    // after dropping root); the consumer's own directory is its group's only.
    if (gid !== undefined && st.gid !== gid) fs.fchownSync(fd, myUid(), gid)
    if ((st.mode & 0o7777) !== 0o750) fs.fchmodSync(fd, 0o750)
  } catch (err) {
    fs.closeSync(fd)
    if (err instanceof TicketExportError) throw err
    throw new TicketExportError('DIR', `cannot prepare ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  let closed = false
  return {
    path: dir,
    fd,
    at: (name) => `/proc/self/fd/${fd}/${name}`,
    close: () => {
      if (closed) return
      closed = true
      fs.closeSync(fd)
    },
  }
}

/** Writes one file atomically: temporary name, fsync, mode and group, rename, directory fsync. */
export function writeAtomic(d: OpenDir, name: string, data: Buffer, gid: number | undefined, mtimeSec?: number): void {
  const tmp = `.${name}.${crypto.randomBytes(6).toString('hex')}.tmp`
  const fd = fs.openSync(d.at(tmp), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600)
  try {
    fs.writeSync(fd, data)
    if (gid !== undefined) fs.fchownSync(fd, myUid(), gid)
    fs.fchmodSync(fd, 0o640)
    if (mtimeSec !== undefined) fs.futimesSync(fd, mtimeSec, mtimeSec)
    fs.fsyncSync(fd)
  } catch (err) {
    fs.closeSync(fd)
    fs.rmSync(d.at(tmp), { force: true })
    throw err
  }
  fs.closeSync(fd)
  fs.renameSync(d.at(tmp), d.at(name))
  fs.fsyncSync(d.fd)
}

/** The secrets of a window, for deriving; undefined while the current one is unknown. */
export function secretWindow(w: TicketWindow, rotationMs: number): SecretWindow | undefined {
  if (!w.current) return undefined
  const es = (k: TicketWindow['current']) => (k ? { epoch: k.epoch, secret: k.key } : undefined)
  return { rotationMs, previous: es(w.previous), current: es(w.current)!, next: es(w.next) }
}

/**
 * Writes a consumer's files for the keys `w`; removes its files that left the window (nginx's
 * per-epoch files). Returns what was written; the caller wipes it (and `w`).
 */
export function writeConsumerFiles(
  c: Pick<TicketConsumer, 'name' | 'format' | 'dir' | 'group' | 'allowPersistentDisk'>,
  w: KeyWindow,
): Rendered {
  const gid = c.group ? resolveGroup(c.group, `consumer ${c.name}: group`) : undefined
  const d = prepareDir(c.dir, gid, c.allowPersistentDisk)
  const r = render(c.format, c.dir, w)
  try {
    // h2o notices a change by mtime in whole seconds: a second write within the same second as
    // the first would go unseen, so the mtime always moves forward by at least one second.
    let mtime: number | undefined
    if (c.format === 'h2o') {
      const prev = fs.lstatSync(d.at('tickets.yaml'), { throwIfNoEntry: false })
      const now = Math.floor(Date.now() / 1000)
      mtime = prev ? Math.max(now, Math.floor(prev.mtimeMs / 1000) + 1) : now
    }
    // nginx: the key files before keys.conf, which names them.
    for (const f of r.files) writeAtomic(d, f.name, f.data, gid, mtime)
    if (c.format === 'nginx') {
      const keep = new Set(r.files.map((f) => f.name))
      for (const f of fs.readdirSync(d.at(''))) if (/^\d+\.key$/.test(f) && !keep.has(f)) fs.rmSync(d.at(f), { force: true })
    }
  } catch (err) {
    wipeRendered(r)
    if (err instanceof TicketExportError) throw err
    throw new TicketExportError(
      'WRITE',
      `cannot write the ticket keys of consumer ${c.name} in ${c.dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    )
  } finally {
    d.close()
  }
  return r
}

/** The file HAProxy's `tls-ticket-keys` names for a consumer. */
export function haproxyFile(c: Pick<TicketConsumer, 'dir'>): string {
  return path.join(c.dir, 'tls-ticket-keys')
}

/** One command on HAProxy's admin socket (non-interactive: one command per connection). */
function haproxyCommand(socketPath: string, command: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath)
    let out = ''
    const timer = setTimeout(
      () => s.destroy(new TicketExportError('TIMEOUT', `HAProxy's admin socket ${socketPath} did not answer within ${timeoutMs} ms`)),
      timeoutMs,
    )
    s.setEncoding('utf8')
    s.on('connect', () => s.end(command + '\n'))
    s.on('data', (d: string) => (out += d))
    s.on('error', (err) => {
      clearTimeout(timer)
      reject(
        err instanceof TicketExportError
          ? err
          : new TicketExportError(
              'ADMIN_SOCKET',
              `HAProxy's admin socket ${socketPath}: ${(err as NodeJS.ErrnoException).code ?? err.message}`,
            ),
      )
    })
    s.on('close', () => {
      clearTimeout(timer)
      resolve(out)
    })
  })
}

/** HAProxy's ring for `file` as `show tls-keys` dumps it: previous, encrypting, next (base64). */
async function haproxyRing(socketPath: string, file: string, timeoutMs: number): Promise<string[]> {
  const out = await haproxyCommand(socketPath, `show tls-keys ${file}`, timeoutMs)
  const ring = [...out.matchAll(/^\d+\.(\d+) (\S+)$/gm)].sort((a, b) => Number(a[1]) - Number(b[1])).map((m) => m[2]!)
  if (ring.length !== 3) {
    // The answer may hold keys of other files: say only what kind of answer it was.
    throw new TicketExportError(
      'ADMIN_SOCKET',
      `HAProxy's admin socket ${socketPath} did not list three keys for ${file} (is it the file named by tls-ticket-keys, and the socket at level admin?)`,
    )
  }
  return ring
}

/**
 * Brings HAProxy's ring for `file` to `want` (previous, current, next) with `set ssl tls-key`,
 * each of which drops the oldest key and makes the next one encrypt. The ring is read before each
 * step, so a retry after a lost answer never advances it twice. Returns how many keys were set.
 */
export async function syncHaproxy(socketPath: string, file: string, want: string[], timeoutMs: number): Promise<number> {
  // The path travels in a command line: a space or newline in it would be a second argument or
  // a second command. prepareDir refuses such paths; this keeps it so for any caller.
  const bad = unsafePathReason(file)
  if (bad) throw new TicketExportError('UNSAFE_DIR', `not sent to HAProxy's admin socket: ${bad}`)
  let sets = 0
  for (let step = 0; step < 4; step++) {
    const have = await haproxyRing(socketPath, file, timeoutMs)
    if (have.every((k, i) => k === want[i])) return sets
    // Setting X turns [a, b, c] into [b, c, X]: push what is missing after the longest overlap.
    let push = want
    if (have[1] === want[0] && have[2] === want[1]) push = [want[2]!]
    else if (have[2] === want[0]) push = [want[1]!, want[2]!]
    const reply = await haproxyCommand(socketPath, `set ssl tls-key ${file} ${push[0]}`, timeoutMs)
    sets++
    if (!/updated/i.test(reply))
      throw new TicketExportError('ADMIN_SOCKET', `HAProxy refused the new ticket key for ${file} on ${socketPath}`)
  }
  throw new TicketExportError('ADMIN_SOCKET', `HAProxy's ring for ${file} did not reach the cluster's keys after 4 changes`)
}

/** Runs a reload command without a shell; resolves its exit status. Output is never logged. */
function runCommand(argv: string[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(argv[0]!, argv.slice(1), { timeout: timeoutMs, maxBuffer: 1 << 20 }, (err) => {
      if (!err) return resolve()
      const e = err as NodeJS.ErrnoException & { code?: string | number; signal?: string }
      const status = typeof e.code === 'number' ? `exit status ${e.code}` : e.signal ? `signal ${e.signal}` : String(e.code ?? 'failed')
      reject(new TicketExportError('RELOAD', `reload command ${JSON.stringify(argv[0])} failed: ${status}`))
    })
  })
}

export interface ConsumerStatus {
  name: string
  format: TicketFormat
  dir: string
  /** How the server learns of new keys. */
  notify: 'reload-command' | 'admin-socket' | 'file'
  /** Keys written, encrypting first: key name (hex, public: it travels in every ticket) and epoch. */
  keys: { epoch: number; name: string; role: 'current' | 'next' | 'previous' | 'filler' }[]
  deliveries: number
  failures: number
  lastDelivery: { at: string; ok: boolean; error?: string; code?: string } | null
}

export interface ExporterOptions {
  consumers: TicketConsumer[]
  tickets: () => TicketKeys | undefined
  log: Log
}

/** Keeps every consumer's files and server in step with the cluster's ticket window. */
export class TicketExporter {
  readonly #o: ExporterOptions
  readonly #status = new Map<string, ConsumerStatus>()
  /** Per consumer: the window signature delivered, and when a failed one may be retried. */
  readonly #delivered = new Map<string, string>()
  readonly #retryAt = new Map<string, number>()
  #busy = false
  #timer: NodeJS.Timeout | undefined
  #closed = false

  constructor(o: ExporterOptions) {
    this.#o = o
    for (const c of o.consumers) {
      this.#status.set(c.name, {
        name: c.name,
        format: c.format,
        dir: c.dir,
        notify: c.adminSocket ? 'admin-socket' : c.reloadCommand.length ? 'reload-command' : 'file',
        keys: [],
        deliveries: 0,
        failures: 0,
        lastDelivery: null,
      })
    }
  }

  start(): void {
    if (this.#o.consumers.length === 0) return
    const tick = () => {
      if (this.#closed) return
      void this.check().finally(() => {
        if (this.#closed) return
        // Often enough to follow an epoch boundary closely; the check itself is a string compare.
        const every = Math.min(1000, Math.max(50, (this.#o.tickets()?.rotationMs ?? 10_000) / 40))
        this.#timer = setTimeout(tick, every)
        this.#timer.unref()
      })
    }
    tick()
  }

  /** Writes and notifies every consumer whose delivered window is out of date. */
  async check(): Promise<void> {
    if (this.#busy) return
    const t = this.#o.tickets()
    if (!t) return
    this.#busy = true
    try {
      const w = t.window()
      const sig = signature(w)
      for (const c of this.#o.consumers) {
        if (this.#closed) return
        if (this.#delivered.get(c.name) === sig || Date.now() < (this.#retryAt.get(c.name) ?? 0)) continue
        const sw = secretWindow(w, t.rotationMs)
        if (!sw) continue
        await this.#deliver(c, sw, sig)
      }
    } finally {
      this.#busy = false
    }
  }

  async #deliver(c: TicketConsumer, w: SecretWindow, sig: string): Promise<void> {
    const st = this.#status.get(c.name)!
    let r: Rendered | undefined
    const kw = deriveWindow(c.format, c.name, w)
    try {
      r = writeConsumerFiles(c, kw)
      if (c.adminSocket) await syncHaproxy(c.adminSocket, haproxyFile(c), r.ring!, c.timeoutMs)
      else if (c.reloadCommand.length) await runCommand(c.reloadCommand, c.timeoutMs)
      st.keys = r.keys.map((k) => ({
        epoch: k.epoch,
        name: k.name.toString('hex'),
        role: !k.real ? 'filler' : k.epoch === w.current.epoch ? 'current' : k.epoch > w.current.epoch ? 'next' : 'previous',
      }))
      st.deliveries++
      st.lastDelivery = { at: new Date().toISOString(), ok: true }
      this.#delivered.set(c.name, sig)
      this.#retryAt.delete(c.name)
      this.#o.log.info({ consumer: c.name, format: c.format, epoch: w.current.epoch, notify: st.notify }, 'ticket keys delivered')
    } catch (err) {
      const e = err as Error & { code?: string }
      const code = err instanceof TicketExportError ? err.code : 'INTERNAL'
      st.failures++
      st.lastDelivery = { at: new Date().toISOString(), ok: false, error: e.message, code }
      this.#retryAt.set(c.name, Date.now() + Math.min(5000, c.timeoutMs))
      this.#o.log.warn({ consumer: c.name, format: c.format, code, err: e.message }, 'ticket keys not delivered; retrying')
    } finally {
      if (r) wipeRendered(r)
      wipeWindow(kw)
    }
  }

  status(): ConsumerStatus[] {
    return [...this.#status.values()].map((s) => ({ ...s, keys: [...s.keys] }))
  }

  close(): void {
    this.#closed = true
    clearTimeout(this.#timer)
  }
}

/** What identifies a window without its secrets: epochs and their makers. */
function signature(w: TicketWindow): string {
  return `${w.epoch}|${[w.previous, w.current, w.next].map((k) => (k ? `${k.epoch}/${k.creator.toString('hex')}` : '-')).join(',')}`
}
