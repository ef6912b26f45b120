/**
 * No core dumps from the daemon (issue 21 point 18): its memory holds the cluster key, ticket
 * epoch secrets and sessions, and a crash with core dumps on would write them to disk.
 *
 * What is done, and what cannot be:
 * - The unit sets `LimitCORE=0` (systemd/statecast.service).
 * - Started any other way, the daemon reads its RLIMIT_CORE from /proc/self/limits at start and,
 *   when either limit is not 0, lowers both to 0 with util-linux's `prlimit --pid SELF --core=0:0`
 *   (Node has no setrlimit; prlimit(2) on a process of the same user needs no privilege, and a
 *   hard limit of 0 cannot be raised again without CAP_SYS_RESOURCE). The pid stays the same: no
 *   re-exec. It then reads the limits again and reports what it found.
 * - Not possible from Node: prctl(PR_SET_DUMPABLE, 0), which would also stop a core_pattern pipe
 *   helper. With RLIMIT_CORE 0 the kernel writes no core file; a pipe helper (`|...` in
 *   /proc/sys/kernel/core_pattern) is still started, and systemd-coredump and apport honour the
 *   limit and store nothing, another helper might not.
 * - Where prlimit is missing, the daemon logs a warning naming what to do (ulimit -c 0, LimitCORE=0).
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'

export interface CoreLimit {
  soft: string
  hard: string
}

/** RLIMIT_CORE of `pid` as /proc shows it ("0", "unlimited", or bytes), or undefined off Linux. */
export function coreLimit(pid: number | 'self' = 'self'): CoreLimit | undefined {
  let text: string
  try {
    text = fs.readFileSync(`/proc/${pid}/limits`, 'utf8')
  } catch {
    return undefined
  }
  const m = /^Max core file size\s+(\S+)\s+(\S+)/m.exec(text)
  return m ? { soft: m[1]!, hard: m[2]! } : undefined
}

export type CoreDumpsOutcome =
  | { state: 'off-already' }
  | { state: 'turned-off'; before: CoreLimit }
  | { state: 'still-on'; before: CoreLimit; after: CoreLimit | undefined; why: string }
  | { state: 'unknown'; why: string }

/** Lowers this process's RLIMIT_CORE to 0:0 if it is not; see the file comment. */
export function disableCoreDumps(): CoreDumpsOutcome {
  const before = coreLimit()
  if (!before) return { state: 'unknown', why: 'no /proc/self/limits (not Linux?)' }
  if (before.soft === '0' && before.hard === '0') return { state: 'off-already' }
  let why = ''
  try {
    execFileSync('prlimit', ['--pid', String(process.pid), '--core=0:0'], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 })
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer }
    why = e.code === 'ENOENT' ? 'prlimit (util-linux) is not installed' : `prlimit failed: ${e.stderr?.toString().trim() || e.message}`
  }
  const after = coreLimit()
  if (after && after.soft === '0' && after.hard === '0') return { state: 'turned-off', before }
  return { state: 'still-on', before, after, why: why || 'the limit did not change' }
}
