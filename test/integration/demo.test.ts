/** npm run demo works and shows what it claims: statecast resumes across hosts, per-server caches rarely. */
import t from 'tap'
import { execFile } from 'node:child_process'
import path from 'node:path'
import { ROOT } from '../helpers/daemon.js'
import { needs } from '../helpers/needs.js'

const NEEDS = needs({ commands: ['openssl'] })

t.test('the demo reports resumption with and without statecast', NEEDS, async (t) => {
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      process.execPath,
      [path.join(ROOT, 'dist', 'bench', 'demo.js')],
      { env: { ...process.env, DEMO_CLIENTS: '12', DEMO_ROUNDS: '4' }, timeout: 120_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
    ),
  )
  t.comment(out)
  const rows = [...out.matchAll(/^ {2}(per-server caches only|statecast)\s+([\d.]+)% \((\d+)\/(\d+)\)\s+([\d.]+) ms$/gm)]
  t.equal(rows.length, 4, 'two rows for TLS 1.3 and two for TLS 1.2')
  for (const r of rows) {
    const rate = Number(r[2])
    if (r[1] === 'statecast') t.ok(rate >= 95, `statecast resumes ${rate}%`)
    else t.ok(rate < 70, `per-server caches resume ${rate}% (about a third)`)
  }
})
