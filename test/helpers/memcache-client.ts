/**
 * A small promise-based memcache text client for histories: one connection (TCP or a Unix socket
 * path), one request at a time, every request with a deadline. A request that times out or whose
 * connection breaks leaves its outcome unknown; the connection is then dropped (a late reply would
 * answer the next request) and the next request dials a new one.
 */
import net from 'node:net'

/** Why a request has no answer: its deadline passed, or the connection failed or closed. */
export class McError extends Error {
  constructor(
    readonly code: 'TIMEOUT' | 'CONNECTION',
    message: string,
  ) {
    super(message)
  }
}

export interface McValue {
  value: string
  /** The CAS unique of `gets`; 0 from `get`. */
  cas: bigint
}

export class McClient {
  readonly #target: string | number
  readonly #timeoutMs: number
  #sock: net.Socket | undefined
  #buf = ''
  #pending: { multi: boolean; lines: string[]; resolve: (l: string[]) => void; reject: (e: Error) => void } | undefined
  #closed = false

  /** `target`: a socket path, or a TCP port on 127.0.0.1. `timeoutMs`: each request's deadline (default 5000). */
  constructor(target: string | number, timeoutMs = 5000) {
    this.#target = target
    this.#timeoutMs = timeoutMs
  }

  async #connect(): Promise<net.Socket> {
    if (this.#sock) return this.#sock
    const s = typeof this.#target === 'number' ? net.connect(this.#target, '127.0.0.1') : net.connect(this.#target)
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => (s.destroy(), reject(new McError('TIMEOUT', 'connect timed out'))), this.#timeoutMs)
      s.once('connect', () => (clearTimeout(t), resolve()))
      s.once('error', (e) => (clearTimeout(t), reject(new McError('CONNECTION', e.message))))
    })
    s.on('error', () => {})
    s.on('data', (d) => this.#onData(d))
    s.on('close', () => {
      if (this.#sock === s) this.#drop(new McError('CONNECTION', 'connection closed'))
    })
    this.#buf = ''
    this.#sock = s
    return s
  }

  #onData(d: Buffer): void {
    this.#buf += d.toString('latin1')
    for (let i = this.#buf.indexOf('\r\n'); i >= 0 && this.#pending; i = this.#buf.indexOf('\r\n')) {
      const line = this.#buf.slice(0, i)
      this.#buf = this.#buf.slice(i + 2)
      const p = this.#pending
      p.lines.push(line)
      if (!p.multi || line === 'END' || /^(SERVER_ERROR|CLIENT_ERROR|ERROR)/.test(line)) {
        this.#pending = undefined
        p.resolve(p.lines)
      }
    }
  }

  #drop(err: Error): void {
    const s = this.#sock
    this.#sock = undefined
    s?.destroy()
    const p = this.#pending
    this.#pending = undefined
    p?.reject(err)
  }

  /** Sends one command line (and a data block) and resolves the reply's lines (up to END for retrievals). */
  async cmd(line: string, data?: string): Promise<string[]> {
    if (this.#closed) throw new McError('CONNECTION', 'client closed')
    const s = await this.#connect()
    return new Promise<string[]>((resolve, reject) => {
      const timer = setTimeout(() => this.#drop(new McError('TIMEOUT', `no reply within ${this.#timeoutMs} ms`)), this.#timeoutMs)
      this.#pending = {
        multi: /^(get|gets) /.test(line),
        lines: [],
        resolve: (l) => (clearTimeout(timer), resolve(l)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      }
      s.write(data === undefined ? `${line}\r\n` : `${line}\r\n${data}\r\n`, 'latin1')
    })
  }

  /** `get` or `gets`: the value, or undefined when not found. */
  async get(key: string, withCas = false): Promise<McValue | undefined> {
    const lines = await this.cmd(`${withCas ? 'gets' : 'get'} ${key}`)
    if (lines.length === 1 && lines[0] === 'END') return undefined
    const m = /^VALUE \S+ \d+ (\d+)(?: (\d+))?$/.exec(lines[0] ?? '')
    if (!m || lines.length !== 3 || lines[2] !== 'END') throw new Error(`unexpected reply to get: ${JSON.stringify(lines)}`)
    return { value: lines[1]!, cas: BigInt(m[2] ?? 0) }
  }

  /** A storage command (`set`, `add`, `cas`): its reply line (STORED, NOT_STORED, EXISTS, NOT_FOUND or an error). */
  async store(mode: 'set' | 'add' | 'cas', key: string, value: string, cas?: bigint): Promise<string> {
    const len = Buffer.byteLength(value, 'latin1')
    return (await this.cmd(`${mode} ${key} 0 0 ${len}${mode === 'cas' ? ` ${cas}` : ''}`, value))[0]!
  }

  /** `delete`: DELETED, NOT_FOUND or an error line. */
  async delete(key: string): Promise<string> {
    return (await this.cmd(`delete ${key}`))[0]!
  }

  /** `incr`: the new value's line (digits), NOT_FOUND or an error line. */
  async incr(key: string, by = 1): Promise<string> {
    return (await this.cmd(`incr ${key} ${by}`))[0]!
  }

  close(): void {
    this.#closed = true
    this.#drop(new McError('CONNECTION', 'client closed'))
  }
}
