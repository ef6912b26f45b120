/**
 * One memcache connection: reads requests (text, meta or binary: the first byte tells, as
 * memcached decides), answers them in order, and bounds what it holds.
 *
 * Every command runs in order when its turn to answer comes, so a command that waits for the
 * cluster (a get, or an incr of a key held by another host) never lets a later one overtake it.
 *
 * Memory per connection is bounded: the socket is not read while the replies not yet taken by the
 * client exceed MAX_UNSENT_REPLY_BYTES or MAX_QUEUED_COMMANDS commands wait for their turn; a
 * multi-get's reply is made key by key as the client takes it; a line is at most MAX_LINE_BYTES
 * (a get line MAX_GET_LINE_BYTES); a binary request at most its header, key, extras and a value
 * of `maxValueBytes`; nothing is read after `quit` or a fatal error. All connections together hold
 * at most `maxBufferedBytes` (plus a read each); a command must arrive whole within
 * `commandTimeoutMs`; a connection has at most MAX_CONNECTION_LOOKUPS remote lookups, the front
 * end `maxRemoteLookups`, so it never fills the daemon's lookup table. Copies of values made for
 * replies are zero-filled once written.
 */
import type net from 'node:net'
import { TENANT_MARKER } from '../../../protocol/tenant-keys.js'
import { Magic, parseRequest, type BinRequest } from './binary.js'
import { binaryReject, binaryRequest } from './binary-commands.js'
import type { Fetch } from './commands.js'
import { InputBuffer } from './input-buffer.js'
import type { Fail, FrontEnd, Reply, Sink } from './sink.js'
import { textCommand } from './text.js'

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
 * Remote lookups one connection has started or queued at once (of its multi-get's read-ahead, or
 * of pipelined binary and meta gets). Together with the front end's share (`maxRemoteLookups`),
 * 64 connections of multi-gets of missing keys can no longer fill the daemon's lookup table,
 * which API GETs need too.
 */
export const MAX_CONNECTION_LOOKUPS = 4
/** How long a connection that was hung up on may take to receive its last replies, in ms. */
const HANGUP_LINGER_MS = 2000
/** Over `maxBufferedBytes`, a connection holding no more than this may still be read and answered. */
export const MIN_BUDGET_SHARE = 16 * 1024
/** Replies up to this size are copied into one buffer before writing. */
const COALESCE_BYTES = 64 * 1024

const CRLF = Buffer.from('\r\n')
const END = Buffer.from('END\r\n')

/** A text command's store error as memcached words it. */
const textFail: Fail = (err) => (err ? `SERVER_ERROR ${err.message}\r\n` : 'SERVER_ERROR internal error\r\n')

/** A command waiting for its turn to answer. `cost` counts the bytes it holds (line, data). */
type Slot =
  | {
      kind: 'op'
      run: () => Reply | Promise<Reply>
      state: 'new' | 'waiting' | 'done'
      result?: Reply
      cost: number
      close?: boolean
      fail: Fail
      /** A plain write (set, delete, touch) whose store effect is made when it runs: it may run ahead. */
      ahead: boolean
    }
  | { kind: 'get'; line: string; pos: number; withCas: boolean; touch?: number; ahead: Fetch[]; waiting: boolean; cost: number }

export class McConnection implements Sink {
  readonly #s: net.Socket
  readonly fe: FrontEnd
  readonly #in = new InputBuffer()
  /** How far the unread input has been searched for a newline. */
  #scanned = 0
  /** Bytes of an oversized value still to be discarded (plus its CRLF). */
  #swallow = 0
  /** A data block expected next (a text or meta storage command's), and what to do with it. */
  #pendingData: { bytes: number; noreply: boolean; run: (data: Buffer) => Reply | Promise<Reply>; ahead: boolean } | undefined
  /** Decided by the first byte, as memcached decides it: 0x80 is the binary protocol, else text (and meta). */
  #binary: boolean | undefined
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

  constructor(fe: FrontEnd, s: net.Socket) {
    this.fe = fe
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
      this.fe.forget(this)
      this.#unpause()
      this.#setBlocked(false)
    })
  }

  #unpause(): void {
    if (!this.#paused) return
    this.#paused = false
    this.fe.counters.readingPaused--
  }

  #onData(chunk: Buffer): void {
    this.fe.counters.bytesRead += chunk.length
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
    const ms = this.fe.commandTimeoutMs
    if (ms <= 0 || this.#deadline || this.#closing || this.#s.destroyed) return
    if (this.#in.length === 0 && !this.#pendingData && this.#swallow === 0) return
    this.#deadline = setTimeout(() => {
      this.#deadline = undefined
      if (this.#s.destroyed || this.#closing) return
      // Not read because its client does not take its replies: the input waits for the daemon,
      // not for the client (the idle timeout covers a client that takes nothing).
      if (this.#paused) return this.#armDeadline()
      this.fe.counters.commandTimeouts++
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
    return this.fe.squeezes(this.#reported, this.#held(), this)
  }

  /** Tells the front end what this connection holds now. */
  #report(): void {
    const held = this.#s.destroyed ? 0 : this.#held()
    if (held !== this.#reported) this.fe.account(held - this.#reported)
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
      this.fe.counters.paused++
      this.fe.counters.readingPaused++
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
      const ps = this.#pendingData
      if (ps) {
        if (inb.length < ps.bytes + 2) return this.#inputEnd()
        const v = inb.view()
        this.#pendingData = undefined
        if (v[ps.bytes] !== 13 || v[ps.bytes + 1] !== 10) {
          this.fe.counters.errors++
          this.enqueue(() => 'CLIENT_ERROR bad data chunk\r\n', ps.noreply)
        } else {
          // The command may wait for an earlier one, and the input buffer is reused meanwhile.
          const data = Buffer.from(v.subarray(0, ps.bytes))
          this.enqueue(
            () => {
              // The copy holds a session value: wiped once used (the store keeps its own).
              let r: Reply | Promise<Reply> | undefined
              try {
                r = ps.run(data)
                return r
              } finally {
                // then(wipe, wipe), not finally(): a rejected command (a DecisionError) is answered
                // through its guard; a finally() copy of it would be an unhandled rejection.
                const wipe = () => data.fill(0)
                if (r instanceof Promise) void r.then(wipe, wipe)
                else wipe()
              }
            },
            ps.noreply,
            ps.bytes,
            false,
            textFail,
            ps.ahead,
          )
        }
        inb.consume(ps.bytes + 2)
        this.#commandDone()
        this.#pump()
        continue
      }
      if (this.#binary === undefined) {
        if (inb.length === 0) return this.#inputEnd()
        this.#binary = inb.view()[0] === Magic.REQUEST
      }
      if (this.#binary) {
        const p = parseRequest(inb.view(), this.fe.binaryLimits)
        if (p.kind === 'need') return this.#inputEnd()
        if (p.kind === 'reject') {
          inb.consume(Math.min(p.bytes, inb.length))
          this.#commandDone()
          binaryReject(this, p)
        } else {
          // Copies: the request may wait for an earlier one while the input buffer is reused.
          const req = p.req
          const own = { ...req, key: Buffer.from(req.key) } as BinRequest
          if ('value' in req) (own as { value: Buffer }).value = Buffer.from(req.value)
          inb.consume(p.bytes)
          this.#commandDone()
          binaryRequest(this, own)
        }
        this.#pump()
        continue
      }
      const v = inb.view()
      const eol = v.indexOf(10, this.#scanned)
      if (eol < 0) {
        this.#scanned = v.length
        if (v.length > MAX_LINE_BYTES && !(isGetLine(v) && v.length <= MAX_GET_LINE_BYTES))
          return this.fatal('CLIENT_ERROR line too long\r\n')
        return this.#inputEnd()
      }
      // However the line arrived (one read or many), only a get line may be longer than MAX_LINE_BYTES.
      if (eol > MAX_GET_LINE_BYTES || (eol > MAX_LINE_BYTES && !isGetLine(v))) {
        this.fatal('CLIENT_ERROR line too long\r\n')
        return
      }
      const line = v.toString('latin1', 0, eol > 0 && v[eol - 1] === 13 ? eol - 1 : eol)
      inb.consume(eol + 1)
      this.#scanned = 0
      this.#commandDone()
      textCommand(this, line)
      this.#pump()
    }
  }

  /** All input that came is used up; after a half-close, that is the end of the commands. */
  #inputEnd(): void {
    if (!this.#eof || this.#closing) return
    // An unfinished line or data block is dropped, as memcached drops it on EOF.
    this.enqueue(() => undefined, false, 0, true)
    this.#stopReading()
  }

  /** A command's reply, made when its turn comes. `noreply` drops it, as memcached does. */
  enqueue(run: () => Reply | Promise<Reply>, noreply = false, cost = 0, close = false, fail: Fail = textFail, ahead = false): void {
    const slot: Slot = { kind: 'op', run: noreply ? () => quiet(run()) : run, state: 'new', cost, close, fail, ahead }
    this.#queue.push(slot)
    this.#queuedBytes += cost
  }

  reply(text: string, noreply = false): void {
    this.enqueue(() => text, noreply)
  }

  error(text: string, noreply = false): void {
    this.fe.counters.errors++
    this.reply(text, noreply)
  }

  expectData(bytes: number, noreply: boolean, run: (data: Buffer) => Reply | Promise<Reply>, ahead = false): void {
    this.#pendingData = { bytes, noreply, run, ahead }
  }

  swallow(bytes: number): void {
    this.#swallow = bytes
  }

  quit(): void {
    this.enqueue(() => undefined, false, 0, true)
    this.#stopReading()
  }

  prefetch(key: string): Fetch {
    if (this.#lookups >= MAX_CONNECTION_LOOKUPS && this.fe.commands.needsLookup(key)) return { key }
    const f = this.fe.commands.prefetch(key, this.#gone)
    if (f.remote) this.#lookups++
    return f
  }

  taken(f: Fetch): void {
    if (f.remote) this.#lookups--
  }

  /**
   * The front end is closing: nothing more is read, the commands already read are answered (a SET
   * may be waiting for a copy's ACK, a GET for a remote lookup), then the socket closes.
   */
  finish(): void {
    if (this.#closing || this.#hungUp) return
    this.enqueue(() => undefined, false, 0, true)
    this.#stopReading()
    this.#drive()
  }

  /** Answers what came before, says `text`, and hangs up; nothing more is read. */
  fatal(text: Reply): void {
    this.fe.counters.errors++
    this.enqueue(() => text, false, 0, true)
    this.#stopReading()
    this.#pump()
  }

  #stopReading(): void {
    this.#closing = true
    this.#in.clear()
    this.#pendingData = undefined
    this.#s.pause()
  }

  getLine(line: string, pos: number, withCas: boolean, touch?: number): void {
    const fe = this.fe
    // Every key is checked before any is answered: memcached answers a bad key with the error
    // alone, no values.
    for (let i = pos; i < line.length;) {
      let j = line.indexOf(' ', i)
      if (j < 0) j = line.length
      if (j - i > fe.maxKeyBytes || (fe.refuseMarker && j > i && line.charCodeAt(i) === TENANT_MARKER))
        return this.error('CLIENT_ERROR bad command line format\r\n')
      i = j + 1
    }
    this.#queue.push({
      kind: 'get',
      line,
      pos,
      withCas,
      ...(touch === undefined ? {} : { touch }),
      ahead: [],
      waiting: false,
      cost: line.length,
    })
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
    const fe = this.fe
    for (;;) {
      while (g.ahead.length < GET_LOOKAHEAD) {
        const at = g.pos
        const k = McConnection.#nextKey(g)
        if (k === undefined) break
        if (this.#lookups >= MAX_CONNECTION_LOOKUPS && fe.commands.needsLookup(k)) {
          // Read again once the lookups ahead of it are answered.
          g.pos = at
          break
        }
        const f = fe.commands.prefetch(k, this.#gone)
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
          const go = () => {
            g.waiting = false
            this.#drive()
          }
          void f.remote.then(go, go)
        }
        return false
      }
      g.ahead.shift()
      if (f.remote) this.#lookups--
      const e = fe.commands.take(f)
      if (e && g.touch !== undefined) fe.commands.touchHeld(f.key, g.touch)
      if (e) {
        this.#push(Buffer.from(`VALUE ${f.key} ${e.flags} ${e.value.length}${g.withCas ? ` ${e.version}` : ''}\r\n`, 'latin1'))
        this.#push(e.value, true)
        this.#push(CRLF)
      }
      if (this.#noRoom()) return false
    }
  }

  /** Runs a queued command; a write that waits for its copies' ACKs is 'waiting' until they come. */
  #run(slot: Extract<Slot, { state: unknown }>): void {
    const r = this.fe.commands.guard(slot.run, slot.fail)
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

  /**
   * While the head waits (a write waiting for its copies' ACKs), the commands queued behind it
   * run now, in order, so pipelined writes wait for their round trips together rather than one
   * after another; their replies still go in order. Only plain writes run ahead (set, delete,
   * touch: `ahead`); it stops at anything else and at a command that closes the connection. What a command does to the store is
   * done when it runs, so a later command sees the earlier writes as before.
   */
  #runAhead(): void {
    // Only plain writes behind a plain write: a conditional write is decided elsewhere and lands
    // when its answer comes, and a read must see every write before it, so either ends the run.
    const head = this.#queue[0]
    if (head?.kind !== 'op' || !head.ahead) return
    for (let i = 1; i < this.#queue.length; i++) {
      const slot = this.#queue[i]!
      if (slot.kind === 'get' || slot.close || !slot.ahead) return
      if (slot.state === 'new') this.#run(slot)
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
        if (slot.state === 'new') this.#run(slot)
        if (slot.state === 'waiting') return this.#runAhead()
        const res = slot.result
        if (typeof res === 'string') this.#push(Buffer.from(res, 'latin1'))
        else if (Buffer.isBuffer(res)) this.#push(res)
        else if (res) for (const p of res.parts) this.#push(p, p === res.secret)
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
    this.fe.counters.waitingForClient += b ? 1 : -1
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
    this.fe.commands.flushPeers()
    this.#out = []
    const n = this.#outBytes
    this.#outBytes = 0
    this.fe.counters.bytesWritten += n
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

function quiet(r: Reply | Promise<Reply>): Reply | Promise<Reply> {
  return r instanceof Promise ? r.then(() => undefined) : undefined
}
