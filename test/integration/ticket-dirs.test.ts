/**
 * Ticket directories made beforehand by another local user (issue 21, finding 2), with a real
 * daemon and the real CLI, as root: (a) a setgid directory of the attacker's group, (b) a 0777
 * directory, (c) a symlink to a root-only directory. Each is refused, by the daemon's deliveries
 * and by `statecast tickets export --dir`, and nothing is written, chowned or chmodded there;
 * a consumer in a directory of the daemon's own gets its keys meanwhile. Also finding 16: paths
 * with characters that would change an HAProxy admin-socket command or an nginx directive are
 * refused at start-up.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { eventually, runCli, startDaemon } from '../helpers/daemon.js'

type Consumer = { name: string; lastDelivery: { ok: boolean; code?: string; error?: string } | null; failures: number; deliveries: number }

/** A user and group of its own for the attacker, removed at teardown. */
function attacker(t: { teardown(fn: () => unknown): void }): { uid: number; gid: number; name: string } {
  const name = `sct${crypto.randomBytes(3).toString('hex')}`
  execFileSync('groupadd', [name])
  // userdel removes a group of the user's name too; groupdel then finds none (exit 6).
  t.teardown(() => execFileSync('sh', ['-c', `getent group ${name} >/dev/null && groupdel ${name} || true`]))
  execFileSync('useradd', ['-M', '-N', '-g', name, '-s', '/usr/sbin/nologin', name])
  t.teardown(() => execFileSync('userdel', [name]))
  const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim())
  const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim())
  return { uid, gid, name }
}

const snapshot = (p: string): { uid: number; gid: number; mode: number } => {
  const st = fs.lstatSync(p)
  return { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 }
}

t.test('ticket directories another user made are refused by the daemon and the CLI', async (t) => {
  const atk = attacker(t)
  const base = fs.mkdtempSync('/dev/shm/sc-tdir-')
  t.teardown(() => fs.rmSync(base, { recursive: true, force: true }))
  fs.chmodSync(base, 0o755)
  // (a) setgid, the attacker's group, owned by the attacker; (a2) ours but setgid to its group.
  const a = path.join(base, 'a')
  fs.mkdirSync(a)
  fs.chownSync(a, atk.uid, atk.gid)
  fs.chmodSync(a, 0o2770)
  const a2 = path.join(base, 'a2')
  fs.mkdirSync(a2)
  fs.chownSync(a2, 0, atk.gid)
  fs.chmodSync(a2, 0o2750)
  // (b) world-writable, the attacker's and ours.
  const b = path.join(base, 'b')
  fs.mkdirSync(b)
  fs.chownSync(b, atk.uid, atk.gid)
  fs.chmodSync(b, 0o777)
  const b2 = path.join(base, 'b2')
  fs.mkdirSync(b2)
  fs.chmodSync(b2, 0o777)
  // (c) the attacker's symlink to a root-only directory.
  const secret = path.join(base, 'root-only')
  fs.mkdirSync(secret, { mode: 0o700 })
  const c = path.join(base, 'c')
  fs.symlinkSync(secret, c)
  fs.lchownSync(c, atk.uid, atk.gid)
  // (c2) a parent that is the attacker's symlink.
  const c2 = path.join(base, 'c2')
  fs.symlinkSync(secret, c2)
  fs.lchownSync(c2, atk.uid, atk.gid)
  const bad: Record<string, string> = { a, a2, b, b2, c, c2: path.join(c2, 'nginx') }
  const all: [string, string][] = [...Object.entries(bad), ['secret', secret]]
  const before = Object.fromEntries(all.map(([k, p]) => [k, fs.existsSync(p) ? snapshot(p) : null]))
  const good = path.join(base, 'good', 'nginx')

  const consumers = [
    ...Object.entries(bad).map(([name, dir]) => ({ name, format: 'nginx', dir, group: 'nogroup' })),
    { name: 'good', format: 'nginx', dir: good, group: 'nogroup' },
  ]
  const conf = path.join(base, 'd.toml')
  fs.writeFileSync(
    conf,
    `clusterEnabled = false\nticketKeyRotationMs = 3600000\nticketConsumers = ${JSON.stringify(consumers)}\n`.replace(/"(\w+)":/g, '$1 = '),
  )
  const d = await startDaemon(t, { args: ['--config', conf] })
  const status = async () => {
    const r = await runCli(['--socket', d.adminSocket, '--json', 'tickets'])
    return (JSON.parse(r.stdout.toString()) as { consumers: Consumer[] }).consumers
  }
  await eventually(
    async () => {
      const s = await status()
      return s.find((x) => x.name === 'good')?.lastDelivery?.ok && Object.keys(bad).every((n) => s.find((x) => x.name === n)?.lastDelivery)
    },
    30_000,
    'every consumer tried',
  )
  const s = await status()
  t.ok(fs.existsSync(path.join(good, 'keys.conf')), 'a directory the daemon made itself gets its keys')
  t.equal(fs.statSync(good).mode & 0o7777, 0o750)
  for (const name of Object.keys(bad)) {
    const st = s.find((x) => x.name === name)!
    t.equal(st.lastDelivery?.ok, false, `${name}: not delivered`)
    t.equal(st.lastDelivery?.code, 'UNSAFE_DIR', `${name}: refused as unsafe: ${st.lastDelivery?.error}`)
    t.equal(st.deliveries, 0, `${name}: never said delivered`)
  }
  for (const [name, dir] of Object.entries({ ...bad, secret })) {
    const files = fs.existsSync(dir) ? fs.readdirSync(dir) : []
    t.same(files, [], `${name}: no file written there`)
  }
  const after = Object.fromEntries(all.map(([k, p]) => [k, fs.existsSync(p) ? snapshot(p) : null]))
  t.same(after, before, 'no owner, group or mode changed (the root-only directory stays root:root 0700)')

  // The CLI's --dir: the same checks.
  for (const [name, dir] of Object.entries(bad)) {
    const r = await runCli(['--socket', d.adminSocket, 'tickets', 'export', '--format', 'nginx', '--dir', dir, '--group', 'nogroup'])
    t.equal(r.code, 4, `export --dir ${name}: refused`)
    t.match(r.stderr, /symlink|belongs to uid|has mode|setgid/, `export --dir ${name}: says why`)
  }
  for (const [name, dir] of Object.entries({ ...bad, secret }))
    t.same(fs.existsSync(dir) ? fs.readdirSync(dir) : [], [], `${name}: still empty after the CLI`)
  t.same(Object.fromEntries(all.map(([k, p]) => [k, fs.existsSync(p) ? snapshot(p) : null])), before, 'and unchanged')
  const ok = await runCli([
    '--socket',
    d.adminSocket,
    '--json',
    'tickets',
    'export',
    '--format',
    'haproxy',
    '--dir',
    path.join(base, 'exported'),
  ])
  t.equal(ok.code, 0, 'export into a new directory works')
  const lines = fs
    .readFileSync(path.join(base, 'exported', 'tls-ticket-keys'), 'utf8')
    .split('\n')
    .filter(Boolean)
  t.equal(lines.length, 3)
  const shown = (JSON.parse(ok.stdout.toString()) as { keys: { name: string }[] }).keys.map((k) => k.name)
  t.same(
    shown.sort(),
    lines.map((l) => Buffer.from(l, 'base64').subarray(0, 16).toString('hex')).sort(),
    'the export names the keys it wrote',
  )
})

t.test('paths that would change a server directive or an admin-socket command are refused', async (t) => {
  const base = fs.mkdtempSync('/dev/shm/sc-tdir-')
  t.teardown(() => fs.rmSync(base, { recursive: true, force: true }))
  for (const dir of [`${base}/x y`, `${base}/x;include /etc/shadow`, `${base}/x\nshow sess`, `${base}/a/../b`]) {
    const conf = path.join(base, 'd.toml')
    fs.writeFileSync(
      conf,
      `clusterEnabled = false\n[[ticketConsumers]]\nformat = "haproxy"\nadminSocket = "/run/haproxy.sock"\ndir = ${JSON.stringify(dir)}\n`,
    )
    const r = await runCli(['check-config', conf])
    t.equal(r.code, 2, `${JSON.stringify(dir)}: the config is refused`)
    t.match(r.stderr, /ticketConsumers\[0\]\.dir/)
  }
  const d = await startDaemon(t, { args: ['--cluster-enabled', 'false'] })
  const r = await runCli(['--socket', d.adminSocket, 'tickets', 'export', '--format', 'haproxy', '--dir', `${base}/x y`])
  t.equal(r.code, 4, 'the CLI refuses such a --dir too')
  t.notOk(fs.existsSync(`${base}/x y`), 'and makes nothing')
})
