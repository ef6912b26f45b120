/**
 * The read-modify-write operations (memcached's add, replace, cas, append, prepend, incr, decr)
 * as one function of a store: what the key holds decides the outcome, and a write that follows
 * is made here under a new version. Pure with respect to the store (no cluster, no sockets), so
 * that the host deciding a key's conditional writes (local/session-ops.ts when that is this host,
 * cluster/decisions.ts when a peer forwarded the operation) runs the same code.
 *
 * TTLs are in ms as the store takes them (0 = the default), and negative means "already expired"
 * (memcached's past exptimes): a write with one deletes the key instead, and still succeeds.
 */
import type { SessionStore } from './session-store.js'

/** Kinds of conditional write, numbered as they travel between hosts (append-only). */
export const CondKind = {
  ADD: 1,
  REPLACE: 2,
  CAS: 3,
  APPEND: 4,
  PREPEND: 5,
  INCR: 6,
  DECR: 7,
} as const
export type CondKindCode = (typeof CondKind)[keyof typeof CondKind]

/** A conditional write of one key. `value` is the stored value (add/replace/cas) or the bytes to join (append/prepend). */
export type CondOp =
  | { kind: typeof CondKind.ADD | typeof CondKind.REPLACE; value: Buffer; ttlMs: number; flags: number }
  | { kind: typeof CondKind.CAS; value: Buffer; ttlMs: number; flags: number; unique: bigint }
  | { kind: typeof CondKind.APPEND | typeof CondKind.PREPEND; value: Buffer }
  | { kind: typeof CondKind.INCR | typeof CondKind.DECR; delta: bigint }

/** Outcomes, numbered as they travel between hosts (append-only). */
export const CondOutcome = {
  /** Written (incr/decr: `number` is the new value). */
  STORED: 1,
  /** add: the key exists; replace/append/prepend: it does not. */
  NOT_STORED: 2,
  /** cas, incr/decr: the key does not exist. */
  NOT_FOUND: 3,
  /** cas: the key was written since the `unique` was read. */
  EXISTS: 4,
  /** incr/decr: the value is not a decimal number of at most 64 bits. */
  NOT_NUMERIC: 5,
  /** append/prepend: the joined value would exceed maxValueBytes. */
  TOO_LARGE: 6,
} as const
export type CondOutcomeCode = (typeof CondOutcome)[keyof typeof CondOutcome]

export interface CondResult {
  outcome: CondOutcomeCode
  /** incr/decr STORED: the new value. */
  number?: bigint
  /** What the store did, for the caller to propagate: 'set' (copies), 'delete' (an expired write), or nothing. */
  wrote?: 'set' | 'delete'
}

const DIGITS_MAX = 20

/**
 * A stored value read as memcached's incr/decr read it (`strtoull` up to the first non-digit):
 * leading blanks, an optional `+`, digits, then a blank or the end. Read byte by byte, so a long
 * value costs one pass and no string.
 */
export function numericValue(v: Buffer): bigint | undefined {
  let i = 0
  // \t \n \v \f \r and space, as C's isspace.
  const blank = (c: number | undefined) => c === 32 || (c !== undefined && c >= 9 && c <= 13)
  while (i < v.length && blank(v[i])) i++
  if (v[i] === 43) i++
  const first = i
  while (i < v.length && v[i]! >= 48 && v[i]! <= 57) i++
  if (i === first || (i < v.length && !blank(v[i]))) return undefined
  let z = first
  while (z < i - 1 && v[z] === 48) z++
  // More digits than 64 bits hold: refused before BigInt parses them (its cost grows with the square).
  if (i - z > DIGITS_MAX) return undefined
  const n = BigInt(v.toString('latin1', z, i))
  return n > 0xffffffffffffffffn ? undefined : n
}

/**
 * Decides and applies `op` on `key` in `store`. Throws StoreError (TOO_LARGE, BAD_TTL) as
 * `store.set` does, storing nothing then.
 */
export function applyConditional(store: SessionStore, key: string, op: CondOp): CondResult {
  const old = store.peek(key)
  const write = (value: Buffer, ttlMs: number, flags: number): CondResult => {
    if (ttlMs < 0) {
      // memcached accepts an already-expired item: the key reads as absent, everywhere.
      store.delete(key)
      return { outcome: CondOutcome.STORED, wrote: 'delete' }
    }
    store.set(key, value, ttlMs, flags)
    return { outcome: CondOutcome.STORED, wrote: 'set' }
  }
  switch (op.kind) {
    case CondKind.ADD:
      return old ? { outcome: CondOutcome.NOT_STORED } : write(op.value, op.ttlMs, op.flags)
    case CondKind.REPLACE:
      return old ? write(op.value, op.ttlMs, op.flags) : { outcome: CondOutcome.NOT_STORED }
    case CondKind.CAS:
      // Stored only when nobody wrote the key since the gets that read `unique`: every write,
      // local or from a peer, gives the entry a new version.
      if (!old) return { outcome: CondOutcome.NOT_FOUND }
      return old.version === op.unique ? write(op.value, op.ttlMs, op.flags) : { outcome: CondOutcome.EXISTS }
    case CondKind.APPEND:
    case CondKind.PREPEND: {
      // append/prepend keep the old flags and expiry, as memcached does.
      if (!old) return { outcome: CondOutcome.NOT_STORED }
      if (old.value.length + op.value.length > store.options.maxValueBytes) return { outcome: CondOutcome.TOO_LARGE }
      const joined = Buffer.concat(op.kind === CondKind.APPEND ? [old.value, op.value] : [op.value, old.value])
      try {
        return write(joined, store.remainingTtl(key), old.flags)
      } finally {
        joined.fill(0)
      }
    }
    case CondKind.INCR:
    case CondKind.DECR: {
      if (!old) return { outcome: CondOutcome.NOT_FOUND }
      const n = numericValue(old.value)
      if (n === undefined) return { outcome: CondOutcome.NOT_NUMERIC }
      const next = op.kind === CondKind.INCR ? BigInt.asUintN(64, n + op.delta) : n < op.delta ? 0n : n - op.delta
      const digits = String(next)
      // memcached rewrites a number in place when it fits, padding it with spaces to the old length.
      const r = write(Buffer.from(digits.padEnd(old.value.length, ' '), 'latin1'), store.remainingTtl(key), old.flags)
      return { ...r, number: next }
    }
  }
}
