/**
 * Anti-replay: a sliding window over each sender's datagram counter (as in IPsec and WireGuard).
 * A counter already seen, or older than the window, is a replay. Senders are bounded: the least
 * recently heard is forgotten first (its datagrams are then still bounded by the staleness check).
 *
 * The window moves forward only by at most MAX_JUMP counters at a time. A sender counts one per
 * datagram from 1 (a restart is a new sender id), so between two datagrams that reach us it
 * can only have skipped as many as were lost on the way; more than MAX_JUMP in a row is not loss
 * but a forgery by a key holder: one datagram sealed with counter 2^53-1 would otherwise make
 * every later datagram of the real sender a "replay" until it restarts. Such a counter is
 * refused (JUMP) and the window stays where it was.
 */
import { BoundedMap } from '../../protocol/bounded.js'

export const WINDOW = 1024

/** Furthest a counter may be ahead of the sender's highest accepted one. */
export const MAX_JUMP = 2 ** 20

/** What `check` makes of a counter. */
export const Verdict = { NEW: 0, REPLAYED: 1, JUMP: 2 } as const
export type Verdict = (typeof Verdict)[keyof typeof Verdict]

interface SenderWindow {
  highest: number
  /** Bit i set: counter (highest - i) was seen. */
  bits: Uint32Array
}

export class ReplayGuard {
  readonly #senders: BoundedMap<string, SenderWindow>

  constructor(maxSenders = 4096) {
    this.#senders = new BoundedMap(maxSenders)
  }

  /** True (and recorded) when `counter` is new for `sender`; false for a replay or a jump. */
  accept(sender: string, counter: number): boolean {
    return this.check(sender, counter) === Verdict.NEW
  }

  /** NEW (and recorded), REPLAYED, or JUMP (too far ahead: see MAX_JUMP). */
  check(sender: string, counter: number): Verdict {
    let w = this.#senders.get(sender)
    if (!w) {
      w = { highest: counter, bits: new Uint32Array(WINDOW / 32) }
      w.bits[0] = 1
      this.#senders.set(sender, w)
      return Verdict.NEW
    }
    // Refresh recency so active senders are not the ones forgotten.
    this.#senders.touch(sender)
    if (counter - w.highest > MAX_JUMP) return Verdict.JUMP
    if (counter > w.highest) {
      const shift = counter - w.highest
      shiftWindow(w.bits, shift)
      w.bits[0]! |= 1
      w.highest = counter
      return Verdict.NEW
    }
    const age = w.highest - counter
    if (age >= WINDOW) return Verdict.REPLAYED
    const word = age >>> 5
    const bit = 1 << (age & 31)
    if (w.bits[word]! & bit) return Verdict.REPLAYED
    w.bits[word]! |= bit
    return Verdict.NEW
  }
}

/** Moves the window forward by `n` counters: bit i becomes bit i + n. */
function shiftWindow(bits: Uint32Array, n: number): void {
  if (n >= WINDOW) {
    bits.fill(0)
    return
  }
  const words = n >>> 5
  const rem = n & 31
  for (let i = bits.length - 1; i >= 0; i--) {
    const src = i - words
    let v = src >= 0 ? bits[src]! << rem : 0
    if (rem && src - 1 >= 0) v |= bits[src - 1]! >>> (32 - rem)
    bits[i] = v >>> 0
  }
}
