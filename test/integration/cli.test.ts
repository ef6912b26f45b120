/** The statecast command against a real daemon: output, stdin, exit codes. */
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { CLI, eventually, runCli, startDaemon, tmpDir, type Running } from '../helpers/daemon.js'

// One daemon for the tests below: the first counts entries and ends with a flush; the others
// use keys of their own.
let shared: Promise<Running> | undefined
const daemon = () => (shared ??= startDaemon(t))

t.test('set, get, del, touch, keys, flush, stats, ping', async (t) => {
  const d = await daemon()
  const sock = ['--socket', d.adminSocket]
  const bin = Buffer.from([0, 1, 2, 255, 10, 13])
  // The TTL runs while the machine is busy (each CLI run is a new process): the bounds below
  // allow for the time that has really passed since the SET, however long that was.
  const setAt = performance.now()
  // Each step's commands are independent of one another, so they run side by side.
  const [setK, setBin] = await Promise.all([
    runCli([...sock, 'set', 'k', 'v']),
    runCli([...sock, 'set', 'bin', '-', '--ttl', '60'], { input: bin }),
  ])
  t.equal(setK.code, 0)
  t.equal(setBin.code, 0, 'set KEY - reads stdin')
  const [got, missing, gotBin, json, touched, untouched, keys, stats, statsJson, ping, refused, denied] = await Promise.all([
    runCli([...sock, 'get', 'k']),
    runCli([...sock, 'get', 'missing']),
    runCli([...sock, 'get', 'bin']),
    runCli([...sock, '--json', 'get', 'bin']),
    runCli([...sock, 'touch', 'k', '100']),
    runCli([...sock, 'touch', 'nope', '100']),
    runCli([...sock, 'keys', '--prefix', 'b']),
    runCli([...sock, 'stats']),
    runCli([...sock, 'stats', '--json']),
    runCli([...sock, 'ping']),
    runCli([...sock, 'flush']),
    runCli(['--socket', d.socket, 'keys']),
  ])
  const passed = performance.now() - setAt
  t.equal(got.code, 0)
  t.equal(got.stdout.toString(), 'v', 'get prints the raw value')
  t.equal(missing.code, 1, 'not found exits 1')
  t.equal(missing.stdout.length, 0)
  t.same(gotBin.stdout, bin, 'binary value intact')
  const j = JSON.parse(json.stdout.toString()) as { ttlMs: number }
  t.match(j, { key: 'bin', found: true, encoding: 'base64', value: bin.toString('base64') })
  t.ok(j.ttlMs <= 60_000 && j.ttlMs >= 60_000 - passed - 1000, `--ttl in seconds (${j.ttlMs} ms left)`)
  t.equal(touched.code, 0)
  t.equal(untouched.code, 1)
  const [, secs] = /^bin\t(\d+)s\n$/.exec(keys.stdout.toString()) ?? []
  t.ok(
    Number(secs) <= 60 && Number(secs) >= 60 - passed / 1000 - 1,
    `keys lists bin with its TTL (${keys.stdout.toString().trim()}, ${(passed / 1000).toFixed(1)} s after the SET)`,
  )
  t.match(stats.stdout.toString(), /store\.entries\s+2\n/)
  t.match(stats.stdout.toString(), /store\.maxBytes\s+\d+ bytes\n/, 'a number shows the unit STATS declares for it')
  t.equal((JSON.parse(statsJson.stdout.toString()) as { store: { entries: number } }).store.entries, 2)
  t.match(ping.stdout.toString(), /^pong in [\d.]+ ms/)
  t.equal(refused.code, 2, 'flush without a terminal or --yes is refused')
  t.match(refused.stderr, /pass --yes/)
  t.equal(denied.code, 4, 'keys on the API socket is refused by the daemon')
  t.match(denied.stderr, /admin socket only/)
  t.equal((await runCli([...sock, 'del', 'k'])).code, 0)
  t.equal((await runCli([...sock, 'del', 'k'])).code, 1)
  t.match((await runCli([...sock, 'flush', '--yes'])).stdout.toString(), /flushed 1 entries/)
})

t.test('defaults come from STATECAST_ADMIN_SOCKET', async (t) => {
  const d = await daemon()
  const env = { STATECAST_ADMIN_SOCKET: d.adminSocket }
  t.equal((await runCli(['set', 'env-k', 'v'], { env })).code, 0)
  t.equal((await runCli(['get', 'env-k'], { env })).stdout.toString(), 'v')
})

t.test('usage errors exit 2, an absent daemon exits 3', async (t) => {
  const none = ['--socket', path.join(tmpDir(), 'none.sock')]
  const commands = ['get', 'set', 'del', 'touch', 'stats', 'peers', 'keys', 'flush', 'ping']
  // Independent runs, side by side.
  const [u1, unknown, noKey, extra, badFlag, badTtl, help, down] = await Promise.all([
    runCli([]),
    runCli(['frobnicate']),
    runCli(['get']),
    runCli(['get', 'a', 'b']),
    runCli(['--bogus', 'get', 'a']),
    runCli([...none, 'set', 'k', 'v', '--ttl', 'soon']),
    runCli(['--help']),
    runCli([...none, 'get', 'k']),
  ])
  t.equal(u1.code, 2)
  t.match(u1.stderr, /Usage: statecast/)
  t.equal(unknown.code, 2)
  t.equal(noKey.code, 2, 'missing KEY')
  t.equal(extra.code, 2, 'extra argument')
  t.equal(badFlag.code, 2, 'unknown flag')
  t.equal(badTtl.code, 2, 'bad --ttl')
  t.equal(help.code, 0)
  for (const c of commands) t.match(help.stdout.toString(), new RegExp(`\\n  ${c} `), `help lists ${c}`)
  t.equal(down.code, 3)
  t.match(down.stderr, /cannot reach statecastd/)
})

t.test('set KEY reads the value from stdin or --file, so it never shows in /proc/PID/cmdline', async (t) => {
  const d = await daemon()
  const secret = 'session-secret-13-' + process.pid
  const p = spawn(process.execPath, [CLI, '--socket', d.adminSocket, 'set', 'k'], { stdio: ['pipe', 'pipe', 'pipe'] })
  const exited = new Promise<number | null>((r) => p.once('close', r))
  // The command waits for its value on stdin: what any local user could read of it now.
  const cmdline = await eventually(
    () => {
      const c = fs.readFileSync(`/proc/${p.pid}/cmdline`, 'utf8')
      return c.includes('set') ? c : ''
    },
    30_000,
    'the CLI running',
  )
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
