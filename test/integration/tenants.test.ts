/**
 * Tenants with real daemons (issue 21, findings 4 and 7): two tenants on each host, each with its
 * own API socket and memcache socket, in a cluster. Neither reads, writes, touches, lists or
 * deletes the other's keys, on its host or through another (fills, copies, deletes travel with
 * the namespace); one tenant's writes cannot evict the other's sessions, also with push to all
 * (replicationFactor 0); a memcache TCP listener maps client uids to tenants and refuses others.
 */
import t, { type Test } from 'tap'
import net from 'node:net'
import path from 'node:path'
import { spawn, execFileSync } from 'node:child_process'
import crypto from 'node:crypto'
import { StatecastClient } from '../../client/index.js'
import { peerUid } from '../../daemon/local/peer-uid.js'
import {
  CLIENT_TIMEOUT_MS,
  GENEROUS_COPIES,
  GENEROUS_LOOKUPS,
  replicationSettled,
  startNode,
  uniqueGroup,
  waitMembers,
  writeKeyFile,
  type Node,
} from '../helpers/cluster.js'
import { freePort, startDaemon, tmpDir } from '../helpers/daemon.js'

const MiB = 1024 * 1024

/** Sends memcache text, then `quit`; resolves everything the daemon answered before it closed. */
function memcache(location: string, text: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = location.startsWith('/') ? net.connect(location) : net.connect(Number(location.split(':')[1]), '127.0.0.1')
    let out = ''
    const timer = setTimeout(() => reject(new Error(`no close from ${location} within 60 s; got ${JSON.stringify(out)}`)), 60_000)
    s.on('data', (b) => (out += b.toString('latin1')))
    s.on('close', () => {
      clearTimeout(timer)
      resolve(out)
    })
    s.on('error', () => {})
    s.write(Buffer.concat([Buffer.isBuffer(text) ? text : Buffer.from(text, 'latin1'), Buffer.from('quit\r\n')]))
  })
}

interface Host extends Node {
  alpha: StatecastClient
  beta: StatecastClient
  alphaMc: string
  betaMc: string
}

function tenantArgs(dir: string, name: string, opts: { alphaBytes: number; betaBytes: number; extra?: object }): string[] {
  const tenants = [
    {
      name: 'alpha',
      socketPath: path.join(dir, `${name}-alpha.sock`),
      maxBytes: opts.alphaBytes,
      memcacheListen: [path.join(dir, `${name}-alpha-mc.sock`)],
      ...opts.extra,
    },
    {
      name: 'beta',
      socketPath: path.join(dir, `${name}-beta.sock`),
      maxBytes: opts.betaBytes,
      memcacheListen: [path.join(dir, `${name}-beta-mc.sock`)],
      ...opts.extra,
    },
  ]
  return ['--tenants', JSON.stringify(tenants)]
}

async function startHosts(t: Test, n: number, args: string[], quota: { total: number; alpha: number; beta: number }): Promise<Host[]> {
  const dir = tmpDir('sc-ten-')
  const keyFile = writeKeyFile(dir)
  const { group, port } = uniqueGroup()
  const names = Array.from({ length: n }, (_, i) => String.fromCharCode(97 + i))
  const hosts = await Promise.all(
    names.map(async (name) => {
      const node = await startNode(t, {
        dir,
        name,
        keyFile,
        group,
        port,
        args: [
          '--max-bytes',
          String(quota.total),
          '--memcache-flush-all',
          'true',
          ...tenantArgs(dir, name, { alphaBytes: quota.alpha, betaBytes: quota.beta }),
          ...args,
        ],
      })
      const alpha = await StatecastClient.connect({ socketPath: path.join(dir, `${name}-alpha.sock`), timeoutMs: CLIENT_TIMEOUT_MS })
      const beta = await StatecastClient.connect({ socketPath: path.join(dir, `${name}-beta.sock`), timeoutMs: CLIENT_TIMEOUT_MS })
      t.teardown(() => {
        alpha.destroy()
        beta.destroy()
      })
      return Object.assign(node, {
        alpha,
        beta,
        alphaMc: path.join(dir, `${name}-alpha-mc.sock`),
        betaMc: path.join(dir, `${name}-beta-mc.sock`),
      })
    }),
  )
  await waitMembers(hosts, n - 1)
  return hosts
}

const code = async (p: Promise<unknown>) =>
  p.then(
    () => 'resolved',
    (err: { code?: string }) => err.code ?? String(err),
  )

t.test("finding 4: two tenants on two hosts: neither reads, writes, touches, lists or deletes the other's keys", async (t) => {
  const [a, b] = await startHosts(t, 2, [...GENEROUS_LOOKUPS, ...GENEROUS_COPIES], { total: 8 * MiB, alpha: 3 * MiB, beta: 3 * MiB })
  const secret = Buffer.from('alpha master secret')

  // The attack of finding 4: another tenant (and the default tenant) names the key and gets nothing.
  await a!.alpha.set('apache:sess:1', secret)
  await a!.alpha.set('apache:sess:2', 'alpha two')
  await replicationSettled([a!, b!])
  t.equal(await a!.beta.get('apache:sess:1'), undefined, 'beta on the same host: not found')
  t.equal(await b!.beta.get('apache:sess:1'), undefined, "beta on the other host: not found (no fill of alpha's key)")
  t.equal(await a!.client.get('apache:sess:1'), undefined, 'the default tenant: not found')
  t.equal(await b!.client.get('apache:sess:1'), undefined, 'the default tenant on the other host: not found')
  t.same(await b!.alpha.get('apache:sess:1'), secret, 'alpha itself reads it on the other host')

  // Writes of the same name are beta's own key; alpha's value is untouched everywhere.
  await b!.beta.set('apache:sess:1', 'beta value')
  await a!.beta.set('apache:sess:2', 'beta two', { noPropagate: true })
  await replicationSettled([a!, b!])
  for (const h of [a!, b!]) {
    t.same(await h.alpha.get('apache:sess:1'), secret, `alpha's value on ${h.name} after beta's SET`)
    t.same(await h.alpha.get('apache:sess:2'), Buffer.from('alpha two'), `alpha's value on ${h.name} after beta's NO_PROPAGATE SET`)
  }
  t.same(await a!.beta.get('apache:sess:1'), Buffer.from('beta value'), 'beta reads its own key, filled or copied from the other host')

  // Touch and delete, with and without NO_PROPAGATE: beta's own key only.
  t.equal(await a!.beta.touch('apache:only-alpha', 1000), false, 'beta cannot touch a key only alpha has')
  await a!.alpha.set('apache:only-alpha', 'x', { ttlMs: 600_000 })
  await replicationSettled([a!, b!])
  t.equal(await b!.beta.touch('apache:only-alpha', 1000), false, 'not through the other host either')
  t.equal(await a!.beta.delete('apache:only-alpha', { noPropagate: true }), false, 'beta NO_PROPAGATE delete: not found')
  t.equal(await b!.beta.delete('apache:only-alpha'), false, 'beta delete on the other host: not found')
  t.equal(await a!.beta.delete('apache:sess:1'), true, 'beta deletes its own key')
  await replicationSettled([a!, b!])
  for (const h of [a!, b!]) {
    t.same(await h.alpha.get('apache:only-alpha', { localOnly: true }), Buffer.from('x'), `alpha's key still on ${h.name}`)
    t.same(await h.alpha.get('apache:sess:1'), secret, `alpha's apache:sess:1 survives beta's delete on ${h.name}`)
    t.equal(await h.beta.get('apache:sess:1'), undefined, `beta's own apache:sess:1 gone on ${h.name}`)
    t.ok((await h.alpha.getEntry('apache:only-alpha'))!.ttlMs > 100_000, `alpha's TTL not changed by beta's touch on ${h.name}`)
  }

  // No client key names another tenant's: the marker byte is refused on every API socket.
  const forged = Buffer.concat([Buffer.from([0]), Buffer.from('alpha'), Buffer.from([0]), Buffer.from('apache:sess:1')])
  for (const [who, c] of [
    ['beta', a!.beta],
    ['default', a!.client],
    ['alpha', a!.alpha],
  ] as const) {
    t.equal(await code(c.get(forged)), 'BAD_KEY', `${who}: GET of a namespaced key refused`)
    t.equal(await code(c.set(forged, 'evil')), 'BAD_KEY', `${who}: SET refused`)
    t.equal(await code(c.delete(forged)), 'BAD_KEY', `${who}: DELETE refused`)
    t.equal(await code(c.touch(forged, 1000)), 'BAD_KEY', `${who}: TOUCH refused`)
  }
  t.equal(await code(a!.beta.keys()), 'DENIED', "listing keys is the admin socket's")
  t.equal(
    await code(a!.alpha.set('k'.repeat(250 - 7 + 1), 'too long')),
    'BAD_KEY',
    'a tenant key is at most maxKeyBytes less its namespace',
  )

  // STATS on a tenant's socket: its own share, nothing of the other tenant's.
  const bs = (await a!.beta.stats()) as { store: { maxBytes: number; entries: number }; tenants: Record<string, unknown> }
  t.same(Object.keys(bs.tenants), ['beta'], "beta's STATS shows beta alone")
  t.equal(bs.store.maxBytes, 3 * MiB, 'and its share of the store')
  const all = (await a!.admin.stats()) as { tenants: Record<string, unknown> }
  t.same(Object.keys(all.tenants).sort(), ['(default)', 'alpha', 'beta', 'memcacheUid'], "the admin socket's STATS shows every tenant")

  // The admin socket sees every tenant, each key with its tenant.
  const listed = await a!.admin.keys()
  const names = listed.map((k) => k.key.toString('latin1'))
  t.ok(
    names.includes('\u0000alpha\u0000apache:sess:1') && names.includes('\u0000beta\u0000apache:sess:2'),
    "admin lists both tenants' keys, namespaced",
  )
  t.same(
    await a!.admin.get(Buffer.from('\u0000alpha\u0000apache:sess:1', 'latin1')),
    secret,
    "admin reads a tenant's key by its store name",
  )
})

t.test("handoff: a host that stops hands each tenant's sessions over in their namespace", async (t) => {
  const hosts = await startHosts(t, 3, ['--replication-factor', '2', ...GENEROUS_LOOKUPS, ...GENEROUS_COPIES], {
    total: 8 * MiB,
    alpha: 3 * MiB,
    beta: 3 * MiB,
  })
  const [a, b, c] = hosts
  const keys = Array.from({ length: 30 }, (_, i) => `h:${i}`)
  // Two copies on three hosts: a key A owned has its second copy on the host of B and C that
  // lacked one only once A hands it over, so after A stops every key is on both.
  for (const k of keys) await a!.alpha.set(k, `alpha-${k}`)
  await replicationSettled(hosts)
  t.equal(await a!.stop(), 0, 'A stopped cleanly')
  const handed = a!.logs.find((l) => l['msg'] === 'sessions handed off')
  t.ok(handed && (handed['handedOff'] as number) > 0, `A handed sessions over (${handed?.['handedOff']})`)
  await waitMembers([b!, c!], 1)
  for (const k of keys) {
    for (const h of [b!, c!])
      t.same(await h.alpha.get(k, { localOnly: true }), Buffer.from(`alpha-${k}`), `alpha's ${k} held on ${h.name} after the handoff`)
    t.equal(await b!.beta.get(k), undefined, 'beta does not read it')
  }
})

t.test("finding 4: the tenants' memcache sockets, on one host and across hosts", async (t) => {
  const [a, b] = await startHosts(t, 2, [...GENEROUS_LOOKUPS, ...GENEROUS_COPIES], { total: 8 * MiB, alpha: 3 * MiB, beta: 3 * MiB })
  t.match(
    await memcache(a!.alphaMc, 'set s:1 5 0 6\r\nalpha1\r\nset n:1 0 0 2\r\n10\r\n'),
    /^STORED\r\nSTORED\r\n$/,
    'alpha stores through its socket',
  )
  await replicationSettled([a!, b!])
  for (const [h, where] of [
    [a!, 'the same host'],
    [b!, 'the other host'],
  ] as const) {
    t.equal(await memcache(h.betaMc, 'get s:1\r\ngets s:1 n:1\r\n'), 'END\r\nEND\r\n', `beta's get/gets on ${where}: nothing`)
    t.equal(
      await memcache(h.betaMc, 'incr n:1 5\r\ndecr n:1 1\r\ntouch s:1 100\r\ndelete s:1\r\n'),
      'NOT_FOUND\r\nNOT_FOUND\r\nNOT_FOUND\r\nNOT_FOUND\r\n',
      `beta's incr/decr/touch/delete on ${where}: not found`,
    )
    t.match(await memcache(h.betaMc, 'cas s:1 0 0 4 1\r\nevil\r\n'), /^NOT_FOUND\r\n$/, `beta's cas on ${where}: not found`)
  }
  t.equal(
    await memcache(b!.betaMc, 'add s:1 0 0 4\r\nbeta\r\nappend n:1 0 0 1\r\n9\r\n'),
    'STORED\r\nNOT_STORED\r\n',
    "beta's add of the same name stores its own key; append finds nothing",
  )
  t.equal(await memcache(a!.betaMc, 'flush_all\r\n'), 'OK\r\n', 'beta flushes')
  await replicationSettled([a!, b!])
  for (const h of [a!, b!]) {
    t.equal(
      await memcache(h.alphaMc, 'get s:1 n:1\r\n'),
      'VALUE s:1 5 6\r\nalpha1\r\nVALUE n:1 0 2\r\n10\r\nEND\r\n',
      `alpha's values intact on ${h.name}`,
    )
    t.same(await h.alpha.get('s:1'), Buffer.from('alpha1'), `and read through alpha's API socket on ${h.name}`)
  }
  t.equal(await a!.beta.get('s:1', { localOnly: true }), undefined, "beta's flush_all emptied its own keys on its host")
  t.same(await b!.beta.get('s:1'), Buffer.from('beta'), "beta's own s:1 on the other host, untouched by alpha")
  // A key with the marker byte is refused on the memcache sockets too.
  const forged = Buffer.from(
    'get \u0000alpha\u0000s:1\r\nset \u0000alpha\u0000s:1 0 0 4\r\nevil\r\ndelete \u0000alpha\u0000s:1\r\n',
    'latin1',
  )
  const out = await memcache(a!.betaMc, forged)
  t.match(out, /^CLIENT_ERROR bad command line format\r\n/, "beta's get of a namespaced key refused")
  t.notMatch(out, /VALUE|STORED|DELETED/, 'nothing read, stored or deleted')
  t.equal(await memcache(a!.alphaMc, 'get s:1\r\n'), 'VALUE s:1 5 6\r\nalpha1\r\nEND\r\n', "alpha's value intact")
})

t.test("finding 7: one tenant's writes never evict another's sessions (replicationFactor 2 and 0)", async (t) => {
  for (const [rf, engine] of [
    ['2', 'compact'],
    ['0', 'compact'],
    ['0', 'lru-cache'],
  ] as const) {
    await t.test(`replicationFactor ${rf}, ${engine} store`, async (t) => {
      const hosts = await startHosts(
        t,
        3,
        [
          '--replication-factor',
          rf,
          '--store-engine',
          engine,
          '--max-value-bytes',
          String(64 * 1024),
          ...GENEROUS_LOOKUPS,
          ...GENEROUS_COPIES,
        ],
        { total: 4 * MiB, alpha: MiB + MiB / 2, beta: MiB + MiB / 2 },
      )
      const [a, b] = hosts
      const betaKeys = Array.from({ length: 40 }, (_, i) => `beta:sess:${i}`)
      for (const k of betaKeys) await b!.beta.set(k, Buffer.alloc(1000, k))
      await replicationSettled(hosts)
      const held = async () => {
        const out: number[] = []
        for (const h of hosts) {
          let n = 0
          for (const k of betaKeys) if (await h.beta.get(k, { localOnly: true })) n++
          out.push(n)
        }
        return out
      }
      const before = await held()
      // 4 MB of another tenant's writes, as in the finding, from one client on host A.
      const chunk = Buffer.alloc(4000, 'a')
      for (let i = 0; i < 1000; i++) await a!.alpha.set(`alpha:flood:${i}`, chunk)
      await replicationSettled(hosts)
      const after = await held()
      t.same(after, before, `beta's sessions on each host after alpha's 4 MB (${before.join(', ')} held before)`)
      if (rf === '0')
        t.same(
          before,
          hosts.map(() => betaKeys.length),
          'push to all: every host held every beta session',
        )
      for (const k of betaKeys) t.same(await a!.beta.get(k), Buffer.alloc(1000, k), `${k} readable`)
      const s = (await a!.admin.stats()) as {
        tenants: Record<string, { store: { bytes: number; maxBytes: number } }>
        store: { evictions: number }
      }
      t.ok(s.tenants['alpha']!.store.bytes <= s.tenants['alpha']!.store.maxBytes, 'alpha stays within its share')
      t.ok(s.store.evictions > 0, 'alpha evicted its own entries')
    })
  }
})

/** Makes a system user for the test; removed when the test ends. */
function makeUser(t: Test, name: string): { uid: number; gid: number } {
  execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', name])
  t.teardown(() => {
    try {
      execFileSync('userdel', [name])
    } catch {
      /* already gone */
    }
  })
  return {
    uid: Number(execFileSync('id', ['-u', name]).toString().trim()),
    gid: Number(execFileSync('id', ['-g', name]).toString().trim()),
  }
}

/** memcache text sent to a TCP port by a process of `uid`; resolves what it read until the close. */
function memcacheAs(id: { uid: number; gid: number }, port: number, text: string): Promise<string> {
  const script = `const s=require('net').connect(${port},'127.0.0.1');let o='';s.on('data',d=>o+=d.toString('latin1'));s.on('close',()=>process.stdout.write(o));s.on('error',()=>{});s.write(${JSON.stringify(text + 'quit\r\n')})`
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['-e', script], {
      uid: id.uid,
      gid: id.gid,
      cwd: '/',
      env: { PATH: process.env['PATH'] ?? '/usr/bin' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    p.stdout.on('data', (b: Buffer) => (out += b.toString('latin1')))
    p.stderr.on('data', (b: Buffer) => (err += b.toString()))
    p.once('error', reject)
    p.once('close', (c) => (c === 0 ? resolve(out) : reject(new Error(`client as uid ${id.uid} exited ${c}: ${err}`))))
  })
}

t.test('a memcache TCP listener with memcacheTcpAccess = "uid" serves each uid as its tenant and refuses others', async (t) => {
  const tag = crypto.randomBytes(3).toString('hex')
  const ua = makeUser(t, `sc-a-${tag}`)
  const ub = makeUser(t, `sc-b-${tag}`)
  const dir = tmpDir('sc-uid-')
  const port = await freePort()
  const tenants = [
    { name: 'alpha', socketPath: path.join(dir, 'alpha.sock'), maxBytes: 2 * MiB, memcacheUsers: [ua.uid] },
    { name: 'beta', socketPath: path.join(dir, 'beta.sock'), maxBytes: 2 * MiB, memcacheUsers: [`sc-b-${tag}`] },
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
      'uid',
      '--tenants',
      JSON.stringify(tenants),
    ],
  })
  t.notOk(
    d.logs.some((l) => /open to every local user/.test(String(l['msg']))),
    'no open-listener warning',
  )
  t.equal(await memcacheAs(ua, port, 'set s 0 0 5\r\nalpha\r\n'), 'STORED\r\n', "alpha's user stores")
  t.equal(
    await memcacheAs(ub, port, 'get s\r\nset s 0 0 4\r\nbeta\r\n'),
    'END\r\nSTORED\r\n',
    "beta's user does not see it, and stores its own",
  )
  t.equal(await memcacheAs(ua, port, 'get s\r\n'), 'VALUE s 0 5\r\nalpha\r\nEND\r\n', "alpha's user reads alpha's value")
  const alpha = await StatecastClient.connect({ socketPath: path.join(dir, 'alpha.sock') })
  const beta = await StatecastClient.connect({ socketPath: path.join(dir, 'beta.sock') })
  t.teardown(() => {
    alpha.destroy()
    beta.destroy()
  })
  t.same(await alpha.get('s'), Buffer.from('alpha'), "the TCP client of uid A wrote tenant alpha's key")
  t.same(await beta.get('s'), Buffer.from('beta'), "the TCP client of uid B wrote tenant beta's key")
  // This process (root) is no tenant's user: refused, nothing served.
  const refused = await memcache(`127.0.0.1:${port}`, 'get s\r\n')
  t.match(refused, /^SERVER_ERROR access denied/, 'a client of an unknown uid is refused')
  t.notMatch(refused, /VALUE/, 'and reads nothing')
  const s = (await StatecastClient.connect({ socketPath: d.adminSocket }).then(async (c) => {
    t.teardown(() => c.destroy())
    return c.stats()
  })) as { tenants: { memcacheUid: { accepted: number; refused: number } } }
  t.same(s.tenants.memcacheUid, { accepted: 3, refused: 1 }, 'three connections served by uid, one refused')
})

t.test("peerUid: the owner of a loopback connection's client socket, IPv4 and IPv6", async (t) => {
  for (const host of ['127.0.0.1', '::1']) {
    const server = net.createServer()
    await new Promise<void>((r) => server.listen(0, host, () => r()))
    t.teardown(() => server.close())
    const accepted = new Promise<net.Socket>((r) => server.once('connection', r))
    const client = net.connect((server.address() as net.AddressInfo).port, host)
    t.teardown(() => client.destroy())
    const s = await accepted
    t.equal(await peerUid(s), process.getuid!(), `${host}: this process's uid`)
    t.equal(await peerUid(s, []), undefined, `${host}: no table, no uid`)
    client.destroy()
    await new Promise((r) => s.once('close', r))
    t.equal(await peerUid(s), undefined, `${host}: a closed connection has no owner`)
  }
})

t.test('an open memcache TCP listener is served with a warning that says so', async (t) => {
  const port = await freePort()
  const d = await startDaemon(t, { args: ['--cluster-enabled', 'false', '--memcache-listen', `127.0.0.1:${port}`] })
  const w = await d.waitLog((l) => /open to every local user/.test(String(l['msg'])))
  t.equal(w['level'], 'warn', 'logged as a warning')
  t.equal(w['listen'], `127.0.0.1:${port}`, 'naming the listener')
  t.equal(
    await memcache(`127.0.0.1:${port}`, 'set k 0 0 1\r\nv\r\nget k\r\n'),
    'STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n',
    'and serves as before',
  )
})

t.test('tenants config errors name the key', async (t) => {
  const dir = tmpDir('sc-tcfg-')
  const bad: [object[], RegExp][] = [
    [[{ name: 'a', socketPath: path.join(dir, 'a.sock') }], /tenants\[0\]\.maxBytes must be an integer/],
    [[{ name: 'a b', socketPath: path.join(dir, 'a.sock'), maxBytes: MiB }], /tenants\[0\]\.name must be/],
    [[{ name: 'a', socketPath: 'rel.sock', maxBytes: MiB }], /tenants\[0\]\.socketPath must be an absolute path/],
    [[{ name: 'a', socketPath: path.join(dir, 'a.sock'), maxBytes: 200 * MiB }], /tenants' maxBytes add up to/],
    [
      [{ name: 'a', socketPath: path.join(dir, 'a.sock'), maxBytes: 4 * MiB, ticketConsumers: ['nginx'] }],
      /tenants\[0\]\.ticketConsumers names "nginx"/,
    ],
    [[{ name: 'a', socketPath: path.join(dir, 'a.sock'), maxBytes: MiB, colour: 1 }], /tenants\[0\]: unknown key "colour"/],
  ]
  for (const [tenants, re] of bad) {
    const d = await startDaemon(t, { dir, wait: false, args: ['--cluster-enabled', 'false', '--tenants', JSON.stringify(tenants)] })
    t.equal(await d.exited, 2, `refused: ${re}`)
    t.match(d.stderr(), re, 'the error names the key')
  }
})
