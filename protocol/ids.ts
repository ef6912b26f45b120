/**
 * Request ids on both wires: a u32 in which 0 is reserved (the local API's connection-level
 * notices; "no request" on the peer side), so a sequence runs 1, 2, ..., 2^32-1, 1, ...
 * Whoever waits for replies keeps a table keyed by id; wrapping only matters after four billion
 * requests, long after any reply to the first could still arrive.
 */

/** The largest u32. */
export const U32_MAX = 0xffffffff

/** The id after `id` (an integer): one more, wrapping from U32_MAX (or from anything below 1) to 1. */
export function nextId(id: number): number {
  return id >= U32_MAX || !(id >= 1) ? 1 : id + 1
}
