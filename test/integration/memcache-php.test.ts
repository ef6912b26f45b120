/**
 * PHP's memcache session handlers against two statecast daemons (issue 23): php-memcached with
 * Debian's default settings (binary protocol on, session locking on) and php-memcache in both its
 * modes (ascii, binary). A session written through host A is read through host B, a 500 KB session
 * crosses too, a lock taken on A makes a request on B wait for it, and a destroy on B empties it.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { startCluster, startNode, waitMembers } from '../helpers/cluster.js'
import { freePort, tmpDir } from '../helpers/daemon.js'
import { needs } from '../helpers/needs.js'

const NEEDS = needs({ commands: ['php'] })

const SCRIPT = `<?php
[$_, $mode, $id, $arg] = $argv + [null, null, null, ''];
session_id($id);
if (!session_start()) { fwrite(STDERR, "session_start failed\\n"); exit(2); }
switch ($mode) {
  case 'write': $_SESSION['data'] = str_starts_with($arg, '@') ? file_get_contents(substr($arg, 1)) : $arg; $_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1; break;
  case 'read': echo json_encode(['data' => $_SESSION['data'] ?? null, 'n' => $_SESSION['n'] ?? 0, 'md5' => isset($_SESSION['data']) ? md5($_SESSION['data']) : null]); break;
  case 'hold': touch($arg); usleep(300000); $_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1; break;
  case 'destroy': session_destroy(); echo 'destroyed'; exit(0);
}
session_write_close();
`

function php(ini: string[], args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn('php', [...ini.flatMap((x) => ['-d', x]), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    p.once('close', (code) => resolve({ code, stdout, stderr }))
  })
}

const HANDLERS: { name: string; ini: (port: number) => string[] }[] = [
  // Debian's defaults for php-memcached: memcached.sess_binary_protocol = On, sess_locking = On.
  {
    name: 'php-memcached (binary protocol, locking: Debian defaults)',
    ini: (p) => ['session.save_handler=memcached', `session.save_path=127.0.0.1:${p}`],
  },
  {
    name: 'php-memcache, ascii',
    ini: (p) => ['session.save_handler=memcache', `session.save_path=tcp://127.0.0.1:${p}`, 'memcache.protocol=ascii'],
  },
  {
    name: 'php-memcache, binary',
    ini: (p) => ['session.save_handler=memcache', `session.save_path=tcp://127.0.0.1:${p}`, 'memcache.protocol=binary'],
  },
]

t.test('PHP sessions through two daemons: written on A, read on B, 500 KB, locks across hosts, destroy', NEEDS, async (t) => {
  const dir = tmpDir('sc-php-')
  const script = path.join(dir, 'session.php')
  fs.writeFileSync(script, SCRIPT)
  const probe = await startCluster(t, 0)
  const pa = await freePort()
  const pb = await freePort()
  const common = { dir: probe.dir, keyFile: probe.keyFile, group: probe.group, port: probe.port }
  const a = await startNode(t, { ...common, name: 'a', args: ['--memcache-listen', `127.0.0.1:${pa}`, '--lookup-timeout-ms', '5000'] })
  const b = await startNode(t, { ...common, name: 'b', args: ['--memcache-listen', `127.0.0.1:${pb}`, '--lookup-timeout-ms', '5000'] })
  await waitMembers([a, b], 1)
  for (const [i, h] of HANDLERS.entries()) {
    await t.test(h.name, async (t) => {
      const id = `sess${i}abcdef0123456789`
      const onA = (args: string[]) => php(h.ini(pa), [script, ...args])
      const onB = (args: string[]) => php(h.ini(pb), [script, ...args])
      const w = await onA(['write', id, 'hello from A'])
      t.equal(w.code, 0, `written on A ${w.stderr}`)
      const r = await onB(['read', id])
      t.equal(r.code, 0, r.stderr)
      t.match(JSON.parse(r.stdout), { data: 'hello from A', n: 1 }, 'read on B')
      // 500 KB that does not compress: past memcached's old 64 KiB default, within its 1 MiB.
      const big = randomBytes(375 * 1024)
        .toString('base64')
        .slice(0, 500 * 1024)
      const bigFile = path.join(dir, `big-${i}`)
      fs.writeFileSync(bigFile, big)
      const wb = await onA(['write', id, `@${bigFile}`])
      t.equal(wb.code, 0, `500 KB written on A ${wb.stderr}`)
      const rb = await onB(['read', id])
      t.equal((JSON.parse(rb.stdout) as { md5: string }).md5, createHash('md5').update(big).digest('hex'), '500 KB read on B intact')
      // A holds the session's lock for 0.3 s (php-memcached waits at most 5 x 150 ms by default) and increments n; B's request, started meanwhile,
      // waits for the lock and so sees A's increment.
      const flag = path.join(dir, `held-${i}`)
      const holder = onA(['hold', id, flag])
      for (let k = 0; k < 600 && !fs.existsSync(flag); k++) await new Promise((res) => setTimeout(res, 25))
      t.ok(fs.existsSync(flag), 'A holds the lock')
      const waited = await onB(['read', id])
      t.equal((await holder).code, 0)
      t.equal(waited.code, 0, waited.stderr)
      t.match(JSON.parse(waited.stdout || '{}'), { n: 3 }, "B waited for A's lock and read what A wrote under it")
      const d = await onB(['destroy', id])
      t.equal(d.stdout, 'destroyed')
      const after = await onA(['read', id])
      t.match(JSON.parse(after.stdout), { data: null, n: 0 }, 'destroyed on B: empty on A')
    })
  }
})
