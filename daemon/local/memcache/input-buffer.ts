/** A connection's unread input. */
const INPUT_INITIAL_BYTES = 16 * 1024

/**
 * Unread input. Chunks are copied into one buffer that grows by doubling and is compacted in
 * place, so a long line (or a 1 MiB binary set) arriving in many small reads costs linear, not
 * quadratic, copying.
 */
export class InputBuffer {
  // Allocated on first use: an idle connection holds no input buffer.
  #b = Buffer.alloc(0)
  #start = 0
  #end = 0

  get length(): number {
    return this.#end - this.#start
  }

  /** Memory held for unread input, in bytes: the buffer's size while it holds any. */
  get held(): number {
    return this.#end > this.#start ? this.#b.length : 0
  }

  view(): Buffer {
    return this.#b.subarray(this.#start, this.#end)
  }

  append(chunk: Buffer): void {
    const n = this.length
    if (this.#end + chunk.length > this.#b.length) {
      if (n + chunk.length <= this.#b.length) this.#b.copy(this.#b, 0, this.#start, this.#end)
      else {
        const grown = Buffer.allocUnsafe(Math.max(INPUT_INITIAL_BYTES, 2 * this.#b.length, n + chunk.length))
        this.#b.copy(grown, 0, this.#start, this.#end)
        // The old buffer may hold a session value (a binary set arrives whole before it is read).
        this.#b.fill(0)
        this.#b = grown
      }
      this.#start = 0
      this.#end = n
    }
    chunk.copy(this.#b, this.#end)
    this.#end += chunk.length
  }

  consume(n: number): void {
    this.#start += n
    if (this.#start < this.#end) return
    this.#start = this.#end = 0
    // A long multi-get line or a large value grew the buffer; give the memory back once it is handled.
    if (this.#b.length > 4 * INPUT_INITIAL_BYTES) {
      this.#b.fill(0)
      this.#b = Buffer.allocUnsafe(INPUT_INITIAL_BYTES)
    }
  }

  clear(): void {
    this.consume(this.length)
  }
}
