/**
 * The one way the daemon listens on a Unix socket path (the API and admin sockets; the memcache
 * front end's socket listeners are to use it too): a private directory where the path is a
 * user's default, a stale-socket check that never displaces a live listener, the socket file
 * bound in a private directory and given its mode before it is linked into place, its owner checked, and on close the file
 * removed only if it is still the one this listener made.
 *
 *   const l = await UnixListener.listen(server, { path, mode: 0o660 })   // server: a net.Server
 *   ...
 *   l.close()   // unlinks the socket file if it is still ours; the caller closes the server
 */
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { StatecastError, type CodeOf } from '../../protocol/errors.js'
import { defaultRuntimeDir } from '../../protocol/paths.js'

export type UnixListenerErrorCode = CodeOf<'UnixListenerError'>

export class UnixListenerError extends StatecastError<UnixListenerErrorCode> {
  constructor(code: UnixListenerErrorCode, message: string) {
    super(code, message)
    this.name = 'UnixListenerError'
  }
}

/** How long the stale-socket probe waits for a connect to settle before it calls the path live, in ms. */
export const PROBE_TIMEOUT_MS = 2000

/** Longest Unix socket path Linux binds (sun_path is 108 bytes with its terminating zero). */
const MAX_SOCKET_PATH_BYTES = 107

const uid = (): number => (typeof process.getuid === 'function' ? process.getuid() : -1)

/**
 * Prepares `path` for a new listener. Only a definite "nobody listens here" (ECONNREFUSED on a
 * socket file) makes it stale and removes it. Anything else is treated as alive: on Linux a
 * listener whose backlog is full answers a non-blocking connect with EAGAIN, and a stopped or busy
 * one may not answer within the timeout; unlinking either would cut a running daemon off its path.
 * Anything that is not a socket is left alone and is an error.
 */
export async function clearStaleSocket(socketPath: string, probeMs = PROBE_TIMEOUT_MS): Promise<void> {
  let st: fs.Stats
  try {
    st = fs.lstatSync(socketPath)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw err
  }
  if (!st.isSocket()) throw new UnixListenerError('NOT_A_SOCKET', `${socketPath} exists and is not a socket; refusing to replace it`)
  const outcome = await new Promise<string>((resolve) => {
    const s = net.connect(socketPath)
    const timer = setTimeout(() => {
      s.destroy()
      resolve('no answer within ' + probeMs + ' ms')
    }, probeMs)
    s.once('connect', () => {
      clearTimeout(timer)
      s.destroy()
      resolve('alive')
    })
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      resolve(err.code ?? err.message)
    })
  })
  if (outcome === 'ENOENT') return
  if (outcome !== 'ECONNREFUSED') {
    const why = outcome === 'alive' ? 'it accepts connections' : `a connect did not prove it dead (${outcome})`
    throw new UnixListenerError('ADDRESS_IN_USE', `another process is serving on ${socketPath} (${why}); is statecastd already running?`)
  }
  // Remove only the file we probed, not one that replaced it meanwhile.
  const now = fs.lstatSync(socketPath, { throwIfNoEntry: false })
  if (now && now.ino === st.ino && now.dev === st.dev) fs.unlinkSync(socketPath)
}

/**
 * Makes sure `dir` is private to this user: created with mode 0700 if missing; refused if it is
 * not a directory (a symlink included), belongs to another user, or grants the group or others
 * any access. Used for a user's default runtime directory (`/tmp/statecast-UID`,
 * `$XDG_RUNTIME_DIR/statecast`), which another local user could otherwise create first and
 * fill with sockets of their own.
 */
export function ensurePrivateDir(dir: string, owner = uid()): void {
  try {
    fs.mkdirSync(dir, { mode: 0o700 })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
      throw new UnixListenerError('UNSAFE_DIRECTORY', `cannot create socket directory ${dir}: ${(err as Error).message}`)
  }
  checkPrivateDir(dir, owner)
}

/** Refuses `dir` unless it is a directory owned by `owner` with no group or other access. */
export function checkPrivateDir(dir: string, owner = uid()): void {
  const st = fs.lstatSync(dir, { throwIfNoEntry: false })
  if (!st) throw new UnixListenerError('UNSAFE_DIRECTORY', `socket directory ${dir} does not exist`)
  const fix = `remove it (or have its owner remove it) and start again; or set XDG_RUNTIME_DIR, or give --socket and --admin-socket in a directory of your own`
  if (!st.isDirectory())
    throw new UnixListenerError(
      'UNSAFE_DIRECTORY',
      `socket directory ${dir} is not a directory (a symlink or file); refusing to use it: ${fix}`,
    )
  if (st.uid !== owner)
    throw new UnixListenerError(
      'UNSAFE_DIRECTORY',
      `socket directory ${dir} belongs to uid ${st.uid}, not to this user (uid ${owner}); another user could replace the sockets in it: ${fix}`,
    )
  if ((st.mode & 0o077) !== 0)
    throw new UnixListenerError(
      'UNSAFE_DIRECTORY',
      `socket directory ${dir} has mode 0${(st.mode & 0o777).toString(8)}; it must grant no access to group or others (0700), or another user could replace the sockets in it: chmod 700 ${dir}`,
    )
}

/**
 * Whether `dir` is this user's default runtime directory (the one the paths in protocol/paths
 * pick when nothing is configured), which must be private. Root's /run/statecast is made by
 * systemd (RuntimeDirectory) or root and shared with the socket's group, so it is not.
 */
export function isUserDefaultDir(dir: string, env: NodeJS.ProcessEnv = process.env, owner = uid()): boolean {
  return owner !== 0 && path.resolve(dir) === path.resolve(defaultRuntimeDir(env, owner, os.tmpdir()))
}

/**
 * Creates the directory of a socket path: a user's default runtime directory private (see
 * ensurePrivateDir), any other directory as before (missing parents made with mode 0755).
 */
export function prepareSocketDir(socketPath: string): void {
  const dir = path.dirname(socketPath)
  if (isUserDefaultDir(dir)) {
    fs.mkdirSync(path.dirname(dir), { recursive: true, mode: 0o755 })
    ensurePrivateDir(dir)
  } else fs.mkdirSync(dir, { recursive: true, mode: 0o755 })
}

export interface UnixListenOptions {
  /** Filesystem path of the socket. */
  path: string
  /** Permission bits of the socket file, such as 0o660. */
  mode: number
  /** Listen backlog (connections the kernel queues before accept). Default: Node's (511). */
  backlog?: number
}

export class UnixListener {
  readonly path: string
  readonly #ino: number
  readonly #dev: number
  #closed = false

  private constructor(socketPath: string, st: fs.Stats) {
    this.path = socketPath
    this.#ino = st.ino
    this.#dev = st.dev
  }

  /**
   * Clears a stale socket at `options.path`, makes `server` listen there with the file never more
   * open than `options.mode`, and checks that the file is a socket owned by this user.
   */
  static async listen(server: net.Server, options: UnixListenOptions): Promise<UnixListener> {
    const { path: socketPath, mode } = options
    await clearStaleSocket(socketPath)
    // Bound in a private directory (0700, made here, in the socket's directory), given its mode
    // there, then hard-linked to the real path: nobody can reach the socket before it has its mode,
    // and the process umask is never touched (issue 21 point 11: narrowed across the await of the
    // bind, it made every file and directory created meanwhile, by any part of the daemon, as
    // narrow as the socket: consumer key directories came out 0640). link() never replaces an
    // existing file, so a listener that appeared meanwhile is never clobbered; and libuv, which
    // unlinks the name it bound when the server closes, removes only the private name, so closing
    // never removes a socket another process has put at the real path since.
    const dir = path.dirname(socketPath)
    let privateDir: string | undefined
    let bound = socketPath
    if (Buffer.byteLength(path.join(dir, '.sc-XXXXXX', 's')) <= MAX_SOCKET_PATH_BYTES) {
      try {
        privateDir = fs.mkdtempSync(path.join(dir, '.sc-'))
      } catch (err) {
        throw new UnixListenerError('LISTEN_FAILED', `cannot listen on ${socketPath}: ${(err as Error).message}`)
      }
      bound = path.join(privateDir, 's')
    }
    try {
      await new Promise<void>((resolve, reject) => {
        const onError = (err: NodeJS.ErrnoException) => {
          const inUse = err.code === 'EADDRINUSE'
          reject(
            new UnixListenerError(
              inUse ? 'ADDRESS_IN_USE' : 'LISTEN_FAILED',
              inUse ? `another process took ${socketPath} while this one was starting` : `cannot listen on ${socketPath}: ${err.message}`,
            ),
          )
        }
        server.once('error', onError)
        const listen = () =>
          server.listen({ path: bound, ...(options.backlog !== undefined ? { backlog: options.backlog } : {}) }, () => {
            server.off('error', onError)
            resolve()
          })
        if (privateDir !== undefined) listen()
        else {
          // A path too long for the private name is bound in place. Node binds a pipe inside
          // listen() itself, synchronously (net.js, setupListenHandle), so the umask is narrowed
          // for that call only and restored before anything else of this process runs: no await,
          // no callback, sees it. Only a file created by a libuv worker thread in that same
          // instant could.
          const oldMask = process.umask(~mode & 0o777)
          try {
            listen()
          } finally {
            process.umask(oldMask)
          }
        }
      })
      if (privateDir !== undefined) {
        fs.chmodSync(bound, mode)
        try {
          fs.linkSync(bound, socketPath)
        } catch (err) {
          server.close()
          const e = err as NodeJS.ErrnoException
          throw new UnixListenerError(
            e.code === 'EEXIST' ? 'ADDRESS_IN_USE' : 'LISTEN_FAILED',
            e.code === 'EEXIST'
              ? `another process took ${socketPath} while this one was starting`
              : `cannot listen on ${socketPath}: ${e.message}`,
          )
        }
      }
    } finally {
      if (privateDir !== undefined) fs.rmSync(privateDir, { recursive: true, force: true })
    }
    const st = fs.lstatSync(socketPath)
    const me = uid()
    if (!st.isSocket() || (me >= 0 && st.uid !== me)) {
      server.close()
      throw new UnixListenerError(
        'LISTEN_FAILED',
        `${socketPath} is not the socket this process made (replaced while starting?); refusing to serve on it`,
      )
    }
    fs.chmodSync(socketPath, mode)
    return new UnixListener(socketPath, st)
  }

  /** Removes the socket file if it is still the one this listener made. Idempotent. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    const st = fs.lstatSync(this.path, { throwIfNoEntry: false })
    if (st && st.ino === this.#ino && st.dev === this.#dev) {
      try {
        fs.unlinkSync(this.path)
      } catch {
        /* already gone */
      }
    }
  }
}
