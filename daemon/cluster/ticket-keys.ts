/**
 * Cluster-wide TLS session ticket secrets, so a ticket issued on one host resumes on any other
 * (TLS 1.3, and TLS 1.2 with tickets).
 *
 * Time is cut into epochs of `rotationMs`. Each epoch has one random 48-byte secret, and it is
 * agreed ahead: during epoch e the alive member with the lowest node id makes the secrets of e,
 * e + 1 and e + 2 (those nobody has yet) and multicasts them (sealed), repeating them every
 * heartbeat. So when e + 1 begins, every daemon (and every server it feeds) already holds its
 * secret, and the secret that becomes "next" at that moment too: the servers' windows move in one
 * step per epoch, and a host whose clock runs a little ahead encrypts with a key the others can
 * decrypt.
 * Every daemon keeps a window of three: the previous epoch's (to decrypt tickets of hosts that
 * rotate a little later), the current one's (encrypts) and the next one's (decrypts tickets of
 * hosts that rotate a little earlier).
 *
 * Within one epoch the secret of the lowest creator id wins, so concurrent creators (a partition
 * healing, a slow failure detector) converge on one. A member that is not the lowest makes its
 * own only when none for the epoch has arrived `graceMs` into the epoch before it.
 * Secrets live in memory only, are never logged, and are wiped when they leave the window.
 */
import crypto from 'node:crypto'
import { TICKET_KEY_BYTES } from '../../protocol/wire.js'

export interface TicketKey {
  epoch: number
  creator: Buffer
  key: Buffer
}

/** The secrets a server needs at one moment. `current` encrypts; all three decrypt. */
export interface TicketWindow {
  /** The epoch the clock is in. */
  epoch: number
  previous: TicketKey | undefined
  current: TicketKey | undefined
  next: TicketKey | undefined
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
  /** Secrets by epoch: at most the previous, current, next and the one after it. */
  readonly #keys = new Map<number, TicketKey>()
  readonly #o: TicketKeyOptions
  readonly #now: () => number
  readonly #selfHex: string
  /** Called when a secret enters or leaves the window (never with the secret). */
  onChange: (() => void) | undefined

  constructor(o: TicketKeyOptions) {
    this.#o = o
    this.#now = o.now ?? Date.now
    this.#selfHex = o.selfId.toString('hex')
  }

  get rotationMs(): number {
    return this.#o.rotationMs
  }

  epochNow(): number {
    return Math.floor(this.#now() / this.#o.rotationMs)
  }

  /**
   * The secret that encrypts now: the current epoch's, or while it is not known yet the latest
   * earlier one (a daemon that just joined may hold only the previous epoch's for a moment).
   */
  get current(): TicketKey | undefined {
    const e = this.epochNow()
    return this.#keys.get(e) ?? this.#keys.get(e - 1)
  }

  window(): TicketWindow {
    const e = this.epochNow()
    return { epoch: e, previous: this.#keys.get(e - 1), current: this.#keys.get(e), next: this.#keys.get(e + 1) }
  }

  /** Every secret held, oldest first (what a newcomer is sent). */
  all(): TicketKey[] {
    this.#prune()
    return [...this.#keys.values()].sort((a, b) => a.epoch - b.epoch)
  }

  /** The secrets we made that are in force or next: what the maker repeats every heartbeat. */
  mine(): TicketKey[] {
    const e = this.epochNow()
    return this.all().filter((k) => k.epoch >= e && k.creator.equals(this.#o.selfId))
  }

  /** Time left in the current key's epoch, in ms (0 when there is no key). */
  remainingMs(): number {
    const c = this.current
    if (!c) return 0
    return Math.max(0, (c.epoch + 1) * this.#o.rotationMs - this.#now())
  }

  /**
   * Called on every heartbeat. Makes the secrets of the current epoch and the two after it when
   * that falls to us; returns those it made (for the caller to announce).
   */
  tick(aliveIds: string[], settled: boolean): TicketKey[] {
    const pruned = this.#prune()
    const epoch = this.epochNow()
    const lowest = aliveIds.every((id) => this.#selfHex < id)
    const intoEpoch = this.#now() - epoch * this.#o.rotationMs
    const made: TicketKey[] = []
    for (const e of [epoch, epoch + 1, epoch + 2]) {
      if (this.#keys.has(e)) continue
      if (!settled && !(lowest && aliveIds.length > 0)) continue
      if (!lowest && intoEpoch < this.#o.graceMs) continue
      const k: TicketKey = { epoch: e, creator: Buffer.from(this.#o.selfId), key: crypto.randomBytes(TICKET_KEY_BYTES) }
      this.#keys.set(e, k)
      made.push(k)
    }
    if (pruned || made.length > 0) this.onChange?.()
    return made
  }

  /** A secret announced by a peer; adopted when it wins. True when it changed our window. */
  offer(k: TicketKey): boolean {
    if (k.key.length !== TICKET_KEY_BYTES) return false
    const e = this.epochNow()
    // A peer whose clock runs far ahead must not pin a future epoch on everyone; one far behind
    // offers a secret no server needs any more.
    if (k.epoch > e + 2 || k.epoch < e - 1) return false
    const have = this.#keys.get(k.epoch)
    if (have && Buffer.compare(k.creator, have.creator) >= 0) return false
    have?.key.fill(0)
    this.#keys.set(k.epoch, { epoch: k.epoch, creator: Buffer.from(k.creator), key: Buffer.from(k.key) })
    this.#prune()
    this.onChange?.()
    return true
  }

  /**
   * Our secret for `k`'s epoch when it wins over `k` (made by a lower id), so the sender can be
   * told; undefined when `k` wins, ties, or is outside the window.
   */
  winnerOver(k: TicketKey): TicketKey | undefined {
    const e = this.epochNow()
    if (k.epoch > e + 2 || k.epoch < e - 1) return undefined
    const have = this.#keys.get(k.epoch)
    return have && Buffer.compare(k.creator, have.creator) > 0 ? have : undefined
  }

  /** Wipes and drops the secrets that left the window. True when any did. */
  #prune(): boolean {
    const e = this.epochNow()
    let dropped = false
    for (const [epoch, k] of this.#keys) {
      if (epoch >= e - 1 && epoch <= e + 2) continue
      k.key.fill(0)
      this.#keys.delete(epoch)
      dropped = true
    }
    return dropped
  }

  wipe(): void {
    for (const k of this.#keys.values()) k.key.fill(0)
    this.#keys.clear()
  }
}
