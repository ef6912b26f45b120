/**
 * The group INVALIDATE that stands in for acknowledged updates when holders could not all be
 * remembered (Holders.overflowed) or did not acknowledge in time: unacknowledged, so sent three
 * times, as cluster.ts sends its own.
 */
import { MsgType } from '../../../protocol/wire.js'
import type { PeerTransport } from '../peer-transport.js'
import type { Clock, TimerHandle } from '../clock.js'
import type { Holders } from './holders.js'
import type { ReplicationContext, ReplicationCounters } from './types.js'

export class GroupInvalidation {
  readonly counters: ReplicationCounters
  readonly #t: PeerTransport
  readonly #clock: Clock
  readonly #holders: Holders
  /** Repeats of fallback INVALIDATEs still to send (cleared on close). */
  readonly #timers = new Set<TimerHandle>()
  #closed = false

  constructor(cx: ReplicationContext, holders: Holders) {
    this.counters = cx.counters
    this.#t = cx.t
    this.#clock = cx.clock
    this.#holders = holders
  }

  /**
   * Holders went unrecorded here (Holders.overflowed): an overwrite or delete of any key also goes
   * to the whole group as an INVALIDATE at `version` (a delete's own, or one below a new entry's,
   * so an owner's new copy is never refused for it), three times as cluster.ts sends its own.
   */
  ifOverflowed(key: string, version: bigint): void {
    if (this.#holders.overflowed) this.send(key, version)
  }

  /** Sends an INVALIDATE of `key` at `version` to the group now and twice more (5 and 25 ms later). */
  send(key: string, version: bigint): void {
    if (this.#closed || version <= 0n) return
    this.counters.invalidationsFallback++
    const msg = { type: MsgType.INVALIDATE, version, key: Buffer.from(key, 'latin1') } as const
    this.#t.sendGroup(msg)
    for (const delay of [5, 25]) {
      const t = this.#clock.setTimeout(() => {
        this.#timers.delete(t)
        if (!this.#closed) this.#t.sendGroup(msg)
      }, delay)
      this.#timers.add(t)
    }
  }

  /** No repeat is sent any more (close). */
  close(): void {
    this.#closed = true
    for (const t of this.#timers) this.#clock.clearTimeout(t)
    this.#timers.clear()
  }
}
