/**
 * One error type (docs/errors.md): every class statecast throws extends StatecastError, every
 * code a class is constructed with is a row of ERRORS naming that class, and docs/errors.md lists
 * exactly the rows of ERRORS.
 */
import t from 'tap'
import { chmodSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT } from '../helpers/root.js'
import { ERRORS, ProtocolError, StatecastError, hasCode, type ErrorClassName, type ErrorCode } from '../../protocol/errors.js'
import { KeyFileError } from '../../protocol/keyfile.js'
import { KeyError, loadKeyFile } from '../../daemon/cluster/cluster-keys.js'
import { ConfigError } from '../../daemon/config/config.js'
import { StoreError } from '../../daemon/store/session-store.js'
import { LookupError } from '../../daemon/cluster/lookups.js'
import { UnixListenerError } from '../../daemon/local/unix-listener.js'
import { TicketExportError } from '../../daemon/tickets/ticket-export.js'
import { errorFromStatus } from '../../client/errors.js'
import { Status } from '../../protocol/local.js'
import { tmpdir } from 'node:os'

const codes = Object.keys(ERRORS) as ErrorCode[]

function tsFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(join(ROOT, path)).isDirectory()) return tsFiles(path)
    return name.endsWith('.ts') && !name.endsWith('.d.ts') ? [path] : []
  })
}
const sources = ['daemon', 'client', 'protocol', 'cli'].flatMap(tsFiles).map((f) => [f, readFileSync(join(ROOT, f), 'utf8')] as const)

/** The table docs/errors.md must hold, one line per code. */
function errorTable(): string {
  const rows = codes.map((c) => {
    const r = ERRORS[c]
    return `| \`${c}\` | ${r.by.join(', ')} | ${r.meaning} | ${r.seen} |`
  })
  return ['| Code | Class | Meaning | Where a user sees it |', '| --- | --- | --- | --- |', ...rows].join('\n')
}

t.test('docs/errors.md lists every code of the union, as ERRORS declares it', async (t) => {
  const doc = readFileSync(join(ROOT, 'docs/errors.md'), 'utf8')
  const inDoc = [...doc.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]!)
  t.same([...inDoc].sort(), [...codes].sort(), 'the codes of the table are the codes of ERRORS')
  t.ok(doc.includes(errorTable()), 'the table is ERRORS rendered (regenerate it from errorTable() in this test)')
  if (!doc.includes(errorTable())) t.comment(errorTable())
  t.match(readFileSync(join(ROOT, 'README.md'), 'utf8'), /docs\/errors\.md/, 'the README links the table')
})

t.test('one base class: every other error class of daemon, client, protocol and cli extends it', async (t) => {
  const bases = sources.filter(([, s]) => /\bextends Error\b/.test(s)).map(([f]) => f)
  t.same(bases, ['protocol/errors.ts'])
  const classes = new Set<string>()
  for (const [f, s] of sources) {
    for (const m of s.matchAll(/class (\w+) extends StatecastError\b/g)) {
      classes.add(m[1]!)
      t.ok(
        codes.some((c) => (ERRORS[c].by as readonly string[]).includes(m[1]!)),
        `${m[1]} (${f}) has codes in ERRORS`,
      )
    }
  }
  const named = new Set(codes.flatMap((c) => ERRORS[c].by))
  t.same([...classes, 'StatecastError'].sort(), [...named].sort(), 'ERRORS names exactly the classes there are')
})

t.test('every code a class is constructed with in the source is one ERRORS gives that class', async (t) => {
  let seen = 0
  for (const [f, s] of sources) {
    for (const m of s.matchAll(/new (\w+Error)\(\s*'([A-Z_]+)'/g)) {
      seen++
      const [, cls, code] = m
      const row = (ERRORS as Record<string, { by: readonly string[] }>)[code!]
      t.ok(row?.by.includes(cls!), `${f}: new ${cls}('${code}') is a row of ERRORS for ${cls}`)
    }
  }
  t.ok(seen > 40, `checked ${seen} constructions`)
})

t.test('instances carry their class name and code, and match by code', async (t) => {
  const made: [ErrorClassName, StatecastError][] = [
    ['ProtocolError', new ProtocolError('TRUNCATED', 'x')],
    ['KeyFileError', new KeyFileError('x')],
    ['KeyError', new KeyError('NO_KEY', 'x')],
    ['ConfigError', new ConfigError('x')],
    ['StoreError', new StoreError('TOO_LARGE', 'x')],
    ['LookupError', new LookupError('x')],
    ['UnixListenerError', new UnixListenerError('LISTEN_FAILED', 'x')],
    ['TicketExportError', new TicketExportError('WRITE', 'x')],
    ['StatecastError', errorFromStatus(Status.BUSY, Buffer.alloc(0))],
  ]
  for (const [name, err] of made) {
    t.ok(err instanceof StatecastError && err instanceof Error, `${name} is a StatecastError`)
    t.equal(err.name, name)
    t.ok((ERRORS[err.code].by as readonly string[]).includes(name), `${name}: ${err.code} is one of its codes`)
    t.ok(hasCode(err, err.code))
  }
  t.notOk(hasCode(Object.assign(new Error('x'), { code: 'TRUNCATED' }), 'TRUNCATED'), 'a bare code on a foreign error does not match')
})

t.test('BAD_KEY_FILE comes from KeyFileError only, whether the file cannot be read or cannot be parsed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'statecast-errors-'))
  const bad = join(dir, 'bad.key')
  writeFileSync(bad, 'not a key\n')
  chmodSync(bad, 0o600)
  const thrown = (f: () => unknown): unknown => {
    try {
      f()
    } catch (err) {
      return err
    }
    return undefined
  }
  const unparsable = thrown(() => loadKeyFile(bad))
  t.ok(unparsable instanceof KeyFileError && unparsable.code === 'BAD_KEY_FILE', 'an unparsable key file: KeyFileError BAD_KEY_FILE')
  const unreadable = thrown(() => loadKeyFile(dir))
  t.ok(
    unreadable instanceof KeyFileError && unreadable.code === 'BAD_KEY_FILE',
    'a key file that cannot be read: KeyFileError BAD_KEY_FILE',
  )
  const missing = thrown(() => loadKeyFile(join(dir, 'none.key')))
  t.ok(missing instanceof KeyError && missing.code === 'NO_KEY', 'a missing key file: KeyError NO_KEY')
  t.same(ERRORS.BAD_KEY_FILE.by, ['KeyFileError'])
})
