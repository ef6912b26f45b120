/**
 * A consistency checker over histories (test/helpers/history.ts), in the spirit of Jepsen: pure,
 * no I/O; every violation names its kind and the operations that show it.
 *
 * Registers (set, add and cas write a unique value, delete and release remove it; get reads): a read may return the state left
 * by any write invoked before the read completed that no write acknowledged before the read began
 * definitely follows (began after it completed). The key's initial state is "not found". An
 * operation whose outcome is unknown may take effect at any time after its invocation, so nothing
 * definitely follows it. A read that no admissible state explains is a violation:
 *   stale-read     it returned a value that an acknowledged later set had replaced;
 *   delete-undone  it returned a value that an acknowledged later delete had removed;
 *   not-found      it returned "not found" after an acknowledged set that no delete can explain;
 *   unwritten      it returned a value that no set invoked before it wrote.
 * Locks (add, then release by delete): lock   two adds succeeded and neither holder's release
 *   (its first, invoked after its add) can have taken effect before the other's add completed.
 * Counters (incr by 1 from an acknowledged 0):
 *   counter  two acknowledged increments returned the same value, or the final value lies outside
 *            [acknowledged, acknowledged + unknown].
 * CAS: cas  two cas writes with one CAS unique both succeeded.
 */
import { formatOp, type Op } from './history.js'

export type ViolationKind = 'stale-read' | 'delete-undone' | 'not-found' | 'unwritten' | 'lock' | 'counter' | 'cas'

export const VIOLATION_KINDS: readonly ViolationKind[] = ['stale-read', 'delete-undone', 'not-found', 'unwritten', 'lock', 'counter', 'cas']

export interface Violation {
  kind: ViolationKind
  message: string
  /** The operations that show it: the offending one first. */
  ops: Op[]
}

export interface CheckResult {
  violations: Violation[]
  counts: Record<ViolationKind, number>
  /** Operations checked, by kind and outcome, for comments. */
  tally: Record<string, number>
}

/** Completion time for "definitely after": an operation without a definite outcome never completes. */
function doneMs(o: Op): number {
  return o.outcome === 'unknown' ? Infinity : o.completeMs
}

function byKey(ops: Op[]): Map<string, Op[]> {
  const m = new Map<string, Op[]>()
  for (const o of ops) {
    let l = m.get(o.key)
    if (!l) m.set(o.key, (l = []))
    l.push(o)
  }
  return m
}

/** Register reads against sets and deletes of the same key. */
export function checkRegisters(ops: Op[]): Violation[] {
  const out: Violation[] = []
  // Counters are judged by checkCounters (their values are not unique).
  const counters = new Set(ops.filter((o) => o.kind === 'incr').map((o) => o.key))
  const isWrite = (o: Op) => o.kind === 'set' || o.kind === 'add' || o.kind === 'cas' || o.kind === 'delete' || o.kind === 'release'
  for (const [, list] of byKey(ops.filter((o) => !counters.has(o.key) && (o.kind === 'get' || isWrite(o))))) {
    // A write that failed definitely did not take effect (add NOT_STORED, cas EXISTS); the
    // workload records delete's NOT_FOUND as ok: it leaves the key absent, as a delete does.
    const writes = list.filter((o) => isWrite(o) && o.outcome !== 'fail')
    const acked = writes.filter((w) => w.outcome === 'ok')
    const setOf = new Map<string, Op>()
    for (const w of writes) if (w.value !== undefined) setOf.set(w.value, w)
    for (const r of list) {
      if (r.kind !== 'get' || r.outcome !== 'ok') continue
      const before = acked.filter((w) => w.completeMs < r.invokeMs)
      // A candidate state is superseded when an acknowledged write before the read definitely follows it.
      const superseders = (c: Op | undefined) => before.filter((w) => (c ? w.invokeMs > doneMs(c) : true))
      const admissible = (c: Op | undefined) => (!c || c.invokeMs < r.completeMs) && superseders(c).length === 0
      const latest = before.reduce<Op | undefined>((a, w) => (!a || w.completeMs > a.completeMs ? w : a), undefined)
      if (r.result === null || r.result === undefined) {
        if (admissible(undefined) || writes.some((w) => w.value === undefined && admissible(w))) continue
        out.push({ kind: 'not-found', message: 'read "not found" after an acknowledged set', ops: [r, ...(latest ? [latest] : [])] })
        continue
      }
      const w = setOf.get(r.result)
      if (!w || w.invokeMs >= r.completeMs) {
        out.push({ kind: 'unwritten', message: `read ${r.result}, which no set invoked before the read wrote`, ops: [r] })
        continue
      }
      if (admissible(w)) continue
      const sup = superseders(w)
      const last = sup.reduce((a, x) => (x.completeMs > a.completeMs ? x : a))
      const kind = last.value === undefined ? 'delete-undone' : 'stale-read'
      out.push({ kind, message: `read ${r.result}, replaced by an acknowledged ${last.kind} before the read began`, ops: [r, w, last] })
    }
  }
  return out
}

/** Lock holders: add succeeds, the holder releases with delete (retried until answered). */
export function checkLocks(ops: Op[]): Violation[] {
  const out: Violation[] = []
  for (const [, list] of byKey(ops.filter((o) => o.kind === 'add' || o.kind === 'release'))) {
    // Each acknowledged add holds from its completion at the latest until the holder's first release was invoked.
    const holds = list
      .filter((o) => o.kind === 'add' && o.outcome === 'ok')
      .map((a) => {
        const rel = list.find((o) => o.kind === 'release' && o.client === a.client && o.invokeMs > a.completeMs)
        return { add: a, until: rel ? rel.invokeMs : Infinity, rel }
      })
    // Two holds are legal when one can be ordered wholly before the other: its release may have
    // taken effect (invoked) before the other's add completed.
    holds.forEach((h, i) => {
      for (const b of holds.slice(i + 1))
        if (!(h.until < b.add.completeMs) && !(b.until < h.add.completeMs)) {
          const [later, first] = b.add.invokeMs >= h.add.invokeMs ? [b, h] : [h, b]
          out.push({
            kind: 'lock',
            message: `${later.add.client} acquired the lock while ${first.add.client} held it`,
            ops: [later.add, first.add, ...(first.rel ? [first.rel] : [])],
          })
        }
    })
  }
  return out
}

/**
 * Counters: `initial` is the acknowledged starting value; `final` the value read once the run
 * ended (undefined: not read).
 */
export function checkCounters(ops: Op[], finals: Map<string, { initial: number; final: Op | undefined }>): Violation[] {
  const out: Violation[] = []
  for (const [key, { initial, final }] of finals) {
    const incrs = ops.filter((o) => o.kind === 'incr' && o.key === key)
    const ok = incrs.filter((o) => o.outcome === 'ok')
    const unknown = incrs.filter((o) => o.outcome === 'unknown')
    const seen = new Map<string, Op>()
    for (const o of ok) {
      const prev = seen.get(String(o.result))
      if (prev) out.push({ kind: 'counter', message: `two acknowledged increments both returned ${o.result}`, ops: [o, prev] })
      else seen.set(String(o.result), o)
    }
    if (final && final.outcome === 'ok') {
      const v = final.result === null || final.result === undefined ? NaN : Number(final.result)
      const lo = initial + ok.length
      const hi = lo + unknown.length
      if (!(v >= lo && v <= hi))
        out.push({
          kind: 'counter',
          message: `final value ${final.result ?? 'not found'} outside [${lo}, ${hi}] (${ok.length} acknowledged, ${unknown.length} unknown increments)`,
          ops: [final],
        })
    }
  }
  return out
}

/** At most one successful cas per (key, CAS unique). */
export function checkCas(ops: Op[]): Violation[] {
  const out: Violation[] = []
  const won = new Map<string, Op>()
  for (const o of ops) {
    if (o.kind !== 'cas' || o.outcome !== 'ok') continue
    const id = `${o.key}\0${o.cas}`
    const prev = won.get(id)
    if (prev) out.push({ kind: 'cas', message: `two cas with unique ${o.cas} both succeeded`, ops: [o, prev] })
    else won.set(id, o)
  }
  return out
}

export function check(ops: Op[], counters: Map<string, { initial: number; final: Op | undefined }> = new Map()): CheckResult {
  const violations = [...checkRegisters(ops), ...checkLocks(ops), ...checkCounters(ops, counters), ...checkCas(ops)]
  const counts = Object.fromEntries(VIOLATION_KINDS.map((k) => [k, 0])) as Record<ViolationKind, number>
  for (const v of violations) counts[v.kind]++
  const tally: Record<string, number> = {}
  for (const o of ops) tally[`${o.kind}:${o.outcome}`] = (tally[`${o.kind}:${o.outcome}`] ?? 0) + 1
  return { violations, counts, tally }
}

/** A failure message: counts by kind, then up to `perKind` examples of each kind with their operations. */
export function describe(r: CheckResult, perKind = 2): string {
  const lines = [`violations: ${VIOLATION_KINDS.map((k) => `${k} ${r.counts[k]}`).join(', ')}`]
  for (const k of VIOLATION_KINDS) {
    for (const v of r.violations.filter((x) => x.kind === k).slice(0, perKind)) {
      lines.push(`${k}: ${v.message}`)
      for (const o of v.ops) lines.push(`    ${formatOp(o)}`)
    }
  }
  return lines.join('\n')
}
