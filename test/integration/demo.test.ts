/**
 * npm run demo works and shows what it claims: through the simulated round trip, statecast resumes
 * across hosts, per-server caches rarely, and the screen carries every figure it promises (share
 * resumed, mean handshake time, CPU per handshake) and says the RTT is simulated. Times and CPU
 * are printed, never asserted: the machine may be loaded.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import path from 'node:path'
import { ROOT } from '../helpers/daemon.js'
import { needs } from '../helpers/needs.js'

const NEEDS = needs({ commands: ['openssl'] })

t.test('the demo reports resumption, handshake time and CPU with and without statecast at a simulated RTT', NEEDS, async (t) => {
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      process.execPath,
      [path.join(ROOT, 'dist', 'bench', 'demo.js'), '--rtt-ms', '30'],
      { env: { ...process.env, DEMO_CLIENTS: '12', DEMO_ROUNDS: '4' }, timeout: 300_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
    ),
  )
  t.comment(out)
  t.match(out, /Round-trip time 30 ms, SIMULATED/, 'the screen says the RTT is simulated, at the value asked for')
  t.match(out, /15 ms each way/, 'half the RTT each way')
  const sections = [...out.matchAll(/^TLS 1\.([23]) \(/gm)].map((m) => m[1])
  t.same(sections, ['2', '3'], 'a section for TLS 1.2, then one for TLS 1.3')
  const rows = [
    ...out.matchAll(
      /^ {2}(per-server caches only|statecast)\s+([\d.]+)% \((\d+)\/(\d+)\)\s+([\d.]+) ms\s+(\d+) µs(?: \(daemons (\d+) µs\))?$/gm,
    ),
  ]
  t.same(
    rows.map((r) => r[1]),
    ['per-server caches only', 'statecast', 'per-server caches only', 'statecast'],
    'per-server caches, then statecast, in each section',
  )
  for (const r of rows) {
    const [rate, resumed, attempts] = [Number(r[2]), Number(r[3]), Number(r[4])]
    // 12 clients, 3 timed reconnections each, every one with a session to offer.
    t.equal(attempts, 36, `${r[1]}: every timed reconnection offered a session`)
    t.ok(Math.abs((resumed / attempts) * 100 - rate) < 0.1, `${r[1]}: the share matches its counts`)
    if (r[1] === 'statecast') {
      t.ok(rate >= 95, `statecast resumes ${rate}%`)
      t.ok(r[7] !== undefined, 'statecast rows show the daemons’ share of the CPU')
    } else {
      t.ok(rate < 70, `per-server caches resume ${rate}% (about a third)`)
      t.equal(r[7], undefined, 'per-server rows count no daemon')
    }
  }
  t.match(out, /mean TLS 1\.2 handshake is [\d.]+ ms against [\d.]+ ms/, 'the summary compares the TLS 1.2 means')
})
