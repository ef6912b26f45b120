/**
 * Operation histories for the consistency checker (test/helpers/checker.ts): each operation with
 * its client, key, what it asked, when it was invoked and completed (performance.now(), one
 * monotonic clock: every client lives in the test process) and how it ended.
 */

/**
 * ok: the server answered and the operation took effect (or, for a read, answered what it read);
 * fail: the server answered that it did not take effect (NOT_STORED, EXISTS, NOT_FOUND of incr);
 * unknown: no answer (timeout, broken connection) or an error reply: it may or may not have taken effect.
 */
export type Outcome = 'ok' | 'fail' | 'unknown'

export type OpKind = 'set' | 'get' | 'delete' | 'add' | 'release' | 'incr' | 'cas'

export interface Op {
  /** Position in the history (assigned by History). */
  index: number
  client: string
  /** The host the client talks to (for messages). */
  host: string
  kind: OpKind
  key: string
  /** set, add, cas: the (unique) value written. */
  value?: string
  /** cas: the CAS unique the write was conditional on. */
  cas?: string
  invokeMs: number
  /** Infinity while the operation has not completed. */
  completeMs: number
  outcome: Outcome
  /** get: the value read, or null for not found. incr: the new value. */
  result?: string | null
  /** The raw reply or error, for messages. */
  note?: string
}

export class History {
  readonly ops: Op[] = []

  /** Records an invocation now; `complete` records how it ended. */
  invoke(o: Omit<Op, 'index' | 'invokeMs' | 'completeMs' | 'outcome'>): Op {
    const op: Op = { ...o, index: this.ops.length, invokeMs: performance.now(), completeMs: Infinity, outcome: 'unknown' }
    this.ops.push(op)
    return op
  }

  complete(op: Op, outcome: Outcome, result?: string | null, note?: string): void {
    op.completeMs = performance.now()
    op.outcome = outcome
    if (result !== undefined) op.result = result
    if (note !== undefined) op.note = note
  }
}

/** One line per operation, as failure messages show them. */
export function formatOp(o: Op): string {
  const end = Number.isFinite(o.completeMs) ? o.completeMs.toFixed(1) : '...'
  const arg = o.value !== undefined ? ` ${o.value}` : ''
  const cas = o.cas !== undefined ? ` cas=${o.cas}` : ''
  const res = o.result !== undefined ? ` -> ${o.result === null ? 'not found' : o.result}` : ''
  const note = o.note ? ` (${o.note})` : ''
  return `#${o.index} [${o.invokeMs.toFixed(1)}, ${end}] ${o.client}@${o.host} ${o.kind} ${o.key}${arg}${cas}: ${o.outcome}${res}${note}`
}
