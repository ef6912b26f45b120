/**
 * The receiving side: copies (whole, or reassembled from chunks within a byte budget) and deletes
 * pushed here by members, stored or applied only when newer than what is held, acknowledged to
 * the address the sender announced, and, when awaited, passed on to the holders remembered here
 * before the sender is acknowledged.
 */
import { MIN_DATAGRAM_BYTES, MsgType, maxChunkCount, replicateChunkBytes, type Address, type Message } from '../../../protocol/wire.js'
import type { SessionStore } from '../../store/session-store.js'
import type { Clock } from '../clock.js'
import { ByteBudget, Reassembly } from '../reassembly.js'
import type { AcksOwed } from './acks.js'
import type { CopyWaiter, Deadlines } from './deadlines.js'
import type { GroupInvalidation } from './fallback.js'
import type { Holders } from './holders.js'
import type { Outbox } from './outbox.js'
import type { ReplicaPeers, ReplicationContext, ReplicationCounters, ReplicationOptions } from './types.js'
import type { Writes } from './writes.js'

/** Partly received copies older than this are dropped. */
const REASSEMBLY_TIMEOUT_MS = 5000
/**
 * Chunked copies one sender may have half received here at once; more are dropped unacknowledged
 * (the sender retries after its ACK timeout), so one member cannot take the whole budget.
 */
export const MAX_PARTIAL_COPIES_PER_SENDER = 64

/** The parts a received update goes through. */
export interface ReceiveParts {
  holders: Holders
  acks: AcksOwed
  outbox: Outbox
  writes: Writes
  deadlines: Deadlines
  fallback: GroupInvalidation
}

export class Receiver {
  readonly counters: ReplicationCounters
  readonly #o: ReplicationOptions
  readonly #store: SessionStore
  readonly #peers: ReplicaPeers
  readonly #clock: Clock
  readonly #holders: Holders
  readonly #acks: AcksOwed
  readonly #outbox: Outbox
  readonly #writes: Writes
  readonly #deadlines: Deadlines
  readonly #fallback: GroupInvalidation
  /** Copies arriving in chunks, by sender and copy id, with the key each is for. */
  #incoming = new Map<string, { key: Buffer; r: Reassembly; sender: string }>()
  /** Half-received copies per sender. */
  #partialBy = new Map<string, number>()
  readonly #budget: ByteBudget

  constructor(cx: ReplicationContext, parts: ReceiveParts) {
    this.counters = cx.counters
    this.#o = cx.o
    this.#store = cx.store
    this.#peers = cx.peers
    this.#clock = cx.clock
    this.#holders = parts.holders
    this.#acks = parts.acks
    this.#outbox = parts.outbox
    this.#writes = parts.writes
    this.#deadlines = parts.deadlines
    this.#fallback = parts.fallback
    this.#budget = new ByteBudget(cx.o.maxReassemblyBytes)
  }

  /**
   * A DELETE from a member: applied unless this host holds something newer, passed on to the
   * holders remembered here when applied (a repeat of one already applied finds its own
   * tombstone and goes no further, so forwarding ends), and acknowledged to the address the
   * sender announced.
   */
  onDelete(sender: string, m: Extract<Message, { type: typeof MsgType.DELETE | typeof MsgType.DELETE_AWAITED }>): void {
    const from = this.#peers.addressOf(sender)
    if (!from) {
      this.counters.deletesRefused++
      return
    }
    this.counters.deleteDatagramsReceived++
    const key = m.key.toString('latin1')
    if (m.type !== MsgType.DELETE_AWAITED) {
      if (this.#store.deleteFromPeer(key, m.version) && this.#writes.deleted(key, m.version, sender) > 0) this.counters.deletesForwarded++
      this.#acks.owe(sender, from, m.replId)
      return
    }
    // Awaited: the holders remembered here are reached, acknowledged, before the sender is.
    if (!this.#store.deleteFromPeer(key, m.version)) return this.#acks.now(sender, from, m.replId)
    const to = this.#holders.ids(key).filter((id) => id !== sender && id !== this.#peers.selfId && this.#peers.addressOf(id))
    const waiter = this.#forwardWaiter(sender, from, m.replId, to.length, key, m.version)
    if (this.#writes.deleted(key, m.version, sender, waiter) > 0) this.counters.deletesForwarded++
  }

  /**
   * The wait for `count` holders an awaited update was passed on to: the sender is acknowledged
   * when all did, or after two ACK timeouts (one retry), and then the group is sent an INVALIDATE
   * at `version` so that a holder out of reach does not stay silent with the old value.
   */
  #forwardWaiter(sender: string, from: Address, replId: number, count: number, key: string, version: bigint): CopyWaiter {
    if (count > 0) this.counters.updatesForwarded += count
    return this.#deadlines.waiter(
      count,
      2 * this.#o.replicationAckTimeoutMs,
      () => this.#acks.now(sender, from, replId),
      () => this.#fallback.send(key, version),
    )
  }

  /**
   * A copy (or a chunk of one) pushed to us; stored and acknowledged once whole. Only members send
   * copies, and the ACK goes to the address the sender announced, never to a datagram's source: a
   * copy from a sender we do not know as a member is refused (counted), unstored and unanswered.
   */
  onReplicate(sender: string, m: Extract<Message, { type: typeof MsgType.REPLICATE | typeof MsgType.REPLICATE_AWAITED }>): void {
    const from = this.#peers.addressOf(sender)
    if (!from) {
      this.counters.copiesRefused++
      return
    }
    if (m.totalLen > this.#o.maxValueBytes) return
    const ack = (stored: boolean) =>
      m.type === MsgType.REPLICATE_AWAITED
        ? this.#passOn(sender, from, m.replId, m.key, m.version, stored)
        : this.#acks.owe(sender, from, m.replId)
    if (m.count === 1) {
      if (m.chunk.length !== m.totalLen) return
      return ack(this.#accept(sender, m.key, m.chunk, m.ttlMs, m.flags, m.version))
    }
    const id = `${sender}:${m.replId}`
    let inc = this.#incoming.get(id)
    if (!inc) {
      const partial = this.#partialBy.get(sender) ?? 0
      const opened =
        partial < MAX_PARTIAL_COPIES_PER_SENDER
          ? Reassembly.open(
              m,
              this.#budget,
              maxChunkCount(m.totalLen, replicateChunkBytes(MIN_DATAGRAM_BYTES, m.key.length)),
              this.#clock.now(),
            )
          : 'too-many-copies'
      if (typeof opened === 'string') {
        this.counters.copiesUnassembled++
        return
      }
      inc = { key: Buffer.from(m.key), r: opened, sender }
      this.#incoming.set(id, inc)
      this.#partialBy.set(sender, partial + 1)
    }
    if (inc.r.add(m) !== 'added' || !inc.r.complete) return
    const whole = inc.r.join()
    this.#forget(id, inc)
    if (whole) {
      const stored = this.#accept(inc.sender, inc.key, whole, inc.r.ttlMs, inc.r.flags, inc.r.version)
      whole.fill(0)
      ack(stored)
    }
  }

  /**
   * An awaited copy was taken (or refused as not newer): when stored, the new entry goes, awaited,
   * to the holders remembered here but the sender, and the sender is acknowledged once they did
   * (#forwardWaiter); a refused copy changed nothing here and is acknowledged at once. Each hop
   * passes on only what it stored, so the forwarding ends where the newest version already is.
   */
  #passOn(sender: string, from: Address, replId: number, keyBytes: Buffer, version: bigint, stored: boolean): void {
    if (!stored) return this.#acks.now(sender, from, replId)
    const key = keyBytes.toString('latin1')
    this.#fallback.ifOverflowed(key, version - 1n)
    const to = this.#holders.ids(key).filter((id) => id !== sender && id !== this.#peers.selfId && this.#peers.addressOf(id))
    const waiter = this.#forwardWaiter(sender, from, replId, to.length, key, version - 1n)
    for (const id of to) this.#outbox.forwardCopy(key, id, waiter)
  }

  #forget(id: string, inc: { r: Reassembly; sender: string }): void {
    this.#incoming.delete(id)
    inc.r.release()
    const left = (this.#partialBy.get(inc.sender) ?? 1) - 1
    if (left > 0) this.#partialBy.set(inc.sender, left)
    else this.#partialBy.delete(inc.sender)
  }

  /** Stores a copy received; true when it was stored (newer than what is held). */
  #accept(sender: string, key: Buffer, value: Buffer, ttlMs: number, flags: number, version: bigint): boolean {
    this.counters.copiesReceived++
    if (ttlMs <= 0) return false
    // The sender holds the copy it sent: a delete that reaches this host passes it on there.
    this.#holders.record(key.toString('latin1'), sender, ttlMs)
    try {
      if (this.#store.setFromPeer(key.toString('latin1'), value, ttlMs, flags, version)) return true
      this.counters.copiesStale++
    } catch {
      /* beyond this host's limits: not kept */
    }
    return false
  }

  /** Drops copies that stopped arriving half way. */
  sweep(): void {
    const now = this.#clock.now()
    for (const [id, inc] of this.#incoming) {
      if (now - inc.r.startedAt > REASSEMBLY_TIMEOUT_MS) this.#forget(id, inc)
    }
  }

  /** Partly received copies are dropped (close). */
  close(): void {
    for (const inc of this.#incoming.values()) inc.r.release()
    this.#incoming.clear()
    this.#partialBy.clear()
  }
}
