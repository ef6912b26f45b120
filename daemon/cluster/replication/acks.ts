/**
 * Acknowledgements this host owes the members that sent it copies and deletes: delayed and
 * cumulative (one ACKS per sender replicationAckDelayMs after the first owed, or at once when one
 * datagram is full), or within the turn for awaited updates whose writer is waiting. Always sent
 * to the address the sender announced, never to a datagram's source.
 */
import { MsgType, acksPerDatagram, type Address } from '../../../protocol/wire.js'
import type { PeerTransport } from '../peer-transport.js'
import type { Clock, TimerHandle } from '../clock.js'
import type { ReplicaPeers, ReplicationContext, ReplicationCounters, ReplicationOptions } from './types.js'

export class AcksOwed {
  readonly counters: ReplicationCounters
  readonly #o: ReplicationOptions
  readonly #t: PeerTransport
  readonly #peers: ReplicaPeers
  readonly #clock: Clock
  /** replIds this host owes each sender an acknowledgement for (sent together: flush). */
  #acksOwed = new Map<string, number[]>()
  #ackTimer: TimerHandle | undefined
  /** #ackTimer is an immediate (awaited acknowledgements owed), not the ACKS delay's timeout. */
  #ackSoon = false
  readonly #flushAll = () => this.flush()
  readonly #acksPerDatagram: number
  #closed = false

  constructor(cx: ReplicationContext) {
    this.counters = cx.counters
    this.#o = cx.o
    this.#t = cx.t
    this.#peers = cx.peers
    this.#clock = cx.clock
    this.#acksPerDatagram = acksPerDatagram(cx.o.maxDatagramBytes)
  }

  /**
   * Owes `sender` the acknowledgement of `replId`: sent with the others owed to it, in one ACKS,
   * replicationAckDelayMs after the first one owed to anyone (one timer for all senders), or at
   * once when one datagram is full. With a delay of 0, an ACK at once, as before ACKS.
   *
   * What the delay costs: a copy is acknowledged up to replicationAckDelayMs later. An
   * application's SET waits for its ACKs, so its copies (REPLICATE_AWAITED) are acknowledged
   * within the turn instead; the delay applies to the rest (re-placement, handoff, deletes passed
   * on). A retry is sent only replicationAckTimeoutMs (at least 4 times the delay) after a copy.
   * The copy itself is stored on arrival, so a reader asking this owner finds it meanwhile.
   */
  owe(sender: string, from: Address, replId: number): void {
    if (this.#o.replicationAckDelayMs === 0) {
      void this.#t.sendTo(from, sender, { type: MsgType.ACK, replId })
      this.counters.acksSent++
      this.counters.acksCovered++
      return
    }
    let ids = this.#acksOwed.get(sender)
    if (!ids) this.#acksOwed.set(sender, (ids = []))
    ids.push(replId)
    if (ids.length >= this.#acksPerDatagram) {
      this.#acksOwed.delete(sender)
      this.#sendAcks(sender, ids)
      return
    }
    this.#ackTimer ??= this.#clock.setTimeout(this.#flushAll, this.#o.replicationAckDelayMs)
  }

  /** Sends every acknowledgement owed. */
  flush(): void {
    if (!this.#ackSoon) this.#clock.clearTimeout(this.#ackTimer)
    this.#ackSoon = false
    this.#ackTimer = undefined
    const owed = this.#acksOwed
    this.#acksOwed = new Map()
    for (const [sender, ids] of owed) this.#sendAcks(sender, ids)
  }

  #sendAcks(sender: string, replIds: number[]): void {
    // At the address the sender announces now: one that left meanwhile is owed nothing.
    const to = this.#peers.addressOf(sender)
    if (!to) return
    void this.#t.sendTo(to, sender, { type: MsgType.ACKS, replIds })
    this.counters.acksSent++
    this.counters.acksCovered += replIds.length
  }

  /**
   * Acknowledges an awaited copy or delete without the ACKS delay (its writer is waiting to answer
   * a client): owed with the rest, and sent once the datagrams already read are handled, so a
   * burst still costs one ACKS per sender.
   */
  now(sender: string, from: Address, replId: number): void {
    if (this.#closed) return
    if (this.#o.replicationAckDelayMs === 0) return this.owe(sender, from, replId)
    this.owe(sender, from, replId)
    if (!this.#acksOwed.has(sender) || this.#ackSoon) return
    this.#ackSoon = true
    this.#clock.clearTimeout(this.#ackTimer)
    this.#ackTimer = this.#clock.setImmediate(this.#flushAll)
  }

  /** Every acknowledgement owed goes now: the senders would otherwise retry copies this host took. */
  close(): void {
    this.#closed = true
    this.flush()
  }
}
