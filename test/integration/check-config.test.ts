/**
 * `statecastd --check-config` accepts only what start-up accepts (issue 13, point 6 of "what to
 * build"; finding 13: a nodeName over 255 bytes passed --check-config and then failed start-up).
 */
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { DAEMON, startDaemon, tmpDir } from '../helpers/daemon.js'
import { writeKeyFile } from '../helpers/cluster.js'

function check(file: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [DAEMON, '--check-config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    p.stdout.setEncoding('utf8').on('data', (s: string) => (out += s))
    p.stderr.setEncoding('utf8').on('data', (s: string) => (out += s))
    p.once('close', (code) => resolve({ code, out }))
  })
}

t.test('configs that start-up refuses fail --check-config the same way', async (t) => {
  const dir = tmpDir()
  const exposed = writeKeyFile(dir, undefined, 'exposed.key', 0o644)
  const cases: { name: string; toml: string; says: RegExp }[] = [
    // 128 characters, 256 bytes: the limit is in bytes, as ANNOUNCE carries them.
    {
      name: 'a nodeName of 256 UTF-8 bytes',
      toml: `nodeName = "${'é'.repeat(128)}"`,
      says: /nodeName must be at most 255 bytes of UTF-8 .*got 256 bytes/,
    },
    {
      name: 'an IPv6 peer for an IPv4 cluster',
      toml: 'unicastPort = 47701\npeers = ["[::1]:47701"]',
      says: /peers: item 1 is an IPv6 address, but the cluster speaks IPv4/,
    },
    {
      name: 'a socket path longer than a Unix socket path can be',
      toml: `socketPath = "/tmp/${'s'.repeat(120)}.sock"`,
      says: /socketPath must be at most 107 bytes .*got 130 bytes/,
    },
    { name: 'a key file group and others may read', toml: `keyFile = "${exposed}"`, says: /group or others may read it; run chmod 600/ },
  ]
  for (const c of cases) {
    const file = path.join(dir, `${cases.indexOf(c)}.toml`)
    fs.writeFileSync(
      file,
      `socketPath = "${path.join(dir, 'x.sock')}"\nadminSocketPath = "${path.join(dir, 'x-admin.sock')}"\nport = 47999\n${c.toml}\n`.replace(
        /^socketPath = .*\n(?=(?:.*\n)*socketPath)/m,
        '',
      ),
    )
    const r = await check(file)
    t.equal(r.code, 2, `${c.name}: --check-config exits 2`)
    t.match(r.out, c.says, 'and says why')
    const d = await startDaemon(t, { dir, name: `case${cases.indexOf(c)}`, paths: 'none', args: ['--config', file], wait: false })
    const code = await Promise.race([d.exited, d.waitLog((l) => l['msg'] === 'statecastd ready', 30_000).then(() => 'started')])
    t.not(code, 0, `${c.name}: start-up refuses it too (exit ${code})`)
    t.match(d.stderr(), c.says, 'with the same message')
  }
  // Flags count as at start-up: a file naming a non-loopback interface, the key on the command line.
  const keyFile = writeKeyFile(dir)
  const split = path.join(dir, 'split.toml')
  fs.writeFileSync(split, 'interface = "10.254.254.254"\nunicastPort = 47701\npeers = ["[fd00::1]:47701"]\n')
  const withFlags = await new Promise<{ code: number | null; out: string }>((resolve) => {
    const p = spawn(process.execPath, [DAEMON, '--check-config', split, '--key-file', keyFile], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    p.stderr.setEncoding('utf8').on('data', (s: string) => (out += s))
    p.once('close', (code) => resolve({ code, out }))
  })
  t.equal(withFlags.code, 2, 'with --key-file alongside, the whole config is judged')
  t.match(withFlags.out, /peers: item 1 is an IPv6 address, but the cluster speaks IPv4/)
  const ok = path.join(dir, 'ok.toml')
  fs.writeFileSync(ok, `nodeName = "${'é'.repeat(127)}"\n`)
  t.equal((await check(ok)).code, 0, 'a nodeName of 254 bytes is fine')
})
