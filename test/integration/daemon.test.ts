/** statecastd as a real process on real Unix sockets, driven by the client library and raw frames. */
import t from 'tap'
import { CLIENT_TIMEOUT_MS } from '../helpers/cluster.js'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { StatecastClient } from '../../client/index.js'
import { FrameDecoder, Op, Status, decodeReply, encodeRequest, type Reply } from '../../protocol/local.js'
import { DAEMON, eventually, startDaemon, tmpDir } from '../helpers/daemon.js'

/** Sends raw bytes on a fresh connection; resolves the reply frames and whether the daemon hung up. */
function raw(socketPath: string, bytes: Buffer, ms = 2000): Promise<{ replies: Reply[]; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath)
    const replies: Reply[] = []
    const dec = new FrameDecoder(1 << 24)
    let done = false
    const finish = (closed: boolean) => {
      if (done) return
      done = true
      clearTimeout(timer)
      s.destroy()
      resolve({ replies, closed })
    }
    const timer = setTimeout(() => finish(false), ms)
    s.on('data', (c) => dec.push(c, (f) => replies.push(decodeReply(Buffer.from(f)))))
    s.on('error', () => finish(true))
    s.on('close', () => finish(true))
    s.write(bytes)
  })
}

t.test('basic operations through the client library', async (t) => {
  const d = await startDaemon(t)
  const c = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: CLIENT_TIMEOUT_MS })
  t.teardown(() => c.destroy())
  t.equal(await c.get('nope'), undefined)
  await c.set('k', 'v')
  t.same(await c.get('k'), Buffer.from('v'))
  const bin = Buffer.from([0, 255, 1, 254])
  await c.set(bin, bin, { ttlMs: 60_000 })
  const e = await c.getEntry(bin)
  t.same(e?.value, bin, 'binary keys and values')
  t.ok(e!.ttlMs > 59_000 && e!.ttlMs <= 60_000, 'remaining TTL reported')
  t.equal(e?.remote, false)
  t.equal(await c.touch('k', 5000), true)
  t.equal(await c.touch('nope', 5000), false)
  t.equal(await c.delete('k'), true)
  t.equal(await c.delete('k'), false)
  t.ok((await c.ping()) >= 0)
  const s = await c.stats()
  t.match(s, { store: { entries: 1, sets: 2, deletes: 1 } })
  await t.rejects(c.set('', 'x'), { code: 'BAD_ARGUMENT' })
  await t.rejects(c.set('k', Buffer.alloc(1024 * 1024 + 1)), { code: 'TOO_LARGE' })
  await t.rejects(c.keys(), { code: 'DENIED' }, 'admin operations are refused on the API socket')
  await t.rejects(c.flush(), { code: 'DENIED' })
  const admin = await StatecastClient.connect({ socketPath: d.adminSocket, timeoutMs: CLIENT_TIMEOUT_MS })
  t.teardown(() => admin.destroy())
  t.same(
    (await admin.keys()).map((r) => r.key),
    [bin],
  )
  t.equal(await admin.flush(), 1)
  t.equal(await c.get(bin), undefined)
})

t.test('pipelining: thousands of requests in flight on one connection', async (t) => {
  const d = await startDaemon(t)
  const c = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: CLIENT_TIMEOUT_MS })
  t.teardown(() => c.destroy())
  const n = 5000
  await Promise.all(Array.from({ length: n }, (_, i) => c.set(`k${i}`, `value-${i}`)))
  const got = await Promise.all(Array.from({ length: n }, (_, i) => c.get(`k${i}`)))
  t.ok(
    got.every((v, i) => v?.toString() === `value-${i}`),
    'every reply matched to its request',
  )
})

t.test('socket files: modes, stale socket, live daemon, not a socket', async (t) => {
  const dir = tmpDir()
  const d = await startDaemon(t, { dir })
  t.equal(fs.statSync(d.socket).mode & 0o777, 0o660, 'API socket 0660')
  t.equal(fs.statSync(d.adminSocket).mode & 0o777, 0o600, 'admin socket 0600')

  // A second daemon on the same path must refuse and leave the first one serving.
  const second = spawn(process.execPath, [DAEMON, '--socket', d.socket, '--admin-socket', path.join(dir, 'other-admin.sock')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let err = ''
  second.stderr.on('data', (b) => (err += b))
  const code = await new Promise((r) => second.once('exit', r))
  t.equal(code, 1, 'second daemon exits 1')
  t.match(err, /another process is serving on .*d\.sock/)
  const c = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: CLIENT_TIMEOUT_MS })
  t.equal(typeof (await c.ping()), 'number', 'first daemon still serves')
  c.destroy()

  // SIGKILL leaves the socket files behind; the next daemon dials them, finds them dead, and takes over.
  await d.stop('SIGKILL')
  t.ok(fs.existsSync(d.socket), 'stale socket left behind')
  const d2 = await startDaemon(t, { dir })
  const c2 = await StatecastClient.connect({ socketPath: d2.socket })
  t.equal(typeof (await c2.ping()), 'number', 'new daemon serves on the stale path')
  c2.destroy()

  const file = path.join(dir, 'plain.sock')
  fs.writeFileSync(file, 'not a socket')
  const d3 = await startDaemon(t, { dir, name: 'plain', wait: false })
  t.equal(await d3.exited, 1)
  t.equal(fs.readFileSync(file, 'utf8'), 'not a socket', 'a regular file is never removed')

  const d4 = await startDaemon(t, { dir, name: 'modes', args: ['--socket-mode', '0600'] })
  t.equal(fs.statSync(d4.socket).mode & 0o777, 0o600, 'configured mode')
})

t.test('1,000 random and malformed frames leave the daemon serving and the store unchanged', async (t) => {
  const d = await startDaemon(t)
  const c = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: CLIENT_TIMEOUT_MS })
  t.teardown(() => c.destroy())
  for (let i = 0; i < 50; i++) await c.set(`keep-${i}`, `v${i}`)
  const before = (await c.stats()) as { store: { entries: number; bytes: number } }

  let seed = 42
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff
  const bad: Buffer[] = []
  for (let i = 0; i < 1000; i++) {
    const kind = i % 5
    if (kind === 0) {
      bad.push(Buffer.from(Array.from({ length: 1 + Math.floor(rnd() * 60) }, () => Math.floor(rnd() * 256)))) // pure noise
    } else if (kind === 1) {
      const f = encodeRequest({ op: Op.SET, id: i, flags: 0, ttlMs: 0, key: Buffer.from(`keep-${i % 50}`), value: Buffer.from('EVIL') })
      f.writeUInt16BE(999, 14) // key length beyond the frame
      bad.push(f)
    } else if (kind === 2) {
      const f = encodeRequest({ op: Op.GET, id: i, flags: 0, key: Buffer.from('keep-1') })
      f[5] = 0x80 // unknown flag
      bad.push(f)
    } else if (kind === 3) {
      const f = Buffer.alloc(4)
      f.writeUInt32BE(0xffffff00) // absurd length
      bad.push(f)
    } else {
      const f = encodeRequest({ op: Op.DELETE, id: i, flags: 0, key: Buffer.from(`keep-${i % 50}`) })
      bad.push(f.subarray(0, 5 + Math.floor(rnd() * 5))) // half-written, then hang up
    }
  }
  let answered = 0
  for (let i = 0; i < bad.length; i += 50) {
    const res = await Promise.all(bad.slice(i, i + 50).map((b) => raw(d.socket, b, 300)))
    for (const r of res)
      if (r.replies.some((x) => x.status === Status.MALFORMED || x.status === Status.TOO_LARGE || x.status === Status.UNKNOWN_OP))
        answered++
  }
  t.ok(answered >= 600, `error replies sent for the frames that could be answered (${answered})`)
  const after = (await c.stats()) as { store: { entries: number; bytes: number }; api: { malformedFrames: number } }
  t.same(after.store.entries, before.store.entries, 'no entry added or lost')
  t.same(after.store.bytes, before.store.bytes)
  for (let i = 0; i < 50; i++) t.equal((await c.get(`keep-${i}`))?.toString(), `v${i}`)
  t.ok(after.api.malformedFrames >= 600, `malformed frames counted (${after.api.malformedFrames})`)
})

t.test('a malformed frame gets an error reply and only its connection closes', async (t) => {
  const d = await startDaemon(t)
  const c = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: CLIENT_TIMEOUT_MS })
  t.teardown(() => c.destroy())
  const f = encodeRequest({ op: Op.PING, id: 77, flags: 0 })
  const bad = Buffer.concat([f.subarray(0, 4), Buffer.from([Op.PING, 0x40]), f.subarray(6)])
  const r = await raw(d.socket, Buffer.concat([bad, encodeRequest({ op: Op.PING, id: 78, flags: 0 })]))
  t.equal(r.closed, true, 'connection closed')
  t.same(
    r.replies.map((x) => [x.id, x.status]),
    [[77, Status.MALFORMED]],
    'error reply carries the id; what follows is ignored',
  )
  const unknown = await raw(
    d.socket,
    Buffer.concat([Buffer.from('00000006 33 00 00000009'.replace(/ /g, ''), 'hex'), encodeRequest({ op: Op.PING, id: 10, flags: 0 })]),
    500,
  )
  t.same(
    unknown.replies.map((x) => [x.id, x.status]),
    [
      [9, Status.UNKNOWN_OP],
      [10, Status.OK],
    ],
    'an unknown op is answered and the connection carries on',
  )
  const big = Buffer.alloc(4)
  big.writeUInt32BE(10 * 1024 * 1024)
  const r2 = await raw(d.socket, big)
  t.equal(r2.replies[0]?.status, Status.TOO_LARGE)
  t.ok(await c.ping(), 'other connections unaffected')
})

t.test('connection bound: one over the limit is refused clearly', async (t) => {
  const d = await startDaemon(t, { args: ['--max-connections', '4'] })
  const clients = await Promise.all(
    Array.from({ length: 4 }, () => StatecastClient.connect({ socketPath: d.socket, timeoutMs: CLIENT_TIMEOUT_MS })),
  )
  t.teardown(() => clients.forEach((c) => c.destroy()))
  await Promise.all(clients.map((c) => c.ping()))
  const r = await raw(d.socket, Buffer.alloc(0))
  t.equal(r.replies[0]?.status, Status.BUSY)
  t.equal(r.closed, true)
  const extra = await StatecastClient.connect({ socketPath: d.socket, reconnect: false })
  await t.rejects(extra.ping(), { code: 'BUSY' }, 'the client reports BUSY')
  extra.destroy()
  await Promise.all(clients.map((c) => c.ping()))
  t.pass('existing connections still served')
})

t.test('the store never exceeds its byte bound under load', async (t) => {
  const d = await startDaemon(t, { args: ['--max-bytes', String(1024 * 1024), '--max-value-bytes', String(64 * 1024)] })
  const c = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: CLIENT_TIMEOUT_MS })
  t.teardown(() => c.destroy())
  const value = Buffer.alloc(1000, 1)
  for (let i = 0; i < 3000; i += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => c.set(`k${i + j}`, value)))
  const s = (await c.stats()) as { store: { bytes: number; maxBytes: number; evictions: number; entries: number } }
  t.ok(s.store.bytes <= 1024 * 1024, `bytes ${s.store.bytes} within bound`)
  t.ok(s.store.evictions > 0, `evicted ${s.store.evictions}`)
  t.same(await c.get('k2999'), value, 'newest entries kept')
})

t.test('a client that never reads cannot stall other clients', async (t) => {
  const d = await startDaemon(t)
  const c = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: CLIENT_TIMEOUT_MS })
  t.teardown(() => c.destroy())
  await c.set('big', Buffer.alloc(60_000, 3))
  const hog = net.connect(d.socket)
  t.teardown(() => hog.destroy())
  await new Promise((r) => hog.once('connect', r))
  hog.pause()
  const req = encodeRequest({ op: Op.GET, id: 1, flags: 0, key: Buffer.from('big') })
  const burst = Buffer.concat(Array.from({ length: 2000 }, () => req)) // ~120 MB of replies it will never read
  hog.write(burst)
  for (let i = 0; i < 20; i++) t.equal((await c.get('big'))?.length, 60_000)
  const s = (await c.stats()) as { process: { rssBytes: number } }
  t.ok(s.process.rssBytes < 400 * 1024 * 1024, `daemon memory stays bounded (${Math.round(s.process.rssBytes / 1048576)} MiB)`)
})

t.test('SIGTERM: finish, unlink the socket, exit 0', async (t) => {
  const d = await startDaemon(t)
  const c = await StatecastClient.connect({ socketPath: d.socket, reconnect: false })
  await c.set('k', 'v')
  const gets = Array.from({ length: 200 }, () => c.get('k'))
  // Once one reply is back the daemon has read the burst (one write, one read): the rest must be
  // answered before the connection closes.
  await gets[0]
  d.proc.kill('SIGTERM')
  const replies: unknown = await Promise.all(gets).catch((e: unknown) => e)
  t.ok(Array.isArray(replies), 'requests the daemon had read are answered')
  t.equal(await d.exited, 0)
  t.notOk(fs.existsSync(d.socket), 'socket removed')
  t.notOk(fs.existsSync(d.adminSocket), 'admin socket removed')
  t.ok(
    d.logs.some((l) => l['msg'] === 'statecastd stopped'),
    'logged the stop',
  )
  t.ok(
    d.logs.every((l) => typeof l['level'] === 'string' && typeof l['time'] === 'string'),
    'every log line is structured JSON',
  )
  c.destroy()
})

t.test('the client survives a daemon restart', async (t) => {
  const dir = tmpDir()
  const d1 = await startDaemon(t, { dir })
  const c = await StatecastClient.connect({ socketPath: d1.socket, reconnectMaxDelayMs: 200 })
  t.teardown(() => c.destroy())
  await c.set('k', 'before')
  const lost = new Promise((r) => c.once('disconnect', r))
  await d1.stop()
  await lost
  // A request made while the daemon is down waits for the reconnect within its deadline.
  const waiting = c.set('k', 'after', { timeoutMs: 10_000 })
  const d2 = await startDaemon(t, { dir })
  await waiting
  t.equal((await c.get('k'))?.toString(), 'after', 'served by the new daemon')
  t.ok(c.connected)
  await d2.stop()
})

t.test('timeouts, aborts and close against a daemon that never answers', async (t) => {
  const dir = tmpDir()
  const sock = path.join(dir, 'mute.sock')
  const server = net.createServer((s) => s.on('data', () => {}))
  await new Promise<void>((r) => server.listen(sock, r))
  t.teardown(() => server.close())
  const c = await StatecastClient.connect({ socketPath: sock, timeoutMs: 100 })
  await t.rejects(c.get('k'), { code: 'TIMEOUT' })
  await t.rejects(c.get('k', { timeoutMs: 30 }), { code: 'TIMEOUT', message: /30 ms/ })
  const ac = new AbortController()
  const p = c.get('k', { signal: ac.signal, timeoutMs: 5000 })
  ac.abort()
  await t.rejects(p, { code: 'ABORTED' })
  await t.rejects(c.get('k', { signal: AbortSignal.abort() }), { code: 'ABORTED' })
  const inflight = c.get('k', { timeoutMs: 5000 })
  c.destroy()
  await t.rejects(inflight, { code: 'CLOSED' })
  await t.rejects(c.get('k'), { code: 'CLOSED' })
  c.destroy()
  await c.close()
  await t.rejects(StatecastClient.connect({ socketPath: path.join(dir, 'none.sock') }), { code: 'UNREACHABLE' })
})

t.test('close() lets requests in flight finish', async (t) => {
  const d = await startDaemon(t)
  const c = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: CLIENT_TIMEOUT_MS })
  await c.set('k', 'v')
  const p = Promise.all(Array.from({ length: 100 }, () => c.get('k')))
  await c.close()
  t.equal((await p).length, 100)
  await t.rejects(c.get('k'), { code: 'CLOSED' })
  await c.close()
  t.pass('close is idempotent')
})

t.test('eventually helper reports what it waited for', async (t) => {
  await t.rejects(
    eventually(() => false, 50, 'nothing'),
    /nothing not reached within 50 ms/,
  )
})
