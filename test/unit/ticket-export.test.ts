import t from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import {
  deriveKey,
  deriveWindow,
  nodeTicketKey,
  render as renderKeys,
  wipeRendered,
  KEY_FORMATS,
  type SecretWindow,
  type TicketFormat,
} from '../../daemon/tickets/ticket-formats.js'
import { prepareDir, syncHaproxy, writeConsumerFiles } from '../../daemon/tickets/ticket-export.js'
import { mayReadConsumer, parseConsumers } from '../../daemon/config/ticket-consumers.js'
import { ConfigError, apply, defaults, loadFile } from '../../daemon/config/config.js'

const secret = (x: number) => Buffer.alloc(48, x)
const render = (format: TicketFormat, consumer: string, dir: string, w: SecretWindow) =>
  renderKeys(format, dir, deriveWindow(format, consumer, w))
const win = (prev = true, next = true): SecretWindow => ({
  rotationMs: 60_000,
  previous: prev ? { epoch: 9, secret: secret(1) } : undefined,
  current: { epoch: 10, secret: secret(2) },
  next: next ? { epoch: 11, secret: secret(3) } : undefined,
})

t.test('keys are HKDF-SHA256 of the epoch secret, labelled per format, consumer and epoch', async (t) => {
  const k = deriveKey('nginx', 'web', { epoch: 10, secret: secret(2) })
  const info = 'key\0nginx\0web\x0010'
  const want = Buffer.from(crypto.hkdfSync('sha256', secret(2), 'statecast ticket keys v1', `material\0${info}`, 64))
  t.same(Buffer.concat([k.aes, k.hmac]), want, 'material')
  t.same(k.name, Buffer.from(crypto.hkdfSync('sha256', secret(2), 'statecast ticket keys v1', `name\0${info}`, 16)), 'name')
  const all = KEY_FORMATS.flatMap((f) => ['web', 'api'].map((c) => deriveKey(f, c, { epoch: 10, secret: secret(2) })))
  const hexes = all.flatMap((d) => [d.name.toString('hex'), d.aes.toString('hex'), d.hmac.toString('hex')])
  t.equal(new Set(hexes).size, hexes.length, 'no two consumers or formats share a name or a key')
  t.notOk(
    hexes.some((h) => secret(2).toString('hex').includes(h)),
    'none is a slice of the secret itself',
  )
  const node = deriveKey('node', 'node', { epoch: 10, secret: secret(2) })
  const nk = nodeTicketKey(node)
  t.equal(nk.length, 48, "Node's setTicketKeys takes 48 bytes: name, HMAC key, AES key")
  t.same(nk, Buffer.concat([node.name, node.hmac, node.aes]))
  t.not(nk.toString('hex'), secret(2).toString('hex'), "Node's helper, a consumer like the others, never holds the secret")
  t.same(deriveKey('nginx', 'web', { epoch: 10, secret: secret(2) }).name, k.name, 'every host derives the same name')
  t.not(
    deriveKey('nginx', 'web', { epoch: 11, secret: secret(2) }).name.toString('hex'),
    k.name.toString('hex'),
    'names change with the epoch',
  )
})

t.test('nginx: 80-byte files name|HMAC|AES and keys.conf with the encrypting key first', async (t) => {
  const r = render('nginx', 'web', '/run/k', win())
  const cur = deriveKey('nginx', 'web', win().current)
  const f10 = r.files.find((f) => f.name === '10.key')!
  t.equal(f10.data.length, 80)
  t.same(f10.data, Buffer.concat([cur.name, cur.hmac, cur.aes]), 'ngx_ssl_session_ticket_keys order for 80 bytes')
  const conf = r.files.find((f) => f.name === 'keys.conf')!.data.toString()
  t.same(
    conf.split('\n').filter((l) => l.startsWith('ssl_')),
    ['ssl_session_ticket_key /run/k/10.key;', 'ssl_session_ticket_key /run/k/11.key;', 'ssl_session_ticket_key /run/k/9.key;'],
  )
  const lone = render('nginx', 'web', '/run/k', win(false, false))
  t.same(
    lone.files.map((f) => f.name),
    ['10.key', 'keys.conf'],
    'only the keys that exist',
  )
})

t.test('HAProxy: three base64 lines name|AES|HMAC, the middle one encrypting', async (t) => {
  const r = render('haproxy', 'lb', '/run/k', win())
  const lines = r.files[0]!.data.toString().trim().split('\n')
  t.equal(lines.length, 3)
  const raw = lines.map((l) => Buffer.from(l, 'base64'))
  const [p, c, n] = [win().previous!, win().current, win().next!].map((s) => deriveKey('haproxy', 'lb', s))
  t.same(raw[1], Buffer.concat([c!.name, c!.aes, c!.hmac]), 'struct tls_sess_key_256 order, current in the middle')
  t.same(raw[0]!.subarray(0, 16), p!.name, 'previous first')
  t.same(raw[2]!.subarray(0, 16), n!.name, 'next last')
  t.same(r.ring, lines)
  const lone = render('haproxy', 'lb', '/run/k', win(false, false))
  const l2 = lone.files[0]!.data.toString().trim().split('\n')
  t.equal(l2.length, 3, 'HAProxy needs three keys: fillers stand in for missing ones')
  t.same(Buffer.from(l2[1]!, 'base64').subarray(0, 16), c!.name)
  t.same(lone.keys.filter((k) => !k.real).length, 2)
})

t.test('Apache: 48 bytes name|HMAC|AES of the current key', async (t) => {
  const r = render('apache', 'apache', '/run/k', win())
  const c = deriveKey('apache', 'apache', win().current)
  t.same(r.files[0]!.data, Buffer.concat([c.name, c.hmac, c.aes]))
  t.equal(r.files[0]!.data.length, 48)
})

t.test('h2o: YAML entries with not_before at each epoch start', async (t) => {
  const r = render('h2o', 'h2o', '/run/k', win())
  const y = r.files[0]!.data.toString()
  t.equal([...y.matchAll(/^- name: [0-9a-f]{32}$/gm)].length, 3)
  t.equal([...y.matchAll(/^ {2}key: [0-9a-f]{192}$/gm)].length, 3, 'AES-256 key and a 64-byte HMAC key (SHA-256 block size)')
  t.match(y, /cipher: aes-256-cbc\n {2}hash: sha256/)
  t.match(y, /not_before: 660\n {2}not_after: 779/, 'epoch 11 from 660 s; encrypting past its epoch only if the next key never came')
})

t.test('files: tmpfs only unless allowed, 0640, atomic, group applied', async (t) => {
  const dir = fs.mkdtempSync('/dev/shm/sc-te-')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const c = { name: 'web', format: 'nginx' as const, dir: path.join(dir, 'a', 'web'), group: 'nogroup', allowPersistentDisk: false }
  const r = writeConsumerFiles(c, deriveWindow('nginx', 'web', win()))
  for (const f of fs.readdirSync(c.dir)) {
    const st = fs.statSync(path.join(c.dir, f))
    t.equal(st.mode & 0o777, 0o640, `${f} is 0640`)
    t.equal(st.gid, 65534, `${f} belongs to nogroup`)
  }
  t.equal(fs.statSync(c.dir).mode & 0o777, 0o750)
  t.equal(fs.statSync(path.join(dir, 'a')).mode & 0o777, 0o755, 'parents are traversable')
  t.notOk(
    fs.readdirSync(c.dir).some((f) => f.endsWith('.tmp')),
    'no temporary files left',
  )
  wipeRendered(r)
  t.ok(
    r.files.every((f) => f.data.every((b) => b === 0)) && r.keys.every((k) => k.aes.every((b) => b === 0) && k.hmac.every((b) => b === 0)),
    'the buffers written are wiped',
  )
  writeConsumerFiles(
    c,
    deriveWindow('nginx', 'web', {
      ...win(),
      previous: undefined,
      current: { epoch: 11, secret: secret(3) },
      next: { epoch: 12, secret: secret(4) },
    }),
  )
  t.same(
    fs
      .readdirSync(c.dir)
      .filter((f) => f.endsWith('.key'))
      .sort(),
    ['11.key', '12.key'],
    'keys that left the window are removed',
  )

  // The worktree is on persistent disk on every machine this runs on; checked, not assumed.
  const disk = fs.mkdtempSync(path.join(process.cwd(), '.sc-disk-'))
  t.teardown(() => fs.rmSync(disk, { recursive: true, force: true }))
  const onTmpfs = fs.statfsSync(disk).type === 0x01021994
  if (onTmpfs) t.doesNotThrow(() => prepareDir(disk, undefined, false).close())
  else t.throws(() => prepareDir(disk, undefined, false), { code: 'NOT_TMPFS', message: /not on tmpfs/ }, 'persistent disk refused')
  t.doesNotThrow(() => prepareDir(path.join(disk, 'x'), undefined, true).close(), 'unless explicitly allowed')
})

t.test('config: consumers validated with messages naming the key', async (t) => {
  const base = defaults()
  const bad: [unknown, RegExp][] = [
    [[{ format: 'lighttpd' }], /ticketConsumers\[0\]\.format must be one of nginx, haproxy, apache, h2o/],
    [[{ format: 'nginx', colour: 1 }], /ticketConsumers\[0\]: unknown key "colour"/],
    [[{ format: 'nginx', reloadCommand: 'systemctl reload nginx' }], /ticketConsumers\[0\]\.reloadCommand must be a list of arguments/],
    [[{ format: 'nginx', adminSocket: '/run/haproxy.sock' }], /adminSocket is for format "haproxy" only/],
    [[{ format: 'nginx' }, { format: 'nginx' }], /ticketConsumers\[1\]\.name "nginx" is used twice/],
    [[{ format: 'h2o', group: 'no-such-group-here' }], /ticketConsumers\[0\]\.group: no group "no-such-group-here"/],
    [[{ format: 'nginx', dir: 'relative' }], /ticketConsumers\[0\]\.dir must be an absolute path/],
    [{ format: 'nginx' }, /ticketConsumers must be a list of tables/],
  ]
  for (const [v, re] of bad)
    t.throws(() => apply(base, { ticketConsumers: v }, 'test.toml'), { name: 'ConfigError', message: re }, re.source)
  t.throws(() => apply(base, { ticketKeyRotationMs: 5000 }, 'x'), {
    message: /ticketKeyRotationMs \(5000\) must be at least 10 times heartbeatMs/,
  })
  const dir = fs.mkdtempSync('/dev/shm/sc-tc-')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'c.toml')
  fs.writeFileSync(
    file,
    '[[ticketConsumers]]\nformat = "haproxy"\nadminSocket = "/run/haproxy/admin.sock"\n\n[[ticketConsumers]]\nname = "edge"\nformat = "nginx"\ngroup = "www-data"\nreloadCommand = ["systemctl", "reload", "nginx"]\n',
  )
  const c = loadFile(file)
  t.same(
    c.ticketConsumers.map((x) => [x.name, x.format, x.adminSocket, x.reloadCommand]),
    [
      ['haproxy', 'haproxy', '/run/haproxy/admin.sock', []],
      ['edge', 'nginx', '', ['systemctl', 'reload', 'nginx']],
    ],
  )
  fs.writeFileSync(file, '[[ticketConsumers]]\nformat = "nginx"\ntimeoutMs = 5\n')
  t.throws(() => loadFile(file), new ConfigError(`${file}: ticketConsumers[0].timeoutMs must be an integer from 100 to 600000 ms, got 5`))
  t.same(parseConsumers('[{"format":"apache"}]')[0]!.name, 'apache', 'a JSON array on the command line')
})

/**
 * HAProxy's ring as its CLI keeps it (ssl_sock.c): `set ssl tls-key` writes the slot after next
 * and advances the encrypting index; `show tls-keys` dumps previous, encrypting, next. A fake,
 * for the retry rule; the real HAProxy runs in test/integration/tls-servers.test.ts.
 */
function fakeHaproxy(sock: string, file: string, ring: string[], opts: { dropNextSetReply?: boolean } = {}) {
  let enc = 1
  let sets = 0
  const server = net.createServer((c) => {
    let buf = ''
    c.setEncoding('utf8').on('data', (d: string) => {
      buf += d
      if (!buf.endsWith('\n')) return
      const words = buf.trim().split(' ')
      const [verb, , , name, key] = words
      if (verb === 'show' && words[2] !== file) c.end("'show tls-keys' unable to locate referenced filename\n")
      else if (verb === 'show') {
        c.end(`# id (file)\n# 0 (${file})\n` + [0, 1, 2].map((i) => `0.${i} ${ring[(enc + 2 + i) % 3]}`).join('\n') + '\n')
      } else if (verb === 'set' && name === file) {
        ring[(enc + 2) % 3] = key!
        enc = (enc + 1) % 3
        sets++
        if (opts.dropNextSetReply) {
          opts.dropNextSetReply = false
          c.destroy()
        } else c.end('TLS ticket key updated!\n')
      } else c.end('Unknown command\n')
    })
  })
  return {
    listen: () => new Promise<void>((r) => server.listen(sock, () => r())),
    close: () => new Promise<void>((r) => server.close(() => r())),
    view: () => [0, 1, 2].map((i) => ring[(enc + 2 + i) % 3]),
    get sets() {
      return sets
    },
  }
}

t.test('HAProxy ring: only what is missing is set, and a retry after a lost reply never advances twice', async (t) => {
  const dir = fs.mkdtempSync('/dev/shm/sc-hx-')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = '/run/statecast/tickets/haproxy/tls-ticket-keys'
  const sock = path.join(dir, 'admin.sock')
  const h = fakeHaproxy(sock, file, ['p', 'c', 'n'])
  await h.listen()
  t.teardown(() => h.close())
  t.same(h.view(), ['p', 'c', 'n'], 'loaded from the file: previous, current, next')
  t.equal(await syncHaproxy(sock, file, ['p', 'c', 'n'], 2000), 0, 'in step: nothing set')
  t.equal(await syncHaproxy(sock, file, ['c', 'n', 'x'], 2000), 1, 'one rotation: one set')
  t.same(h.view(), ['c', 'n', 'x'])
  t.equal(await syncHaproxy(sock, file, ['n', 'x', 'y', 'z'].slice(0, 3), 2000), 1)
  t.equal(await syncHaproxy(sock, file, ['a', 'b', 'd'], 2000), 3, 'nothing in common: three sets')
  t.same(h.view(), ['a', 'b', 'd'])

  const lossy = fakeHaproxy(path.join(dir, 'lossy.sock'), file, ['a', 'b', 'd'], { dropNextSetReply: true })
  await lossy.listen()
  t.teardown(() => lossy.close())
  await t.rejects(
    syncHaproxy(path.join(dir, 'lossy.sock'), file, ['b', 'd', 'e'], 2000),
    { code: 'ADMIN_SOCKET' },
    'the reply to the set is lost',
  )
  t.equal(lossy.sets, 1)
  t.equal(
    await syncHaproxy(path.join(dir, 'lossy.sock'), file, ['b', 'd', 'e'], 2000),
    0,
    'the retry reads the ring first and sets nothing',
  )
  t.same(lossy.view(), ['b', 'd', 'e'], 'advanced exactly once')
  await t.rejects(
    syncHaproxy(path.join(dir, 'absent.sock'), file, ['b', 'd', 'e'], 2000),
    { code: 'ADMIN_SOCKET', message: /ENOENT/ },
    'no socket: a clear error',
  )
  await t.rejects(
    syncHaproxy(path.join(dir, 'lossy.sock'), '/other/file', ['b', 'd', 'e'], 2000),
    { code: 'ADMIN_SOCKET', message: /did not list three keys for \/other\/file/ },
    'a file HAProxy does not know',
  )
})

t.test('mayReadConsumer: the one check of which consumers a connection may read', async (t) => {
  const configured = [
    { name: 'edge', format: 'nginx' as const },
    { name: 'lb', format: 'haproxy' as const },
  ]
  const api = { who: 'API socket', consumers: new Set(['node', 'edge', 'app2']) }
  const admin = { who: 'admin socket', consumers: 'all' as const }
  t.ok(mayReadConsumer(api, 'node', 'node', configured), 'the Node consumer')
  t.ok(mayReadConsumer(api, 'nginx', 'edge', configured), 'a granted consumer, in its own format')
  t.notOk(mayReadConsumer(api, 'node', 'edge', configured), 'a granted name under another format is another key: refused')
  t.ok(mayReadConsumer(api, 'node', 'app2', configured), 'a granted name that is no ticketConsumer is a Node consumer')
  t.notOk(mayReadConsumer(api, 'nginx', 'app2', configured), '...and only that')
  t.notOk(mayReadConsumer(api, 'haproxy', 'lb', configured), 'a consumer not granted')
  t.ok(mayReadConsumer(admin, 'haproxy', 'lb', configured), 'the admin socket reads every consumer')
  t.ok(mayReadConsumer(admin, 'apache', 'elsewhere', configured), 'even one configured on another host only')
  t.notOk(mayReadConsumer(admin, 'raw', 'node', configured), 'but only in a key format: there is no format that yields the secret')
})
