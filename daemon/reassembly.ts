/**
 * One value arriving in chunks, in any order, from one sender (remote fills and replication
 * copies). All reassemblies of a kind share a byte budget, so a sender cannot make the daemon hold
 * more than that; chunks are copies, wiped when the reassembly is released.
 */
export class ByteBudget {
  used = 0
  constructor(public max: number) {}
}

export interface ChunkHeader {
  totalLen: number
  count: number
  index: number
  ttlMs: number
  flags: number
  /** The value's version (versions.ts): every chunk of one value carries the same. */
  version: bigint
  chunk: Buffer
}

export type AddResult = 'added' | 'duplicate' | 'inconsistent' | 'over-budget'

export class Reassembly {
  readonly totalLen: number
  readonly count: number
  readonly flags: number
  readonly version: bigint
  readonly startedAt = performance.now()
  /** The smallest TTL any chunk carried, in ms. */
  ttlMs: number
  bytes = 0
  #chunks: (Buffer | undefined)[]
  #received = 0
  readonly #budget: ByteBudget

  constructor(first: ChunkHeader, budget: ByteBudget) {
    this.totalLen = first.totalLen
    this.count = first.count
    this.flags = first.flags
    this.version = first.version
    this.ttlMs = first.ttlMs
    this.#chunks = new Array(first.count)
    this.#budget = budget
  }

  add(c: ChunkHeader): AddResult {
    if (c.totalLen !== this.totalLen || c.count !== this.count || c.flags !== this.flags || c.version !== this.version) return 'inconsistent'
    if (this.#chunks[c.index]) return 'duplicate'
    if (this.#budget.used + c.chunk.length > this.#budget.max || this.bytes + c.chunk.length > this.totalLen) return 'over-budget'
    this.#chunks[c.index] = Buffer.from(c.chunk)
    this.#received++
    this.bytes += c.chunk.length
    this.#budget.used += c.chunk.length
    this.ttlMs = Math.min(this.ttlMs, c.ttlMs)
    return 'added'
  }

  get complete(): boolean {
    return this.#received === this.count
  }

  /** The whole value (a fresh buffer the caller wipes), or undefined when the sizes do not add up. */
  join(): Buffer | undefined {
    return this.complete && this.bytes === this.totalLen ? Buffer.concat(this.#chunks as Buffer[], this.totalLen) : undefined
  }

  /** Wipes the chunks and gives their bytes back to the budget. Idempotent. */
  release(): void {
    for (const c of this.#chunks) c?.fill(0)
    this.#chunks = []
    this.#budget.used -= this.bytes
    this.bytes = 0
  }
}
