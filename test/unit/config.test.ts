import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import os from 'node:os'
import {
  FIELDS,
  RELOAD_IN_PLACE,
  apply,
  defaultTicketDir,
  defaults,
  exampleToml,
  loadFile,
  type Config,
} from '../../daemon/config/config.js'
import { STORE_DEFAULTS } from '../../daemon/store/session-store.js'
import { defaultRuntimeDir, defaultSocketPath, defaultAdminSocketPath } from '../../protocol/paths.js'
import { ROOT } from '../helpers/root.js'

t.test('default socket paths for root, users and development runs', async (t) => {
  t.equal(defaultSocketPath({}, 0), '/run/statecast/statecast.sock')
  t.equal(defaultAdminSocketPath({}, 0), '/run/statecast/admin.sock')
  t.equal(defaultSocketPath({ XDG_RUNTIME_DIR: '/run/user/1000/' }, 1000), '/run/user/1000/statecast/statecast.sock')
  t.equal(defaultRuntimeDir({}, 1000, '/tmp'), '/tmp/statecast-1000')
  t.equal(defaultSocketPath({ STATECAST_SOCKET: '/x.sock' }, 0), '/x.sock')
})

t.test('bad values name the key and what it expects', async (t) => {
  const d = defaults()
  t.throws(() => apply(d, { maxBytes: 'lots' }, 'flags'), { code: 'BAD_CONFIG', message: /flags: maxBytes must be an integer from/ })
  t.throws(() => apply(d, { maxValueBytes: 0 }, 'f'), { message: /maxValueBytes must be an integer from 1/ })
  t.throws(() => apply(d, { socketMode: '999' }, 'f'), { message: /socketMode must be an octal mode/ })
  t.throws(() => apply(d, { logLevel: 'loud' }, 'f'), { message: /logLevel must be one of error, warn, info, debug/ })
  t.throws(() => apply(d, { maxBytez: 1 }, 'f'), { message: /f: unknown key; did you mean maxBytes\?/ })
  t.throws(() => apply(d, { defaultTtlMs: 10, maxTtlMs: 5 }, 'f'), { message: /defaultTtlMs \(10\) must not exceed maxTtlMs \(5\)/ })
  t.throws(() => apply(d, { replicationAckDelayMs: 30, replicationAckTimeoutMs: 100 }, 'f'), {
    code: 'BAD_CONFIG',
    message: /f: replicationAckDelayMs \(30\) must be at most a quarter of replicationAckTimeoutMs \(100\)/,
  })
  t.equal(apply(d, { replicationAckDelayMs: 25, replicationAckTimeoutMs: 100 }, 'f').replicationAckDelayMs, 25, 'a quarter is allowed')
  t.throws(() => apply(d, { replicationFactor: -1 }, 'f'), { message: /replicationFactor must be an integer from 0/ })
  t.equal(
    apply(d, { replicationFactor: 0 }, 'f').replicationFactor,
    0,
    'push to all is accepted with the default maxDatagramBytes and 250-byte keys',
  )
  t.equal(
    apply(d, { replicationFactor: 0, maxDatagramBytes: 256, maxKeyBytes: 150 }, 'f').replicationFactor,
    0,
    'and with the smallest datagrams (its LOOKUP may name no one)',
  )
  t.equal(apply(d, { maxBytes: '2097152', socketMode: '0640' }, 'flags').socketMode, 0o640)
})

t.test('dual stack: a second group and interface of the other family, both or neither', async (t) => {
  const d = defaults()
  const ok = apply(
    d,
    { group: '239.255.1.1', interface: '10.0.0.5', dualStackGroup: 'ff05::5c:1', dualStackInterface: 'fd00::5%eth0' },
    'f',
  )
  t.equal(ok.dualStackGroup, 'ff05::5c:1')
  t.equal(
    apply(d, { group: 'ff05::5c:1', interface: 'fd00::5', dualStackGroup: '239.255.1.1', dualStackInterface: '10.0.0.5' }, 'f')
      .dualStackInterface,
    '10.0.0.5',
    'either family first',
  )
  t.throws(() => apply(d, { dualStackGroup: 'ff05::5c:1' }, 'f'), { message: /dualStackGroup and dualStackInterface go together/ })
  t.throws(() => apply(d, { dualStackGroup: '239.255.1.2', dualStackInterface: '10.0.0.6' }, 'f'), {
    message: /must be of the other IP family than group/,
  })
  t.throws(() => apply(d, { dualStackGroup: 'ff05::5c:1', dualStackInterface: '10.0.0.6' }, 'f'), {
    message: /must be of the same IP family/,
  })
  t.throws(() => apply(d, { dualStackGroup: '10.0.0.1', dualStackInterface: 'fd00::5' }, 'f'), {
    message: /dualStackGroup must be a multicast address/,
  })
})

t.test('TOML file on top of defaults', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sc-cfg-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const good = path.join(dir, 'good.toml')
  fs.writeFileSync(good, 'maxBytes = 8388608\nsocketMode = "0600"\nlogLevel = "debug"\n')
  const c = loadFile(good)
  t.equal(c.maxBytes, 8388608)
  t.equal(c.socketMode, 0o600)
  t.equal(c.defaultTtlMs, 300_000, 'unset keys keep their defaults')
  const bad = path.join(dir, 'bad.toml')
  fs.writeFileSync(bad, 'maxBytes = = 3\n')
  t.throws(() => loadFile(bad), { message: /bad\.toml:1:\d+: not valid TOML/ })
  t.throws(() => loadFile(path.join(dir, 'missing.toml')), { message: /cannot read config file/ })
})

t.test('the README documents every config key', async (t) => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')
  for (const f of FIELDS) t.match(readme, new RegExp(`\\| \`${f.key}\` \\|`), f.key)
})

t.test('the admin socket follows the API socket unless it is set', async (t) => {
  const d = defaults()
  t.equal(apply(d, { socketPath: '/srv/a/api.sock' }, 'flags').adminSocketPath, '/srv/a/admin.sock', 'beside a --socket anywhere')
  t.equal(
    apply(d, { socketPath: '/srv/a/api.sock', adminSocketPath: '/srv/b/adm.sock' }, 'flags').adminSocketPath,
    '/srv/b/adm.sock',
    'a set path wins',
  )
  const fromFile = apply(d, { adminSocketPath: '/srv/b/adm.sock' }, 'file')
  t.equal(
    apply(fromFile, { socketPath: '/srv/a/api.sock' }, 'flags').adminSocketPath,
    '/srv/b/adm.sock',
    'a path set in the file stays when a flag moves the API socket',
  )
  t.equal(
    defaultAdminSocketPath({ STATECAST_SOCKET: '/srv/c/x.sock' }, 1000),
    '/srv/c/admin.sock',
    'STATECAST_SOCKET moves the default admin socket too',
  )
  t.equal(defaultAdminSocketPath({ STATECAST_SOCKET: '/srv/c/x.sock', STATECAST_ADMIN_SOCKET: '/srv/d/y.sock' }, 1000), '/srv/d/y.sock')
})

t.test('every key of the table has a unit, a meaning and a default that passes its own check', async (t) => {
  const d = defaults()
  t.equal(new Set(FIELDS.map((f) => f.key)).size, FIELDS.length, 'no key twice')
  for (const f of FIELDS) {
    t.match(f.unit, /\S/, `${f.key}: unit`)
    t.match(f.doc, /\S/, `${f.key}: meaning`)
    t.not(d[f.key], undefined, `${f.key}: default`)
    t.same(apply(d, { [f.key]: d[f.key] }, 'defaults')[f.key], d[f.key], `${f.key}: its default is a valid value`)
  }
})

t.test('the example config shows every key with its unit and meaning, and loads as it reads', async (t) => {
  const example = exampleToml()
  for (const f of FIELDS) {
    t.ok(example.includes(`\n# ${f.doc}. Unit: ${f.unit}.${RELOAD_IN_PLACE.has(f.key) ? '' : ' [restart]'}\n#${f.key} = `), f.key)
  }
  // Uncommented, the example sets every key; it must be a valid config, with the values it shows.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sc-cfg-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'example.toml')
  const lines = example.split('\n').map((l) => (/^#[A-Za-z]+ = /.test(l) ? l.slice(1) : l))
  fs.writeFileSync(file, lines.join('\n'))
  t.equal(lines.filter((l) => /^[A-Za-z]+ = /.test(l)).length, FIELDS.length, 'one line a key')
  const c = loadFile(file)
  const d = defaults()
  for (const f of FIELDS) if (!('example' in f)) t.same(c[f.key], d[f.key], `${f.key}: the example shows the default`)
})

t.test("a module's defaults are the table's", async (t) => {
  const d = defaults()
  for (const k of ['maxBytes', 'maxValueBytes', 'defaultTtlMs', 'maxTtlMs', 'maxTombstones'] as const satisfies readonly (keyof Config)[])
    t.equal(STORE_DEFAULTS[k], d[k], k)
  t.same(
    [...RELOAD_IN_PLACE].sort(),
    ['keyFile', 'logLevel', 'maxConnections', 'memcacheAuthFile', 'peers'],
    'the keys a reload applies, as marked in the table',
  )
})

t.test(
  'ticketDir default: never a shared fixed path; under systemd the runtime directory every server reaches (issue 21, finding 17)',
  async (t) => {
    t.equal(defaultTicketDir({}, 0, '/tmp'), '/run/statecast/tickets', 'root')
    t.equal(
      defaultTicketDir({ RUNTIME_DIRECTORY: '/run/statecast' }, 998, '/tmp'),
      '/run/statecast/tickets',
      'the shipped unit (RuntimeDirectory=statecast, PrivateTmp hides /tmp)',
    )
    t.equal(
      defaultTicketDir({ XDG_RUNTIME_DIR: '/run/user/1000' }, 1000, '/tmp'),
      '/run/user/1000/statecast/tickets',
      'a user with a session: the private runtime directory',
    )
    t.equal(defaultTicketDir({}, 1000, '/tmp'), '/tmp/statecast-1000/tickets', 'otherwise the checked /tmp/statecast-UID')
    const example = fs.readFileSync(path.join(ROOT, 'systemd', 'statecast.conf.example'), 'utf8')
    t.match(example, /#ticketDir = "\/run\/statecast\/tickets"/, 'as the example config says')
  },
)
