/**
 * The cost benchmark's load generator (bench/cost.ts forks it, one process per case): it plays the
 * session cache traffic of a fleet of TLS servers behind a round-robin balancer, open-loop at a
 * fixed handshake rate, against statecast (one daemon per host, its binary API on a Unix socket)
 * or against one central memcached (memcache binary protocol over TCP, one connection per server).
 *
 * Kept cheap, since it shares the machine with what it measures: one process; a pacing timer
 * that wakes when the next handshake is due (1 ms at the least, Node's timer grain); the requests
 * due in one tick written to each connection in one write; replies matched to preallocated slots
 * by the id (statecast) or opaque (memcached) they echo; latencies counted in a histogram. Nothing
 * is allocated per request but the one buffer per write.
 *
 * Handshakes, one in four a full one: TLS 1.2 stores the new session (SET) and resumes by a GET;
 * TLS 1.3 with stateful tickets resumes by a GET, then deletes the used session and stores the
 * one it issues (DELETE and SET, sent together once the GET is answered). A session is resumable
 * once its SET has been answered (the server has stored it), from the last POOL sessions made.
 *
 * Messages to the parent: {type:'timed'} when the warm-up ends, {type:'end'} when the last
 * handshake has been issued, then {type:'result', ...LoadResult} once every request is answered
 * (or after DRAIN_MS).
 */
import net from 'node:net'
import crypto from 'node:crypto'
import { HEADER_BYTES, Op, ReplyFlag, Status } from '../protocol/local.js'
import type { LoadResult, Mix, OpFigures } from '../test/helpers/bench-run.js'

export type Target = 'statecast' | 'memcached'

export interface LoadConfig {
  target: Target
  /** One per server behind the balancer: a Unix socket path (statecast) or host:port (memcached). */
  endpoints: string[]
  mix: Mix
  /** Handshakes per second across the fleet. */
  rate: number
  warmSeconds: number
  seconds: number
  valueBytes: number
}

const OP_GET = 0
const OP_SET = 1
const OP_DELETE = 2
const NEW_EVERY = 4
const POOL = 4096
const EMPTY = 0xffffffff
const SLOTS = 1 << 16
const HIST_US = 1_000_000
const OUT_BYTES = 1 << 20
const DRAIN_MS = 30_000
const TTL_S = 300

// memcache binary protocol (memcached's protocol_binary.h): request magic, opcodes, statuses.
const MC_REQ = 0x80
const MC_HEADER = 24
const MC_OP = [0x00, 0x01, 0x04]
const MC_NOT_FOUND = 0x0001
const SC_OP = [Op.GET, Op.SET, Op.DELETE]

const cfg = JSON.parse(process.argv[2]!) as LoadConfig
const sc = cfg.target === 'statecast'
const hosts = cfg.endpoints.length
const value = Buffer.alloc(cfg.valueBytes, 0x5a)
// Keys as long as mod_ssl's (a prefix and a 64-digit hex session id); the run's own prefix keeps
// them apart from every other run's against the same servers.
const keyPrefix = Buffer.from(`mod_ssl:${crypto.randomBytes(27).toString('hex')}`)
const KEY_BYTES = keyPrefix.length + 12

// Per request slot (the slot is the request id modulo SLOTS).
const slotBusy = new Uint8Array(SLOTS)
const slotOp = new Uint8Array(SLOTS)
const slotConn = new Uint8Array(SLOTS)
const slotTimed = new Uint8Array(SLOTS)
const slotT0 = new Float64Array(SLOTS)
const slotSession = new Uint32Array(SLOTS)
/** TLS 1.3: the session the handshake issues (its SET follows the GET). */
const slotNext = new Uint32Array(SLOTS)
/** The pool position the session goes to once stored. */
const slotPool = new Int32Array(SLOTS)
const hist = [new Uint32Array(HIST_US + 1), new Uint32Array(HIST_US + 1), new Uint32Array(HIST_US + 1)]
const sent = [0, 0, 0]
const answered = [0, 0, 0]

const pool = new Uint32Array(POOL).fill(EMPTY)
let poolLen = 0
let poolNext = 0
let nextSession = 1
let nextId = 0
let busy = 0
let timed = false
let offered = 0
let issued = 0
let issuedAtTimed = 0
let getHits = 0
let getMisses = 0
let remoteFills = 0
let errors = 0
let dropped = 0
let maxTickGapMs = 0

interface Conn {
  sock: net.Socket
  out: Buffer
  off: number
  rest: Buffer | undefined
}
const conns: Conn[] = []

function writeKey(buf: Buffer, at: number, session: number): void {
  keyPrefix.copy(buf, at)
  for (let i = KEY_BYTES - 1, n = session; i >= keyPrefix.length; i--, n = Math.floor(n / 10)) buf[at + i] = 48 + (n % 10)
}

/** Queues one request on connection `c`; false when no slot is free. */
function send(c: number, op: number, session: number, next: number, poolAt: number): boolean {
  if (busy >= SLOTS - 1) return false
  let id = nextId
  while (slotBusy[id & (SLOTS - 1)]) id++
  nextId = id + 1
  const s = id & (SLOTS - 1)
  slotBusy[s] = 1
  busy++
  slotOp[s] = op
  slotConn[s] = c
  slotTimed[s] = timed ? 1 : 0
  slotT0[s] = performance.now()
  slotSession[s] = session
  slotNext[s] = next
  slotPool[s] = poolAt
  sent[op]!++
  const conn = conns[c]!
  const body = op === OP_SET ? KEY_BYTES + value.length : KEY_BYTES
  if (conn.off + body + 64 > OUT_BYTES) flush(conn)
  const b = conn.out
  let o = conn.off
  if (sc) {
    const extra = op === OP_SET ? 6 : 0
    const total = HEADER_BYTES + extra + body
    b.writeUInt32BE(total - 4, o)
    b[o + 4] = SC_OP[op]!
    b[o + 5] = 0
    b.writeUInt32BE(id >>> 0, o + 6)
    o += HEADER_BYTES
    if (op === OP_SET) {
      b.writeUInt32BE(TTL_S * 1000, o)
      b.writeUInt16BE(KEY_BYTES, o + 4)
      o += 6
    }
  } else {
    const extras = op === OP_SET ? 8 : 0
    b[o] = MC_REQ
    b[o + 1] = MC_OP[op]!
    b.writeUInt16BE(KEY_BYTES, o + 2)
    b[o + 4] = extras
    b[o + 5] = 0
    b.writeUInt16BE(0, o + 6)
    b.writeUInt32BE(extras + body, o + 8)
    b.writeUInt32BE(id >>> 0, o + 12)
    b.fill(0, o + 16, o + 24)
    o += MC_HEADER
    if (op === OP_SET) {
      b.writeUInt32BE(0, o)
      b.writeUInt32BE(TTL_S, o + 4)
      o += 8
    }
  }
  writeKey(b, o, session)
  o += KEY_BYTES
  if (op === OP_SET) o += value.copy(b, o)
  conn.off = o
  return true
}

function flush(conn: Conn): void {
  if (conn.off === 0) return
  // A copy: the socket may keep the buffer until the kernel takes it, and `out` is reused.
  conn.sock.write(Buffer.from(conn.out.subarray(0, conn.off)))
  conn.off = 0
}

/** A free pool position to resume from, or -1 (the pool is empty or its picks are in use). */
function pick(): number {
  if (poolLen === 0) return -1
  for (let tries = 0; tries < 8; tries++) {
    const i = Math.floor(Math.random() * poolLen)
    if (pool[i] !== EMPTY) return i
  }
  return -1
}

function handshake(): void {
  const c = offered % hosts
  const i = offered++ % NEW_EVERY === 0 ? -1 : pick()
  let ok: boolean
  if (i < 0) {
    // A full handshake: the new session goes to the pool (a ring once full) when stored.
    const at = poolLen < POOL ? poolLen++ : poolNext++ % POOL
    pool[at] = EMPTY
    ok = send(c, OP_SET, nextSession++, 0, at)
  } else if (cfg.mix === 'tls12') {
    ok = send(c, OP_GET, pool[i]!, 0, -1)
  } else {
    // Single use: nobody else resumes this session while its handshake runs.
    const used = pool[i]!
    pool[i] = EMPTY
    ok = send(c, OP_GET, used, nextSession++, i)
  }
  if (ok) issued++
  else dropped++
}

function answer(s: number, status: number, flags: number): void {
  const op = slotOp[s]!
  const lat = Math.min(HIST_US, Math.round((performance.now() - slotT0[s]!) * 1000))
  if (slotTimed[s]) hist[op]![lat]!++
  answered[op]!++
  slotBusy[s] = 0
  busy--
  const found = status === 0
  if (!found && !(status === (sc ? Status.NOT_FOUND : MC_NOT_FOUND) && op !== OP_SET)) errors++
  if (op === OP_SET && found && slotPool[s]! >= 0) pool[slotPool[s]!] = slotSession[s]!
  if (op !== OP_GET) return
  if (found) getHits++
  else getMisses++
  if (sc && flags & ReplyFlag.REMOTE) remoteFills++
  if (cfg.mix === 'tls13') {
    const c = slotConn[s]!
    // Resumed: the used session goes; resumed or not, the server issues a new one.
    if (found && !send(c, OP_DELETE, slotSession[s]!, 0, -1)) dropped++
    if (!send(c, OP_SET, slotNext[s]!, 0, slotPool[s]!)) dropped++
  }
}

/** Takes every whole reply in `data`; the rest waits for the next chunk. */
function onData(conn: Conn, chunk: Buffer): void {
  const data = conn.rest ? Buffer.concat([conn.rest, chunk]) : chunk
  let o = 0
  for (;;) {
    if (sc) {
      if (data.length - o < HEADER_BYTES + 1) break
      const total = 4 + data.readUInt32BE(o)
      if (data.length - o < total) break
      answer(data.readUInt32BE(o + 6) & (SLOTS - 1), data[o + HEADER_BYTES]!, data[o + 5]!)
      o += total
    } else {
      if (data.length - o < MC_HEADER) break
      const total = MC_HEADER + data.readUInt32BE(o + 8)
      if (data.length - o < total) break
      answer(data.readUInt32BE(o + 12) & (SLOTS - 1), data.readUInt16BE(o + 6), 0)
      o += total
    }
  }
  conn.rest = o < data.length ? data.subarray(o) : undefined
  flush(conn)
}

function connect(endpoint: string): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const colon = endpoint.lastIndexOf(':')
    const sock = sc ? net.connect(endpoint) : net.connect(Number(endpoint.slice(colon + 1)), endpoint.slice(0, colon))
    sock.setNoDelay(true)
    const conn: Conn = { sock, out: Buffer.allocUnsafe(OUT_BYTES), off: 0, rest: undefined }
    sock.once('connect', () => resolve(conn))
    sock.once('error', reject)
    sock.on('data', (b: Buffer) => onData(conn, b))
  })
}

function figures(op: number): OpFigures {
  const h = hist[op]!
  let n = 0
  for (let i = 0; i <= HIST_US; i++) n += h[i]!
  const at = (p: number) => {
    const want = Math.max(1, Math.ceil((p / 100) * n))
    for (let i = 0, seen = 0; i <= HIST_US; i++) if ((seen += h[i]!) >= want) return i
    return NaN
  }
  return { sent: sent[op]!, answered: answered[op]!, p50Us: n ? at(50) : NaN, p99Us: n ? at(99) : NaN }
}

for (const e of cfg.endpoints) conns.push(await connect(e))
const t0 = performance.now()
const warmMs = cfg.warmSeconds * 1000
const endMs = warmMs + cfg.seconds * 1000
let timedAt = 0
/** When handshake number n is due, in ms after t0. */
const dueAt = (n: number) => (n * 1000) / cfg.rate
const tick = () => {
  const now = performance.now()
  const elapsed = now - t0
  maxTickGapMs = Math.max(maxTickGapMs, elapsed - Math.min(dueAt(offered), endMs))
  if (!timed && elapsed >= warmMs) {
    timed = true
    timedAt = now
    issuedAtTimed = issued
    process.send!({ type: 'timed' })
  }
  const due = Math.floor((Math.min(elapsed, endMs) * cfg.rate) / 1000)
  while (offered < due) handshake()
  for (const c of conns) flush(c)
  if (elapsed < endMs) {
    // Wake when the next handshake is due (at least 1 ms on, Node's timer grain): no idle ticks.
    setTimeout(tick, Math.max(1, Math.min(dueAt(offered), endMs, elapsed < warmMs ? warmMs : endMs) - elapsed))
  } else {
    const timedSeconds = (now - timedAt) / 1000
    process.send!({ type: 'end' })
    const deadline = performance.now() + DRAIN_MS
    const drained = setInterval(() => {
      if (busy > 0 && performance.now() < deadline) return
      clearInterval(drained)
      const ops = { GET: figures(OP_GET), SET: figures(OP_SET), DELETE: figures(OP_DELETE) }
      const result: LoadResult = {
        handshakes: issued - issuedAtTimed,
        timedSeconds,
        ops,
        getHits,
        getMisses,
        remoteFills,
        errors,
        unanswered: busy,
        dropped,
        maxTickGapMs: +maxTickGapMs.toFixed(1),
      }
      process.send!({ type: 'result', ...result }, () => {
        for (const c of conns) c.sock.destroy()
        process.disconnect()
      })
    }, 5)
  }
}
setTimeout(tick, 1)
