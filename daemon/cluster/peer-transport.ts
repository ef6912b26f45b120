/**
 * What the cluster core (cluster.ts, lookups.ts, replication.ts) uses of its transport. The
 * daemon's is `Transport` (transport.ts: sealed UDP multicast and unicast); a unit test can hand
 * the core another, such as the real `Transport` over an in-memory network
 * (test/helpers/memory-network.ts).
 */
import type { ClusterKey } from '../../protocol/keyfile.js'
import type { Address, Message } from '../../protocol/wire.js'
import type { RemoteInfo } from 'node:dgram'

export interface DropCounters {
  malformed: number
  oversize: number
  unknownKey: number
  openFailed: number
  stale: number
  replayed: number
  unsolicited: number
  /** Sealed for another receiver, or a unicast-only type sent to the group. */
  misaddressed: number
  /** HIT/MISS whose nonce or key digest is not those of the lookup it names. */
  mismatched: number
  /** Copies, fills and deletes whose version is ahead of its send time or our clock (cluster.ts). */
  futureVersion: number
  /** Replay counters that jump too far ahead of the sender's highest (replay-window.ts). */
  counterJump: number
  /** Messages whose handling threw: dropped, so one bad message never stops the daemon. */
  failed: number
}

export interface TransportCounters {
  datagramsSent: number
  datagramsReceived: number
  bytesSent: number
  bytesReceived: number
  sendErrors: number
  /** Messages not sent because they would exceed maxDatagramBytes (the caller is told). */
  oversizeNotSent: number
  /** Datagrams sent that carried a BATCH (several messages to one destination in one turn). */
  batchesSent: number
  /** Messages that travelled inside a BATCH. */
  messagesBatched: number
  /** Authenticated, fresh BATCH datagrams received. */
  batchesReceived: number
  /** Dual stack: second copies of a datagram that came on both families (not replays). */
  duplicates: number
  dropped: DropCounters
}

export interface Incoming {
  msg: Message
  /** Sender id in hex. */
  sender: string
  /** The sender's clock when it sealed the datagram, Unix ms (authenticated). */
  sentAtMs: number
  rinfo: RemoteInfo
}

export interface PeerTransport {
  /** This daemon's node id (8 random bytes), and in hex: how peers name it. */
  readonly nodeId: Buffer
  readonly nodeIdHex: string
  readonly counters: TransportCounters
  /** Each authenticated, fresh, non-replayed message, as it arrives. */
  onMessage: (m: Incoming) => void
  /** Where peers send replies to us (the first family's unicast address); throws before start. */
  readonly replyAddress: Address
  /** Our reply address of `family`, if we speak that family. */
  replyAddressFor(family: 4 | 6): Address | undefined
  /** The IP families we speak, the first one preferred. */
  readonly families: (4 | 6)[]
  start(): Promise<void>
  /** Replaces the cluster keys (reload). */
  setKeys(keys: ClusterKey[]): void
  /** Replaces the listed peers (reload). */
  setPeers(peers: Address[]): void
  /** True when `msg` fits in one datagram (maxDatagramBytes). */
  fits(msg: Message): boolean
  /**
   * To the whole cluster (group and listed peers). Like every send, queued: what goes to one
   * destination within one turn leaves at its end as one datagram (failures are counted).
   */
  sendGroup(msg: Message): void
  /** To the daemon `receiver` (node id in hex) at its announced address `to`. */
  sendTo(to: Address, receiver: string, msg: Message): void
  /** To several daemons, each sealed for its receiver. */
  sendToEach(to: readonly { id: string; address: Address }[], msg: Message): void
  /** Sends now what this turn queued (the front ends call it before they write their replies). */
  flush(): void
  /** Closes the sockets; messages sent before it are on their way. */
  close(): Promise<void>
}
