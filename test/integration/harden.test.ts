/**
 * Regression tests for issue 21's findings 5, 8, 11, 12, 13, 14 (the hardening branch): each
 * reproduces the attack on real daemons and checks that it does no harm.
 */
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import t, { type Test } from 'tap'
import { StatecastClient } from '../../client/index.js'
import { replicationSettled, startCluster, startNode, waitMembers, writeKeyFile, type Node } from '../helpers/cluster.js'
import { ROOT, eventually, freePort, runCli, startDaemon, tmpDir, type Running } from '../helpers/daemon.js'
import { UnixListener } from '../../daemon/local/unix-listener.js'

async function memcacheLines(port: number, text: string, until: RegExp): Promise<string> {
  const sock = net.connect(port, '127.0.0.1')
  let got = ''
  try {
    return await new Promise<string>((resolve, reject) => {
      sock.on('data', (d) => {
        got += d.toString()
        if (until.test(got)) resolve(got)
      })
      sock.on('error', reject)
      sock.write(text)
    })
  } finally {
    sock.destroy()
  }
}

t.test('finding 5: 6,000 deletes of random keys through memcache do not stop fills of sessions a host lacks', async (t) => {
  const mc = await freePort()
  // A small tombstone table, so that 6,000 deletes overflow it as 66,000 would at the default.
  const lookups = ['--lookup-timeout-ms', '20000', '--lookup-retries', '4', '--max-tombstones', '1000']
  const { nodes: two, dir, keyFile, group, port } = await startCluster(t, 2, lookups)
  const c = await startNode(t, { dir, name: 'c', keyFile, group, port, args: [...lookups, '--memcache-listen', `127.0.0.1:${mc}`] })
  const nodes = [...two, c]
  await waitMembers(nodes, 2)
  const b = two[1]!
  const sessions = Array.from({ length: 150 }, (_, i) => `sess:${i}`)
  for (const k of sessions) await b.client.set(k, Buffer.from(`state-${k}`))
  await replicationSettled(nodes)
  // A session sits on its two owners and on its writer: when the writer is an owner, the third
  // host lacks it and must fill it from them. Those are the ones looked at.
  const lacking = new Map<string, Node>()
  for (const k of sessions) for (const n of nodes) if (!(await n.client.get(k, { localOnly: true }))) lacking.set(k, n)
  t.ok(lacking.size >= 50, `${lacking.size} sessions lacked by one host`)
  // One real logout during the attack: it must stay deleted everywhere.
  const [gone] = [...lacking.keys()]
  lacking.delete(gone!)
  // The attack: on the host with the memcache listener, deletes of keys no host ever held.
  const n = 6000
  let lines = ''
  for (let i = 0; i < n; i++) lines += `delete rnd-${i}-${Math.random().toString(36).slice(2)} noreply\r\n`
  const flood = memcacheLines(mc, lines + 'version\r\n', /VERSION /)
  t.equal(await b.client.delete(gone!), true, 'a real session deleted during the flood')
  await flood
  await replicationSettled(nodes)
  let filled = 0
  for (const [k, n] of lacking) if ((await n.client.get(k))?.equals(Buffer.from(`state-${k}`))) filled++
  t.comment(`${filled} of ${lacking.size} fills`)
  t.equal(filled, lacking.size, 'every session a host lacks is filled from the others')
  for (const n of nodes) t.equal(await n.client.get(gone!), undefined, `${n.name} does not serve the deleted session`)
})

/** Opens `n` TCP connections to `port` that send nothing; resolves once each is connected or failed. */
async function idleConnections(t: Test, port: number, n: number): Promise<net.Socket[]> {
  const socks: net.Socket[] = []
  t.teardown(() => socks.forEach((s) => s.destroy()))
  await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<void>((resolve) => {
          const s = net.connect(port, '127.0.0.1')
          socks.push(s)
          s.on('connect', () => resolve())
          s.on('error', () => resolve())
          s.on('close', () => resolve())
        }),
    ),
  )
  return socks
}

t.test('finding 8: 1,100 idle connections to the metrics listener do not take the API away', async (t) => {
  const port = await freePort()
  // The descriptor limit a shell or a plain unit gives (1024), as in the finding.
  const d = await startDaemon(t, {
    args: ['--metrics-listen', `127.0.0.1:${port}`, '--cluster-enabled', 'false'],
    prefix: ['prlimit', '--nofile=1024:1024', '--'],
  })
  const socks = await idleConnections(t, port, 1100)
  const fds = fs.readdirSync(`/proc/${d.proc.pid}/fd`).length
  t.ok(fds < 200, `the daemon holds ${fds} descriptors with 1,100 connections made to its metrics port`)
  // Each API connect and request succeeds while the idle connections are held open on our side.
  for (let i = 0; i < 20; i++) {
    const c = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: 30_000 })
    await c.set(`k${i}`, Buffer.from('v'))
    if (!(await c.get(`k${i}`))?.equals(Buffer.from('v'))) t.fail(`API request ${i} answered wrongly`)
    await c.close()
  }
  t.pass('20 API connections served during the flood')
  // The idle connections the daemon kept are closed by it within its idle timeout, and a scrape
  // then gets through, counting the connections it refused.
  await eventually(() => socks.every((s) => s.destroyed || s.readyState === 'closed'), 60_000, 'the daemon closed every idle connection')
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  const refused = Number(/^statecast_metrics_connections_refused_total (\d+)/m.exec(text)?.[1])
  t.ok(refused >= 1000, `${refused} connections refused on arrival (counted)`)
})

t.test("finding 11: a directory made while a Unix listener binds gets the mode asked for, not the socket's", async (t) => {
  const dir = tmpDir('sc-umask-')
  const server = net.createServer()
  t.teardown(() => server.close())
  const made: Promise<number>[] = []
  // Whatever else the daemon does while the listener binds (ticket export makes directories then):
  // a directory made on every turn of the event loop until the listener is up, and one at the
  // very moment the socket starts listening.
  let up = false
  const tick = () => {
    if (up) return
    const d = path.join(dir, `d${made.length}`)
    made.push(fs.promises.mkdir(d, { mode: 0o755 }).then(() => fs.statSync(d).mode & 0o777))
    setImmediate(tick)
  }
  server.on('listening', () => {
    const d = path.join(dir, 'at-listening')
    fs.mkdirSync(d, { mode: 0o755 })
    made.push(Promise.resolve(fs.statSync(d).mode & 0o777))
  })
  tick()
  const l = await UnixListener.listen(server, { path: path.join(dir, 'api.sock'), mode: 0o600 })
  up = true
  t.teardown(() => l.close())
  const want = 0o755 & ~process.umask()
  const modes = await Promise.all(made)
  t.ok(modes.length >= 2, `${modes.length} directories made while it bound`)
  t.same(
    modes.filter((m) => m !== want).map((m) => m.toString(8)),
    [],
    `every one 0${want.toString(8)}`,
  )
  t.equal(fs.statSync(path.join(dir, 'api.sock')).mode & 0o777, 0o600, 'the socket has its own mode')
  t.same(
    fs.readdirSync(dir).filter((f) => f.startsWith('.sc-')),
    [],
    'no private name left behind',
  )
})

/** The next reload outcome logged after `from` log lines: reloaded or failed. */
async function nextReload(d: Running, from: number): Promise<Record<string, unknown>> {
  const r = await eventually(
    () =>
      d.logs
        .slice(from)
        .find((l) => l['msg'] === 'configuration reloaded' || l['msg'] === 'reload failed; the running configuration is unchanged'),
    60_000,
    'a reload outcome',
  )
  return r!
}

t.test('finding 12: a SIGHUP that reads an empty (half-written) config is refused and the running config kept', async (t) => {
  const dir = tmpDir('sc-hup-')
  const conf = path.join(dir, 'statecast.toml')
  const full = 'logLevel = "debug"\nmaxConnections = 77\n'
  fs.writeFileSync(conf, full)
  const d = await startDaemon(t, { dir, args: ['--config', conf, '--cluster-enabled', 'false'] })
  // An editor's save: truncated first, then written. The SIGHUP lands in between.
  fs.truncateSync(conf, 0)
  let from = d.logs.length
  d.proc.kill('SIGHUP')
  const r = await nextReload(d, from)
  t.equal(r['msg'], 'reload failed; the running configuration is unchanged', 'the empty file is refused')
  t.match(String(r['err']), new RegExp(`config file ${conf} is empty`), 'and the log line says why, naming the file')
  fs.writeFileSync(conf, full)
  from = d.logs.length
  d.proc.kill('SIGHUP')
  const again = await nextReload(d, from)
  t.equal(again['msg'], 'configuration reloaded')
  t.same(again['applied'], [], 'the whole file again changes nothing: the running config had kept it')
  t.equal(await d.stop(), 0)
})

t.test('finding 12: SIGHUPs in a burst, the file rewritten between them: the last file is what runs', async (t) => {
  const dir = tmpDir('sc-hup-')
  const conf = path.join(dir, 'statecast.toml')
  fs.writeFileSync(conf, 'maxConnections = 10\n')
  const d = await startDaemon(t, { dir, args: ['--config', conf, '--cluster-enabled', 'false'] })
  for (let i = 11; i <= 30; i++) {
    // Written beside and renamed into place, as a config should be.
    fs.writeFileSync(`${conf}.new`, `maxConnections = ${i}\n`)
    fs.renameSync(`${conf}.new`, conf)
    d.proc.kill('SIGHUP')
  }
  // One more reload of the same file must find nothing to change, whenever the burst's last one ran.
  await eventually(() => d.logs.filter((l) => l['msg'] === 'configuration reloaded').length >= 1, 60_000, 'a reload')
  await eventually(
    async () => {
      const from = d.logs.length
      d.proc.kill('SIGHUP')
      const r = await nextReload(d, from)
      return r['msg'] === 'configuration reloaded' && (r['applied'] as string[]).length === 0
    },
    60_000,
    'the last file is in force',
  )
  t.equal(d.logs.filter((l) => l['msg'] === 'reload failed; the running configuration is unchanged').length, 0, 'no reload failed')
  t.equal(await d.stop(), 0)
})

t.test(
  'finding 13: a config or key file others may write, or another user owns, is refused, naming the file; --check-config says the same',
  async (t) => {
    const dir = tmpDir('sc-perm-')
    fs.chmodSync(dir, 0o755)
    const conf = path.join(dir, 'statecast.toml')
    fs.writeFileSync(conf, 'adminSocketMode = "0666"\nlogLevel = "info"\n')
    fs.chmodSync(conf, 0o666)
    const bad = await startDaemon(t, { dir, args: ['--config', conf, '--cluster-enabled', 'false'], wait: false })
    const started = bad
      .waitLog((l) => l['msg'] === 'statecastd ready', 120_000)
      .then(
        () => 'started',
        () => 'not started',
      )
    t.equal(await Promise.race([bad.exited, started]), 2, 'a world-writable config: start-up refused (exit 2)')
    t.match(bad.stderr(), new RegExp(`config file ${conf} has mode 0666: group or others may write it`), 'the error names the file and why')
    const check = await runCli(['check-config', conf])
    t.equal(check.code, 2, 'statecast check-config: invalid')
    t.match(check.stderr, new RegExp(`config file ${conf} has mode 0666`))
    fs.chmodSync(conf, 0o620)
    t.equal((await runCli(['check-config', conf])).code, 2, 'group-writable: refused too')
    fs.chmodSync(conf, 0o644)
    fs.chownSync(conf, 65534, 65534)
    const other = await runCli(['check-config', conf])
    t.equal(other.code, 2, "another user's file: refused")
    t.match(other.stderr, new RegExp(`config file ${conf} belongs to uid 65534`))
    fs.chownSync(conf, 0, 0)
    t.equal((await runCli(['check-config', conf])).code, 0, 'root-owned 0644: valid')
    const keyFile = writeKeyFile(dir)
    fs.chownSync(keyFile, 65534, 65534)
    const k = await startDaemon(t, { dir, args: ['--key-file', keyFile], wait: false })
    const kStarted = k
      .waitLog((l) => l['msg'] === 'statecastd ready', 120_000)
      .then(
        () => 'started',
        () => 'not started',
      )
    t.equal(await Promise.race([k.exited, kStarted]), 1, 'a key file another user owns: start-up refused')
    t.match(k.stderr(), new RegExp(`key file ${keyFile} belongs to uid 65534`))
    fs.writeFileSync(path.join(dir, 'k.toml'), `keyFile = "${keyFile}"\n`)
    const kc = await runCli(['check-config', path.join(dir, 'k.toml')])
    t.equal(kc.code, 2, '--check-config refuses it too')
    t.match(kc.stderr, /belongs to uid 65534/)
  },
)

t.test('finding 14: flush_all with a delay of 30 days (beyond 24.8) does not flush now', async (t) => {
  const mc = await freePort()
  const d = await startDaemon(t, {
    args: ['--memcache-listen', `127.0.0.1:${mc}`, '--memcache-flush-all', 'true', '--cluster-enabled', 'false'],
  })
  void d
  t.equal(await memcacheLines(mc, 'set kept 0 0 5\r\nhello\r\n', /\r\n$/), 'STORED\r\n')
  const now = Math.floor(Date.now() / 1000)
  for (const delay of ['2592000', String(now + 40 * 86_400)]) {
    t.equal(await memcacheLines(mc, `flush_all ${delay}\r\n`, /\r\n$/), 'OK\r\n', `flush_all ${delay}`)
  }
  // The daemon's clock moves on by a second (a timer set to overflow would have fired by then).
  const time = async () => Number(/STAT time (\d+)/.exec(await memcacheLines(mc, 'stats\r\n', /END\r\n/))![1])
  const t0 = await time()
  await eventually(async () => (await time()) > t0, 30_000, "the daemon's clock moved on")
  t.equal(await memcacheLines(mc, 'get kept\r\n', /END\r\n/), 'VALUE kept 0 5\r\nhello\r\nEND\r\n', 'the key is still there')
  t.equal(await memcacheLines(mc, 'flush_all\r\n', /\r\n$/), 'OK\r\n')
  t.equal(await memcacheLines(mc, 'get kept\r\n', /END\r\n/), 'END\r\n', 'a flush_all without delay still flushes at once')
})

t.test('finding 15: statecast keys shows control characters escaped; --json stays exact', async (t) => {
  const d = await startDaemon(t, { args: ['--cluster-enabled', 'false'] })
  const c = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: 30_000 })
  t.teardown(() => c.destroy())
  // Sets the terminal title, clears the screen, fakes a second line, and reverses text.
  const evil = 'evil\x1b]0;pwned\x07\x1b[2J\nfake-key\t99999s\u202etxt.exe\x9b31m'
  await c.set(evil, Buffer.from('v'))
  await c.set('plain', Buffer.from('v'))
  const r = await runCli(['--socket', d.adminSocket, 'keys'])
  t.equal(r.code, 0)
  const out = r.stdout.toString()
  t.notOk(/[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]/.test(out), 'no control character reaches the terminal')
  const lines = out.trimEnd().split('\n')
  t.equal(lines.length, 2, 'one line per key: the newline in the key made no line of its own')
  t.ok(lines.includes('plain\t' + lines.find((l) => l.startsWith('plain'))!.split('\t')[1]), 'a plain key prints as it is')
  t.ok(
    lines.some((l) => l.startsWith('evil\\x1b]0;pwned\\x07\\x1b[2J\\nfake-key\\t99999s\\u202etxt.exe\\x9b31m\t')),
    'the evil key is shown escaped, whole',
  )
  const j = await runCli(['--socket', d.adminSocket, 'keys', '--json'])
  const keys = (JSON.parse(j.stdout.toString()) as { key: string }[]).map((k) => k.key)
  t.ok(keys.includes(evil), '--json gives the key exactly')
  const miss = await runCli(['check-config', path.join(d.dir, 'no\x1b[2Jsuch.toml')])
  t.equal(miss.code, 2)
  t.match(miss.stderr, /cannot read config file .*no\\x1b\[2Jsuch\.toml/, 'an error naming a file is escaped too')
})

t.test('issue 26 point 6: two concurrent close() calls with a request in flight both settle; destroy() is idempotent', async (t) => {
  const d = await startDaemon(t, { args: ['--cluster-enabled', 'false'] })
  t.teardown(() => void d.proc.kill('SIGCONT'))
  const c = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: 60_000 })
  await c.set('k', Buffer.from('v'))
  // The daemon stopped: the GET is sent and stays in flight until it runs again.
  d.proc.kill('SIGSTOP')
  const get = c.get('k')
  const first = c.close()
  const second = c.close()
  t.equal(first, second, 'the same promise')
  await t.rejects(c.get('k'), { code: 'CLOSED' }, 'new calls fail at once')
  d.proc.kill('SIGCONT')
  const settled = await Promise.race([
    Promise.all([get, first, second]).then(([v]) => v),
    new Promise<'pending'>((r) => setTimeout(() => r('pending'), 30_000).unref()),
  ])
  t.same(settled, Buffer.from('v'), 'the request in flight finished and both close() calls settled')
  t.equal(c.close(), first, 'a later close() returns it again')
  c.destroy()
  c.destroy()
  t.pass('destroy after close, twice: no throw')
  const e = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: 60_000 })
  d.proc.kill('SIGSTOP')
  const pending = e.get('k')
  const closing = e.close()
  e.destroy()
  d.proc.kill('SIGCONT')
  await t.rejects(pending, { code: 'CLOSED' }, 'destroy during a close fails the request in flight')
  const done = await Promise.race([
    closing.then(() => 'closed'),
    new Promise<'pending'>((r) => setTimeout(() => r('pending'), 30_000).unref()),
  ])
  t.equal(done, 'closed', 'and the close() it cut short settles')
})

t.test('finding 18: a daemon started by hand with core dumps on turns them off for itself; the unit sets LimitCORE=0', async (t) => {
  const d = await startDaemon(t, { args: ['--cluster-enabled', 'false'], prefix: ['prlimit', '--core=unlimited:unlimited', '--'] })
  const limits = fs.readFileSync(`/proc/${d.proc.pid}/limits`, 'utf8')
  t.match(limits, /^Max core file size\s+0\s+0\s+bytes/m, 'RLIMIT_CORE of the running daemon is 0:0')
  const line = d.logs.find((l) => l['msg'] === 'core dumps disabled (RLIMIT_CORE lowered to 0)')
  t.same(line?.['before'], { soft: 'unlimited', hard: 'unlimited' }, 'and it says what it found')
  const unit = fs.readFileSync(path.join(ROOT, 'systemd', 'statecast.service'), 'utf8')
  t.match(unit, /^LimitCORE=0$/m, 'statecast.service: LimitCORE=0')
})
