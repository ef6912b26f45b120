/**
 * Finding 5 of issue 13: API socket backpressure held only between 64 KiB reads, so one read of
 * 13-byte GETs for a 64 KiB value queued about 5,000 replies (one client that never reads: 371 MB;
 * eight: 2.6 GB). Now a connection's frames wait while its queued replies exceed a bound.
 */
import t from 'tap'
import fs from 'node:fs'
import net from 'node:net'
import { StatecastClient } from '../../client/index.js'
import { Op, encodeRequest } from '../../protocol/local.js'
import { eventually, startDaemon } from '../helpers/daemon.js'

const MiB = 1024 * 1024
/** Store bound of the daemon under attack. */
const STORE_BYTES = 8 * MiB
/** The documented margin (docs/reliability.md): runtime and code, plus 1 MiB + one reply per connection. */
const MARGIN_BYTES = 128 * MiB
const HOGS = 8
const GETS_PER_WRITE = 1500
const WRITES = 2

function memory(pid: number): { rss: number; hwm: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)![1]) * 1024
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') }
}

t.test('eight clients that never read their 64 KiB replies keep the daemon within its bound', async (t) => {
  const d = await startDaemon(t, { args: ['--max-bytes', String(STORE_BYTES), '--cluster-enabled', 'false'] })
  const c = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: 30_000 })
  t.teardown(() => c.destroy())
  const value = Buffer.alloc(64 * 1024, 7)
  await c.set('big', value)
  const before = memory(d.proc.pid!)

  const get = encodeRequest({ op: Op.GET, id: 1, flags: 0, key: Buffer.from('big') })
  const burst = Buffer.concat(Array.from({ length: GETS_PER_WRITE }, () => get))
  const hogs: net.Socket[] = []
  for (let i = 0; i < HOGS; i++) {
    const s = net.connect(d.socket)
    hogs.push(s)
    t.teardown(() => s.destroy())
    s.on('error', () => {})
    await new Promise((r) => s.once('connect', r))
    s.pause() // never reads a reply
    for (let w = 0; w < WRITES; w++) s.write(burst)
  }
  const sent = HOGS * GETS_PER_WRITE * WRITES
  t.comment(`${HOGS} clients sent ${sent} GETs (${((sent * value.length) / MiB).toFixed(0)} MiB of replies) and read none`)

  // Every hog has been read and answered up to its bound once the daemon counts a few requests
  // from each; the old daemon answered a whole read (every GET in it) at once.
  await eventually(async () => ((await c.stats()) as { api: { requests: number } }).api.requests >= HOGS * 8, 20_000, 'every hog read')
  t.equal((await c.get('big'))?.length, value.length, "another client's GET is answered")
  t.ok((await c.ping()) >= 0, 'and its PING')
  const s = (await c.stats()) as { api: { requests: number } }
  const after = memory(d.proc.pid!)
  t.comment(
    `requests handled ${s.api.requests} of ${sent + 4}; VmRSS ${(before.rss / MiB).toFixed(1)} -> ${(after.rss / MiB).toFixed(1)} MiB, VmHWM ${(after.hwm / MiB).toFixed(1)} MiB; bound ${(STORE_BYTES + MARGIN_BYTES) / MiB} MiB`,
  )
  t.ok(after.rss < STORE_BYTES + MARGIN_BYTES, `VmRSS ${(after.rss / MiB).toFixed(1)} MiB under store bound + margin`)
  t.ok(after.hwm < STORE_BYTES + MARGIN_BYTES, `peak VmHWM ${(after.hwm / MiB).toFixed(1)} MiB under store bound + margin`)
  t.ok(s.api.requests < sent / 4, "the hogs' frames wait unhandled instead of becoming queued replies")

  // A hog that starts reading gets every one of its replies, in order, none lost.
  const hog = hogs[0]!
  let bytes = 0
  hog.on('data', (b: Buffer) => (bytes += b.length))
  hog.resume()
  await eventually(() => bytes >= GETS_PER_WRITE * WRITES * value.length, 60_000, 'the first hog read all its replies')
  t.pass(`the hog that resumed reading got all its replies (${(bytes / MiB).toFixed(0)} MiB)`)
  for (const h of hogs) h.destroy()
  t.ok(await c.ping(), 'daemon serving after the hogs left')
})
