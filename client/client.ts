/**
 * The library local servers import to talk to their host's statecastd.
 *
 * One Unix-socket connection carries many requests at once (pipelining): each request gets an id,
 * the reply is matched by id, and every request has its own deadline and optional AbortSignal, all
 * settled through one path. If the daemon restarts, the client reconnects with bounded backoff;
 * requests made while disconnected, and requests sent but unanswered when the connection dropped
 * (every operation is idempotent), wait (bounded) for the new connection or their deadline.
 */
import net from 'node:net'
import os from 'node:os'
import { EventEmitter } from 'node:events'
import {
  FrameDecoder,
  Op,
  ReplyFlag,
  Status,
  decodeGetBody,
  decodeReply,
  decodeTicketKeyBody,
  decodeConsumerKeysBody,
  encodeRequest,
  encodeRequestFlags,
  keyProblem,
  type Reply,
  type Request,
  type ConsumerKeysBody,
} from '../protocol/local.js'
import { defaultSocketPath } from '../protocol/paths.js'
import { U32_MAX, nextId } from '../protocol/ids.js'
import { ProtocolError } from '../protocol/errors.js'
import { StatecastError, errorFromStatus } from './errors.js'

export interface ClientOptions {
  /** The daemon's API socket. Default: $STATECAST_SOCKET, else the daemon's default for this user. */
  socketPath?: string
  /** Deadline of each request unless the call gives its own, in ms. Default 1000. */
  timeoutMs?: number
  /** Deadline of each connection attempt, in ms. Default 1000. */
  connectTimeoutMs?: number
  /** Reconnect after the connection drops. Default true. */
  reconnect?: boolean
  /** First and largest pause between reconnection attempts, in ms. Defaults 20 and 2000. */
  reconnectMinDelayMs?: number
  reconnectMaxDelayMs?: number
  /** Requests that may wait for a connection at once; more fail with QUEUE_FULL. Default 10000. */
  maxQueued?: number
  /** Largest reply frame accepted, in bytes. Default 16 MiB. */
  maxFrameBytes?: number
}

export interface CallOptions {
  /** This request's deadline, in ms. */
  timeoutMs?: number
  signal?: AbortSignal
}

export interface SetOptions extends CallOptions {
  /** Time to live in ms; 0 or absent means the daemon's default. */
  ttlMs?: number
  /** Store on this host only: no copies to peers (handoff, tests). */
  noPropagate?: boolean
}

export interface GetOptions extends CallOptions {
  /** Answer from this host's store only, without asking peers. */
  localOnly?: boolean
}

export interface GetResult {
  value: Buffer
  /** Remaining time to live, in ms. */
  ttlMs: number
  /** True when the daemon fetched the value from a peer. */
  remote: boolean
}

export type Key = Buffer | string

interface Pending {
  id: number
  frame: Buffer
  resolve: (reply: Reply) => void
  reject: (err: StatecastError) => void
  timer: NodeJS.Timeout
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
  sent: boolean
}

const toBuf = (v: Key): Buffer => (typeof v === 'string' ? Buffer.from(v, 'utf8') : v)

export class StatecastClient extends EventEmitter {
  readonly socketPath: string
  readonly #o: Required<Omit<ClientOptions, 'socketPath'>>
  #socket: net.Socket | undefined
  #open = false
  #closed = false
  #destroyed = false
  /** The one close() in progress or done (close is memoised). */
  #closing: Promise<void> | undefined
  #decoder: FrameDecoder
  #inflight = new Map<number, Pending>()
  #queue: Pending[] = []
  #nextId = 1
  #corked = false
  #retryDelay: number
  #retryTimer: NodeJS.Timeout | undefined
  #drained: (() => void) | undefined

  private constructor(options: ClientOptions) {
    super()
    const uid = typeof process.getuid === 'function' ? process.getuid() : 1000
    this.socketPath = options.socketPath ?? defaultSocketPath(process.env, uid, os.tmpdir())
    this.#o = {
      timeoutMs: options.timeoutMs ?? 1000,
      connectTimeoutMs: options.connectTimeoutMs ?? 1000,
      reconnect: options.reconnect ?? true,
      reconnectMinDelayMs: options.reconnectMinDelayMs ?? 20,
      reconnectMaxDelayMs: options.reconnectMaxDelayMs ?? 2000,
      maxQueued: options.maxQueued ?? 10_000,
      maxFrameBytes: options.maxFrameBytes ?? 16 * 1024 * 1024,
    }
    this.#decoder = new FrameDecoder(this.#o.maxFrameBytes)
    this.#retryDelay = this.#o.reconnectMinDelayMs
  }

  /** Connects to the daemon; rejects with UNREACHABLE when no daemon answers on the socket. */
  static async connect(options: ClientOptions = {}): Promise<StatecastClient> {
    const c = new StatecastClient(options)
    await c.#dial()
    return c
  }

  /**
   * A client that connects in the background and keeps trying (with backoff) while the daemon is
   * down: for servers that must start, and keep serving, whether or not the daemon is up.
   */
  static open(options: ClientOptions = {}): StatecastClient {
    const c = new StatecastClient({ ...options, reconnect: true })
    c.#dial().catch(() => c.#scheduleReconnect())
    return c
  }

  /** True while a connection to the daemon is open. */
  get connected(): boolean {
    return this.#open
  }

  #dial(): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(this.socketPath)
      const timer = setTimeout(() => socket.destroy(new Error(`no answer within ${this.#o.connectTimeoutMs} ms`)), this.#o.connectTimeoutMs)
      socket.once('connect', () => {
        clearTimeout(timer)
        socket.removeAllListeners('error')
        this.#attach(socket)
        resolve()
      })
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer)
        reject(new StatecastError('UNREACHABLE', `cannot reach statecastd at ${this.socketPath}: ${err.code ?? err.message}`))
      })
    })
  }

  #attach(socket: net.Socket): void {
    this.#socket = socket
    this.#open = true
    this.#decoder = new FrameDecoder(this.#o.maxFrameBytes)
    this.#retryDelay = this.#o.reconnectMinDelayMs
    socket.setNoDelay?.(true)
    socket.on('data', (chunk: Buffer) => this.#onData(chunk))
    socket.on('error', () => {
      /* 'close' follows and handles it */
    })
    socket.once('close', () => this.#onClose(socket))
    const queued = this.#queue
    this.#queue = []
    for (const p of queued) this.#send(p)
    this.emit('connect')
  }

  #onData(chunk: Buffer): void {
    try {
      this.#decoder.push(chunk, (frame) => this.#onFrame(frame))
    } catch (err) {
      this.#protocolFailure(err)
    }
  }

  #onFrame(frame: Buffer): void {
    let reply: Reply
    try {
      reply = decodeReply(frame)
    } catch (err) {
      this.#protocolFailure(err)
      return
    }
    if (reply.id === 0) {
      // A connection-level notice (refused: busy or shutting down). Everything sent is lost.
      const err = errorFromStatus(reply.status, reply.body)
      for (const p of this.#inflight.values()) this.#settle(p, err)
      return
    }
    const p = this.#inflight.get(reply.id)
    if (!p) return // answered after its deadline or abort: nobody waits for it
    // The reply's body views the socket chunk; callers get copies (see #value).
    this.#settle(p, undefined, reply)
  }

  #protocolFailure(err: unknown): void {
    const msg = err instanceof ProtocolError ? err.message : String(err)
    const e = new StatecastError('PROTOCOL', `undecodable reply from statecastd: ${msg}`)
    for (const p of this.#inflight.values()) this.#settle(p, e)
    this.#socket?.destroy()
  }

  #onClose(socket: net.Socket): void {
    if (this.#socket !== socket) return
    this.#open = false
    this.#socket = undefined
    if (this.#o.reconnect && !this.#closed) {
      // Every operation is idempotent (GET, SET of the same value, DELETE, TOUCH), so requests
      // that were sent but not answered wait for the next connection, within their deadlines.
      for (const p of this.#inflight.values()) {
        p.sent = false
        this.#queue.push(p)
      }
      this.#inflight.clear()
    } else {
      const lost = new StatecastError('CONNECTION_LOST', 'connection to statecastd lost; the request may or may not have been applied')
      for (const p of this.#inflight.values()) this.#settle(p, lost)
    }
    if (this.#closed) return
    this.emit('disconnect')
    if (this.#o.reconnect) this.#scheduleReconnect()
    else this.#failQueue(new StatecastError('UNREACHABLE', 'connection to statecastd lost'))
  }

  #scheduleReconnect(): void {
    if (this.#retryTimer || this.#closed) return
    const jitter = 0.8 + Math.random() * 0.4
    const delay = Math.round(this.#retryDelay * jitter)
    this.#retryDelay = Math.min(this.#retryDelay * 2, this.#o.reconnectMaxDelayMs)
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined
      if (this.#closed) return
      this.#dial().catch(() => this.#scheduleReconnect())
    }, delay)
    // Waiting requests keep the process alive through their own timers; an idle client does not.
    this.#retryTimer.unref()
  }

  #failQueue(err: StatecastError): void {
    const q = this.#queue
    this.#queue = []
    for (const p of q) this.#settle(p, err)
  }

  /** The one settle path: reply, error, timeout, abort, close. */
  #settle(p: Pending, err?: StatecastError, reply?: Reply): void {
    clearTimeout(p.timer)
    if (p.onAbort) p.signal!.removeEventListener('abort', p.onAbort)
    if (p.sent) this.#inflight.delete(p.id)
    else {
      const i = this.#queue.indexOf(p)
      if (i >= 0) this.#queue.splice(i, 1)
    }
    if (err) p.reject(err)
    else p.resolve(reply!)
    if (this.#drained && this.#inflight.size === 0 && this.#queue.length === 0) this.#drained()
  }

  #send(p: Pending): void {
    const s = this.#socket!
    p.sent = true
    this.#inflight.set(p.id, p)
    // Requests made in the same tick leave in one write.
    if (!this.#corked) {
      this.#corked = true
      s.cork()
      process.nextTick(() => {
        this.#corked = false
        s.uncork()
      })
    }
    s.write(p.frame)
  }

  #request(req: Request, opts: CallOptions | undefined): Promise<Reply> {
    if (this.#closed) return Promise.reject(new StatecastError('CLOSED', 'client is closed'))
    const signal = opts?.signal
    if (signal?.aborted) return Promise.reject(new StatecastError('ABORTED', 'aborted before it was sent'))
    if (!this.#open && this.#queue.length >= this.#o.maxQueued) {
      return Promise.reject(new StatecastError('QUEUE_FULL', `${this.#queue.length} requests already wait for a connection`))
    }
    return new Promise<Reply>((resolve, reject) => {
      const timeoutMs = opts?.timeoutMs ?? this.#o.timeoutMs
      const p: Pending = {
        id: req.id,
        frame: encodeRequest(req),
        resolve,
        reject,
        signal,
        onAbort: undefined,
        sent: false,
        timer: setTimeout(() => this.#settle(p, new StatecastError('TIMEOUT', `no reply within ${timeoutMs} ms`)), timeoutMs),
      }
      if (signal) {
        p.onAbort = () => this.#settle(p, new StatecastError('ABORTED', 'aborted by the caller'))
        signal.addEventListener('abort', p.onAbort, { once: true })
      }
      if (this.#open) this.#send(p)
      else {
        this.#queue.push(p)
        if (!this.#o.reconnect) this.#settle(p, new StatecastError('UNREACHABLE', 'not connected to statecastd'))
      }
    })
  }

  #id(): number {
    const id = this.#nextId
    // Ids wrap within u32 and skip 0, which the daemon uses for connection-level notices.
    this.#nextId = nextId(id)
    return id
  }

  static #check(reply: Reply, ...accept: number[]): Reply {
    if (reply.status === Status.OK || accept.includes(reply.status)) return reply
    throw errorFromStatus(reply.status, reply.body)
  }

  /** A reply body through its protocol decoder: one that does not decode is the daemon's fault (PROTOCOL). */
  static #decode<T>(reply: Reply, decode: (body: Buffer) => T, what: string): T {
    try {
      return decode(reply.body)
    } catch {
      throw new StatecastError('PROTOCOL', `${what} reply malformed`)
    }
  }

  static #key(key: Key): Buffer {
    const k = toBuf(key)
    const problem = keyProblem(k)
    if (problem) throw new StatecastError('BAD_ARGUMENT', problem)
    return k
  }

  static #ttl(ttlMs: number | undefined): number {
    const t = ttlMs ?? 0
    if (!Number.isInteger(t) || t < 0 || t > U32_MAX)
      throw new StatecastError('BAD_ARGUMENT', `ttlMs must be an integer from 0 to ${U32_MAX}, got ${ttlMs}`)
    return t
  }

  /** The value, or undefined when neither this host nor a peer holds the key. */
  async get(key: Key, opts?: GetOptions): Promise<Buffer | undefined> {
    return (await this.getEntry(key, opts))?.value
  }

  /** Like get, with the remaining TTL and whether the value came from a peer. */
  async getEntry(key: Key, opts?: GetOptions): Promise<GetResult | undefined> {
    const reply = StatecastClient.#check(
      await this.#request(
        { op: Op.GET, id: this.#id(), flags: encodeRequestFlags({ localOnly: opts?.localOnly }), key: StatecastClient.#key(key) },
        opts,
      ),
      Status.NOT_FOUND,
    )
    if (reply.status === Status.NOT_FOUND) return undefined
    const { ttlMs, value } = decodeGetBody(reply.body)
    return { value: Buffer.from(value), ttlMs, remote: (reply.flags & ReplyFlag.REMOTE) !== 0 }
  }

  async set(key: Key, value: Key, opts?: SetOptions): Promise<void> {
    const req: Request = {
      op: Op.SET,
      id: this.#id(),
      flags: encodeRequestFlags({ noPropagate: opts?.noPropagate }),
      key: StatecastClient.#key(key),
      value: toBuf(value),
      ttlMs: StatecastClient.#ttl(opts?.ttlMs),
    }
    StatecastClient.#check(await this.#request(req, opts))
  }

  /** True when this host held the key. Peers are told to drop their copies either way. */
  async delete(key: Key, opts?: CallOptions & { noPropagate?: boolean }): Promise<boolean> {
    const reply = StatecastClient.#check(
      await this.#request(
        { op: Op.DELETE, id: this.#id(), flags: encodeRequestFlags({ noPropagate: opts?.noPropagate }), key: StatecastClient.#key(key) },
        opts,
      ),
      Status.NOT_FOUND,
    )
    return reply.status === Status.OK
  }

  /** Gives a key a new TTL from now; false when the key is absent. */
  async touch(key: Key, ttlMs: number, opts?: CallOptions): Promise<boolean> {
    const reply = StatecastClient.#check(
      await this.#request(
        { op: Op.TOUCH, id: this.#id(), flags: 0, key: StatecastClient.#key(key), ttlMs: StatecastClient.#ttl(ttlMs) },
        opts,
      ),
      Status.NOT_FOUND,
    )
    return reply.status === Status.OK
  }

  /** Round-trip time in ms. */
  async ping(opts?: CallOptions): Promise<number> {
    const t0 = performance.now()
    StatecastClient.#check(await this.#request({ op: Op.PING, id: this.#id(), flags: 0 }, opts))
    return performance.now() - t0
  }

  async stats(opts?: CallOptions): Promise<Record<string, unknown>> {
    return this.#json(await this.#request({ op: Op.STATS, id: this.#id(), flags: 0 }, opts)) as Record<string, unknown>
  }

  async peers(opts?: CallOptions): Promise<Record<string, unknown>[]> {
    return this.#json(await this.#request({ op: Op.PEERS, id: this.#id(), flags: 0 }, opts)) as Record<string, unknown>[]
  }

  /**
   * Node's TLS session ticket key in force (48 bytes for `setTicketKeys`: the "node" consumer's,
   * derived from the cluster's epoch secret, which never leaves the daemon), or undefined while
   * none is agreed yet. Wipe it after use.
   */
  async ticketKey(opts?: CallOptions): Promise<{ epoch: number; remainingMs: number; key: Buffer } | undefined> {
    const reply = StatecastClient.#check(await this.#request({ op: Op.TICKET_KEY, id: this.#id(), flags: 0 }, opts), Status.NOT_FOUND)
    if (reply.status === Status.NOT_FOUND) return undefined
    const k = StatecastClient.#decode(reply, decodeTicketKeyBody, 'ticket key')
    const out = { epoch: k.epoch, remainingMs: k.remainingMs, key: Buffer.from(k.key) }
    reply.body.fill(0)
    return out
  }

  /**
   * One consumer's ticket keys (previous, current, next; `real` false for a filler), derived in
   * the daemon for `format` (nginx, haproxy, apache, h2o, node) and `consumer` (its name, the same
   * on every host), or undefined while no key is agreed yet. The daemon answers DENIED unless this
   * socket may read that consumer (the admin socket reads all). Wipe the keys after use.
   */
  async consumerKeys(format: string, consumer: string, opts?: CallOptions): Promise<ConsumerKeysBody | undefined> {
    const reply = StatecastClient.#check(
      await this.#request({ op: Op.CONSUMER_KEYS, id: this.#id(), flags: 0, format, consumer }, opts),
      Status.NOT_FOUND,
    )
    if (reply.status === Status.NOT_FOUND) return undefined
    const w = StatecastClient.#decode(reply, decodeConsumerKeysBody, 'consumer keys')
    const out = { ...w, keys: w.keys.map((k) => ({ ...k, name: Buffer.from(k.name), aes: Buffer.from(k.aes), hmac: Buffer.from(k.hmac) })) }
    reply.body.fill(0)
    return out
  }

  /** Lists keys (admin socket only). Keys come back as Buffers: they are bytes. */
  async keys(opts?: CallOptions & { prefix?: Key; limit?: number }): Promise<{ key: Buffer; ttlMs: number }[]> {
    const prefix = toBuf(opts?.prefix ?? '')
    const limit = opts?.limit ?? 0
    const rows = this.#json(await this.#request({ op: Op.KEYS, id: this.#id(), flags: 0, prefix, limit }, opts)) as {
      key: string
      ttlMs: number
    }[]
    return rows.map((r) => ({ key: Buffer.from(r.key, 'latin1'), ttlMs: r.ttlMs }))
  }

  /** Drops every entry on this host (admin socket only). Resolves how many there were. */
  async flush(opts?: CallOptions): Promise<number> {
    return (this.#json(await this.#request({ op: Op.FLUSH, id: this.#id(), flags: 0 }, opts)) as { flushed: number }).flushed
  }

  #json(reply: Reply): unknown {
    StatecastClient.#check(reply)
    try {
      return JSON.parse(reply.body.toString('utf8'))
    } catch {
      throw new StatecastError('PROTOCOL', 'the daemon sent a reply that is not JSON')
    }
  }

  /**
   * Graceful, idempotent and memoised: new calls fail with CLOSED, calls in flight finish, then the
   * socket closes. Every call returns the same promise (issue 26 point 6: a second call made
   * while requests were in flight took the drain over, and the first call's promise never settled).
   */
  close(): Promise<void> {
    return (this.#closing ??= this.#close())
  }

  async #close(): Promise<void> {
    this.#closed = true
    clearTimeout(this.#retryTimer)
    this.#failQueue(new StatecastError('CLOSED', 'client closed before the request was sent'))
    if (this.#inflight.size > 0) await new Promise<void>((resolve) => (this.#drained = resolve))
    this.#drained = undefined
    const s = this.#socket
    if (s && !s.destroyed) {
      await new Promise<void>((resolve) => {
        s.once('close', () => resolve())
        s.end()
      })
    }
  }

  /** Immediate and idempotent: everything pending fails with CLOSED and the socket is destroyed. */
  destroy(): void {
    // A close() still draining settles too: its requests fail here, and the socket closes.
    if (this.#destroyed) return
    this.#destroyed = true
    this.#closed = true
    clearTimeout(this.#retryTimer)
    const err = new StatecastError('CLOSED', 'client destroyed')
    this.#failQueue(err)
    for (const p of this.#inflight.values()) this.#settle(p, err)
    this.#socket?.destroy()
  }
}
