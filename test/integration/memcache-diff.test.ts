/**
 * The memcache front end against memcached 1.6 itself (issue 16 points 3 and 4): one pymemcache
 * script (test/helpers/memcache_diff.py) runs against a real memcached and against statecastd,
 * and their answers must be equal, row by row. Left out of the comparison, as they legitimately
 * differ: cas unique values, stats contents and the VERSION text (the script does not record them).
 * Then libmemcached's tools against the front end, flush_all's refusal option, and an incr on one
 * host read by a get on another.
 */
import t from 'tap'
import { spawn, execFileSync } from 'node:child_process'
import net from 'node:net'
import path from 'node:path'
import { startCluster, startNode, waitMembers } from '../helpers/cluster.js'
import { ROOT, eventually, freePort, startDaemon } from '../helpers/daemon.js'
import { needs } from '../helpers/needs.js'

const NEEDS = needs({
  commands: ['memcached', '/usr/bin/python3', 'memcping', 'memcstat', 'memcslap'],
  files: [{ path: '/usr/lib/python3/dist-packages/pymemcache', from: 'python3-pymemcache' }],
})

const SCRIPT = path.join(ROOT, 'test', 'helpers', 'memcache_diff.py')
// Debian's python3 has Debian's python3-pymemcache (scripts/install-system-deps.sh).
const PYTHON = '/usr/bin/python3'

function run(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    p.stdout.setEncoding('latin1').on('data', (s: string) => (stdout += s))
    p.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
    p.once('close', (code) => resolve({ code, stdout, stderr }))
  })
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => (s.destroy(), resolve(true)))
    s.once('error', () => resolve(false))
  })
}

/** A real memcached on a free loopback port, with its defaults (item limit 1 MiB, statecast's default too). */
async function startMemcached(t: { teardown(fn: () => unknown): void }): Promise<number> {
  const port = await freePort()
  const asRoot = process.getuid?.() === 0 ? ['-u', 'root'] : []
  const p = spawn('memcached', ['-l', '127.0.0.1', '-p', String(port), '-U', '0', '-m', '64', ...asRoot], { stdio: 'ignore' })
  const exited = new Promise((r) => p.once('close', r))
  t.teardown(async () => {
    p.kill('SIGKILL')
    await exited
  })
  await eventually(() => canConnect(port), 30_000, 'memcached listening')
  return port
}

function rawLines(port: number, text: string, until: RegExp): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    let out = ''
    const timer = setTimeout(() => (s.destroy(), resolve(out)), 10_000)
    s.on('data', (b) => {
      out += b.toString('latin1')
      if (until.test(out)) {
        clearTimeout(timer)
        s.destroy()
        resolve(out)
      }
    })
    s.on('error', () => {})
    s.write(text)
  })
}

t.test('pymemcache gets the same answers from statecast as from memcached 1.6, for every command', NEEDS, async (t) => {
  const mcPort = await startMemcached(t)
  const scPort = await freePort()
  // Both with their defaults: flush_all allowed, items up to 1 MiB (the refusal option is tested below).
  await startDaemon(t, { args: ['--memcache-listen', `127.0.0.1:${scPort}`, '--cluster-enabled', 'false'] })
  const [m, s] = await Promise.all([run(PYTHON, [SCRIPT, '127.0.0.1', String(mcPort)]), run(PYTHON, [SCRIPT, '127.0.0.1', String(scPort)])])
  t.equal(m.code, 0, `script against memcached: ${m.stderr}`)
  t.equal(s.code, 0, `script against statecast: ${s.stderr}`)
  const mem = JSON.parse(m.stdout) as [string, unknown][]
  const sc = JSON.parse(s.stdout) as [string, unknown][]
  t.equal(sc.length, mem.length, 'the same rows')
  t.ok(mem.length > 80, `${mem.length} rows compared`)
  for (let i = 0; i < mem.length; i++) t.same(sc[i], mem[i], mem[i]![0])
  // The comparison is not of two failures: memcached's own answers are the ones expected.
  const row = (label: string) => mem.find(([l]) => l === label)?.[1]
  t.equal(row('get n after decr'), '9 ', 'decr rewrites in place, padded with a space')
  t.equal(row('incr wraps'), 1, 'incr wraps at 2^64')
  t.equal(row('get after oversized'), null, 'a refused oversized set removes the old value')
  t.equal(row('exp 0'), 'x')
  t.equal(row('exp absolute past'), null)
  t.equal(row('get after noreply'), '533')
  t.match(
    row('keys with control bytes'),
    /^(STORED\r\n){4}VALUE a\x01b 0 1\r\n1\r\nVALUE a\tb 0 1\r\n2\r\nVALUE a\x7fb 0 1\r\n3\r\nVALUE a\rb 0 1\r\n4\r\nEND\r\n/,
  )
  t.match(row('bare newline lines'), /^STORED\r\nVALUE nl 0 2\r\nhi\r\nEND\r\nDELETED\r\nEND\r\n/)
  t.equal(Object.keys(row('get_many 400 keys') as object).length, 58, 'a multi-get of 400 keys of 200 bytes')
})

t.test("libmemcached's memcping, memcstat and memcslap against the front end", async (t) => {
  const port = await freePort()
  await startDaemon(t, { args: ['--memcache-listen', `127.0.0.1:${port}`, '--cluster-enabled', 'false'] })
  const servers = `--servers=127.0.0.1:${port}`
  const ping = await run('memcping', [servers])
  t.equal(ping.code, 0, `memcping: ${ping.stdout}${ping.stderr}`)
  const stat = await run('memcstat', [servers])
  t.equal(stat.code, 0, `memcstat: ${stat.stderr}`)
  t.match(stat.stdout, /version: 1\.6\.\d+-statecast-/)
  t.match(stat.stdout, /statecast_version: \d+\.\d+\.\d+/, "statecast's own version in stats")
  for (const test of ['set', 'get', 'mget']) {
    const slap = await run('memcslap', [servers, `--test=${test}`, '--execute-number=500', '--concurrency=2'])
    t.equal(slap.code, 0, `memcslap --test=${test}: ${slap.stderr}`)
  }
  t.match(execFileSync('memcping', ['--version']).toString(), /./, 'memcping is installed')
})

t.test(
  'flush_all is refused with memcacheFlushAll false (allowed by default, as memcached), and then empties only this host',
  NEEDS,
  async (t) => {
    const port = await freePort()
    const d = await startDaemon(t, {
      args: ['--memcache-listen', `127.0.0.1:${port}`, '--cluster-enabled', 'false', '--memcache-flush-all', 'false'],
    })
    const out = await rawLines(port, 'set k 0 0 1\r\nv\r\nflush_all\r\nflush_all noreply\r\nget k\r\n', /END\r\n/)
    t.equal(
      out,
      'STORED\r\nCLIENT_ERROR flush_all not allowed\r\nVALUE k 0 1\r\nv\r\nEND\r\n',
      'refused as memcached -F refuses it; nothing flushed',
    )
    t.match(await rawLines(port, 'stats settings\r\n', /END\r\n/), /STAT flush_enabled no\r\n/)
    t.equal(d.proc.exitCode, null)
  },
)

/** Two daemons of one cluster, each with a memcache front end on its own loopback port. */
async function twoFrontEnds(t: Parameters<typeof startCluster>[0]): Promise<{ pa: number; pb: number }> {
  const probe = await startCluster(t, 0)
  const pa = await freePort()
  const pb = await freePort()
  const a = await startNode(t, {
    dir: probe.dir,
    name: 'a',
    keyFile: probe.keyFile,
    group: probe.group,
    port: probe.port,
    args: ['--memcache-listen', `127.0.0.1:${pa}`],
  })
  const b = await startNode(t, {
    dir: probe.dir,
    name: 'b',
    keyFile: probe.keyFile,
    group: probe.group,
    port: probe.port,
    args: ['--memcache-listen', `127.0.0.1:${pb}`],
  })
  await waitMembers([a, b], 1)
  return { pa, pb }
}

t.test('incr, append and touch on one host are seen by a get on another', NEEDS, async (t) => {
  const { pa, pb } = await twoFrontEnds(t)
  t.equal(await rawLines(pa, 'set counter 7 0 2\r\n41\r\nset log 0 0 3\r\nabc\r\n', /(STORED\r\n){2}/), 'STORED\r\nSTORED\r\n')
  await eventually(
    async () => /VALUE counter 7 2\r\n41\r\n/.test(await rawLines(pb, 'get counter\r\n', /END\r\n/)),
    30_000,
    'B reads the set',
  )
  t.equal(await rawLines(pb, 'incr counter 1\r\nappend log 0 0 3\r\ndef\r\n', /STORED\r\n/), '42\r\nSTORED\r\n', 'incr and append on B')
  await eventually(
    async () => (await rawLines(pa, 'get counter log\r\n', /END\r\n/)) === 'VALUE counter 7 2\r\n42\r\nVALUE log 0 6\r\nabcdef\r\nEND\r\n',
    30_000,
    "A sees B's incr and append",
  )
  t.pass('A sees the incremented counter and the appended log, flags kept')
  t.equal(await rawLines(pa, 'decr counter 50\r\n', /\r\n/), '0\r\n', 'decr on A floors at 0')
  await eventually(
    async () => (await rawLines(pb, 'get counter\r\n', /END\r\n/)) === 'VALUE counter 7 2\r\n0 \r\nEND\r\n',
    30_000,
    "B sees A's decr",
  )
  t.pass('B sees the decremented counter, padded in place as memcached does')
  t.equal(await rawLines(pb, 'touch log -1\r\n', /\r\n/), 'TOUCHED\r\n', 'a touch into the past on B')
  await eventually(async () => (await rawLines(pa, 'get log\r\n', /END\r\n/)) === 'END\r\n', 30_000, 'A drops the expired log')
  t.pass('the expiring touch removed the key on A too')
})

t.test('cas unique values are the same on every host, and any write on any host changes them', NEEDS, async (t) => {
  const { pa, pb } = await twoFrontEnds(t)
  const unique = async (port: number, key: string) =>
    /^VALUE \S+ \d+ \d+ (\d+)\r\n/.exec(await rawLines(port, `gets ${key}\r\n`, /END\r\n/))?.[1]
  t.equal(await rawLines(pa, 'set s 0 0 2\r\nv1\r\n', /\r\n/), 'STORED\r\n')
  const ua = await unique(pa, 's')
  t.ok(ua && ua !== '0', `gets on A reports a unique value (${ua})`)
  // B reads the same unique value, from its own copy or a fill: it is the entry's version.
  await eventually(async () => (await unique(pb, 's')) === ua, 30_000, "B reports A's unique value")
  t.pass('B reports the same unique value as A')
  t.equal(await rawLines(pb, `cas s 0 0 2 ${ua}\r\nv2\r\n`, /\r\n/), 'STORED\r\n', 'a cas on B with the unique read on A is stored')
  await eventually(async () => (await rawLines(pa, 'get s\r\n', /END\r\n/)) === 'VALUE s 0 2\r\nv2\r\nEND\r\n', 30_000, 'A sees the cas')
  t.pass('A sees the value stored by the cas on B')
  // The write on B (a peer write for A) changed the unique value on A too.
  t.equal(await rawLines(pa, `cas s 0 0 2 ${ua}\r\nv3\r\n`, /\r\n/), 'EXISTS\r\n', "the old unique value is refused on A after B's write")
  const ub = await unique(pa, 's')
  t.not(ub, ua, 'A reports a new unique value')
  t.equal(await rawLines(pa, `cas s 0 0 2 ${ub}\r\nv3\r\n`, /\r\n/), 'STORED\r\n', 'and takes a cas with it')
})
