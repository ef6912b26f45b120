/**
 * Cluster-wide TLS session ticket secrets, so a ticket issued on one host resumes on any other
 * (TLS 1.3, and TLS 1.2 with tickets). This file holds the secrets and decides which to take;
 * ticket-gossip.ts moves them between daemons (forward-secret: X25519 per member and epoch).
 *
 * Time is cut into epochs of `rotationMs`. Each epoch has one random 48-byte secret, and it is
 * agreed ahead: during epoch e the alive member with the lowest node id makes the secrets of e,
 * e + 1 and e + 2 (those nobody has yet), so when e + 1 begins, every daemon (and every server it
 * feeds) already holds its secret, and the secret that becomes "next" at that moment too.
 * Every daemon keeps a window of three: the previous epoch's (to decrypt tickets of hosts that
 * rotate a little later), the current one's (encrypts) and the next one's (decrypts tickets of
 * hosts that rotate a little earlier).
 *
 * Nobody makes a secret before it has listened for the cluster (`settled`): a daemon that just
 * started takes the cluster's. A member that is not the lowest makes its own only when none for
 * the epoch has arrived `graceMs` into the epoch and `graceMs` after it settled.
 *
 * A secret once held for an epoch of the window (previous, current, next: any of them may have
 * been handed to a server) is never replaced: a sender cannot change the keys servers use in
 * the middle of an epoch. Only the epoch after next, which no server holds yet, may change, to
 * the secret of a lower holder, so that two makers (a partition healing, a fleet started
 * together) converge before it comes into use.
 * Secrets live in memory only, are never logged, and are wiped when they leave the window.
 */
import crypto from 'node:crypto'
import { TICKET_SECRET_BYTES } from '../../protocol/wire.js'

export interface TicketKey {
  epoch: number
  /** Who we took it from (its maker, or the member that passed it on), or our own id: we made it. */
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

  /** Time left in the current key's epoch, in ms (0 when there is no key). */
  remainingMs(): number {
    const c = this.current
    if (!c) return 0
    return Math.max(0, (c.epoch + 1) * this.#o.rotationMs - this.#now())
  }

  /**
   * Called on every heartbeat. Makes the secrets of the current epoch and the two after it when
   * that falls to us; returns those it made (for the caller to send). `settledForMs`: how long
   * the member list has been complete (negative: not yet).
   */
  tick(aliveIds: string[], settledForMs: number): TicketKey[] {
    const pruned = this.#prune()
    const epoch = this.epochNow()
    const lowest = aliveIds.every((id) => this.#selfHex < id)
    const intoEpoch = this.#now() - epoch * this.#o.rotationMs
    const made: TicketKey[] = []
    for (const e of [epoch, epoch + 1, epoch + 2]) {
      if (this.#keys.has(e)) continue
      if (settledForMs < 0) continue
      if (!lowest && (intoEpoch < this.#o.graceMs || settledForMs < this.#o.graceMs)) continue
      const k: TicketKey = { epoch: e, creator: Buffer.from(this.#o.selfId), key: crypto.randomBytes(TICKET_SECRET_BYTES) }
      this.#keys.set(e, k)
      made.push(k)
    }
    if (pruned || made.length > 0) this.onChange?.()
    return made
  }

  /** Whether `epoch` is one a secret may be held for now (previous to the one after next). */
  inRange(epoch: number): boolean {
    const e = this.epochNow()
    return epoch >= e - 1 && epoch <= e + 2
  }

  /**
   * A secret from member `k.creator` (the authenticated sender). Taken when we hold none for its
   * epoch; when we hold the same secret, the lower of the two holders is remembered (so the
   * members passing it on agree on who does); a different secret replaces ours only for the epoch
   * after next (no server holds it yet) and only when its sender's id is lower. True when our
   * window changed.
   */
  offer(k: TicketKey): boolean {
    if (k.key.length !== TICKET_SECRET_BYTES || k.creator.length !== this.#o.selfId.length) return false
    // A peer whose clock runs far ahead must not pin a future epoch on everyone; one far behind
    // offers a secret no server needs any more.
    if (!this.inRange(k.epoch)) return false
    const have = this.#keys.get(k.epoch)
    if (have) {
      if (have.key.equals(k.key)) {
        if (Buffer.compare(k.creator, have.creator) < 0) have.creator = Buffer.from(k.creator)
        return false
      }
      if (k.epoch < this.epochNow() + 2 || Buffer.compare(k.creator, have.creator) >= 0) return false
      have.key.fill(0)
    }
    this.#keys.set(k.epoch, { epoch: k.epoch, creator: Buffer.from(k.creator), key: Buffer.from(k.key) })
    this.#prune()
    this.onChange?.()
    return true
  }

  /** The secret held for `epoch`, if any (the caller must not keep or log it). */
  get(epoch: number): TicketKey | undefined {
    return this.#keys.get(epoch)
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
