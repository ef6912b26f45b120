/**
 * statecastd against memcached and Redis on Unix sockets, all three driven by the same minimal
 * pipelined client (one request per loop in flight, replies of known size matched in order), so
 * the comparison measures the servers, not three different client libraries.
 * The suite uses memcached and redis-server when installed, installs them with apt-get when it is
 * root and they are missing, and says which it used.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { Op, encodeRequest } from '../protocol/local.js'
import { drive, startDaemonProcess, untilAccepting } from './local.js'
import { StatecastClient } from '../client/index.js'

function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

export function ensurePeers(): { memcached: boolean; redis: boolean; note: string } {
  const missing = [have('memcached') ? '' : 'memcached', have('redis-server') ? '' : 'redis-server'].filter(Boolean)
  let note = 'memcached and redis-server found'
  if (missing.length && process.getuid?.() === 0) {
    try {
      execFileSync('apt-get', ['install', '-y', '-qq', ...missing], {
        stdio: 'ignore',
        env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      })
      note = `installed ${missing.join(' and ')} with apt-get`
    } catch {
      note = `could not install ${missing.join(' and ')}`
    }
  } else if (missing.length) note = `${missing.join(' and ')} missing (not root: not installed)`
  return { memcached: have('memcached'), redis: have('redis-server'), note }
}

/** A pipelined connection whose replies all have the same known length. */
class FixedReplyClient {
  #s: net.Socket
  #waiting: (() => void)[] = []
  #have = 0
  readonly #replyLen: number
  constructor(s: net.Socket, replyLen: number) {
    this.#s = s
    this.#replyLen = replyLen
    s.on('data', (b: Buffer) => {
      this.#have += b.length
      while (this.#have >= this.#replyLen && this.#waiting.length) {
        this.#have -= this.#replyLen
        this.#waiting.shift()!()
      }
    })
  }
  static connect(socketPath: string, replyLen: number): Promise<FixedReplyClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(socketPath, () => resolve(new FixedReplyClient(s, replyLen)))
      s.once('error', reject)
    })
  }
  request(bytes: Buffer): Promise<void> {
    return new Promise((resolve) => {
      this.#waiting.push(resolve)
      this.#s.write(bytes)
    })
  }
  close(): void {
    this.#s.destroy()
  }
}

export async function benchPeers(ms: number, concurrencies: number[]): Promise<Record<string, unknown>[]> {
  const avail = ensurePeers()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sc-bench-peers-'))
  const procs: ChildProcess[] = []
  const rows: Record<string, unknown>[] = []
  const key = 'session:0000000001'
  const value = Buffer.alloc(200, 0x78)
  try {
    const d = await startDaemonProcess(dir, 'sc', ['--cluster-enabled', 'false'])
    procs.push(d.proc)
    const c = await StatecastClient.connect({ socketPath: d.socket })
    await c.set(key, value)
    c.destroy()
    const targets: { name: string; socket: string; req: Buffer; replyLen: number }[] = [
      {
        name: 'statecastd',
        socket: d.socket,
        req: encodeRequest({ op: Op.GET, id: 1, flags: 0, key: Buffer.from(key) }),
        replyLen: 11 + 4 + 200,
      },
    ]
    if (avail.memcached) {
      const sock = path.join(dir, 'memcached.sock')
      const mc = spawn(
        'memcached',
        ['-s', sock, '-a', '0700', '-m', '64', '-U', '0', '-t', '1', ...(process.getuid?.() === 0 ? ['-u', 'root'] : [])],
        { stdio: 'ignore' },
      )
      procs.push(mc)
      await untilAccepting(sock, mc, 'memcached')
      await new Promise<void>((resolve) => {
        const s = net.connect(sock, () => s.write(`set ${key} 0 0 200\r\n${value.toString()}\r\n`))
        s.once('data', () => (s.destroy(), resolve()))
      })
      targets.push({
        name: 'memcached',
        socket: sock,
        req: Buffer.from(`get ${key}\r\n`),
        replyLen: `VALUE ${key} 0 200\r\n`.length + 200 + '\r\nEND\r\n'.length,
      })
    }
    if (avail.redis) {
      const sock = path.join(dir, 'redis.sock')
      const rd = spawn('redis-server', ['--port', '0', '--unixsocket', sock, '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
      procs.push(rd)
      await untilAccepting(sock, rd, 'redis-server')
      await new Promise<void>((resolve) => {
        const s = net.connect(sock, () => s.write(`*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$200\r\n${value.toString()}\r\n`))
        s.once('data', () => (s.destroy(), resolve()))
      })
      targets.push({
        name: 'redis',
        socket: sock,
        req: Buffer.from(`*2\r\n$3\r\nGET\r\n$${key.length}\r\n${key}\r\n`),
        replyLen: '$200\r\n'.length + 200 + 2,
      })
    }
    for (const conc of concurrencies) {
      const res: Record<string, number> = {}
      for (const t of targets) {
        const client = await FixedReplyClient.connect(t.socket, t.replyLen)
        await drive(() => client.request(t.req), conc, 200)
        res[t.name] = (await drive(() => client.request(t.req), conc, ms)).opsPerSec
        client.close()
      }
      const row: Record<string, unknown> = {
        case: 'GET hit, same minimal client',
        concurrency: conc,
        statecastdOpsPerSec: res['statecastd'],
      }
      if (res['memcached'])
        Object.assign(row, { memcachedOpsPerSec: res['memcached'], vsMemcached: +(res['statecastd']! / res['memcached']).toFixed(2) })
      if (res['redis']) Object.assign(row, { redisOpsPerSec: res['redis'], vsRedis: +(res['statecastd']! / res['redis']).toFixed(2) })
      row['peers'] = avail.note
      rows.push(row)
    }
  } finally {
    for (const p of procs) p.kill('SIGTERM')
  }
  return rows
}
