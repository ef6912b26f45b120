/** The memcached front end, driven by a well-known memcached client library and by raw lines. */
import t from 'tap'
import net from 'node:net'
import path from 'node:path'
import Memcached from 'memcached'
import { CLIENT_TIMEOUT_MS, GENEROUS_LOOKUPS, startCluster } from '../helpers/cluster.js'
import { eventually, freePort, startDaemon } from '../helpers/daemon.js'

function mc(location: string): Memcached {
  return new Memcached(location, { retries: 0, timeout: 2000, idle: 1000, reconnect: 1000, poolSize: 2 })
}
const p = <T>(fn: (cb: (err: unknown, v: T) => void) => void) =>
  new Promise<T>((res, rej) => fn((err, v) => (err ? rej(err instanceof Error ? err : new Error(String(err))) : res(v))))

/** Sends raw text, resolves what came back once `until` matches (or the socket closes). */
function rawLines(location: string, text: string | Buffer, until: RegExp): Promise<string> {
  return new Promise((resolve) => {
    const s = location.startsWith('/') ? net.connect(location) : net.connect(Number(location.split(':')[1]), '127.0.0.1')
    let out = ''
    const done = () => {
      s.destroy()
      resolve(out)
    }
    const timer = setTimeout(done, 3000)
    s.on('data', (b) => {
      out += b.toString('latin1')
      if (until.test(out)) {
        clearTimeout(timer)
        done()
      }
    })
    s.on('close', () => {
      clearTimeout(timer)
      resolve(out)
    })
    s.on('error', () => {})
    s.write(text)
  })
}

t.test('a memcached client library against the front end, across two hosts', async (t) => {
  // The lookup deadline a loaded machine meets: a 50 kB value is 37 datagrams to reassemble.
  const probe = await startCluster(t, 0)
  const sockA = `127.0.0.1:${await freePort()}`
  const sockB = `127.0.0.1:${await freePort()}`
  const { startNode, waitMembers } = await import('../helpers/cluster.js')
  const a = await startNode(t, {
    dir: probe.dir,
    name: 'a',
    keyFile: probe.keyFile,
    group: probe.group,
    port: probe.port,
    args: ['--memcache-listen', sockA, '--replication-factor', '1', ...GENEROUS_LOOKUPS],
  })
  const b = await startNode(t, {
    dir: probe.dir,
    name: 'b',
    keyFile: probe.keyFile,
    group: probe.group,
    port: probe.port,
    args: ['--memcache-listen', sockB, '--replication-factor', '1', ...GENEROUS_LOOKUPS],
  })
  await waitMembers([a, b], 1)
  const ca = mc(sockA)
  const cb = mc(sockB)
  t.teardown(() => {
    ca.end()
    cb.end()
  })

  t.equal(await p<boolean>((k) => ca.set('greeting', 'hello', 0, k)), true)
  t.equal(await p<string>((k) => ca.get('greeting', k)), 'hello')
  t.equal(await p<unknown>((k) => ca.get('absent', k)), undefined)

  // Flags travel: the library marks JSON and binary values with flags and decodes by them.
  await p((k) => ca.set('obj', { a: 1, b: [2, 3] }, 60, k))
  t.same(await p((k) => ca.get('obj', k)), { a: 1, b: [2, 3] })
  const bin = Buffer.from([0, 1, 2, 0xff, 13, 10, 13, 10])
  await p((k) => ca.set('bin', bin as unknown as string, 60, k))
  t.same(await p((k) => ca.get('bin', k)), bin, 'binary value with CRLF inside')

  const multi = await p<Record<string, unknown>>((k) => ca.getMulti(['greeting', 'absent', 'obj'], k))
  t.same(multi, { greeting: 'hello', obj: { a: 1, b: [2, 3] } }, 'get with several keys')

  t.equal(await p<boolean>((k) => ca.add('greeting', 'again', 0, k)).catch(() => false), false, 'add of an existing key: NOT_STORED')
  t.equal(await p<boolean>((k) => ca.add('fresh', 'new', 0, k)), true)
  t.equal(await p<boolean>((k) => ca.replace('greeting', 'hi', 0, k)), true)
  t.equal(await p<boolean>((k) => ca.replace('nothing-here', 'x', 0, k)).catch(() => false), false, 'replace of an absent key: NOT_STORED')
  t.equal(await p<boolean>((k) => ca.touch('greeting', 100, (err: unknown) => k(err, true))), true)
  t.equal(await p<boolean>((k) => ca.del('fresh', k)), true)
  t.equal(await p<unknown>((k) => ca.get('fresh', k)), undefined)
  const version = await p<{ version: string }[]>((k) => ca.version(k))
  // VERSION 1.6.18-statecast-0.1.0: this library reads the last x.y.z, libmemcached the first.
  t.equal(version[0]?.version, '0.1.0', "VERSION ends with the daemon's version")

  // A value larger than one datagram, stored on A, fetched by B's front end from A.
  const big = 'x'.repeat(20_000) + 'y'.repeat(30_000)
  await p((k) => ca.set('big-session', big, 300, k))
  t.equal(await p<string>((k) => cb.get('big-session', k)), big, '50 kB value crossed from A to B intact')
  const sb = (await b.admin.stats()) as { memcache: { remoteHits: number } }
  t.equal(sb.memcache.remoteHits, 1, 'B fetched it from a peer')
  // Deleting on B removes A's copy too.
  // B holds a copy of greeting when it decided the replace above (its decider: replicationFactor 1
  // copies nothing, but a conditional write is decided, and kept, at the key's one owner).
  const heldOnB = (await b.client.get('greeting', { localOnly: true })) !== undefined
  t.equal(await p<boolean>((k) => cb.del('greeting', k)).catch(() => false), heldOnB, 'DELETED on B exactly when B held a copy')
  await eventually(async () => (await a.client.get('greeting', { localOnly: true })) === undefined, 20_000, 'A drops its copy')
  t.pass("the delete on B removed A's copy")
})

t.test('exptime rules and mod_ssl-style lines', async (t) => {
  const loc = `127.0.0.1:${await freePort()}`
  const d = await startDaemon(t, { args: ['--memcache-listen', loc] })
  const { StatecastClient } = await import('../../client/index.js')
  const admin = await StatecastClient.connect({ socketPath: d.adminSocket, timeoutMs: CLIENT_TIMEOUT_MS })
  t.teardown(() => admin.destroy())
  const ttlOf = async (k: string) => (await admin.getEntry(k, { localOnly: true }))?.ttlMs
  const now = Math.floor(Date.now() / 1000)
  const out = await rawLines(
    loc,
    'set rel 0 100 1\r\na\r\n' +
      'set def 0 0 1\r\nb\r\n' +
      `set abs 0 ${now + 200} 1\r\nc\r\n` +
      `set past 0 ${now - 10} 1\r\nd\r\n` +
      'set neg 0 -1 1\r\ne\r\n' +
      'version\r\n',
    /VERSION .*\r\n/,
  )
  t.equal(out.split('STORED\r\n').length - 1, 5, 'all five stored')
  const rel = (await ttlOf('rel'))!
  t.ok(rel > 98_000 && rel <= 100_000, `relative seconds (${rel})`)
  const def = (await ttlOf('def'))!
  t.ok(def > 2_592_000_000 - 60_000 && def <= 2_592_000_000, `0 = no expiry, capped by maxTtlMs (30 days by default) (${def})`)
  const abs = (await ttlOf('abs'))!
  t.ok(abs > 195_000 && abs <= 201_000, `absolute Unix time (${abs})`)
  t.equal(await ttlOf('past'), undefined, 'absolute time in the past: expired at once')
  t.equal(await ttlOf('neg'), undefined, 'negative: expired at once')

  // mod_ssl: `set KEY 0 EXPTIME LEN ` with a trailing space, `get KEY`, `delete KEY 0`.
  const key = `mod_ssl-sess:${'ab12'.repeat(16)}`
  const sess = await rawLines(
    loc,
    `set ${key} 0 300 5 \r\nhello\r\nget ${key}\r\ndelete ${key} 0\r\nget ${key}\r\nquit\r\n`,
    /END\r\n.*END\r\n/s,
  )
  t.equal(sess, `STORED\r\nVALUE ${key} 0 5\r\nhello\r\nEND\r\nDELETED\r\nEND\r\n`)
  const gets = await rawLines(loc, 'set g 7 0 2\r\nhi\r\ngets g\r\n', /END\r\n/)
  t.match(gets, /VALUE g 7 2 \d+\r\nhi\r\nEND\r\n/, 'gets adds a cas field')
})

t.test('memcached error replies, and the connection carries on', async (t) => {
  const sock = path.join((await import('../helpers/daemon.js')).tmpDir(), 'mc.sock')
  await startDaemon(t, { args: ['--memcache-listen', sock, '--max-value-bytes', '1000'] })
  const out = await rawLines(
    sock,
    'bogus\r\n' +
      'set k notanumber 0 1\r\nx\r\n' +
      'get\r\n' +
      `get ${'k'.repeat(251)}\r\n` +
      `set big 0 0 2000\r\n${'z'.repeat(2000)}\r\n` +
      'set k 0 0 3\r\nabcde\r\n' +
      'set ok 0 0 2\r\nok\r\n' +
      'get ok\r\n',
    /VALUE ok 0 2\r\nok\r\nEND\r\n/,
  )
  const lines = out.split('\r\n')
  t.equal(lines[0], 'ERROR', 'unknown command')
  t.equal(lines[1], 'CLIENT_ERROR bad command line format', 'bad flags')
  t.match(lines.slice(2).join('\n'), /^(ERROR|CLIENT_ERROR bad command line format)\n/, 'the data line of the bad set is read as a command')
  t.match(
    out,
    /CLIENT_ERROR bad command line format\r\n(.*\r\n)*SERVER_ERROR object too large for cache\r\n/,
    'key too long, then value too large',
  )
  t.match(out, /CLIENT_ERROR bad data chunk\r\n/, 'data longer than declared')
  t.match(out, /STORED\r\nVALUE ok 0 2\r\nok\r\nEND\r\n$/, 'still serving after every error')
  const stats = await rawLines(sock, 'stats\r\n', /END\r\n/)
  t.match(stats, /STAT curr_items \d+\r\n/)
  t.match(stats, /STAT limit_maxbytes \d+\r\n/)
})

t.test('the front end refuses non-loopback TCP', async (t) => {
  const d = await startDaemon(t, { args: ['--memcache-listen', '0.0.0.0:11211'], wait: false })
  t.equal(await d.exited, 2)
})
