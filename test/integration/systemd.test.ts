/**
 * The units and the daemon under real systemd tools: systemd-analyze verify and security, socket
 * activation through systemd-socket-activate, and sd_notify messages caught by a listener on a
 * real NOTIFY_SOCKET. Also the example config and the sysusers/tmpfiles snippets.
 */
import t from 'tap'
import { CLIENT_TIMEOUT_MS } from '../helpers/cluster.js'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { StatecastClient } from '../../client/index.js'
import { exampleToml, loadFile } from '../../daemon/config/config.js'
import { DAEMON, ROOT, eventually, startDaemon, tmpDir } from '../helpers/daemon.js'
import { needs } from '../helpers/needs.js'

const unitDir = path.join(ROOT, 'systemd')

t.test(
  'systemd-analyze verify is clean and security rates the service 1.5 or below',
  needs({ commands: ['systemd-analyze'] }),
  async (t) => {
    const dir = tmpDir('sc-unit-')
    // verify checks that ExecStart's binary exists: point it at the built daemon.
    fs.writeFileSync(
      path.join(dir, 'statecast.service'),
      fs.readFileSync(path.join(unitDir, 'statecast.service'), 'utf8').replace('/usr/bin/statecastd', DAEMON),
    )
    fs.copyFileSync(path.join(unitDir, 'statecast.socket'), path.join(dir, 'statecast.socket'))
    const v = spawnSync('systemd-analyze', ['verify', path.join(dir, 'statecast.service'), path.join(dir, 'statecast.socket')], {
      encoding: 'utf8',
    })
    t.equal(v.status, 0, 'verify exits 0')
    t.equal((v.stdout + v.stderr).trim(), '', 'and says nothing')
    const s = spawnSync('systemd-analyze', ['security', '--offline=true', path.join(dir, 'statecast.service')], { encoding: 'utf8' })
    const m = /Overall exposure level for statecast\.service: ([\d.]+)/.exec(s.stdout + s.stderr)
    t.ok(m, 'security prints an overall exposure level')
    t.comment(`systemd-analyze security --offline=true: exposure ${m?.[1]}`)
    t.ok(Number(m?.[1]) <= 1.5, `exposure ${m?.[1]} <= 1.5`)
  },
)

t.test(
  'sysusers and tmpfiles snippets apply to a scratch root',
  needs({ commands: ['systemd-sysusers', 'systemd-tmpfiles'] }),
  async (t) => {
    const root = tmpDir('sc-root-')
    fs.mkdirSync(path.join(root, 'etc'))
    execFileSync('systemd-sysusers', [`--root=${root}`, path.join(unitDir, 'statecast.sysusers')], { stdio: 'ignore' })
    t.match(
      fs.readFileSync(path.join(root, 'etc', 'passwd'), 'utf8'),
      /^statecast:x:\d+:\d+:statecast session cache:\/nonexistent:\/usr\/sbin\/nologin$/m,
    )
    execFileSync('systemd-tmpfiles', [`--root=${root}`, '--create', path.join(unitDir, 'statecast.tmpfiles')], { stdio: 'ignore' })
    t.equal(fs.statSync(path.join(root, 'run', 'statecast')).mode & 0o777, 0o750)
  },
)

t.test('the example config documents every key and is valid as written and uncommented', async (t) => {
  const file = path.join(unitDir, 'statecast.conf.example')
  const text = fs.readFileSync(file, 'utf8')
  t.equal(text, exampleToml(), 'matches `statecastd --example-config` (regenerate it when keys change)')
  const dir = tmpDir('sc-ex-')
  const on = path.join(dir, 'on.toml')
  fs.writeFileSync(on, text.replace(/^#(\w+ = )/gm, '$1'))
  t.doesNotThrow(() => loadFile(on), 'every key uncommented validates')
})

/** A NOTIFY_SOCKET listener: a real Unix datagram socket (python3, since Node has none). */
function notifyListener(t: { teardown(fn: () => unknown): void }, sock: string) {
  const py = spawn(
    'python3',
    [
      '-u',
      '-c',
      'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("LISTENING",flush=True)\nwhile True:\n  print(s.recv(65536).decode().replace("\\n","|"),flush=True)',
      sock,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  t.teardown(() => py.kill())
  const messages: string[] = []
  let buf = ''
  const listening = new Promise<void>((resolve) =>
    py.stdout.setEncoding('utf8').on('data', (d: string) => {
      buf += d
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        if (line === 'LISTENING') resolve()
        else messages.push(line)
      }
    }),
  )
  return { messages, listening }
}

t.test(
  'socket activation and readiness: systemd-socket-activate with a NOTIFY_SOCKET listener',
  needs({ commands: ['systemd-socket-activate'] }),
  async (t) => {
    const dir = tmpDir('sc-act-')
    const sock = path.join(dir, 'statecast.sock')
    const notify = notifyListener(t, path.join(dir, 'notify'))
    await notify.listening
    const act = spawn(
      'systemd-socket-activate',
      [
        '-l',
        sock,
        '--fdname=api',
        '-E',
        `NOTIFY_SOCKET=${path.join(dir, 'notify')}`,
        '-E',
        'WATCHDOG_USEC=400000',
        process.execPath,
        DAEMON,
        '--socket',
        sock,
        '--admin-socket',
        path.join(dir, 'admin.sock'),
        '--cluster-enabled',
        'false',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    t.teardown(() => act.kill('SIGKILL'))
    const exited = new Promise((r) => act.once('exit', r))
    let log = ''
    act.stdout.setEncoding('utf8').on('data', (d: string) => (log += d))
    act.stderr.setEncoding('utf8').on('data', (d: string) => (log += d))
    await eventually(() => fs.existsSync(sock), 20_000, 'systemd-socket-activate listening')
    t.notOk(log.includes('statecastd ready'), 'the daemon is not running before the first connection')
    // The first connection starts the daemon, which accepts it on the inherited fd.
    const c = await StatecastClient.connect({ socketPath: sock, timeoutMs: 10_000 })
    t.teardown(() => c.destroy())
    await c.set('activated', 'yes')
    t.equal((await c.get('activated'))?.toString(), 'yes', 'served on the socket systemd made')
    await eventually(() => notify.messages.some((m) => m.includes('READY=1')), 20_000, 'READY=1')
    t.match(
      notify.messages.find((m) => m.includes('READY=1')),
      /STATUS=\d+ sessions/,
      'READY comes with a STATUS line',
    )
    await eventually(() => notify.messages.some((m) => m.includes('WATCHDOG=1')), 20_000, 'watchdog pings')
    t.pass('the watchdog is fed')
    act.kill('SIGTERM')
    await eventually(() => notify.messages.some((m) => m.includes('STOPPING=1')), 20_000, 'STOPPING=1')
    t.pass('STOPPING=1 on SIGTERM')
    t.equal(await exited, 0, 'exits 0')
  },
)

t.test('SIGHUP reloads config and keys without dropping the cache; a bad config is refused', async (t) => {
  const dir = tmpDir('sc-hup-')
  const conf = path.join(dir, 'statecast.toml')
  fs.writeFileSync(conf, 'logLevel = "info"\nmaxConnections = 100\n')
  const d = await startDaemon(t, { dir, args: ['--config', conf] })
  const c = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: CLIENT_TIMEOUT_MS })
  t.teardown(() => c.destroy())
  await c.set('kept', 'across reloads')
  fs.writeFileSync(conf, 'logLevel = "debug"\nmaxConnections = 200\nmaxBytes = 2097152\n')
  d.proc.kill('SIGHUP')
  const ok = await d.waitLog((l) => l['msg'] === 'configuration reloaded')
  t.same([...(ok['applied'] as string[])].sort(), ['logLevel', 'maxConnections'])
  t.same(ok['needsRestart'], ['maxBytes'], 'what needs a restart is named')
  fs.writeFileSync(conf, 'maxConnections = "many"\n')
  d.proc.kill('SIGHUP')
  const bad = await d.waitLog((l) => l['msg'] === 'reload failed; the running configuration is unchanged')
  t.match(bad['err'], /maxConnections must be an integer/)
  t.equal((await c.get('kept'))?.toString(), 'across reloads', 'the cache and the connection survived')
  t.ok(await c.ping())
})
