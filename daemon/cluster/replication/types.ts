/**
 * What every part of replication shares: its config keys, its counters (one object, reported as
 * one), the view of the membership it places copies by, and the context each part is built with.
 */
import type { Address } from '../../../protocol/wire.js'
import type { SessionStore } from '../../store/session-store.js'
import type { Config } from '../../config/config.js'
import type { PeerTransport } from '../peer-transport.js'
import type { Clock } from '../clock.js'

/** The config keys replication takes (unit and default: FIELDS in config/config.ts; the ACK wait doubles up to 2 s). */
export type ReplicationOptions = Pick<
  Config,
  | 'replicationFactor'
  | 'replicationAckTimeoutMs'
  | 'replicationAckDelayMs'
  | 'replicationRetries'
  | 'maxReplicationInflight'
  | 'maxReplicationQueue'
  | 'maxDatagramBytes'
  | 'maxValueBytes'
  | 'maxReassemblyBytes'
  | 'maxHolderRecords'
>

export interface ReplicationCounters {
  copiesPushed: number
  copiesAcked: number
  copiesRetried: number
  copiesFailed: number
  /** Copies not sent: queue full (or maxReplicationQueue copies owed to members in probation), or the target left before its turn. */
  copiesDropped: number
  copiesReceived: number
  /** Copies from senders that are not members: not stored, not acknowledged. */
  copiesRefused: number
  /** Chunked copies not taken in: more chunks than a legal sender uses, the budget, or the sender's share full. */
  copiesUnassembled: number
  /** Copies received but not stored: older than (or the same as) what this host holds for the key. */
  copiesStale: number
  handedOff: number
  /** Copies noted as owed to a member in probation (sent when it is trusted; see #owed). */
  copiesOwed: number
  /** Copies queued because membership changed and a key gained an owner. */
  replacements: number
  replacementScans: number
  /** Jobs not queued because one for the same key and target was still waiting. */
  jobsCoalesced: number
  /** SETs answered only once an owner acknowledged a copy (copies were being lost; stored()). */
  setsAwaitingCopy: number
  /** Deletes queued to one host each (owners and remembered holders). */
  deletesQueued: number
  /** DELETE datagrams sent, retries included. */
  deleteDatagramsSent: number
  /** DELETE datagrams received from members. */
  deleteDatagramsReceived: number
  deletesAcked: number
  deletesRetried: number
  deletesFailed: number
  /** Deletes applied here and passed on to the holders this host remembers. */
  deletesForwarded: number
  /** DELETEs from senders that are not members: not applied, not acknowledged. */
  deletesRefused: number
  holdersRecorded: number
  /** Holders not remembered because maxHolderRecords were held, or the member's share of them. */
  holdersUnrecorded: number
  /** Awaited copies and deletes passed on to the holders remembered here before they were acknowledged. */
  updatesForwarded: number
  /** Group INVALIDATEs sent because holders could not be remembered (table full) or did not acknowledge in time. */
  invalidationsFallback: number
  /** Acknowledgement datagrams sent (ACK or ACKS). */
  acksSent: number
  /** Copies and deletes those acknowledged (more than acksSent when ACKS gathered several). */
  acksCovered: number
  /** Acknowledgement datagrams received from members (ACK or ACKS). */
  acksReceived: number
  /** Acknowledged ids that settled nothing: unknown, settled already, or sent to another member. */
  acksUnmatched: number
  /** ACKS from senders that are not members: not read. */
  acksRefused: number
}

export interface ReplicaPeers {
  selfId: string
  /** Ids of the live members trusted with copies (this host excluded). */
  aliveIds(): string[]
  /** Ids of the live members still in probation: owners once trusted, sent nothing before. */
  probationIds(): string[]
  /** A live member's reply address. */
  addressOf(id: string): Address | undefined
}

/** What each part of replication runs on (the Replicator builds one and hands it to every part). */
export interface ReplicationContext {
  readonly o: ReplicationOptions
  readonly t: PeerTransport
  readonly store: SessionStore
  readonly peers: ReplicaPeers
  readonly clock: Clock
  readonly counters: ReplicationCounters
}
