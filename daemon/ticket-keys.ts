/**
 * Cluster-wide TLS session ticket keys, so a ticket issued on one host resumes on any other
 * (TLS 1.3, and TLS 1.2 with tickets).
 *
 * Time is cut into epochs of `rotationMs`. At the start of an epoch the alive member with the
 * lowest node id makes a random 48-byte key and multicasts it (sealed), repeating it every
 * heartbeat while it is in force; every daemon adopts the
 * key of the highest epoch, and within one epoch the key of the lowest creator id, so concurrent
 * creators (a partition healing, a slow failure detector) converge on one key. A member that is
 * not the lowest makes its own only when no key for the epoch has arrived `graceMs` into it.
 * Keys live in memory only, are never logged or written to disk, and are wiped when replaced.
 */
import crypto from 'node:crypto'
import { TICKET_KEY_BYTES } from '../protocol/wire.js'

export interface TicketKey {
  epoch: number
  creator: Buffer
  key: Buffer
}

export interface TicketKeyOptions {
  /** Length of an epoch: how often the key changes, in ms. */
  rotationMs: number
  /** How long into an epoch a member that is not the lowest waits before making a key, in ms. */
  graceMs: number
  selfId: Buffer
  /** Wall clock in ms: epochs must line up across hosts. */
  now?: () => number
}

export class TicketKeys {
  current: TicketKey | undefined
  readonly #o: TicketKeyOptions
  readonly #now: () => number
  readonly #selfHex: string

  constructor(o: TicketKeyOptions) {
    this.#o = o
    this.#now = o.now ?? Date.now
    this.#selfHex = o.selfId.toString('hex')
  }

  epochNow(): number {
    return Math.floor(this.#now() / this.#o.rotationMs)
  }

  /** Time left in the current key's epoch, in ms (0 when there is no key). */
  remainingMs(): number {
    if (!this.current) return 0
    return Math.max(0, (this.current.epoch + 1) * this.#o.rotationMs - this.#now())
  }

  /**
   * Called on every heartbeat. Makes the key for the current epoch when it falls to us; returns
   * it so the caller can announce it, or undefined.
   */
  tick(aliveIds: string[], settled: boolean): TicketKey | undefined {
    const epoch = this.epochNow()
    if (this.current && this.current.epoch >= epoch) return undefined
    const lowest = aliveIds.every((id) => this.#selfHex < id)
    const intoEpoch = this.#now() - epoch * this.#o.rotationMs
    if (!settled && !(lowest && aliveIds.length > 0)) return undefined
    if (!lowest && intoEpoch < this.#o.graceMs) return undefined
    const made: TicketKey = { epoch, creator: Buffer.from(this.#o.selfId), key: crypto.randomBytes(TICKET_KEY_BYTES) }
    this.#replace(made)
    return made
  }

  /** A key announced by a peer; adopted when it wins. True when it replaced ours. */
  offer(k: TicketKey): boolean {
    if (k.key.length !== TICKET_KEY_BYTES) return false
    // A peer whose clock runs far ahead must not pin a future epoch on everyone.
    if (k.epoch > this.epochNow() + 1) return false
    const c = this.current
    if (c && (k.epoch < c.epoch || (k.epoch === c.epoch && Buffer.compare(k.creator, c.creator) >= 0))) return false
    this.#replace({ epoch: k.epoch, creator: Buffer.from(k.creator), key: Buffer.from(k.key) })
    return true
  }

  /** True when our key wins over `k` (a later epoch, or the same one made by a lower id). */
  beats(k: TicketKey): boolean {
    const c = this.current
    if (!c || k.epoch > this.epochNow() + 1) return false
    return k.epoch < c.epoch || (k.epoch === c.epoch && Buffer.compare(k.creator, c.creator) > 0)
  }

  #replace(k: TicketKey): void {
    this.current?.key.fill(0)
    this.current = k
  }

  wipe(): void {
    this.current?.key.fill(0)
    this.current = undefined
  }
}
