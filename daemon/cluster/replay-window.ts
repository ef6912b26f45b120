/**
 * Anti-replay: a sliding window over each sender's datagram counter (as in IPsec and WireGuard).
 * A counter already seen, or older than the window, is a replay. Senders are bounded: the least
 * recently heard is forgotten first (its datagrams are then still bounded by the staleness check).
 */
export const WINDOW = 1024

interface SenderWindow {
  highest: number
  /** Bit i set: counter (highest - i) was seen. */
  bits: Uint32Array
}

export class ReplayGuard {
  readonly #senders = new Map<string, SenderWindow>()
  readonly #maxSenders: number

  constructor(maxSenders = 4096) {
    this.#maxSenders = maxSenders
  }

  /** True (and recorded) when `counter` is new for `sender`; false for a replay. */
  accept(sender: string, counter: number): boolean {
    let w = this.#senders.get(sender)
    if (!w) {
      if (this.#senders.size >= this.#maxSenders) this.#senders.delete(this.#senders.keys().next().value!)
      w = { highest: counter, bits: new Uint32Array(WINDOW / 32) }
      w.bits[0] = 1
      this.#senders.set(sender, w)
      return true
    }
    // Refresh recency so active senders are not the ones forgotten.
    this.#senders.delete(sender)
    this.#senders.set(sender, w)
    if (counter > w.highest) {
      const shift = counter - w.highest
      shiftWindow(w.bits, shift)
      w.bits[0]! |= 1
      w.highest = counter
      return true
    }
    const age = w.highest - counter
    if (age >= WINDOW) return false
    const word = age >>> 5
    const bit = 1 << (age & 31)
    if (w.bits[word]! & bit) return false
    w.bits[word]! |= bit
    return true
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
