/**
 * Numbers as memcached reads them (its safe_strtol / safe_strtoull), shared by the text and meta
 * parsers and the commands. A stored value as incr reads it: store/conditional.ts, numericValue.
 */

/**
 * Decimal digits a 64-bit number can have, leading zeros aside (2^64 - 1 has 20). Longer runs are
 * refused before BigInt reads them: BigInt's parse grows with the square of the length, so a
 * 65,536-digit value or argument cost milliseconds per command and stalled the event loop.
 */
export const MAX_U64_DIGITS = 20

/** memcached: exptime above this many seconds is an absolute Unix time. */
export const RELATIVE_LIMIT_S = 60 * 60 * 24 * 30

/** The digits of a decimal run without its leading zeros, or undefined when it has more than 64 bits could hold. */
function shortDigits(run: string): string | undefined {
  let i = 0
  while (i < run.length - 1 && run.charCodeAt(i) === 48) i++
  return run.length - i > MAX_U64_DIGITS ? undefined : run.slice(i)
}

/**
 * memcached's `safe_strtol` into an int32: a decimal that fits a 64-bit long, then truncated to
 * 32 bits as memcached's assignment does. Undefined where memcached refuses the token.
 */
export function memcachedInt32(tok: string): number | undefined {
  const m = /^([+-]?)(\d+)$/.exec(tok)
  if (!m) return undefined
  const d = shortDigits(m[2]!)
  if (d === undefined) return undefined
  const n = BigInt(m[1] === '-' ? `-${d}` : d)
  if (n > 0x7fffffffffffffffn || n < -0x8000000000000000n) return undefined
  return Number(BigInt.asIntN(32, n))
}

/** memcached's `safe_strtoull`: an unsigned decimal that fits 64 bits. */
export function memcachedUint64(tok: string): bigint | undefined {
  const m = /^\+?(\d+)$/.exec(tok)
  if (!m) return undefined
  const d = shortDigits(m[1]!)
  if (d === undefined) return undefined
  const n = BigInt(d)
  return n > 0xffffffffffffffffn ? undefined : n
}

/** memcached's `safe_strtoul` into the 32-bit client flags. */
export function memcachedFlags(tok: string): number | undefined {
  const n = memcachedUint64(tok)
  return n === undefined ? undefined : Number(BigInt.asUintN(32, n))
}
