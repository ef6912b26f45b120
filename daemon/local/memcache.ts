/**
 * A memcached text-protocol front end on the same store and cluster, for servers that already
 * keep their sessions in memcached (Apache mod_ssl's `SSLSessionCache memcache:`, OpenResty, PHP,
 * h2o, pymemcache, libmemcached).
 *
 * It answers as memcached 1.6 does (checked against memcached 1.6.18 by test/integration/memcache-diff.test.ts):
 * get/gets (any number of keys), gat/gats, set/add/replace/append/prepend, incr/decr, delete, touch,
 * flush_all (refused unless `memcacheFlushAll`), verbosity, version, quit, stats (general,
 * settings, items, slabs, sizes, reset), `noreply` on every command that takes it, lines ended by
 * `\r\n` or `\n`, keys of any bytes but space and newline up to `maxKeyBytes`. Exptime follows
 * memcached: 0 = no expiry (capped by `maxTtlMs`), up to 30 days = seconds from now, larger = an
 * absolute Unix time, negative or past = expired at once. `gets` reports each entry's version
 * (versions.ts) as its cas unique value, and `cas` stores only while the entry still has it: a
 * version is the same on every host that holds a copy, and any write, local or from a peer, makes
 * a new one.
 *
 * Every command runs in order when its turn to answer comes, so a command that waits for the
 * cluster (a get, or an incr of a key held by another host) never lets a later one overtake it.
 * Writes go through the store and the cluster's `stored`/`deleted` hooks, so incr/decr/append/
 * prepend replicate like a set.
 *
 * Memory per connection is bounded: the socket is not read while the replies not yet taken by the
 * client exceed MAX_UNSENT_REPLY_BYTES or MAX_QUEUED_COMMANDS commands wait for their turn; a
 * multi-get's reply is made key by key as the client takes it; a line is at most MAX_LINE_BYTES
 * (a get line MAX_GET_LINE_BYTES); nothing is read after `quit` or a fatal error. All connections
 * together hold at most `maxBufferedBytes` (plus a read each); a command must arrive whole within
 * `commandTimeoutMs`; a connection has at most MAX_CONNECTION_LOOKUPS remote lookups, the front
 * end `maxRemoteLookups`, so it never fills the daemon's lookup table. Copies of values made for
 * replies are zero-filled once written.
 *
 * No authentication, so TCP listeners are refused unless they are on a loopback address.
 */
import net from 'node:net'
import { UnixListener } from './unix-listener.js'
import type { ClusterHooks } from '../cluster/hooks.js'
import { parseListen } from '../config/listen.js'
import type { Config } from '../config/config.js'
import type { Log } from '../host/log.js'
import { StoreError, type SessionStore } from '../store/session-store.js'
import { CondKind, CondOutcome, SessionOps, type CondOp, type CondResult, type Done } from './session-ops.js'
import { setLongTimeout, type LongTimeout } from './long-timeout.js'
import { TENANT_MARKER } from '../../protocol/tenant-keys.js'

/** The memcached release whose text protocol this front end speaks; the start of its VERSION reply. */
export const MEMCACHED_PROTOCOL_VERSION = '1.6.18'
/**
 * memcached: a line with no newline in its first 2,048 bytes must be a multi-get, or the
 * connection is closed.
 */
export const MAX_LINE_BYTES = 2048
/**
 * Longest get/gets line, in bytes: 1,000 keys of 250 bytes fit (memcached has no fixed cap; its
 * clients send multi-gets of hundreds of keys). Longer: `CLIENT_ERROR line too long` and a hangup.
 */
export const MAX_GET_LINE_BYTES = 256 * 1024
/**
 * Reply bytes made but not yet taken by the client, per connection, above which no more replies
 * are made and the socket is not read (resumed on 'drain'). One reply may overshoot it by up to a
 * value (`maxValueBytes`).
 */
export const MAX_UNSENT_REPLY_BYTES = 256 * 1024
/** Commands read ahead of their turn to answer, per connection; beyond it the socket is not read. */
export const MAX_QUEUED_COMMANDS = 256
/** Keys a multi-get reads ahead of the one whose reply it is writing. */
const GET_LOOKAHEAD = 16
/**
 * Remote lookups one connection has started or queued at once (of its multi-get's read-ahead).
 * Together with the front end's share (`maxRemoteLookups`), 64 connections of multi-gets of
 * missing keys can no longer fill the daemon's lookup table, which API GETs need too.
 */
export const MAX_CONNECTION_LOOKUPS = 4
/** memcached: exptime above this many seconds is an absolute Unix time. */
const RELATIVE_LIMIT_S = 60 * 60 * 24 * 30
/** How long a connection that was hung up on may take to receive its last replies, in ms. */
const HANGUP_LINGER_MS = 2000
/** How long a refused connection may take to receive its error before it is destroyed, in ms. */
const REFUSED_LINGER_MS = 1000
const INPUT_INITIAL_BYTES = 16 * 1024
/** Over `maxBufferedBytes`, a connection holding no more than this may still be read and answered. */
const MIN_BUDGET_SHARE = 16 * 1024
/** Replies up to this size are copied into one buffer before writing. */
const COALESCE_BYTES = 64 * 1024

const CRLF = Buffer.from('\r\n')
const END = Buffer.from('END\r\n')
const STORED = 'STORED\r\n'
const NOT_STORED = 'NOT_STORED\r\n'
const NOT_FOUND = 'NOT_FOUND\r\n'
const ERROR = 'ERROR\r\n'
const BAD_FORMAT = 'CLIENT_ERROR bad command line format\r\n'
const BAD_EXPTIME = 'CLIENT_ERROR invalid exptime argument\r\n'

/**
 * The front end's config keys (unit and default: FIELDS in config/config.ts; the command timeout
 * does not run while a connection is not read), and its parts.
 */
export interface MemcacheOptions extends Pick<Config, 'memcacheListen' | 'memcacheMaxConnections' | 'memcacheIdleTimeoutMs' | 'memcacheCommandTimeoutMs' | 'memcacheMaxBufferedBytes' | 'memcacheFlushAll' | 'maxKeyBytes'> {
  /** statecast's own version, shown after the memcached protocol version and in `stats`. */
  version: string
  store: SessionStore
  cluster: () => ClusterHooks | undefined
  /**
   * Remote lookups the whole front end has in flight at once; more wait their turn in order (never
   * answered "not found" for want of room). The daemon gives it a quarter of `maxInflightLookups`.
   */
  maxRemoteLookups: number
  log: Log
  /** Wall clock in ms, for absolute exptimes. */
  now?: () => number
  /** Permission bits of the front end's socket files. Default 0o660. */
  socketMode?: number
  /** Refuse keys starting with the tenant marker (a daemon with tenants: they name another tenant's). */
  refuseMarker?: boolean
}

export interface MemcacheCounters {
  connections: number
  commands: number
  getHits: number
  getMisses: number
  remoteHits: number
  errors: number
  /** Connections refused because their listener was at `memcacheMaxConnections`. */
  refused: number
  /** Connections closed by the idle timeout. */
  idleClosed: number
  /** Connections closed because a command line or data block did not arrive whole within `commandTimeoutMs`. */
  commandTimeouts: number
  /** Times a connection's socket stopped being read because its replies were not taken. */
  paused: number
  /** Connections not read right now, for that reason. */
  readingPaused: number
  /** Connections whose unsent replies exceed the bound right now: the daemon waits for the client to read. */
  waitingForClient: number
  /** Bytes all connections hold right now (input, read-ahead, unsent replies), against `maxBufferedBytes`. */
  bufferedBytes: number
  /** Times a connection stopped being read and answered because the front end was over `maxBufferedBytes`. */
  overBudget: number
  /** Remote lookups of the front end in flight right now (at most its share, `maxRemoteLookups`). */
  remoteLookups: number
  /** Remote lookups waiting for the front end's share right now. */
  lookupsWaiting: number
  /** Times a remote lookup had to wait for the front end's share. */
  lookupsQueued: number
}

/**
 * Decimal digits a 64-bit number can have, leading zeros aside (2^64 - 1 has 20). Longer runs are
 * refused before BigInt reads them: BigInt's parse grows with the square of the length, so a
 * 65,536-digit value or argument cost milliseconds per command and stalled the event loop.
 */
const MAX_U64_DIGITS = 20

/** The digits of a decimal run without its leading zeros, or undefined when it has more than 64 bits could hold. */
function shortDigits(run: string): string | undefined {
  let i = 0
  while (i < run.length - 1 && run.charCodeAt(i) === 48) i++
  return run.length - i > MAX_U64_DIGITS ? undefined : run.slice(i)
}

/**
 * memcached's `safe_strtol` into an int32: a decimal that fits a 64-bit long, then truncated to
 * 32 bits as memcached's assignment does. Undefined where memcached refuses the token.
 */
export function memcachedInt32(tok: string): number | undefined {
  const m = /^([+-]?)(\d+)$/.exec(tok)
  if (!m) return undefined
  const d = shortDigits(m[2]!)
  if (d === undefined) return undefined
  const n = BigInt(m[1] === '-' ? `-${d}` : d)
  if (n > 0x7fffffffffffffffn || n < -0x8000000000000000n) return undefined
  return Number(BigInt.asIntN(32, n))
}

/** memcached's `safe_strtoull`: an unsigned decimal that fits 64 bits. */
export function memcachedUint64(tok: string): bigint | undefined {
  const m = /^\+?(\d+)$/.exec(tok)
  if (!m) return undefined
  const d = shortDigits(m[1]!)
  if (d === undefined) return undefined
  const n = BigInt(d)
  return n > 0xffffffffffffffffn ? undefined : n
}

/** memcached's `safe_strtoul` into the 32-bit client flags. */
function memcachedFlags(tok: string): number | undefined {
  const n = memcachedUint64(tok)
  return n === undefined ? undefined : Number(BigInt.asUintN(32, n))
}

/**
 * Unread input. Chunks are copied into one buffer that grows by doubling and is compacted in
 * place, so a long line arriving in many small reads costs linear, not quadratic, copying.
 */
class InputBuffer {
  // Allocated on first use: an idle connection holds no input buffer.
  #b = Buffer.alloc(0)
  #start = 0
  #end = 0

  get length(): number {
    return this.#end - this.#start
  }

  /** Memory held for unread input, in bytes: the buffer's size while it holds any. */
  get held(): number {
    return this.#end > this.#start ? this.#b.length : 0
  }

  view(): Buffer {
    return this.#b.subarray(this.#start, this.#end)
  }

  append(chunk: Buffer): void {
    const n = this.length
    if (this.#end + chunk.length > this.#b.length) {
      if (n + chunk.length <= this.#b.length) this.#b.copy(this.#b, 0, this.#start, this.#end)
      else {
        const grown = Buffer.allocUnsafe(Math.max(INPUT_INITIAL_BYTES, 2 * this.#b.length, n + chunk.length))
        this.#b.copy(grown, 0, this.#start, this.#end)
        this.#b = grown
      }
      this.#start = 0
      this.#end = n
    }
    chunk.copy(this.#b, this.#end)
    this.#end += chunk.length
  }

  consume(n: number): void {
    this.#start += n
    if (this.#start < this.#end) return
    this.#start = this.#end = 0
    // A long multi-get line grew the buffer; give the memory back once it is handled.
    if (this.#b.length > 4 * INPUT_INITIAL_BYTES) this.#b = Buffer.allocUnsafe(INPUT_INITIAL_BYTES)
  }

  clear(): void {
    this.consume(this.length)
  }
}

type Reply = string | undefined
type Fetch = { key: string; remote?: Promise<void>; done?: boolean; found?: Held }
/** A value as a get answers it: a copy, its flags, and its version (the cas unique). */
type Held = { value: Buffer; flags: number; version: bigint }
/** A command waiting for its turn to answer. `cost` counts the bytes it holds (line, data). */
type Slot =
  | { kind: 'op'; run: () => Reply | Promise<Reply>; state: 'new' | 'waiting' | 'done'; result?: Reply; cost: number; close?: boolean }
  | { kind: 'get'; line: string; pos: number; withCas: boolean; touch?: number; ahead: Fetch[]; waiting: boolean; cost: number }

class McConnection {
  readonly #s: net.Socket
  readonly #fe: MemcacheServer
  readonly #in = new InputBuffer()
  /** How far the unread input has been searched for a newline. */
  #scanned = 0
  /** Bytes of an oversized value still to be discarded (plus its CRLF). */
  #swallow = 0
  #pendingStore: { cmd: string; key: string; flags: number; exptime: number; bytes: number; noreply: boolean; unique?: bigint } | undefined
  #queue: Slot[] = []
  #queuedBytes = 0
  /** After `quit` or a fatal error: nothing more is read, and the socket closes once answered. */
  #closing = false
  #hungUp = false
  #paused = false
  /** The client half-closed: once the input is used up, answer what is owed and close. */
  #eof = false
  /** The socket holds more unsent bytes than the bound: waiting for the client to read. */
  #blocked = false
  /** Reply bytes ready to write, in order. */
  #out: Buffer[] = []
  #outBytes = 0
  /** Those of #out that are copies of session values: zero-filled once written. */
  #secret = new Set<Buffer>()
  /** Remote lookups of this connection started or queued and not yet answered. */
  #lookups = 0
  readonly #gone = (): boolean => this.#s.destroyed
  /** The bytes this connection held when it last told the front end (#report). */
  #reported = 0
  /** Runs from the first byte of an unfinished command line or data block until it is whole. */
  #deadline: NodeJS.Timeout | undefined

  constructor(fe: MemcacheServer, s: net.Socket) {
    this.#fe = fe
    this.#s = s
    // Replies go out as soon as they are written (TCP; a no-op on Unix sockets), as memcached does.
    if (s.remoteFamily) s.setNoDelay(true)
    s.on('data', (c: Buffer) => this.#onData(c))
    s.on('drain', () => {
      this.#setBlocked(false)
      this.#drive()
    })
    // A client may send its last commands and half-close (SHUT_WR): it still gets every answer,
    // however many wait behind a slow reader or a remote lookup, before the daemon closes.
    s.allowHalfOpen = true
    s.on('end', () => {
      this.#eof = true
      this.#process()
      this.#drive()
    })
    s.on('error', () => {})
    s.once('close', () => {
      clearTimeout(this.#deadline)
      this.#report()
      this.#fe.forget(this)
      this.#unpause()
      this.#setBlocked(false)
    })
  }

  #unpause(): void {
    if (!this.#paused) return
    this.#paused = false
    this.#fe.counters.readingPaused--
  }

  #onData(chunk: Buffer): void {
    if (this.#closing) return
    this.#in.append(chunk)
    // Replies made while handling one chunk leave together, when it has been handled.
    this.#process()
    this.#drive()
    this.#armDeadline()
  }

  /**
   * A command begun but not finished starts the deadline; finishing one stops it (#process calls
   * #commandDone). The idle timeout alone restarts on every byte, so a client sending one byte
   * every few minutes held its connection forever.
   */
  #armDeadline(): void {
    const ms = this.#fe.commandTimeoutMs
    if (ms <= 0 || this.#deadline || this.#closing || this.#s.destroyed) return
    if (this.#in.length === 0 && !this.#pendingStore && this.#swallow === 0) return
    this.#deadline = setTimeout(() => {
      this.#deadline = undefined
      if (this.#s.destroyed || this.#closing) return
      // Not read because its client does not take its replies: the input waits for the daemon,
      // not for the client (the idle timeout covers a client that takes nothing).
      if (this.#paused) return this.#armDeadline()
      this.#fe.counters.commandTimeouts++
      this.#s.destroy()
    }, ms)
    this.#deadline.unref()
  }

  #commandDone(): void {
    clearTimeout(this.#deadline)
    this.#deadline = undefined
  }

  /** Bytes of replies made or owed that the client has not taken yet. */
  #unsent(): number {
    return this.#s.writableLength + this.#outBytes
  }

  #full(): boolean {
    return this.#queue.length >= MAX_QUEUED_COMMANDS || this.#queuedBytes + this.#unsent() > MAX_UNSENT_REPLY_BYTES || this.#squeezed()
  }

  /**
   * No more replies are made now: the client has not taken enough of them, or the front end is
   * over its budget and this connection has MIN_BUDGET_SHARE unsent. Below that it still answers
   * what it has read, so a connection whose holding is a long get line can shed it as its client
   * takes the replies, whatever other connections hold.
   */
  #noRoom(): boolean {
    const unsent = this.#unsent()
    return unsent > MAX_UNSENT_REPLY_BYTES || (unsent > MIN_BUDGET_SHARE && this.#squeezed())
  }

  /** Memory this connection holds: unread input, commands read ahead, replies not taken; in bytes. */
  #held(): number {
    return this.#in.held + this.#queuedBytes + this.#unsent()
  }

  /** Over the front end's budget, and this connection among those holding the most. */
  #squeezed(): boolean {
    return this.#fe.squeezes(this.#reported, this.#held(), this)
  }

  /** Tells the front end what this connection holds now. */
  #report(): void {
    const held = this.#s.destroyed ? 0 : this.#held()
    if (held !== this.#reported) this.#fe.account(held - this.#reported)
    this.#reported = held
  }

  /** The front end fell under its budget: read and answer again. */
  wake(): void {
    this.#drive()
  }

  #process(): void {
    this.#processInput()
    if (this.#full() && !this.#closing && !this.#paused) {
      // Stop reading until the client takes its replies (or the front end is under its budget):
      // the kernel's buffers fill and TCP's window closes on the sender, instead of this process
      // holding its pipelined commands or an unfinished line.
      this.#paused = true
      this.#fe.counters.paused++
      this.#fe.counters.readingPaused++
      this.#s.pause()
    }
  }

  #processInput(): void {
    const inb = this.#in
    while (!this.#closing && !this.#full()) {
      if (this.#swallow > 0) {
        const n = Math.min(this.#swallow, inb.length)
        this.#swallow -= n
        inb.consume(n)
        if (this.#swallow > 0) return this.#inputEnd()
        this.#commandDone()
        continue
      }
      const ps = this.#pendingStore
      if (ps) {
        if (inb.length < ps.bytes + 2) return this.#inputEnd()
        const v = inb.view()
        this.#pendingStore = undefined
        if (v[ps.bytes] !== 13 || v[ps.bytes + 1] !== 10) {
          this.#fe.counters.errors++
          this.#enqueue(() => 'CLIENT_ERROR bad data chunk\r\n', ps.noreply)
        } else {
          // The command may wait for an earlier one, and the input buffer is reused meanwhile.
          const data = Buffer.from(v.subarray(0, ps.bytes))
          this.#enqueue(
            () => {
              // The copy holds a session value: wiped once stored (the store keeps its own).
              let r: Reply | Promise<Reply> | undefined
              try {
                r = this.#fe.storeCommand(ps.cmd, ps.key, ps.flags, ps.exptime, data, ps.unique)
                return r
              } finally {
                if (r instanceof Promise) void r.finally(() => data.fill(0))
                else data.fill(0)
              }
            },
            ps.noreply,
            ps.bytes,
          )
        }
        inb.consume(ps.bytes + 2)
        this.#commandDone()
        this.#pump()
        continue
      }
      const v = inb.view()
      const eol = v.indexOf(10, this.#scanned)
      if (eol < 0) {
        this.#scanned = v.length
        if (v.length > MAX_LINE_BYTES && !(isGetLine(v) && v.length <= MAX_GET_LINE_BYTES)) return this.#fatal('CLIENT_ERROR line too long\r\n')
        return this.#inputEnd()
      }
      // However the line arrived (one read or many), only a get line may be longer than MAX_LINE_BYTES.
      if (eol > MAX_GET_LINE_BYTES || (eol > MAX_LINE_BYTES && !isGetLine(v))) {
        this.#fatal('CLIENT_ERROR line too long\r\n')
        return
      }
      const line = v.toString('latin1', 0, eol > 0 && v[eol - 1] === 13 ? eol - 1 : eol)
      inb.consume(eol + 1)
      this.#scanned = 0
      this.#commandDone()
      this.#command(line)
      this.#pump()
    }
  }

  /** All input that came is used up; after a half-close, that is the end of the commands. */
  #inputEnd(): void {
    if (!this.#eof || this.#closing) return
    // An unfinished line or data block is dropped, as memcached drops it on EOF.
    this.#enqueue(() => undefined, false, 0, true)
    this.#stopReading()
  }

  /** A command's reply, made when its turn comes. `noreply` drops it, as memcached does. */
  #enqueue(run: () => Reply | Promise<Reply>, noreply = false, cost = 0, close = false): void {
    const slot: Slot = { kind: 'op', run: noreply ? () => quiet(run()) : run, state: 'new', cost, close }
    this.#queue.push(slot)
    this.#queuedBytes += cost
  }

  #reply(text: string, noreply = false): void {
    this.#enqueue(() => text, noreply)
  }

  #error(text: string, noreply = false): void {
    this.#fe.counters.errors++
    this.#reply(text, noreply)
  }

  /**
   * The front end is closing: nothing more is read, the commands already read are answered (a SET
   * may be waiting for a copy's ACK, a GET for a remote lookup), then the socket closes.
   */
  finish(): void {
    if (this.#closing || this.#hungUp) return
    this.#enqueue(() => undefined, false, 0, true)
    this.#stopReading()
    this.#drive()
  }

  /** Answers what came before, says `text`, and hangs up; nothing more is read. */
  #fatal(text: string): void {
    this.#fe.counters.errors++
    this.#enqueue(() => text, false, 0, true)
    this.#stopReading()
    this.#pump()
  }

  #stopReading(): void {
    this.#closing = true
    this.#in.clear()
    this.#pendingStore = undefined
    this.#s.pause()
  }

  #command(line: string): void {
    const fe = this.#fe
    fe.counters.commands++
    const g = /^ *(gets?) +(?=[^ ])/.exec(line)
    if (g) return this.#get(line, g[0].length, g[1] === 'gets')
    // gat/gats EXPTIME KEY...: get and touch (memcached 1.5.3+).
    // memcached answers `gat EXPTIME` with no key by END alone.
    const gat = /^ *(gats?) +([^ ]+) */.exec(line)
    if (gat) {
      const exptime = memcachedInt32(gat[2]!)
      if (exptime === undefined) return this.#error(BAD_EXPTIME)
      return this.#get(line, gat[0].length, gat[1] === 'gats', exptime)
    }
    const tok = line.split(' ').filter((x) => x.length > 0)
    const cmd = tok[0] ?? ''
    const n = tok.length
    const noreply = tok[n - 1] === 'noreply'
    // A key may not start with the tenant marker (protocol/tenant-keys.ts): it would name another tenant's.
    const keyOk = (k: string) => k.length <= fe.maxKeyBytes && !(fe.refuseMarker && k.charCodeAt(0) === TENANT_MARKER)
    switch (cmd) {
      case 'set':
      case 'add':
      case 'replace':
      case 'append':
      case 'prepend':
      case 'cas': {
        const fields = cmd === 'cas' ? 6 : 5
        if (n !== fields && n !== fields + 1) return this.#error(ERROR)
        const nr = noreply && n === fields + 1
        const key = tok[1]!
        const flags = memcachedFlags(tok[2]!)
        const exptime = memcachedInt32(tok[3]!)
        const bytes = memcachedInt32(tok[4]!)
        if (!keyOk(key) || flags === undefined || exptime === undefined || bytes === undefined || bytes < 0) return this.#error(BAD_FORMAT, nr)
        if (cmd === 'cas' && memcachedUint64(tok[5]!) === undefined) return this.#error(BAD_FORMAT, nr)
        if (bytes > fe.maxValueBytes) {
          this.#swallow = bytes + 2
          fe.counters.errors++
          // memcached drops the old value of a refused set, so no stale session outlives it.
          return this.#enqueue(() => {
            if (cmd === 'set') fe.remove(key)
            return 'SERVER_ERROR object too large for cache\r\n'
          }, nr)
        }
        this.#pendingStore = { cmd, key, flags, exptime, bytes, noreply: nr, ...(cmd === 'cas' ? { unique: memcachedUint64(tok[5]!)! } : {}) }
        return
      }
      case 'incr':
      case 'decr': {
        if (n !== 3 && n !== 4) return this.#error(ERROR)
        const nr = noreply && n === 4
        if (!keyOk(tok[1]!)) return this.#error(BAD_FORMAT, nr)
        const delta = memcachedUint64(tok[2]!)
        if (delta === undefined) return this.#error('CLIENT_ERROR invalid numeric delta argument\r\n', nr)
        return this.#enqueue(() => fe.delta(tok[1]!, cmd === 'incr', delta), nr)
      }
      case 'delete': {
        if (n < 2 || n > 4) return this.#error(ERROR)
        // `delete KEY [0] [noreply]`: mod_ssl sends the legacy time argument 0.
        const zero = tok[2] === '0'
        const valid = n === 2 || (n === 3 && (zero || noreply)) || (n === 4 && zero && noreply)
        if (!keyOk(tok[1]!)) return this.#error(BAD_FORMAT, noreply)
        if (!valid) return this.#error('CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n', noreply)
        return this.#enqueue(() => fe.delete(tok[1]!), noreply)
      }
      case 'touch': {
        if (n !== 3 && n !== 4) return this.#error(ERROR)
        const nr = noreply && n === 4
        if (!keyOk(tok[1]!)) return this.#error(BAD_FORMAT, nr)
        const exptime = memcachedInt32(tok[2]!)
        if (exptime === undefined) return this.#error(BAD_EXPTIME, nr)
        return this.#enqueue(() => fe.touch(tok[1]!, exptime), nr)
      }
      case 'flush_all': {
        if (n > 3) return this.#error(ERROR)
        if (!fe.flushAllowed) return this.#error('CLIENT_ERROR flush_all not allowed\r\n', noreply)
        let delay = 0
        if (n !== (noreply ? 2 : 1)) {
          const d = memcachedInt32(tok[1]!)
          if (d === undefined) return this.#error(BAD_EXPTIME, noreply)
          delay = d
        }
        return this.#enqueue(() => fe.flushAll(delay), noreply)
      }
      case 'verbosity': {
        // Accepted and ignored (the daemon's log level is `logLevel`), checked as memcached does.
        if (n !== 2 && n !== 3) return this.#error(ERROR)
        if (memcachedFlags(tok[1]!) === undefined) return this.#error(BAD_FORMAT, noreply)
        return this.#reply('OK\r\n', noreply)
      }
      case 'version':
        return this.#reply(`VERSION ${fe.version}\r\n`)
      case 'stats':
        return this.#enqueue(() => fe.statsText(tok.slice(1)))
      case 'quit':
        // Answer what came before, then hang up; nothing after it is read.
        this.#enqueue(() => undefined, false, 0, true)
        return this.#stopReading()
      default:
        return this.#error(ERROR)
    }
  }

  #get(line: string, pos: number, withCas: boolean, touch?: number): void {
    const fe = this.#fe
    // Every key is checked before any is answered: memcached answers a bad key with the error
    // alone, no values.
    for (let i = pos; i < line.length; ) {
      let j = line.indexOf(' ', i)
      if (j < 0) j = line.length
      if (j - i > fe.maxKeyBytes || (fe.refuseMarker && j > i && line.charCodeAt(i) === TENANT_MARKER)) return this.#error(BAD_FORMAT)
      i = j + 1
    }
    this.#queue.push({ kind: 'get', line, pos, withCas, ...(touch === undefined ? {} : { touch }), ahead: [], waiting: false, cost: line.length })
    this.#queuedBytes += line.length
  }

  /** The next key of a get line, or undefined at its end. */
  static #nextKey(g: { line: string; pos: number }): string | undefined {
    const l = g.line
    while (g.pos < l.length && l.charCodeAt(g.pos) === 32) g.pos++
    if (g.pos >= l.length) return undefined
    let j = l.indexOf(' ', g.pos)
    if (j < 0) j = l.length
    const k = l.slice(g.pos, j)
    g.pos = j
    return k
  }

  /**
   * Writes a get's values while the client takes them. True when its END is written; false when
   * it waits for a remote lookup or for the client.
   */
  #advanceGet(g: Extract<Slot, { kind: 'get' }>): boolean {
    const fe = this.#fe
    for (;;) {
      while (g.ahead.length < GET_LOOKAHEAD) {
        const at = g.pos
        const k = McConnection.#nextKey(g)
        if (k === undefined) break
        if (this.#lookups >= MAX_CONNECTION_LOOKUPS && fe.needsLookup(k)) {
          // Read again once the lookups ahead of it are answered.
          g.pos = at
          break
        }
        const f = fe.prefetch(k, this.#gone)
        // Counted until its value is written: a found value waiting in the read-ahead is memory too.
        if (f.remote) this.#lookups++
        g.ahead.push(f)
      }
      const f = g.ahead[0]
      if (!f) {
        this.#push(END)
        return true
      }
      if (f.remote && !f.done) {
        if (!g.waiting) {
          g.waiting = true
          void f.remote.then(() => {
            g.waiting = false
            this.#drive()
          })
        }
        return false
      }
      g.ahead.shift()
      if (f.remote) this.#lookups--
      const e = f.remote ? f.found : fe.localGet(f.key)
      if (e && g.touch !== undefined) fe.touchHeld(f.key, g.touch)
      if (e) {
        this.#push(Buffer.from(`VALUE ${f.key} ${e.flags} ${e.value.length}${g.withCas ? ` ${e.version}` : ''}\r\n`, 'latin1'))
        this.#push(e.value, true)
        this.#push(CRLF)
      }
      if (this.#noRoom()) return false
    }
  }

  /** Answers queued commands in order, as far as the client takes them. */
  #pump(): void {
    const s = this.#s
    while (this.#queue.length > 0 && !s.destroyed && !this.#hungUp) {
      if (this.#noRoom()) return
      const slot = this.#queue[0]!
      if (slot.kind === 'get') {
        if (!this.#advanceGet(slot)) return
      } else {
        if (slot.state === 'waiting') return
        if (slot.state === 'new') {
          const r = this.#fe.guard(slot.run)
          if (r instanceof Promise) {
            slot.state = 'waiting'
            void r.then((text) => {
              slot.result = text
              slot.state = 'done'
              this.#drive()
            })
            return
          }
          slot.result = r
          slot.state = 'done'
        }
        if (slot.result !== undefined) this.#push(Buffer.from(slot.result, 'latin1'))
        if (slot.close) {
          this.#queue.length = 0
          this.#hangUp()
          return
        }
      }
      this.#queue.shift()
      this.#queuedBytes -= slot.cost
    }
  }

  /**
   * Answers, writes, and reads again while there is room; called after input was handled, on
   * 'drain' and when a lookup finishes. A write the kernel takes whole emits no 'drain', so this
   * loops until the queue is empty, waits for the cluster, or the socket holds more than the
   * bound (then its write returned false, and 'drain' comes).
   */
  #drive(): void {
    this.#driveLoop()
    this.#report()
  }

  #driveLoop(): void {
    const s = this.#s
    for (;;) {
      this.#pump()
      this.#send()
      if (s.destroyed || this.#hungUp) return
      if (this.#paused && !this.#closing && !this.#full()) {
        this.#unpause()
        s.resume()
        this.#process()
        continue
      }
      const head = this.#queue[0]
      if (!head || (head.kind === 'get' ? head.waiting : head.state === 'waiting')) return
      if (s.writableLength > MAX_UNSENT_REPLY_BYTES) {
        this.#setBlocked(true)
        return
      }
      // Over the front end's budget: driven again when these replies are written, or woken by the
      // front end when it is under its budget again.
      if (this.#noRoom()) return
    }
  }

  #setBlocked(b: boolean): void {
    if (this.#blocked === b) return
    this.#blocked = b
    this.#fe.counters.waitingForClient += b ? 1 : -1
  }

  /**
   * Sends what is owed and a FIN, without reading again. Closing a socket with unread input
   * would reset it and could discard the last replies in flight, so the socket is destroyed only
   * after HANGUP_LINGER_MS, or earlier when the client closes; meanwhile its unread input stays in
   * the kernel, whose window stops the sender.
   */
  #hangUp(): void {
    if (this.#hungUp) return
    this.#hungUp = true
    this.#send()
    const s = this.#s
    s.end()
    const t = setTimeout(() => s.destroy(), HANGUP_LINGER_MS)
    t.unref()
    s.once('close', () => clearTimeout(t))
  }

  /** `secret`: a copy of a session value, this connection's own, wiped once the socket has written it. */
  #push(b: Buffer, secret = false): void {
    this.#out.push(b)
    this.#outBytes += b.length
    if (secret) this.#secret.add(b)
  }

  /**
   * Writes what is ready. Small replies (a GET is a header, the value and END) are joined into
   * one buffer: one write syscall instead of a writev of several; large ones go out uncopied.
   */
  #send(): void {
    const out = this.#out
    if (out.length === 0) return
    // A write's copies (and deletes) leave before the client can read its reply.
    this.#fe.flushPeers()
    this.#out = []
    const n = this.#outBytes
    this.#outBytes = 0
    const secret = this.#secret
    if (secret.size > 0) this.#secret = new Set()
    const s = this.#s
    // A write's callback runs once the kernel has the bytes, or with an error when the socket was
    // destroyed first: either way the copy is no longer needed, and is wiped as the store wipes.
    const wipe = (b: Buffer) => () => {
      b.fill(0)
      this.#drive()
    }
    // Written replies may make room (a write the kernel takes whole emits no 'drain').
    const written = () => this.#drive()
    if (s.destroyed) {
      for (const b of secret) b.fill(0)
      return
    }
    if (out.length === 1) s.write(out[0]!, secret.size > 0 ? wipe(out[0]!) : written)
    else if (n <= COALESCE_BYTES) {
      const joined = Buffer.concat(out, n)
      for (const b of secret) b.fill(0)
      s.write(joined, secret.size > 0 ? wipe(joined) : written)
    } else {
      s.cork()
      for (const b of out) s.write(b, secret.has(b) ? wipe(b) : written)
      s.uncork()
    }
  }
}

function isGetLine(v: Buffer): boolean {
  let i = 0
  while (i < v.length && i <= 100 && v[i] === 32) i++
  const head = v.toString('latin1', i, i + 5)
  return head.startsWith('get ') || head === 'gets '
}

/** memcached's reply line for a conditional write's outcome (incr/decr: the number). */
function conditionalReply(done: Done<CondResult>, op: CondOp): Reply | Promise<Reply> {
  const line = (r: CondResult): Reply => {
    switch (r.outcome) {
      case CondOutcome.STORED:
        return op.kind === CondKind.INCR || op.kind === CondKind.DECR ? `${r.number}\r\n` : STORED
      case CondOutcome.NOT_STORED:
        return NOT_STORED
      case CondOutcome.NOT_FOUND:
        return NOT_FOUND
      case CondOutcome.EXISTS:
        return 'EXISTS\r\n'
      case CondOutcome.NOT_NUMERIC:
        return 'CLIENT_ERROR cannot increment or decrement non-numeric value\r\n'
      case CondOutcome.TOO_LARGE:
        return 'SERVER_ERROR out of memory storing object\r\n'
    }
  }
  return done instanceof Promise ? done.then(line) : line(done)
}

function quiet(r: Reply | Promise<Reply>): Reply | Promise<Reply> {
  return r instanceof Promise ? r.then(() => undefined) : undefined
}

export class MemcacheServer {
  readonly counters: MemcacheCounters = { connections: 0, commands: 0, getHits: 0, getMisses: 0, remoteHits: 0, errors: 0, refused: 0, idleClosed: 0, commandTimeouts: 0, paused: 0, readingPaused: 0, waitingForClient: 0, bufferedBytes: 0, overBudget: 0, remoteLookups: 0, lookupsWaiting: 0, lookupsQueued: 0 }
  /** The VERSION reply: memcached's protocol version (libmemcached checks it), then statecast's. */
  readonly version: string
  readonly maxValueBytes: number
  readonly maxKeyBytes: number
  readonly flushAllowed: boolean
  readonly commandTimeoutMs: number
  readonly refuseMarker: boolean
  readonly #o: MemcacheOptions
  readonly #servers: { server: net.Server; unix?: UnixListener; sockets: Set<net.Socket> }[] = []
  readonly #conns = new Map<net.Socket, McConnection>()
  /** Connections accepted by a listener shared by tenants (tenant-memcache.ts), served here. */
  readonly #adopted = new Set<net.Socket>()
  #flushTimer: LongTimeout | undefined
  #now: () => number
  /** Remote lookups waiting for the front end's share, in order. */
  #waiting: (() => void)[] = []
  /** Connections stopped for the budget, woken when the front end is under it again. */
  #squeezed = new Set<McConnection>()
  #waking = false
  /** The write path every front end shares (session-ops.ts); its fetches keep within this front end's lookup share. */
  readonly #ops: SessionOps

  constructor(o: MemcacheOptions) {
    this.#o = o
    this.#ops = new SessionOps({ store: o.store, cluster: o.cluster, fetch: (key) => this.#lookup(key, () => false) })
    this.version = `${MEMCACHED_PROTOCOL_VERSION}-statecast-${o.version}`
    this.maxValueBytes = o.store.options.maxValueBytes
    this.maxKeyBytes = o.maxKeyBytes
    this.flushAllowed = o.memcacheFlushAll
    this.commandTimeoutMs = o.memcacheCommandTimeoutMs
    this.refuseMarker = o.refuseMarker ?? false
    this.#now = o.now ?? Date.now
  }

  /**
   * Runs one command. A store error becomes a memcached error reply; anything else is a bug,
   * logged (no key or value) and answered, so that no client line can stop the daemon.
   */
  guard(run: () => Reply | Promise<Reply>): Reply | Promise<Reply> {
    const fail = (err: unknown): Reply => {
      this.counters.errors++
      if (err instanceof StoreError) return `SERVER_ERROR ${err.message}\r\n`
      this.#o.log.error({ err: (err as Error)?.name, code: (err as { code?: unknown })?.code }, 'memcache command failed')
      return 'SERVER_ERROR internal error\r\n'
    }
    try {
      const r = run()
      return r instanceof Promise ? r.catch(fail) : r
    } catch (err) {
      return fail(err)
    }
  }

  /** Sends what the cluster queued for its peers in this turn (hooks.ts: flush). */
  flushPeers(): void {
    this.#ops.flush()
  }

  /** TTL in ms for a memcached exptime, or -1 when the item is already expired. */
  ttlFor(exptime: number): number {
    // No expiry, within the store's cap (maxTtlMs).
    if (exptime === 0) return this.#o.store.options.maxTtlMs
    if (exptime < 0) return -1
    if (exptime <= RELATIVE_LIMIT_S) return exptime * 1000
    const ms = exptime * 1000 - this.#now()
    return ms > 0 ? ms : -1
  }

  /**
   * Whether a connection that held `reported` bytes when it last said so and holds `held` now
   * must stop: the front end is over `maxBufferedBytes`, and it holds more than MIN_BUDGET_SHARE.
   * Those holding less carry on, so a client that takes its replies is served while others hog.
   * (A share of the budget per open connection let the first connections keep far more than the
   * budget between them.)
   */
  squeezes(reported: number, held: number, conn: McConnection): boolean {
    const max = this.#o.memcacheMaxBufferedBytes
    if (this.counters.bufferedBytes - reported + held <= max) return false
    if (held <= MIN_BUDGET_SHARE) return false
    if (!this.#squeezed.has(conn)) {
      this.#squeezed.add(conn)
      this.counters.overBudget++
    }
    return true
  }

  /** A connection's holding changed by `delta` bytes. */
  account(delta: number): void {
    const c = this.counters
    c.bufferedBytes += delta
    // Woken a little under the budget, so that connections do not flap at its edge.
    if (delta >= 0 || this.#waking || this.#squeezed.size === 0 || c.bufferedBytes > this.#o.memcacheMaxBufferedBytes * 0.875) return
    this.#waking = true
    try {
      const woken = [...this.#squeezed]
      this.#squeezed.clear()
      for (const conn of woken) conn.wake()
    } finally {
      this.#waking = false
    }
  }

  forget(conn: McConnection): void {
    this.#squeezed.delete(conn)
  }

  /** Whether reading `key` needs a remote lookup (another host may hold it). */
  needsLookup(key: string): boolean {
    return this.#o.cluster() !== undefined && !this.#o.store.has(key)
  }

  /**
   * A remote lookup within the front end's share: started now when fewer than `maxRemoteLookups`
   * are in flight, else queued in order. `gone` says the asking connection closed meanwhile, so a
   * queued lookup nobody waits for is never sent.
   */
  #lookup(key: string, gone: () => boolean): Promise<Awaited<ReturnType<ClusterHooks['lookup']>>> {
    const c = this.counters
    const start = (): ReturnType<ClusterHooks['lookup']> => {
      const cluster = this.#o.cluster()
      if (!cluster || gone()) {
        this.#nextLookup()
        return Promise.resolve(undefined)
      }
      c.remoteLookups++
      const p = cluster.lookup(key)
      void p.then(
        () => this.#lookupDone(),
        () => this.#lookupDone(),
      )
      return p
    }
    if (c.remoteLookups < this.#o.maxRemoteLookups && this.#waiting.length === 0) return start()
    c.lookupsQueued++
    c.lookupsWaiting++
    return new Promise((resolve, reject) => this.#waiting.push(() => start().then(resolve, reject)))
  }

  #lookupDone(): void {
    this.counters.remoteLookups--
    this.#nextLookup()
  }

  #nextLookup(): void {
    while (this.counters.remoteLookups < this.#o.maxRemoteLookups) {
      const next = this.#waiting.shift()
      if (!next) return
      this.counters.lookupsWaiting--
      next()
    }
  }

  /** Starts a remote lookup for a key this host lacks; the value is read when its turn comes. */
  prefetch(key: string, gone: () => boolean = () => false): Fetch {
    const f: Fetch = { key }
    if (!this.needsLookup(key)) return f
    f.remote = this.#lookup(key, gone).then(
      (r) => {
        f.done = true
        if (r) {
          this.counters.remoteHits++
          // Our own copy: the lookup's buffer may be shared with other waiters (an API GET of the
          // same key), and ours is wiped once written.
          f.found = { value: Buffer.from(r.value), flags: r.flags, version: r.version }
        } else this.counters.getMisses++
      },
      () => {
        f.done = true
        this.counters.getMisses++
      },
    )
    return f
  }

  /** A copy of a local entry (the store may reuse its memory before the socket has sent it). */
  localGet(key: string): Held | undefined {
    const e = this.#o.store.get(key)
    if (!e) {
      this.counters.getMisses++
      return undefined
    }
    this.counters.getHits++
    return { value: Buffer.from(e.value), flags: e.flags, version: e.version }
  }

  /** Deletes here and everywhere (another host may hold a copy). */
  remove(key: string): Done<boolean> {
    return this.#ops.delete(key)
  }

  /** set/add/replace/append/prepend, and cas with the `unique` a gets reported (the entry's version). */
  storeCommand(cmd: string, key: string, flags: number, exptime: number, data: Buffer, unique?: bigint): Reply | Promise<Reply> {
    const ttlMs = this.ttlFor(exptime)
    if (cmd === 'set') {
      const copied = this.#ops.set(key, data, ttlMs, flags)
      return copied ? copied.then(() => STORED) : STORED
    }
    const op: CondOp =
      cmd === 'add' ? { kind: CondKind.ADD, value: data, ttlMs, flags }
      : cmd === 'replace' ? { kind: CondKind.REPLACE, value: data, ttlMs, flags }
      : cmd === 'cas' ? { kind: CondKind.CAS, value: data, ttlMs, flags, unique: unique! }
      : { kind: cmd === 'append' ? CondKind.APPEND : CondKind.PREPEND, value: data }
    return conditionalReply(this.#ops.conditional(key, op), op)
  }

  delta(key: string, incr: boolean, delta: bigint): Reply | Promise<Reply> {
    const op: CondOp = { kind: incr ? CondKind.INCR : CondKind.DECR, delta }
    return conditionalReply(this.#ops.conditional(key, op), op)
  }

  delete(key: string): Reply | Promise<Reply> {
    const had = this.remove(key)
    return had instanceof Promise ? had.then((h) => (h ? 'DELETED\r\n' : NOT_FOUND)) : had ? 'DELETED\r\n' : NOT_FOUND
  }

  touch(key: string, exptime: number): Reply | Promise<Reply> {
    const touched = this.#ops.touch(key, this.ttlFor(exptime))
    return touched instanceof Promise ? touched.then((ok) => (ok ? 'TOUCHED\r\n' : NOT_FOUND)) : touched ? 'TOUCHED\r\n' : NOT_FOUND
  }

  /** gat's touch of a key it just read (held here now, remote ones included); memcached's rules. */
  touchHeld(key: string, exptime: number): void {
    void this.#ops.touchHeld(key, this.ttlFor(exptime))
  }

  /** memcached's flush_all: this host's store, now or after `delay` (memcached's exptime rules). */
  flushAll(delay: number): Reply {
    this.#flushTimer?.cancel()
    this.#flushTimer = undefined
    const ms = delay > 0 ? this.ttlFor(delay) : -1
    if (ms <= 0) this.#o.store.flush()
    // Past 24.8 days setTimeout would fire at once: long-timeout.ts waits in steps.
    else this.#flushTimer = setLongTimeout(() => this.#o.store.flush(), ms)
    return 'OK\r\n'
  }

  get currentConnections(): number {
    return this.#servers.reduce((n, s) => n + s.sockets.size, this.#adopted.size)
  }

  statsText(args: string[]): Reply {
    const rows = (r: [string, number | string][]) => r.map(([k, v]) => `STAT ${k} ${v}\r\n`).join('') + 'END\r\n'
    const o = this.#o
    switch (args.join(' ')) {
      case '': {
        const s = o.store.stats()
        return rows([
          ['pid', process.pid],
          ['uptime', Math.floor(process.uptime())],
          ['time', Math.floor(this.#now() / 1000)],
          ['version', this.version],
          ['statecast_version', o.version],
          ['pointer_size', 64],
          ['curr_connections', this.currentConnections],
          ['total_connections', this.counters.connections],
          ['rejected_connections', this.counters.refused],
          ['idle_kicks', this.counters.idleClosed],
          ['cmd_get', this.counters.getHits + this.counters.getMisses + this.counters.remoteHits],
          ['get_hits', this.counters.getHits + this.counters.remoteHits],
          ['get_misses', this.counters.getMisses],
          ['remote_hits', this.counters.remoteHits],
          ['cmd_set', s.sets],
          ['curr_items', s.entries],
          ['bytes', s.bytes],
          ['limit_maxbytes', s.maxBytes],
          ['evictions', s.evictions],
          ['expired_unfetched', s.expirations],
        ])
      }
      case 'settings':
        return rows([
          ['maxbytes', o.store.options.maxBytes],
          ['maxconns', o.memcacheMaxConnections],
          ['item_size_max', this.maxValueBytes],
          ['idle_timeout', Math.ceil(o.memcacheIdleTimeoutMs / 1000)],
          ['flush_enabled', this.flushAllowed ? 'yes' : 'no'],
          ['cas_enabled', 'yes'],
          ['evictions', 'on'],
        ])
      case 'items':
      case 'slabs':
        // No slab classes: the store is not memcached's allocator.
        return 'END\r\n'
      case 'sizes':
        return rows([['sizes_status', 'disabled']])
      case 'reset':
        for (const k of ['commands', 'getHits', 'getMisses', 'remoteHits', 'errors'] as const) this.counters[k] = 0
        return 'RESET\r\n'
      default:
        return ERROR
    }
  }

  async listen(): Promise<void> {
    for (const spec of this.#o.memcacheListen) {
      const tcp = parseListen(spec)
      const sockets = new Set<net.Socket>()
      const server = net.createServer((s) => this.#onConnection(s, sockets))
      if (tcp) {
        await new Promise<void>((resolve, reject) => {
          server.once('error', (err) => reject(new Error(`memcache front end cannot listen on ${spec}: ${err.message}`)))
          server.listen(tcp.port, tcp.host, () => resolve())
        })
        this.#servers.push({ server, sockets })
      } else {
        // The API socket's listener: stale-socket check, umask, mode 0660, never clobbers a live one.
        this.#servers.push({ server, sockets, unix: await UnixListener.listen(server, { path: spec, mode: this.#o.socketMode ?? 0o660 }) })
      }
      this.#o.log.info({ listen: spec }, 'memcache front end listening')
    }
  }


  /** Serves a connection another listener accepted (one shared by tenants, that picked this one). */
  adopt(s: net.Socket): void {
    this.#onConnection(s, this.#adopted)
  }

  /** Each listener has its own cap, so clients of one (say a busy TCP port) never shut out another's. */
  #onConnection(s: net.Socket, sockets: Set<net.Socket>): void {
    if (sockets.size >= this.#o.memcacheMaxConnections) {
      this.counters.refused++
      s.on('error', () => {})
      // The error, a FIN, then the descriptor is released: a refused client that never closes its
      // end must not hold one of the daemon's file descriptors (20,000 such exhausted them).
      // Destroyed once the kernel has the reply, or after REFUSED_LINGER_MS if it never takes it.
      const t = setTimeout(() => s.destroy(), REFUSED_LINGER_MS)
      t.unref()
      s.once('close', () => clearTimeout(t))
      s.end('SERVER_ERROR too many connections\r\n', () => s.destroy())
      return
    }
    this.counters.connections++
    sockets.add(s)
    s.once('close', () => sockets.delete(s))
    if (this.#o.memcacheIdleTimeoutMs > 0) {
      s.setTimeout(this.#o.memcacheIdleTimeoutMs)
      s.on('timeout', () => {
        this.counters.idleClosed++
        s.destroy()
      })
    }
    const conn = new McConnection(this, s)
    this.#conns.set(s, conn)
    s.once('close', () => this.#conns.delete(s))
  }

  /**
   * Stops listening; each connection answers the commands it read (a SET waiting for a copy's ACK
   * included: it is stored, and its client is told so) and closes; those still open after
   * `graceMs` are destroyed.
   */
  async close(graceMs = 2000): Promise<void> {
    this.#flushTimer?.cancel()
    const closing = this.#servers.map(({ server, unix }) => {
      unix?.close()
      return new Promise<void>((r) => server.close(() => r()))
    })
    const all = [...this.#servers.flatMap(({ sockets }) => [...sockets]), ...this.#adopted]
    for (const s of all) {
      const conn = this.#conns.get(s)
      if (conn) conn.finish()
      else s.end()
    }
    const t = setTimeout(() => all.forEach((s) => s.destroy()), graceMs)
    t.unref()
    await Promise.all(closing)
    clearTimeout(t)
  }
}
