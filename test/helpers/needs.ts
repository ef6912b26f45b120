/**
 * What a test needs from the machine beyond Node and node_modules: root, programs from system
 * packages, files those packages install.
 *
 * Outside CI a test whose needs are missing is skipped with the reason, so a contributor on a
 * laptop without root or Apache sees what was not run and why, not red that says nothing about
 * their change. Under `CI=true` nothing is skipped: the test runs (and fails on what is missing),
 * and one extra failing assertion names what was missing, so CI always runs everything
 * (`.ci/run` also refuses a run that counts any skip).
 *
 *   const NEEDS = needs({ root: true, commands: ['ip', 'nft'] })
 *   t.test('three hosts on a bridge', NEEDS, async (t) => { ... })
 */
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'

export interface Needs {
  /** Runs as uid 0 (network namespaces, chown to other users, system users). */
  root?: boolean
  /** Programs looked up on PATH and in the sbin directories (apache2 lives in /usr/sbin). */
  commands?: readonly string[]
  /** Files or directories that must exist, with what installs them: `{ path, from }`. */
  files?: readonly { path: string; from: string }[]
}

/** What tap takes as a test's options: `skip` with the reason, or nothing. */
export interface NeedsOptions {
  skip?: string
}

const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin']

function onPath(cmd: string): boolean {
  if (cmd.includes('/')) return isExecutable(cmd)
  const dirs = [...(process.env['PATH'] ?? '').split(path.delimiter).filter(Boolean), ...SBIN]
  return dirs.some((d) => isExecutable(path.join(d, cmd)))
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    return fs.statSync(file).isFile()
  } catch {
    return false
  }
}

/** The needs this machine lacks, each said as a person would fix it; empty when all are met. */
export function missingNeeds(n: Needs): string[] {
  const missing: string[] = []
  if (n.root && process.getuid?.() !== 0) missing.push('root')
  for (const c of n.commands ?? []) if (!onPath(c)) missing.push(`the command ${c}`)
  for (const f of n.files ?? []) if (!fs.existsSync(f.path)) missing.push(`${f.path} (from ${f.from})`)
  return missing
}

const reported = new Set<string>()

/**
 * The options for `t.test(name, options, fn)` of a test with these needs: `{ skip: reason }`
 * outside CI when something is missing, `{}` otherwise. Under CI a missing need also adds one
 * failing assertion that says what is missing (once per set of needs and file).
 */
export function needs(n: Needs): NeedsOptions {
  const missing = missingNeeds(n)
  if (missing.length === 0) return {}
  const hints = [
    ...(missing.includes('root') ? ['run it as root'] : []),
    ...(missing.some((m) => m !== 'root') ? ['scripts/install-system-deps.sh installs the system packages'] : []),
  ]
  const reason = `needs ${missing.join(', ')} (${hints.join('; ')})`
  if (process.env['CI'] !== 'true') return { skip: reason }
  if (!reported.has(reason)) {
    reported.add(reason)
    t.fail(`under CI nothing may be skipped, and this machine lacks what a test ${reason}`)
  }
  return {}
}

/** The needs of every test that makes network namespaces (test/helpers/netlab.ts). */
export const NETNS: Needs = { root: true, commands: ['ip', 'nft'] }
