/**
 * memcacheTcpAccess = "auth" (issue 23 point 2): a memcache TCP listener that serves a client
 * only once it has logged in, as memcached with SASL (binary SASL PLAIN) or with -Y (the text
 * auth set), each login binding the connection to the tenant whose memcacheAuthFile lists the
 * user. Real daemon, real clients: memjs, raw sockets, pymemcache, php-memcached.
 */
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import memjs from 'memjs'
import { StatecastClient } from '../../client/index.js'
import { BinStatus, Opcode, decodeResponses as decodeAll, encodeRequest } from '../../daemon/local/memcache/binary.js'
import { MAX_REFUSED } from '../../daemon/local/memcache/auth-gate.js'
import { freePort, startDaemon, tmpDir } from '../helpers/daemon.js'
import { exchange } from '../helpers/memcached.js'

const MiB = 1024 * 1024
const decodeResponses = (b: Buffer) => decodeAll(b).responses

async function authDaemon(t: { teardown(fn: () => unknown): void }) {
  const dir = tmpDir('sc-auth-')
  const port = await freePort()
  const alphaFile = path.join(dir, 'alpha.users')
  const betaFile = path.join(dir, 'beta.users')
  fs.writeFileSync(alphaFile, 'alice:alice pw 1\n', { mode: 0o600 })
  fs.writeFileSync(betaFile, 'bob:bob-secret\r\ncarol:c:ol\n', { mode: 0o640 })
  const tenants = [
    { name: 'alpha', socketPath: path.join(dir, 'alpha.sock'), maxBytes: 2 * MiB, memcacheAuthFile: alphaFile },
    { name: 'beta', socketPath: path.join(dir, 'beta.sock'), maxBytes: 2 * MiB, memcacheAuthFile: betaFile },
  ]
  const d = await startDaemon(t, {
    dir,
    args: [
      '--cluster-enabled',
      'false',
      '--max-bytes',
      String(8 * MiB),
      '--memcache-listen',
      `127.0.0.1:${port}`,
      '--memcache-tcp-access',
      'auth',
      '--tenants',
      JSON.stringify(tenants),
    ],
  })
  const alpha = await StatecastClient.connect({ socketPath: path.join(dir, 'alpha.sock') })
  const beta = await StatecastClient.connect({ socketPath: path.join(dir, 'beta.sock') })
  const admin = await StatecastClient.connect({ socketPath: d.adminSocket })
  t.teardown(() => {
    alpha.destroy()
    beta.destroy()
    admin.destroy()
  })
  return { d, dir, port, alpha, beta, admin, alphaFile, betaFile }
}

const sasl = (user: string, pass: string, opaque = 1) =>
  encodeRequest({ opcode: Opcode.SASL_AUTH, opaque, key: Buffer.from('PLAIN'), value: Buffer.from(`\0${user}\0${pass}`) })

function memjsClient(port: number, username: string, password: string) {
  return memjs.Client.create(`127.0.0.1:${port}`, {
    username,
    password,
    timeout: 10,
    conntimeout: 20,
    retries: 0,
    logger: { log: () => {} },
  })
}

t.test('memjs logs in with SASL PLAIN and reads and writes only its tenant', async (t) => {
  const { d, port, alpha, beta, admin } = await authDaemon(t)
  t.notOk(
    d.logs.some((l) => /open to every local user/.test(String(l['msg']))),
    'no open-listener warning when clients must authenticate',
  )
  const a = memjsClient(port, 'alice', 'alice pw 1')
  const b = memjsClient(port, 'bob', 'bob-secret')
  t.teardown(() => {
    a.close()
    b.close()
  })
  await a.set('s', 'from alice', {})
  await b.set('s', 'from bob', {})
  t.equal(String((await a.get('s')).value), 'from alice', 'alice reads her value')
  t.equal(String((await b.get('s')).value), 'from bob', "bob reads his, not alice's")
  t.same(await alpha.get('s'), Buffer.from('from alice'), "alice's login is tenant alpha")
  t.same(await beta.get('s'), Buffer.from('from bob'), "bob's login is tenant beta")
  await beta.set('only-beta', Buffer.from('x'))
  t.equal((await a.get('only-beta')).value, null, "beta's key is unreachable for alpha's user")
  // flush_all on alpha's connection empties alpha's keys alone.
  await a.flush()
  t.equal(await alpha.get('s'), undefined, 'flush emptied alpha')
  t.same(await beta.get('s'), Buffer.from('from bob'), "and left beta's keys")

  const wrong = memjsClient(port, 'alice', 'not her password')
  t.teardown(() => wrong.close())
  await t.rejects(wrong.get('s'), 'a wrong password is refused')
  const s = (await admin.stats()) as { tenants: { memcacheAuth: { succeeded: number; failed: number; users: number } } }
  t.equal(s.tenants.memcacheAuth.users, 3, 'three users known')
  t.ok(s.tenants.memcacheAuth.succeeded >= 2, 'logins counted')
  t.ok(s.tenants.memcacheAuth.failed >= 1, 'the failure counted')
})

t.test('binary requests before a login: Auth failure and a hangup, never served; SASL details', async (t) => {
  const { port, alpha } = await authDaemon(t)
  await alpha.set('k', Buffer.from('secret'))
  const get = encodeRequest({ opcode: Opcode.GET, opaque: 7, key: Buffer.from('k') })
  const r = await exchange(port, [get], () => false)
  t.ok(r.closed && !r.timedOut, 'the connection is closed, not left hanging')
  const [resp] = decodeResponses(r.got)
  t.equal(resp?.status, BinStatus.AUTH_ERROR, 'status 0x20 (Auth failure), as memcached')
  t.equal(resp?.opaque, 7, 'opaque echoed')
  t.notOk(r.got.includes(Buffer.from('secret')), 'nothing served')

  const list = encodeRequest({ opcode: Opcode.SASL_LIST_MECHS, opaque: 1 })
  const ver = encodeRequest({ opcode: Opcode.VERSION, opaque: 2 })
  const step = encodeRequest({ opcode: Opcode.SASL_STEP, opaque: 3, key: Buffer.from('PLAIN'), value: Buffer.from('x') })
  const cram = encodeRequest({ opcode: Opcode.SASL_AUTH, opaque: 4, key: Buffer.from('CRAM-MD5'), value: Buffer.from('x') })
  const good = sasl('alice', 'alice pw 1', 5)
  // The login and a pipelined get in one write: the get is served as alpha's.
  const got = await exchange(port, [Buffer.concat([list, ver, step, cram, good, get])], (b) => decodeResponses(b).length >= 6)
  const rs = decodeResponses(got.got)
  t.same(
    rs.map((x) => [x.opcode, x.status]),
    [
      [Opcode.SASL_LIST_MECHS, 0],
      [Opcode.VERSION, 0],
      [Opcode.SASL_STEP, BinStatus.AUTH_ERROR],
      [Opcode.SASL_AUTH, BinStatus.AUTH_ERROR],
      [Opcode.SASL_AUTH, 0],
      [Opcode.GET, 0],
    ],
  )
  t.equal(rs[0]!.value.toString(), 'PLAIN', 'PLAIN offered')
  t.equal(rs[4]!.value.toString(), 'Authenticated')
  t.equal(rs[5]!.value.toString(), 'secret', 'the get after the login is served as the tenant')

  // A user of beta on a listener serving both may not read alpha's key; a wrong password three times: closed.
  const bob = await exchange(port, [Buffer.concat([sasl('bob', 'bob-secret'), get])], (b) => decodeResponses(b).length >= 2)
  t.same(
    decodeResponses(bob.got).map((x) => x.status),
    [0, BinStatus.KEY_ENOENT],
    "bob's get of alpha's key: not found",
  )
  const bad = await exchange(port, [Buffer.concat([sasl('alice', 'x'), sasl('alice', 'y'), sasl('nobody', 'z'), get])], () => false)
  t.ok(bad.closed && !bad.timedOut, 'three failed logins: closed')
  t.same(
    decodeResponses(bad.got).map((x) => x.status),
    [BinStatus.AUTH_ERROR, BinStatus.AUTH_ERROR, BinStatus.AUTH_ERROR],
    'each failure answered, the get never',
  )
})

t.test("text: memcached -Y's auth set, by raw socket and by pymemcache", async (t) => {
  const { port, alpha } = await authDaemon(t)
  await alpha.set('k', Buffer.from('secret'))
  const raw = (s: string, until: (x: string) => boolean) =>
    exchange(port, [Buffer.from(s, 'latin1')], (b) => until(b.toString('latin1'))).then((r) => ({ ...r, text: r.got.toString('latin1') }))
  const before = await raw('get k\r\nstats\r\nmg k v\r\n', (x) => x.split('\r\n').length > 3)
  t.equal(before.text, 'CLIENT_ERROR unauthenticated\r\n'.repeat(3), 'every command before the login: an error')
  const ok = await raw('set auth 0 0 16\r\nalice alice pw 1\r\nget k\r\n', (x) => x.endsWith('END\r\n'))
  t.equal(ok.text, 'STORED\r\nVALUE k 0 6\r\nsecret\r\nEND\r\n', 'STORED, then served as alpha')
  const no = await raw('set auth 0 0 7\r\nalice x\r\nget k\r\n', (x) => x.split('\r\n').length > 2)
  t.equal(no.text, 'CLIENT_ERROR authentication failure\r\nCLIENT_ERROR unauthenticated\r\n', 'a wrong password: refused, nothing served')
  const fmt = await raw('set auth 0 0 5\r\nalice\r\n', (x) => x.includes('\r\n'))
  t.equal(fmt.text, 'CLIENT_ERROR bad authentication token format\r\n')
  const long = await raw('set auth 0 0 99999\r\n', () => false)
  t.ok(long.closed && long.text === 'CLIENT_ERROR auth token too long\r\n', 'an oversized token: refused and closed')
  // A flood of non-login lines (each answered with a longer error) is closed after MAX_REFUSED,
  // so a client that never reads cannot pile replies up in the daemon's memory.
  const flood = await raw('x\n'.repeat(10_000), () => false)
  t.ok(flood.closed && !flood.timedOut, 'a flood of requests before a login: closed')
  t.equal(flood.text, 'CLIENT_ERROR unauthenticated\r\n'.repeat(MAX_REFUSED), `answered ${MAX_REFUSED} times, then closed`)
  const half = await exchange(port, [Buffer.from('set auth 0 0 16\r\nalice al')], () => false, 3000)
  t.equal(half.got.length, 0, 'an unfinished login gets nothing')

  const py = spawnSync(
    '/usr/bin/python3',
    [
      '-c',
      `
import sys
from pymemcache.client.base import Client
c = Client(('127.0.0.1', ${port}), connect_timeout=10, timeout=10)
ok = c.set('auth', 'carol c:ol', noreply=False)
print('login', ok)
print('get', c.get('k'))
c.set('py', 'from python', noreply=False)
print('py', c.get('py'))
`,
    ],
    { encoding: 'utf8', timeout: 60_000 },
  )
  t.equal(py.status, 0, `pymemcache ran: ${py.stderr}`)
  t.match(py.stdout, /login True/, 'pymemcache logs in with its own set')
  t.match(py.stdout, /get None/, "carol (beta) does not read alpha's key")
  t.match(py.stdout, /py b'from python'/, 'and reads and writes her own')
})

t.test('php-memcached with SASL (binary protocol) logs in as its tenant', async (t) => {
  const have = spawnSync('php', ['-r', 'echo (class_exists("Memcached") && Memcached::HAVE_SASL) ? "yes" : "no";'], { encoding: 'utf8' })
  if (have.stdout !== 'yes') {
    t.fail(`php-memcached with SASL is needed: ${have.stdout}${have.stderr}`)
    return
  }
  const { port, beta } = await authDaemon(t)
  const php = (user: string, pass: string) =>
    spawnSync(
      'php',
      [
        '-r',
        `
$m = new Memcached();
$m->setOption(Memcached::OPT_BINARY_PROTOCOL, true);
$m->addServer('127.0.0.1', ${port});
$m->setSaslAuthData('${user}', '${pass}');
$ok = $m->set('php', 'from php');
echo $ok ? "stored" : ("failed:" . $m->getResultCode()), "\\n";
echo var_export($m->get('php'), true), "\\n";
`,
      ],
      { encoding: 'utf8', timeout: 60_000 },
    )
  const good = php('bob', 'bob-secret')
  t.equal(good.status, 0, good.stderr)
  t.match(good.stdout, /^stored\n'from php'/, 'php-memcached stores and reads with SASL')
  t.same(await beta.get('php'), Buffer.from('from php'), "bob's login is tenant beta")
  const bad = php('bob', 'wrong')
  t.match(bad.stdout, /^failed:/, 'a wrong password: php-memcached fails')
})

t.test('auth files: refused at start when others may read them or malformed; re-read on SIGHUP', async (t) => {
  const dir = tmpDir('sc-authf-')
  const port = await freePort()
  const file = path.join(dir, 'users')
  const run = (mode: number, text: string) => {
    fs.writeFileSync(file, text)
    fs.chmodSync(file, mode)
    return startDaemon(t, {
      dir,
      wait: false,
      args: [
        '--cluster-enabled',
        'false',
        '--memcache-listen',
        `127.0.0.1:${port}`,
        '--memcache-tcp-access',
        'auth',
        '--memcache-auth-file',
        file,
      ],
    })
  }
  const open = await run(0o644, 'u:p\n')
  t.not(await open.exited, 0, 'a world-readable file: start-up fails')
  t.match(open.stderr(), /mode 0644.*holds passwords/)
  const bad = await run(0o600, 'u:p\nno colon here\n')
  t.not(await bad.exited, 0, 'a malformed file: start-up fails')
  t.match(bad.stderr(), /line 2 is not user:password/)
  t.notMatch(bad.stderr(), /no colon here/, 'the line itself is not repeated')
  const none = await startDaemon(t, {
    dir,
    wait: false,
    args: ['--cluster-enabled', 'false', '--memcache-listen', `127.0.0.1:${port}`, '--memcache-tcp-access', 'auth'],
  })
  t.not(await none.exited, 0, '"auth" without a file: start-up fails')
  t.match(none.stderr(), /no memcacheAuthFile is set/)

  const d = await run(0o600, 'u:p1\n')
  await d.waitLog((l) => l['msg'] === 'statecastd ready', 120_000)
  const login = (pw: string) =>
    exchange(port, [Buffer.from(`set a 0 0 ${2 + pw.length}\r\nu ${pw}\r\n`)], (b) => b.includes(Buffer.from('\r\n'))).then((r) =>
      r.got.toString(),
    )
  t.equal(await login('p1'), 'STORED\r\n')
  fs.writeFileSync(file, 'u:p2\n')
  d.proc.kill('SIGHUP')
  await d.waitLog((l) => l['msg'] === 'configuration reloaded')
  t.equal(await login('p2'), 'STORED\r\n', 'the new password works after SIGHUP')
  t.equal(await login('p1'), 'CLIENT_ERROR authentication failure\r\n', 'the old one no longer')
  fs.chmodSync(file, 0o604)
  d.proc.kill('SIGHUP')
  await d.waitLog((l) => l['msg'] === 'reload failed; the running configuration is unchanged')
  t.equal(await login('p2'), 'STORED\r\n', 'a refused file on reload keeps the running users')
})
