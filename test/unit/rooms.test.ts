/**
 * The rooms of docs/architecture.md, checked on the source: what each folder may import, no
 * import cycle (type imports included), no test reaching into bench/, and a daemon/ whose top
 * holds only the process. A move that breaks the layout fails here, not in a review.
 */
import t from 'tap'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { ROOT } from '../helpers/root.js'

const SOURCES = ['daemon', 'protocol', 'client', 'cli', 'bench', 'test']

function tsFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(join(ROOT, path)).isDirectory()) return tsFiles(path)
    return name.endsWith('.ts') && !name.endsWith('.d.ts') ? [path] : []
  })
}

/** Every relative import of `file` (static, `export ... from`, dynamic), as a repository path. */
function importsOf(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8')
  const out: string[] = []
  for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)'(\.{1,2}\/[^']+)'/g)) {
    out.push(relative(ROOT, resolve(ROOT, dirname(file), m[1]!)).replace(/\.js$/, '.ts'))
  }
  return out
}

const files = SOURCES.flatMap(tsFiles)
const graph = new Map(files.map((f) => [f, importsOf(f)]))

/** What a room may import besides itself: folders (ending in /) or single files. */
const ALLOWED: [room: string, may: string[]][] = [
  ['protocol/', []],
  ['daemon/host/', []],
  ['daemon/config/', ['protocol/', 'daemon/host/', 'daemon/tickets/ticket-formats.ts']],
  ['daemon/store/', ['protocol/', 'daemon/config/config.ts']],
  ['daemon/local/', ['protocol/', 'daemon/store/', 'daemon/config/', 'daemon/host/', 'daemon/cluster/hooks.ts']],
  ['daemon/cluster/', ['protocol/', 'daemon/store/', 'daemon/host/', 'daemon/config/config.ts']],
  ['daemon/tickets/', ['protocol/', 'daemon/config/', 'daemon/host/', 'daemon/cluster/ticket-keys.ts']],
  ['client/', ['protocol/']],
  ['cli/', ['client/', 'protocol/', 'daemon/local/unix-listener.ts', 'daemon/tickets/']],
]

t.test('each room imports only what docs/architecture.md allows it', async (t) => {
  let checked = 0
  for (const [room, may] of ALLOWED) {
    for (const file of files.filter((f) => f.startsWith(room))) {
      for (const dep of graph.get(file)!) {
        checked++
        const ok = dep.startsWith(room) || may.some((m) => (m.endsWith('/') ? dep.startsWith(m) : dep === m))
        if (!ok) t.fail(`${file} imports ${dep}, outside what ${room} may import`)
      }
    }
  }
  t.ok(checked > 100, `checked ${checked} imports`)
})

t.test('protocol/ stays pure: no sockets, files or timers', async (t) => {
  for (const file of files.filter((f) => f.startsWith('protocol/'))) {
    const text = readFileSync(join(ROOT, file), 'utf8')
    t.notMatch(text, /from 'node:(dgram|net|fs|fs\/promises|timers|child_process|http|https|tls)'/, file)
    t.notMatch(text, /\bset(Timeout|Interval|Immediate)\(/, file)
  }
})

t.test('no test imports bench/, and daemon/ keeps only the process at its top', async (t) => {
  for (const file of files.filter((f) => f.startsWith('test/'))) {
    for (const dep of graph.get(file)!) if (dep.startsWith('bench/')) t.fail(`${file} imports ${dep}`)
  }
  const top = readdirSync(join(ROOT, 'daemon')).filter((n) => statSync(join(ROOT, 'daemon', n)).isFile())
  t.same(top.sort(), ['daemon.ts', 'main.ts'])
})

t.test('no import cycle, type imports included', async (t) => {
  const state = new Map<string, 'open' | 'done'>()
  const cycles: string[] = []
  const visit = (file: string, path: string[]): void => {
    if (state.get(file) === 'done') return
    if (state.get(file) === 'open') {
      cycles.push([...path.slice(path.indexOf(file)), file].join(' -> '))
      return
    }
    state.set(file, 'open')
    for (const dep of graph.get(file) ?? []) visit(dep, [...path, file])
    state.set(file, 'done')
  }
  for (const file of files) visit(file, [])
  t.same(cycles, [])
})
