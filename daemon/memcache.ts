/**
 * A memcached text-protocol front end on the same store and cluster, for servers that already
 * keep their sessions in memcached (Apache mod_ssl's `SSLSessionCache memcache:`, OpenResty, PHP).
 *
 * Commands: get/gets (several keys), set/add/replace, delete, touch, version, quit, stats.
 * Exptime follows memcached: 0 = the daemon's default TTL, up to 30 days = seconds from now,
 * larger = absolute Unix time, negative or past = expired at once. A local miss on get asks the
 * cluster like an API GET. Replies leave in command order even when a get waits for the cluster.
 * No authentication, so TCP listeners are refused unless they are on a loopback address.
 */
import net from 'node:net'
import fs from 'node:fs'
import { clearStaleSocket } from './api-server.js'
import type { ClusterHooks } from './handler.js'
import type { Log } from './log.js'
import { StoreError, type SessionStore } from './store.js'

const CRLF = Buffer.from('\r\n')
const END = Buffer.from('END\r\n')
const MAX_LINE = 2048
/** memcached: exptime above this many seconds is an absolute Unix time. */
const RELATIVE_LIMIT_S = 60 * 60 * 24 * 30

export interface MemcacheOptions {
  /** Where to listen: `HOST:PORT` (loopback only) or a Unix socket path. */
  listen: string[]
  maxConnections: number
  maxKeyBytes: number
  version: string
  store: SessionStore
  cluster: () => ClusterHooks | undefined
  log: Log
  /** Wall clock in ms, for absolute exptimes. */
  now?: () => number
}

export interface MemcacheCounters {
  connections: number
  commands: number
  getHits: number
  getMisses: number
  remoteHits: number
  errors: number
}

/** Parses `HOST:PORT` (IPv6 as `[::1]:PORT`) or returns undefined for a Unix path. */
export function parseListen(spec: string): { host: string; port: number } | undefined {
  if (spec.startsWith('/') || spec.startsWith('.')) return undefined
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(spec)
  if (!m) throw new Error(`listen address ${JSON.stringify(spec)} is neither HOST:PORT nor an absolute socket path`)
  const host = m[1] ?? m[2]!
  const port = Number(m[3])
  if (!net.isIP(host)) throw new Error(`listen host ${host} is not an IP address`)
  if (!(host.startsWith('127.') || host === '::1')) throw new Error(`refusing ${spec}: this listener has no authentication, so it listens on loopback addresses and Unix sockets only`)
  if (port < 1 || port > 65535) throw new Error(`listen port ${port} out of range`)
  return { host, port }
}

type Slot = { ready: boolean; out: Buffer[]; close?: boolean }

/** Replies up to this size are copied into one buffer before writing. */
const COALESCE_BYTES = 64 * 1024

class McConnection {
  readonly #s: net.Socket
  readonly #fe: MemcacheServer
  #buf: Buffer = Buffer.alloc(0)
  /** Bytes of an oversized value still to be discarded (plus its CRLF). */
  #swallow = 0
  #pendingStore: { cmd: string; key: string; flags: number; exptime: number; bytes: number; noreply: boolean } | undefined
  #slots: Slot[] = []
  #closing = false
  #inData = false
  /** Reply bytes ready to write, in order. */
  #out: Buffer[] = []
  #outBytes = 0

  constructor(fe: MemcacheServer, s: net.Socket) {
    this.#fe = fe
    this.#s = s
    // Replies go out as soon as they are written (TCP; a no-op on Unix sockets), as memcached does.
    if (s.remoteFamily) s.setNoDelay(true)
    s.on('data', (c: Buffer) => this.#onData(c))
    s.on('error', () => {})
  }

  #onData(chunk: Buffer): void {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk
    // Replies made while handling one chunk leave together, when it has been handled.
    this.#inData = true
    try {
      this.#process()
    } finally {
      this.#inData = false
      this.#send()
    }
  }

  #process(): void {
    while (!this.#closing) {
      if (this.#swallow > 0) {
        const n = Math.min(this.#swallow, this.#buf.length)
        this.#swallow -= n
        this.#buf = this.#buf.subarray(n)
        if (this.#swallow > 0) return
        continue
      }
      const ps = this.#pendingStore
      if (ps) {
        if (this.#buf.length < ps.bytes + 2) return
        const data = this.#buf.subarray(0, ps.bytes)
        const ok = this.#buf[ps.bytes] === 13 && this.#buf[ps.bytes + 1] === 10
        this.#buf = this.#buf.subarray(ps.bytes + 2)
        this.#pendingStore = undefined
        if (!ok) {
          this.#reply('CLIENT_ERROR bad data chunk\r\n')
          continue
        }
        const r = this.#fe.store(ps.cmd, ps.key, ps.flags, ps.exptime, data)
        if (!ps.noreply) this.#reply(r)
        continue
      }
      const eol = this.#buf.indexOf(CRLF)
      if (eol < 0) {
        if (this.#buf.length > MAX_LINE) {
          this.#fe.counters.errors++
          this.#reply('CLIENT_ERROR line too long\r\n', true)
        }
        return
      }
      const line = this.#buf.subarray(0, eol).toString('latin1')
      this.#buf = this.#buf.subarray(eol + 2)
      this.#command(line)
    }
  }

  #command(line: string): void {
    const fe = this.#fe
    fe.counters.commands++
    const tok = line.split(' ').filter((x) => x.length > 0)
    const cmd = tok[0] ?? ''
    const bad = () => {
      fe.counters.errors++
      this.#reply('CLIENT_ERROR bad command line format\r\n')
    }
    switch (cmd) {
      case 'get':
      case 'gets': {
        const keys = tok.slice(1)
        if (keys.length === 0 || !keys.every((k) => fe.validKey(k))) return bad()
        return this.#get(keys, cmd === 'gets')
      }
      case 'set':
      case 'add':
      case 'replace': {
        if (tok.length !== 5 && !(tok.length === 6 && tok[5] === 'noreply')) return bad()
        const [key, f, e, b] = [tok[1]!, tok[2]!, tok[3]!, tok[4]!]
        if (!fe.validKey(key) || !/^\d+$/.test(f) || !/^-?\d+$/.test(e) || !/^\d+$/.test(b)) return bad()
        const flags = Number(f)
        const bytes = Number(b)
        if (flags > 0xffffffff) return bad()
        if (bytes > fe.maxValueBytes) {
          fe.counters.errors++
          this.#swallow = bytes + 2
          this.#reply('SERVER_ERROR object too large for cache\r\n')
          return
        }
        this.#pendingStore = { cmd, key, flags, exptime: Number(e), bytes, noreply: tok.length === 6 }
        return
      }
      case 'delete': {
        // `delete KEY [0] [noreply]`: mod_ssl sends the legacy time argument 0.
        const rest = tok.slice(2)
        const noreply = rest[rest.length - 1] === 'noreply'
        if (noreply) rest.pop()
        if (!tok[1] || !fe.validKey(tok[1]) || rest.length > 1 || (rest.length === 1 && rest[0] !== '0')) return bad()
        const r = fe.delete(tok[1])
        if (!noreply) this.#reply(r)
        return
      }
      case 'touch': {
        if (tok.length !== 3 && !(tok.length === 4 && tok[3] === 'noreply')) return bad()
        if (!fe.validKey(tok[1]!) || !/^-?\d+$/.test(tok[2]!)) return bad()
        const r = fe.touch(tok[1]!, Number(tok[2]))
        if (tok.length === 3) this.#reply(r)
        return
      }
      case 'version':
        return this.#reply(`VERSION ${fe.version}\r\n`)
      case 'stats':
        if (tok.length > 1) return this.#reply('ERROR\r\n')
        return this.#reply(fe.statsText())
      case 'quit':
        // Answer what came before, then hang up.
        this.#closing = true
        this.#flush()
        return
      default:
        fe.counters.errors++
        return this.#reply('ERROR\r\n')
    }
  }

  #get(keys: string[], withCas: boolean): void {
    const slot: Slot = { ready: false, out: [] }
    this.#slots.push(slot)
    const parts = keys.map((k) => this.#fe.lookup(k))
    const render = (k: string, e: { value: Buffer; flags: number }) => {
      slot.out.push(Buffer.from(`VALUE ${k} ${e.flags} ${e.value.length}${withCas ? ' 0' : ''}\r\n`, 'latin1'), e.value, CRLF)
    }
    if (parts.every((p) => !(p instanceof Promise))) {
      keys.forEach((k, i) => {
        const e = parts[i] as { value: Buffer; flags: number } | undefined
        if (e) render(k, e)
      })
      slot.out.push(END)
      slot.ready = true
      this.#flush()
      return
    }
    Promise.all(parts).then((found) => {
      keys.forEach((k, i) => {
        const e = found[i]
        if (e) render(k, e)
      })
      slot.out.push(END)
      slot.ready = true
      this.#flush()
    })
  }

  #reply(text: string, close = false): void {
    this.#slots.push({ ready: true, out: [Buffer.from(text, 'latin1')], close })
    this.#flush()
  }

  #flush(): void {
    while (this.#slots.length && this.#slots[0]!.ready) {
      const s = this.#slots.shift()!
      if (this.#s.destroyed) return
      for (const b of s.out) {
        this.#out.push(b)
        this.#outBytes += b.length
      }
      if (s.close) {
        this.#closing = true
        this.#send()
        this.#s.end()
        return
      }
    }
    if (!this.#inData) this.#send()
    if (this.#closing && this.#slots.length === 0) {
      this.#send()
      this.#s.end()
    }
  }

  /**
   * Writes what is ready. Small replies (a GET is a header, the value and END) are joined into
   * one buffer: one write syscall instead of a writev of several; large ones go out uncopied.
   */
  #send(): void {
    const out = this.#out
    if (out.length === 0 || this.#s.destroyed) return
    const n = this.#outBytes
    this.#out = []
    this.#outBytes = 0
    if (out.length === 1) this.#s.write(out[0]!)
    else if (n <= COALESCE_BYTES) this.#s.write(Buffer.concat(out, n))
    else {
      this.#s.cork()
      for (const b of out) this.#s.write(b)
      this.#s.uncork()
    }
  }
}

export class MemcacheServer {
  readonly counters: MemcacheCounters = { connections: 0, commands: 0, getHits: 0, getMisses: 0, remoteHits: 0, errors: 0 }
  readonly version: string
  readonly maxValueBytes: number
  readonly #o: MemcacheOptions
  readonly #servers: { server: net.Server; path?: string }[] = []
  readonly #sockets = new Set<net.Socket>()
  #now: () => number

  constructor(o: MemcacheOptions) {
    this.#o = o
    this.version = o.version
    this.maxValueBytes = o.store.options.maxValueBytes
    this.#now = o.now ?? Date.now
  }

  validKey(k: string): boolean {
    // latin1 keeps one char per byte; memcached keys have no control characters or spaces.
    return k.length > 0 && k.length <= this.#o.maxKeyBytes && !/[\x00-\x20\x7f]/.test(k)
  }

  /** TTL in ms for a memcached exptime, or -1 when the item is already expired. */
  ttlFor(exptime: number): number {
    if (exptime === 0) return 0
    if (exptime < 0) return -1
    if (exptime <= RELATIVE_LIMIT_S) return exptime * 1000
    const ms = exptime * 1000 - this.#now()
    return ms > 0 ? ms : -1
  }

  lookup(key: string): { value: Buffer; flags: number } | undefined | Promise<{ value: Buffer; flags: number } | undefined> {
    const e = this.#o.store.get(key)
    if (e) {
      this.counters.getHits++
      // Copied now: a multi-key get may wait for remote keys, and the store may reuse this
      // entry's memory for another session meanwhile.
      return { value: Buffer.from(e.value), flags: e.flags }
    }
    const cluster = this.#o.cluster()
    if (!cluster) {
      this.counters.getMisses++
      return undefined
    }
    return cluster.lookup(key).then((f) => {
      if (f) this.counters.remoteHits++
      else this.counters.getMisses++
      return f
    })
  }

  store(cmd: string, key: string, flags: number, exptime: number, data: Buffer): string {
    const store = this.#o.store
    if (cmd === 'add' && store.has(key)) return 'NOT_STORED\r\n'
    if (cmd === 'replace' && !store.has(key)) return 'NOT_STORED\r\n'
    const ttl = this.ttlFor(exptime)
    if (ttl < 0) {
      // memcached accepts an already-expired item and drops it: the key reads as absent.
      store.delete(key)
      return 'STORED\r\n'
    }
    try {
      store.set(key, data, ttl, flags)
    } catch (err) {
      if (err instanceof StoreError) return `SERVER_ERROR ${err.message}\r\n`
      throw err
    }
    this.#o.cluster()?.stored(key)
    return 'STORED\r\n'
  }

  delete(key: string): string {
    const had = this.#o.store.delete(key)
    this.#o.cluster()?.deleted(key)
    return had ? 'DELETED\r\n' : 'NOT_FOUND\r\n'
  }

  touch(key: string, exptime: number): string {
    const ttl = this.ttlFor(exptime)
    if (ttl < 0) return this.#o.store.delete(key) ? 'TOUCHED\r\n' : 'NOT_FOUND\r\n'
    return this.#o.store.touch(key, ttl) ? 'TOUCHED\r\n' : 'NOT_FOUND\r\n'
  }

  statsText(): string {
    const s = this.#o.store.stats()
    const rows: [string, number | string][] = [
      ['pid', process.pid],
      ['uptime', Math.floor(process.uptime())],
      ['time', Math.floor(this.#now() / 1000)],
      ['version', this.version],
      ['curr_connections', this.#sockets.size],
      ['total_connections', this.counters.connections],
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
    ]
    return rows.map(([k, v]) => `STAT ${k} ${v}\r\n`).join('') + 'END\r\n'
  }

  async listen(): Promise<void> {
    for (const spec of this.#o.listen) {
      const tcp = parseListen(spec)
      const server = net.createServer((s) => this.#onConnection(s))
      if (!tcp) await clearStaleSocket(spec)
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err) => reject(new Error(`memcache front end cannot listen on ${spec}: ${err.message}`)))
        if (tcp) server.listen(tcp.port, tcp.host, () => resolve())
        else server.listen(spec, () => resolve())
      })
      if (!tcp) fs.chmodSync(spec, 0o660)
      this.#servers.push(tcp ? { server } : { server, path: spec })
      this.#o.log.info({ listen: spec }, 'memcache front end listening')
    }
  }

  #onConnection(s: net.Socket): void {
    if (this.#sockets.size >= this.#o.maxConnections) {
      s.on('error', () => {})
      s.end('SERVER_ERROR too many connections\r\n')
      return
    }
    this.counters.connections++
    this.#sockets.add(s)
    s.once('close', () => this.#sockets.delete(s))
    new McConnection(this, s)
  }

  async close(): Promise<void> {
    const closing = this.#servers.map(({ server, path }) => {
      if (path) fs.rmSync(path, { force: true })
      return new Promise<void>((r) => server.close(() => r()))
    })
    for (const s of this.#sockets) s.end()
    const t = setTimeout(() => this.#sockets.forEach((s) => s.destroy()), 2000)
    t.unref()
    await Promise.all(closing)
    clearTimeout(t)
  }
}
