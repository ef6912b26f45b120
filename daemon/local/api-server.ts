/**
 * The local API server: binary frames (protocol/local) on a Unix stream socket.
 *
 * Each connection decodes frames as they arrive and hands each request to the handler; replies go
 * back as soon as they are ready, in any order (the client matches them by id). A frame that
 * cannot be decoded gets an error reply and its connection is closed; every other connection and
 * the store carry on. Writes made while handling one chunk are corked into one syscall.
 */
import net from 'node:net'
import { EMPTY_CHUNK, FrameDecoder, Op, Status, decodeRequest, encodeError, peekRequestHeader, type Request } from '../../protocol/local.js'
import { ProtocolError } from '../../protocol/errors.js'
import type { Log } from '../host/log.js'
import type { Config } from '../config/config.js'
import { UnixListener, UnixListenerError } from './unix-listener.js'

/** Turns a decoded request into an encoded reply frame, now or later. */
export type Handler = (req: Request) => Buffer | Promise<Buffer>

/** An API server's config keys (unit and default: FIELDS in config/config.ts), path, mode and parts. */
export interface ApiServerOptions extends Pick<Config, 'maxConnections'> {
  /** Filesystem path of the socket. */
  path: string
  /** Permission bits of the socket file. Default 0o660 (owner and group may connect). */
  mode: number
  /** Largest frame accepted, length prefix included, in bytes. */
  maxFrameBytes: number
  /** Requests of one connection being handled at once before it stops being read. Default 4096. */
  maxPendingPerConnection: number
  /**
   * Reply bytes one connection may have queued (written, not yet taken by the client) before its
   * further frames wait, in bytes. Default REPLY_QUEUE_BYTES (1 MiB).
   */
  maxQueuedReplyBytes?: number
  /**
   * Replies one connection may still owe for requests being handled (remote lookups), each
   * counted at the largest reply (maxFrameBytes), before its further frames wait, in bytes.
   * Default PENDING_REPLY_BYTES (4 MiB: 63 lookups in flight with 64 KiB values).
   */
  maxPendingReplyBytes?: number
  handler: Handler
  /**
   * Called right before the replies to a chunk's requests are written (the daemon's: the
   * cluster's flush in cluster/hooks.ts, so that a SET's copies leave before its reply).
   */
  beforeReplies?: () => void
  log: Log
  /** A name for log lines and counters ('api', 'admin'). */
  name: string
}

/** Default of `maxQueuedReplyBytes`: 1 MiB per connection. */
export const REPLY_QUEUE_BYTES = 1024 * 1024
/** Default of `maxPendingReplyBytes`: 4 MiB per connection. */
export const PENDING_REPLY_BYTES = 4 * 1024 * 1024
/**
 * What a pending write's reply is counted as against maxPendingReplyBytes: SET, DELETE and TOUCH
 * answer with a status frame, and they are pending while their copies are acknowledged, so
 * counting them at maxFrameBytes (1 MiB values) would let a connection have only four in flight.
 */
export const WRITE_REPLY_BYTES = 64

export interface ApiServerCounters {
  connectionsAccepted: number
  connectionsRejected: number
  requests: number
  malformedFrames: number
  handlerErrors: number
}

class Connection {
  readonly socket: net.Socket
  readonly #server: ApiServer
  readonly #decoder: FrameDecoder
  pending = 0
  /** The replies owed, in bytes at most (a GET's at maxFrameBytes, a write's at WRITE_REPLY_BYTES). */
  #pendingBytes = 0
  #closing = false
  #paused = false
  /** The client has half-closed (SHUT_WR): no more requests, but every reply is still owed. */
  #readEnded = false

  constructor(server: ApiServer, socket: net.Socket, maxFrameBytes: number) {
    this.#server = server
    this.socket = socket
    this.#decoder = new FrameDecoder(maxFrameBytes)
    socket.on('data', (chunk: Buffer) => this.#onData(chunk))
    socket.on('drain', () => this.#maybeResume())
    // The server allows half-open connections: a client may send its requests, shut its writing
    // side and wait for the replies, some of which (remote lookups) come later.
    socket.on('end', () => {
      this.#readEnded = true
      this.#maybeFinish()
    })
    socket.on('error', () => {
      /* a peer that vanished mid-write; 'close' follows */
    })
  }

  #onData(chunk: Buffer): void {
    this.#feed(chunk)
  }

  // Frames are handled one at a time and the decoder stops as soon as this connection's queued
  // replies reach the bound: one 64 KiB read holds thousands of small GETs, and answering them all
  // before looking at the queue is what let one client that never reads make the daemon buffer
  // hundreds of megabytes. The unhandled rest stays in the decoder until the client reads.
  #feed(chunk: Buffer): void {
    this.socket.cork()
    try {
      const all = this.#decoder.push(chunk, (frame) => {
        this.#onFrame(frame)
        return !this.#closing && !this.#full()
      })
      if (!all) this.#pause()
    } catch (err) {
      // Only the frame splitter throws here (oversized length prefix): answer and hang up.
      this.#fail(0, 0, err instanceof ProtocolError ? err : new ProtocolError('TRUNCATED', String(err)))
    } finally {
      // The corked replies leave at uncork: what the requests sent to peers leaves first.
      this.#server.options.beforeReplies?.()
      this.socket.uncork()
    }
  }

  /**
   * Whether this connection owes enough replies to stop handling its frames: so many queued
   * bytes, or so many requests in flight that their replies (each counted at the largest) could
   * add too much when they settle. At most the two bounds plus one reply per connection.
   */
  #full(): boolean {
    const o = this.#server.options
    return (
      this.pending >= o.maxPendingPerConnection ||
      this.socket.writableLength >= (o.maxQueuedReplyBytes ?? REPLY_QUEUE_BYTES) ||
      this.#pendingBytes >= (o.maxPendingReplyBytes ?? PENDING_REPLY_BYTES)
    )
  }

  #onFrame(frame: Buffer): void {
    if (this.#closing) return
    const counters = this.#server.counters
    counters.requests++
    let req: Request
    try {
      req = decodeRequest(frame)
    } catch (err) {
      const { op, id } = peekRequestHeader(frame)
      const perr = err instanceof ProtocolError ? err : new ProtocolError('TRUNCATED', String(err))
      if (perr.code === 'UNKNOWN_OP') {
        // A whole frame we do not know: answer it and keep the connection (newer clients probe).
        this.#write(encodeError(op, id, Status.UNKNOWN_OP, perr.message))
        return
      }
      this.#fail(op, id, perr)
      return
    }
    let out: Buffer | Promise<Buffer>
    try {
      out = this.#server.options.handler(req)
    } catch (err) {
      out = this.#internalError(req, err)
    }
    if (out instanceof Promise) {
      const bytes =
        req.op === Op.SET || req.op === Op.DELETE || req.op === Op.TOUCH ? WRITE_REPLY_BYTES : this.#server.options.maxFrameBytes
      this.pending++
      this.#pendingBytes += bytes
      out.then(
        (reply) => this.#settle(reply, bytes),
        (err: unknown) => this.#settle(this.#internalError(req, err), bytes),
      )
    } else {
      this.#write(out)
    }
  }

  #internalError(req: Request, err: unknown): Buffer {
    this.#server.counters.handlerErrors++
    this.#server.options.log.error({ op: req.op, err: String(err) }, 'request handler failed')
    return encodeError(req.op, req.id, Status.INTERNAL, 'internal error')
  }

  #settle(reply: Buffer, bytes: number): void {
    this.pending--
    this.#pendingBytes -= bytes
    if (!this.socket.destroyed) this.#write(reply)
    this.#maybeResume()
    this.#maybeFinish()
  }

  /** Ends a connection whose client is done sending once the last owed reply is written. */
  #maybeFinish(): void {
    if (this.pending === 0 && (this.#closing || (this.#readEnded && !this.#paused)) && !this.socket.destroyed && !this.socket.writableEnded)
      this.socket.end()
  }

  #write(frame: Buffer): void {
    this.socket.write(frame)
  }

  // Backpressure: a client that sends but does not read stops being read (and its frames already
  // read stop being handled), so it cannot make the daemon buffer replies without bound; other
  // connections are unaffected. 'drain' and settled requests resume it.
  #pause(): void {
    if (!this.#paused) {
      this.#paused = true
      this.socket.pause()
    }
  }

  #maybeResume(): void {
    if (!this.#paused || this.#closing || this.socket.destroyed || this.#full()) return
    this.#paused = false
    this.#feed(EMPTY_CHUNK)
    if (!this.#paused && !this.#closing) this.socket.resume()
    this.#maybeFinish()
  }

  #fail(op: number, id: number, err: ProtocolError): void {
    this.#server.counters.malformedFrames++
    this.#server.options.log.warn({ server: this.#server.options.name, code: err.code }, 'malformed frame; closing connection')
    this.#closing = true
    const status = err.code === 'FRAME_TOO_LARGE' ? Status.TOO_LARGE : Status.MALFORMED
    this.socket.write(encodeError(op, id, status, err.message))
    this.socket.end()
    // Whatever is still queued behind the bad frame is ignored.
    this.socket.pause()
  }

  /** Graceful: stop reading, answer what is in flight, then close. */
  drain(): void {
    this.#closing = true
    this.socket.pause()
    if (this.pending === 0) this.socket.end()
  }
}

export class ApiServer {
  readonly options: ApiServerOptions
  readonly counters: ApiServerCounters = {
    connectionsAccepted: 0,
    connectionsRejected: 0,
    requests: 0,
    malformedFrames: 0,
    handlerErrors: 0,
  }
  #server: net.Server
  #conns = new Set<Connection>()
  #listening = false
  #unix: UnixListener | undefined
  #closed: Promise<void> | undefined

  constructor(options: ApiServerOptions) {
    this.options = options
    this.#server = net.createServer({ allowHalfOpen: true }, (socket) => this.#onConnection(socket))
  }

  get connections(): number {
    return this.#conns.size
  }

  #onConnection(socket: net.Socket): void {
    if (this.#closed || this.#conns.size >= this.options.maxConnections) {
      this.counters.connectionsRejected++
      socket.on('error', () => {})
      const why = this.#closed ? 'daemon is shutting down' : `too many connections (limit ${this.options.maxConnections})`
      socket.end(encodeError(Op.PING, 0, this.#closed ? Status.SHUTTING_DOWN : Status.BUSY, why))
      if (!this.#closed)
        this.options.log.warn({ server: this.options.name, limit: this.options.maxConnections }, 'connection refused: limit reached')
      return
    }
    this.counters.connectionsAccepted++
    const conn = new Connection(this, socket, this.options.maxFrameBytes)
    this.#conns.add(conn)
    socket.once('close', () => this.#conns.delete(conn))
  }

  /**
   * Listens on the configured path (see UnixListener: stale-socket check, private bind, mode, owner) or
   * on an inherited listening file descriptor (systemd socket activation).
   */
  async listen(fd?: number): Promise<void> {
    if (fd === undefined) {
      this.#unix = await UnixListener.listen(this.#server, { path: this.options.path, mode: this.options.mode })
    } else {
      await new Promise<void>((resolve, reject) => {
        const onError = (err: Error) => reject(new UnixListenerError('LISTEN_FAILED', `cannot listen on fd ${fd}: ${err.message}`))
        this.#server.once('error', onError)
        this.#server.listen({ fd }, () => {
          this.#server.off('error', onError)
          resolve()
        })
      })
    }
    this.#listening = true
  }

  /**
   * Stops accepting, lets in-flight requests finish (up to `graceMs`), closes every connection and
   * removes the socket file. Idempotent.
   */
  close(graceMs = 5000): Promise<void> {
    this.#closed ??= this.#close(graceMs)
    return this.#closed
  }

  async #close(graceMs: number): Promise<void> {
    const serverClosed = this.#listening ? new Promise<void>((resolve) => this.#server.close(() => resolve())) : Promise.resolve()
    this.#unix?.close()
    for (const c of this.#conns) c.drain()
    const deadline = setTimeout(() => {
      for (const c of this.#conns) c.socket.destroy()
    }, graceMs)
    deadline.unref()
    await serverClosed
    clearTimeout(deadline)
  }
}
