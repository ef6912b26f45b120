/**
 * Maps and sets with a size bound: adding a key to a full one first evicts the oldest entry
 * (insertion order; `touch` makes an entry the newest again, for least-recently-used order).
 *
 * For tables whose keys arrive from outside (peer sender ids, their subkeys, recent datagrams,
 * replies already sent): whatever a peer sends, memory stays bounded, and what goes first is
 * what has been around longest. Everything else about them is a plain Map or Set.
 */

function checkMax(max: number): void {
  if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`a bounded table holds at least one entry, got a bound of ${max}`)
}

export class BoundedMap<K, V> extends Map<K, V> {
  /** Most entries held at once. */
  readonly max: number
  readonly #onEvict: ((key: K, value: V) => void) | undefined

  /** `onEvict` is called for each entry that makes room (not for `delete` or `clear`). */
  constructor(max: number, onEvict?: (key: K, value: V) => void) {
    super()
    checkMax(max)
    this.max = max
    this.#onEvict = onEvict
  }

  /** Sets `key`; a new key in a full map first evicts the oldest entry. Updating keeps the order. */
  override set(key: K, value: V): this {
    if (this.size >= this.max && !this.has(key)) {
      const [oldest, old] = this.entries().next().value!
      this.delete(oldest)
      this.#onEvict?.(oldest, old)
    }
    return super.set(key, value)
  }

  /** Makes `key` the newest entry (the last to be evicted); false when it is absent. */
  touch(key: K): boolean {
    if (!this.has(key)) return false
    const v = this.get(key) as V
    this.delete(key)
    super.set(key, v)
    return true
  }
}

export class BoundedSet<T> extends Set<T> {
  /** Most members held at once. */
  readonly max: number

  constructor(max: number) {
    super()
    checkMax(max)
    this.max = max
  }

  /** Adds `value`; a new member in a full set first evicts the oldest. */
  override add(value: T): this {
    if (this.size >= this.max && !this.has(value)) this.delete(this.values().next().value!)
    return super.add(value)
  }
}
