/**
 * Issue 13 finding 7: pointing --config or --check-config at the cluster key file (or a SIGHUP
 * reload after the config was overwritten with it) printed the offending line, key included, on
 * stderr and in the JSON log. Errors now name the file, line and what was expected, never the text.
 */
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { DAEMON, runCli, startDaemon, tmpDir } from '../helpers/daemon.js'
import { newKey, writeKeyFile } from '../helpers/cluster.js'

function run(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [DAEMON, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    p.stdout.setEncoding('utf8').on('data', (s: string) => (out += s))
    p.stderr.setEncoding('utf8').on('data', (s: string) => (out += s))
    p.once('close', (code) => resolve({ code, out }))
  })
}

/** Every form in which the key could leak: its base64, its bytes as hex and the whole key line. */
function secretsOf(keyFile: string, key: Buffer): string[] {
  const line = fs
    .readFileSync(keyFile, 'utf8')
    .split('\n')
    .find((l) => l && !l.startsWith('#'))!
  return [key.toString('base64'), key.toString('base64').slice(0, 16), key.toString('hex'), line]
}

t.test('the key file given as a config never shows up in errors or logs', async (t) => {
  const dir = tmpDir()
  const key = newKey()
  const keyFile = writeKeyFile(dir, [key])
  const secrets = secretsOf(keyFile, key.key)
  const leaks = (text: string) => secrets.filter((s) => text.includes(s))

  const asConfig = await run(['--config', keyFile])
  t.equal(asConfig.code, 2, '--config KEYFILE: bad config, exit 2')
  t.match(
    asConfig.out,
    new RegExp(`${keyFile}:2:\\d+: not valid TOML \\(.*\\); expected lines of KEY = VALUE`),
    'names the file, line and what was expected',
  )
  t.same(leaks(asConfig.out), [], 'and no part of the key')

  const check = await run(['--check-config', keyFile])
  t.equal(check.code, 2, '--check-config KEYFILE: invalid, exit 2')
  t.match(check.out, new RegExp(`${keyFile}:2:`))
  t.same(leaks(check.out), [])

  const cli = await runCli(['check-config', keyFile])
  t.equal(cli.code, 2, 'statecast check-config KEYFILE: exit 2')
  t.same(leaks(cli.stdout.toString() + cli.stderr), [])

  // The key pasted as the value of a config key: the error says what the value was, not what it said.
  const pasted = path.join(dir, 'pasted.toml')
  fs.writeFileSync(
    pasted,
    `logLevel = "info"\nnodeName = "web-1"\nmaxBytes = "${key.key.toString('base64')}"\npeers = ["${key.key.toString('base64')}"]\n`,
  )
  const p = await run(['--check-config', pasted])
  t.equal(p.code, 2)
  t.match(p.out, new RegExp(`${pasted}:3: maxBytes must be an integer from .*; got a string of 44 characters`))
  t.same(leaks(p.out), [])
})

t.test('a SIGHUP reload of a config overwritten with the key file logs no part of the key', async (t) => {
  const dir = tmpDir()
  const key = newKey()
  const keyFile = writeKeyFile(dir, [key])
  const secrets = secretsOf(keyFile, key.key)
  const config = path.join(dir, 'statecast.toml')
  fs.writeFileSync(config, 'logLevel = "debug"\n')
  const d = await startDaemon(t, { dir, args: ['--config', config, '--cluster-enabled', 'false'] })
  fs.copyFileSync(keyFile, config)
  d.proc.kill('SIGHUP')
  const failed = await d.waitLog((l) => l['msg'] === 'reload failed; the running configuration is unchanged')
  t.match(String(failed['err']), new RegExp(`${config}:2:\\d+: not valid TOML`), 'the log names the file and line')
  const all = JSON.stringify(d.logs)
  t.same(
    secrets.filter((s) => all.includes(s)),
    [],
    'no part of the key in any log line (debug level)',
  )
  t.equal(await d.stop(), 0, 'the daemon kept running and stops cleanly')
})
