/**
 * One value arriving in chunks, in any order, from one sender (remote fills and replication
 * copies). All reassemblies of a kind share a byte budget, so a sender cannot make the daemon hold
 * more than that; chunks are copies, wiped when the reassembly is released.
 *
 * The budget is charged for what a reassembly really holds, not only for value bytes: its chunk
 * index (a slot per declared chunk, charged up front) and each chunk's buffer overhead. Otherwise
 * copies declaring many tiny chunks would hold memory the budget never saw.
 */
export class ByteBudget {
  used = 0
  constructor(public max: number) {}
}

/** Bytes charged per declared chunk, for its slot in the index. */
export const INDEX_SLOT_BYTES = 8
/** Bytes charged per received chunk beyond its length: the buffer object that holds the copy. */
export const CHUNK_OVERHEAD_BYTES = 96

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
export type OpenRefusal = 'too-many-chunks' | 'over-budget'

export class Reassembly {
  readonly totalLen: number
  readonly count: number
  readonly flags: number
  readonly version: bigint
  /** When its first chunk came (the caller's monotonic clock, ms). */
  readonly startedAt: number
  /** The smallest TTL any chunk carried, in ms. */
  ttlMs: number
  /** Bytes charged to the budget (index, chunks and their overhead). */
  bytes = 0
  #valueBytes = 0
  #chunks: (Buffer | undefined)[]
  #received = 0
  readonly #budget: ByteBudget

  private constructor(first: ChunkHeader, budget: ByteBudget, startedAt: number) {
    this.startedAt = startedAt
    this.totalLen = first.totalLen
    this.count = first.count
    this.flags = first.flags
    this.version = first.version
    this.ttlMs = first.ttlMs
    this.#chunks = new Array<Buffer | undefined>(first.count)
    this.#budget = budget
    this.bytes = first.count * INDEX_SLOT_BYTES
    budget.used += this.bytes
  }

  /**
   * A reassembly for the value `first` is a chunk of, or why not: more chunks than `maxCount` (the
   * most a legal sender could use), or no room in the budget for its index. `now` is when it
   * starts, in monotonic ms.
   */
  static open(first: ChunkHeader, budget: ByteBudget, maxCount: number, now = performance.now()): Reassembly | OpenRefusal {
    if (first.count > maxCount) return 'too-many-chunks'
    if (budget.used + first.count * INDEX_SLOT_BYTES > budget.max) return 'over-budget'
    return new Reassembly(first, budget, now)
  }

  add(c: ChunkHeader): AddResult {
    if (c.totalLen !== this.totalLen || c.count !== this.count || c.flags !== this.flags || c.version !== this.version)
      return 'inconsistent'
    if (this.#chunks[c.index]) return 'duplicate'
    const cost = c.chunk.length + CHUNK_OVERHEAD_BYTES
    if (this.#budget.used + cost > this.#budget.max || this.#valueBytes + c.chunk.length > this.totalLen) return 'over-budget'
    this.#chunks[c.index] = Buffer.from(c.chunk)
    this.#received++
    this.#valueBytes += c.chunk.length
    this.bytes += cost
    this.#budget.used += cost
    this.ttlMs = Math.min(this.ttlMs, c.ttlMs)
    return 'added'
  }

  get complete(): boolean {
    return this.#received === this.count
  }

  /** The whole value (a fresh buffer the caller wipes), or undefined when the sizes do not add up. */
  join(): Buffer | undefined {
    return this.complete && this.#valueBytes === this.totalLen ? Buffer.concat(this.#chunks as Buffer[], this.totalLen) : undefined
  }

  /** Wipes the chunks and gives their bytes back to the budget. Idempotent. */
  release(): void {
    for (const c of this.#chunks) c?.fill(0)
    this.#chunks = []
    this.#budget.used -= this.bytes
    this.bytes = 0
    this.#valueBytes = 0
  }
}
