/**
 * Where the sockets go when nobody says: issue 13 finding 6 (a squatted /tmp/statecast-UID let
 * another user replace admin.sock and receive the victim's SET, value included) and issue 14
 * point 7 (the admin socket follows --socket).
 */
import t from 'tap'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { runCli, startDaemon, tmpDir } from '../helpers/daemon.js'
import { needs } from '../helpers/needs.js'

const NEEDS = needs({ root: true, commands: ['setpriv'] })

const NOBODY = 65534
const OTHER = 4242
// env -u NODE_OPTIONS: tap's process tracking, which it adds to every child, would write into the
// checkout, which this user may not.
const asNobody = ['env', '-u', 'NODE_OPTIONS', 'setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups']
/** A user without a session: no XDG_RUNTIME_DIR, no HOME, no socket overrides; TMPDIR is ours. */
const userEnv = (tmp: string): NodeJS.ProcessEnv => ({
  XDG_RUNTIME_DIR: undefined,
  HOME: undefined,
  STATECAST_SOCKET: undefined,
  STATECAST_ADMIN_SOCKET: undefined,
  TMPDIR: tmp,
})

/** A world-writable sticky directory, as /tmp is, standing in for /tmp. */
function fakeTmp(): string {
  const tmp = tmpDir('sc-tmp-')
  fs.chmodSync(tmp, 0o1777)
  return tmp
}

t.test('a default socket directory squatted by another user is refused by the daemon and the CLI', NEEDS, async (t) => {
  const tmp = fakeTmp()
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
  const squat = path.join(tmp, `statecast-${NOBODY}`)
  fs.mkdirSync(squat)
  fs.chownSync(squat, OTHER, OTHER)
  fs.chmodSync(squat, 0o777)
  // The attacker's socket where the victim's CLI would look for the admin socket.
  const received: Buffer[] = []
  const trap = net.createServer((s) => s.on('data', (b) => received.push(b)))
  await new Promise<void>((r) => trap.listen(path.join(squat, 'admin.sock'), r))
  fs.chmodSync(path.join(squat, 'admin.sock'), 0o777)
  t.teardown(() => trap.close())

  const d = await startDaemon(t, { paths: 'none', prefix: asNobody, env: userEnv(tmp), args: ['--cluster-enabled', 'false'], wait: false })
  const code = await d.exited
  t.equal(code, 1, 'the daemon refuses to start (exit 1)')
  const err = d.logs.find((l) => l['msg'] === 'start-up failed')
  t.match(
    String(err?.['err']),
    new RegExp(`socket directory ${squat} belongs to uid ${OTHER}, not to this user \\(uid ${NOBODY}\\)`),
    'and says whose directory it is',
  )
  t.equal(err?.['code'], 'UNSAFE_DIRECTORY')
  t.notOk(fs.existsSync(path.join(squat, 'statecast.sock')), 'no socket made in it')

  const secret = 'session-secret-value-6'
  const cli = await runCli(['set', 'k', '-'], { prefix: asNobody, env: userEnv(tmp), input: secret })
  t.equal(cli.code, 3, 'the CLI refuses to connect (exit 3)')
  t.match(cli.stderr, /refusing to connect: socket directory .* belongs to uid 4242/)
  t.equal(Buffer.concat(received).indexOf(secret), -1, 'the squatter received nothing of the value')
  t.equal(received.length, 0, 'the squatter received nothing at all')

  // Our own directory, but open to others: refused as well.
  trap.close()
  fs.chownSync(squat, NOBODY, NOBODY)
  const d2 = await startDaemon(t, { paths: 'none', prefix: asNobody, env: userEnv(tmp), args: ['--cluster-enabled', 'false'], wait: false })
  t.equal(await d2.exited, 1)
  t.match(String(d2.logs.find((l) => l['msg'] === 'start-up failed')?.['err']), /has mode 0777; it must grant no access to group or others/)
})

t.test('a default socket directory is created 0700 and used by the daemon and the CLI', NEEDS, async (t) => {
  const tmp = fakeTmp()
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
  const dir = path.join(tmp, `statecast-${NOBODY}`)
  const d = await startDaemon(t, { paths: 'none', prefix: asNobody, env: userEnv(tmp), args: ['--cluster-enabled', 'false'] })
  const st = fs.statSync(dir)
  t.equal(st.mode & 0o777, 0o700, 'created with mode 0700')
  t.equal(st.uid, NOBODY, 'owned by the user')
  t.ok(fs.statSync(path.join(dir, 'statecast.sock')).isSocket())
  t.ok(fs.statSync(path.join(dir, 'admin.sock')).isSocket())
  t.equal(
    (await runCli(['set', 'k', '-'], { prefix: asNobody, env: userEnv(tmp), input: 'v' })).code,
    0,
    'the CLI finds the default admin socket',
  )
  t.equal((await runCli(['get', 'k'], { prefix: asNobody, env: userEnv(tmp) })).stdout.toString(), 'v')
  t.equal(await d.stop(), 0)
})

t.test('without adminSocketPath the admin socket is admin.sock beside the API socket: two daemons in two directories', NEEDS, async (t) => {
  const [d1, d2] = await Promise.all(
    [tmpDir(), tmpDir()].map((dir) => startDaemon(t, { dir, paths: 'api', args: ['--cluster-enabled', 'false'] })),
  )
  for (const d of [d1!, d2!]) {
    t.ok(fs.statSync(path.join(d.dir, 'admin.sock')).isSocket(), `admin.sock beside ${d.socket}`)
    const s = await runCli(['--socket', d.adminSocket, 'stats', '--json'])
    t.equal((JSON.parse(s.stdout.toString()) as { pid: number }).pid, d.proc.pid, 'answered by the daemon of that directory')
  }
  t.equal(d1!.proc.exitCode, null, 'both run')
  t.equal(d2!.proc.exitCode, null)
})
