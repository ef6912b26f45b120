/** docs/stats.md is STATS (protocol/stats.ts) rendered: a number declared is a number documented. */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT } from '../helpers/root.js'
import { STATS, metricName, onlyWhen, type StatSpec } from '../../protocol/stats.js'

function statsTable(): string {
  const rows = (Object.entries(STATS) as [string, StatSpec][]).map(
    ([path, s]) =>
      `| \`${path}\` | ${s.kind} | ${s.unit} | ${s.kind === 'info' ? '' : `\`${metricName(path)}\``} | ${s.meaning}${onlyWhen(path) ? ` (only ${onlyWhen(path)})` : ''} |`,
  )
  return ['| Stat | Kind | Unit | Prometheus | Meaning |', '| --- | --- | --- | --- | --- |', ...rows].join('\n')
}

t.test('docs/stats.md holds the STATS table', async (t) => {
  const doc = readFileSync(join(ROOT, 'docs/stats.md'), 'utf8')
  const ok = doc.includes(statsTable())
  t.ok(ok, 'docs/stats.md has STATS rendered (the expected table is printed below)')
  if (!ok) t.comment(statsTable())
  t.match(readFileSync(join(ROOT, 'README.md'), 'utf8'), /docs\/stats\.md/, 'the README links the table')
})

t.test('STATS rows are well formed', async (t) => {
  for (const [path, s] of Object.entries(STATS) as [string, StatSpec][]) {
    t.match(path, /^[a-z][A-Za-z]*(\.[a-z][A-Za-z]*)*$/, `${path}: a dotted path`)
    t.ok(s.meaning.length > 5, `${path}: has a meaning`)
  }
})
