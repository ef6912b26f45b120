/** npm run package builds a Debian package; dpkg -i puts statecastd and statecast on PATH. */
import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { ROOT } from '../helpers/daemon.js'
import { needs } from '../helpers/needs.js'

const NEEDS = needs({ root: true, commands: ['dpkg-deb', 'dpkg'] })

t.test('the Debian package installs, runs and purges', NEEDS, async (t) => {
  const out = execFileSync('bash', [path.join(ROOT, 'scripts', 'package.sh')], {
    cwd: ROOT,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    // A compile and an npm ci of the production dependencies: minutes on a loaded 2-core machine.
    timeout: 480_000,
  })
  const deb = path.join(ROOT, out.trim().split('\n').pop()!)
  t.ok(fs.existsSync(deb), `built ${path.basename(deb)}`)
  const contents = execFileSync('dpkg-deb', ['-c', deb], { encoding: 'utf8' })
  for (const f of [
    './usr/bin/statecastd',
    './usr/bin/statecast',
    './lib/systemd/system/statecast.service',
    './lib/systemd/system/statecast.socket',
    './usr/lib/sysusers.d/statecast.conf',
    './usr/lib/tmpfiles.d/statecast.conf',
    './etc/statecast/statecast.conf',
  ]) {
    t.ok(contents.includes(f), `ships ${f}`)
  }
  t.teardown(() => {
    spawnSync('dpkg', ['--purge', 'statecast'], { stdio: 'ignore' })
    fs.rmSync(deb, { force: true })
  })
  const inst = spawnSync('dpkg', ['-i', deb], { encoding: 'utf8' })
  t.equal(inst.status, 0, `dpkg -i: ${inst.stderr}`)
  const env = { ...process.env, PATH: '/usr/local/bin:/usr/bin:/bin' }
  t.equal(execFileSync('statecastd', ['--version'], { encoding: 'utf8', env }).trim(), 'statecastd 0.1.0', 'statecastd on PATH')
  t.match(execFileSync('statecast', ['--help'], { encoding: 'utf8', env }), /Usage: statecast/, 'statecast on PATH')
  t.match(
    execFileSync('statecast', ['check-config', '/etc/statecast/statecast.conf'], { encoding: 'utf8', env }),
    /valid/,
    'the installed config is valid',
  )
  t.match(fs.readFileSync('/etc/passwd', 'utf8'), /^statecast:/m, 'the sysusers entry made the user')
  t.ok(fs.existsSync('/run/statecast'), 'the tmpfiles entry made the runtime directory')
  t.equal(spawnSync('dpkg', ['--purge', 'statecast']).status, 0, 'purges cleanly')
  t.notOk(fs.existsSync('/usr/bin/statecastd'), 'and leaves no binary behind')
})
