/** The statecast command against a real daemon: output, stdin, exit codes. */
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { CLI, eventually, runCli, startDaemon, tmpDir } from '../helpers/daemon.js'

t.test('set, get, del, touch, keys, flush, stats, ping', async (t) => {
  const d = await startDaemon(t)
  const sock = ['--socket', d.adminSocket]
  t.equal((await runCli([...sock, 'set', 'k', 'v'])).code, 0)
  const got = await runCli([...sock, 'get', 'k'])
  t.equal(got.code, 0)
  t.equal(got.stdout.toString(), 'v', 'get prints the raw value')
  const missing = await runCli([...sock, 'get', 'missing'])
  t.equal(missing.code, 1, 'not found exits 1')
  t.equal(missing.stdout.length, 0)

  const bin = Buffer.from([0, 1, 2, 255, 10, 13])
  // The TTL runs while the machine is busy (each CLI run is a new process): the bounds below
  // allow for the time that has really passed since the SET, however long that was.
  const setAt = performance.now()
  t.equal((await runCli([...sock, 'set', 'bin', '-', '--ttl', '60'], { input: bin })).code, 0, 'set KEY - reads stdin')
  t.same((await runCli([...sock, 'get', 'bin'])).stdout, bin, 'binary value intact')
  const j = JSON.parse((await runCli([...sock, '--json', 'get', 'bin'])).stdout.toString())
  t.match(j, { key: 'bin', found: true, encoding: 'base64', value: bin.toString('base64') })
  t.ok(j.ttlMs <= 60_000 && j.ttlMs >= 60_000 - (performance.now() - setAt) - 1000, `--ttl in seconds (${j.ttlMs} ms left)`)

  t.equal((await runCli([...sock, 'touch', 'k', '100'])).code, 0)
  t.equal((await runCli([...sock, 'touch', 'nope', '100'])).code, 1)
  const keys = await runCli([...sock, 'keys', '--prefix', 'b'])
  const [, secs] = /^bin\t(\d+)s\n$/.exec(keys.stdout.toString()) ?? []
  const passedSecs = (performance.now() - setAt) / 1000
  t.ok(Number(secs) <= 60 && Number(secs) >= 60 - passedSecs - 1, `keys lists bin with its TTL (${keys.stdout.toString().trim()}, ${passedSecs.toFixed(1)} s after the SET)`)
  const stats = await runCli([...sock, 'stats'])
  t.match(stats.stdout.toString(), /store\.entries\s+2\n/)
  const sj = JSON.parse((await runCli([...sock, 'stats', '--json'])).stdout.toString())
  t.equal(sj.store.entries, 2)
  t.match((await runCli([...sock, 'ping'])).stdout.toString(), /^pong in [\d.]+ ms/)
  t.equal((await runCli([...sock, 'del', 'k'])).code, 0)
  t.equal((await runCli([...sock, 'del', 'k'])).code, 1)
  const refused = await runCli([...sock, 'flush'])
  t.equal(refused.code, 2, 'flush without a terminal or --yes is refused')
  t.match(refused.stderr, /pass --yes/)
  t.match((await runCli([...sock, 'flush', '--yes'])).stdout.toString(), /flushed 1 entries/)
  const denied = await runCli(['--socket', d.socket, 'keys'])
  t.equal(denied.code, 4, 'keys on the API socket is refused by the daemon')
  t.match(denied.stderr, /admin socket only/)
})

t.test('defaults come from STATECAST_ADMIN_SOCKET', async (t) => {
  const d = await startDaemon(t)
  const env = { STATECAST_ADMIN_SOCKET: d.adminSocket }
  t.equal((await runCli(['set', 'k', 'v'], { env })).code, 0)
  t.equal((await runCli(['get', 'k'], { env })).stdout.toString(), 'v')
})

t.test('usage errors exit 2, an absent daemon exits 3', async (t) => {
  const none = ['--socket', path.join(tmpDir(), 'none.sock')]
  const u1 = await runCli([])
  t.equal(u1.code, 2)
  t.match(u1.stderr, /Usage: statecast/)
  t.equal((await runCli(['frobnicate'])).code, 2)
  t.equal((await runCli(['get'])).code, 2, 'missing KEY')
  t.equal((await runCli(['get', 'a', 'b'])).code, 2, 'extra argument')
  t.equal((await runCli(['--bogus', 'get', 'a'])).code, 2, 'unknown flag')
  t.equal((await runCli([...none, 'set', 'k', 'v', '--ttl', 'soon'])).code, 2, 'bad --ttl')
  const help = await runCli(['--help'])
  t.equal(help.code, 0)
  for (const c of ['get', 'set', 'del', 'touch', 'stats', 'peers', 'keys', 'flush', 'ping']) t.match(help.stdout.toString(), new RegExp(`\\n  ${c} `), `help lists ${c}`)
  const down = await runCli([...none, 'get', 'k'])
  t.equal(down.code, 3)
  t.match(down.stderr, /cannot reach statecastd/)
})

t.test('set KEY reads the value from stdin or --file, so it never shows in /proc/PID/cmdline', async (t) => {
  const d = await startDaemon(t)
  const secret = 'session-secret-13-' + process.pid
  const p = spawn(process.execPath, [CLI, '--socket', d.adminSocket, 'set', 'k'], { stdio: ['pipe', 'pipe', 'pipe'] })
  const exited = new Promise<number | null>((r) => p.once('close', r))
  // The command waits for its value on stdin: what any local user could read of it now.
  const cmdline = await eventually(() => {
    const c = fs.readFileSync(`/proc/${p.pid}/cmdline`, 'utf8')
    return c.includes('set') ? c : ''
  }, 10_000, 'the CLI running')
  t.ok(cmdline.includes('k'), 'the key is on the command line')
  t.notOk(cmdline.includes(secret), 'the value is not')
  p.stdin.end(secret)
  t.equal(await exited, 0)
  t.equal((await runCli(['--socket', d.adminSocket, 'get', 'k'])).stdout.toString(), secret, 'stored from stdin')

  const dir = tmpDir()
  const file = path.join(dir, 'value')
  fs.writeFileSync(file, Buffer.from([0, 1, 2, 3]), { mode: 0o600 })
  t.equal((await runCli(['--socket', d.adminSocket, 'set', 'f', '--file', file])).code, 0)
  t.same((await runCli(['--socket', d.adminSocket, 'get', 'f'])).stdout, Buffer.from([0, 1, 2, 3]), 'stored from --file')
  t.equal((await runCli(['--socket', d.adminSocket, 'set', 'f', 'v', '--file', file])).code, 2, 'a value given twice is a usage error')
  const help = (await runCli(['--help'])).stdout.toString()
  t.match(help, /set KEY \[--file F\]/)
  t.match(help, /visible to every local user in \/proc\/PID\/cmdline/, '--help says why')
})
