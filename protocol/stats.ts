/**
 * The declaration of every number `stats` reports: its dotted path in the stats object (the
 * groups as the daemon nests them), its kind, unit and meaning. `/metrics` takes its names, TYPE
 * and HELP lines from here (daemon/local/metrics.ts), docs/stats.md is this table rendered
 * (test/unit/stats-table.test.ts), and test/integration/stats-declared.test.ts fails when a real
 * daemon reports a number not declared here, or never reports a declared one.
 *
 * kind: `counter` only goes up while the daemon runs; `gauge` goes up and down; `info` is a
 * number that names something (a pid) and is not exported as a metric.
 * only: the mode a number appears in, when it does not appear in every daemon.
 */
export type StatKind = 'counter' | 'gauge' | 'info'

export interface StatSpec {
  readonly kind: StatKind
  readonly unit: string
  readonly meaning: string
  readonly only?: string
}

export const STATS = {
  pid: { kind: 'info', unit: '', meaning: 'the daemon process id' },
  uptimeMs: { kind: 'gauge', unit: 'ms', meaning: 'time since the daemon started' },
  'store.hits': { kind: 'counter', unit: 'count', meaning: 'local GETs that found an entry' },
  'store.misses': { kind: 'counter', unit: 'count', meaning: 'local GETs that found none' },
  'store.sets': { kind: 'counter', unit: 'count', meaning: 'entries stored' },
  'store.deletes': { kind: 'counter', unit: 'count', meaning: 'entries deleted' },
  'store.touches': { kind: 'counter', unit: 'count', meaning: 'TTLs renewed' },
  'store.evictions': { kind: 'counter', unit: 'count', meaning: 'entries evicted to stay within maxBytes' },
  'store.expirations': { kind: 'counter', unit: 'count', meaning: 'entries dropped at their TTL' },
  'store.tombstonesEvictedEarly': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Tombstones dropped because the count bound was hit before their lifetime ended.',
  },
  'store.unheldTombstonesDropped': {
    kind: 'counter',
    unit: 'count',
    meaning:
      '* Tombstones of deletes of keys this host held nothing of, dropped early because that table was full (a flood of deletes of unknown keys): no floor raised (see `Tombstones`).',
  },
  'store.staleWrites': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Peer writes refused: not newer than the entry or tombstone held, or below the floor.',
  },
  'store.badVersions': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Peer writes refused because their version is out of range (`validVersion`).',
  },
  'store.evictionsFloored': {
    kind: 'counter',
    unit: 'count',
    meaning: "Entries evicted early (LRU, before their TTL) whose version raised their bucket's floor.",
  },
  'store.entries': { kind: 'gauge', unit: 'count', meaning: 'entries held' },
  'store.bytes': { kind: 'gauge', unit: 'bytes', meaning: 'Bytes charged to the budget (index, chunks and their overhead).' },
  'store.maxBytes': {
    kind: 'gauge',
    unit: 'bytes',
    meaning: "The tenant's share of each host's store, in bytes: its writes evict only its own entries.",
  },
  'store.tombstones': { kind: 'gauge', unit: 'count', meaning: 'Deleted keys remembered with the version of their delete.' },
  'api.connectionsAccepted': { kind: 'counter', unit: 'count', meaning: 'local API socket connections accepted' },
  'api.connectionsRejected': { kind: 'counter', unit: 'count', meaning: 'local API socket connections refused at the cap' },
  'api.requests': { kind: 'counter', unit: 'count', meaning: 'local API requests handled' },
  'api.malformedFrames': { kind: 'counter', unit: 'count', meaning: 'local API frames that did not decode' },
  'api.handlerErrors': { kind: 'counter', unit: 'count', meaning: 'local API requests that failed inside the daemon' },
  'api.connections': { kind: 'gauge', unit: 'count', meaning: 'local API connections open' },
  'admin.connectionsAccepted': { kind: 'counter', unit: 'count', meaning: 'admin socket connections accepted' },
  'admin.connectionsRejected': { kind: 'counter', unit: 'count', meaning: 'admin socket connections refused at the cap' },
  'admin.requests': { kind: 'counter', unit: 'count', meaning: 'admin requests handled' },
  'admin.malformedFrames': { kind: 'counter', unit: 'count', meaning: 'admin frames that did not decode' },
  'admin.handlerErrors': { kind: 'counter', unit: 'count', meaning: 'admin requests that failed inside the daemon' },
  'admin.connections': { kind: 'gauge', unit: 'count', meaning: 'admin connections open' },
  'cluster.members': { kind: 'gauge', unit: 'count', meaning: 'The members known, by id; `trusted`: past its probation.' },
  'cluster.trustedMembers': { kind: 'gauge', unit: 'count', meaning: 'live members past their probation (trusted with copies)' },
  'cluster.inflightLookups': { kind: 'gauge', unit: 'count', meaning: 'remote lookups waiting for answers' },
  'cluster.hedgeDelayMs': { kind: 'gauge', unit: 'ms', meaning: 'current delay before a hedged second lookup' },
  'cluster.lookups': { kind: 'counter', unit: 'count', meaning: 'Remote lookups started (coalesced GETs count once).' },
  'cluster.lookupsWidened': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Lookups started while membership was changing: every candidate owner asked at once, no hedge.',
  },
  'cluster.decisionsPending': {
    kind: 'gauge',
    unit: 'count',
    meaning: 'Conditional writes of this host not yet answered (here or at their decider).',
  },
  'cluster.decisionsLocal': {
    kind: 'counter',
    unit: 'count',
    meaning: "Conditional writes this host decided as the decider (its own and its peers').",
  },
  'cluster.decisionsRemote': { kind: 'counter', unit: 'count', meaning: 'Conditional writes this host sent to their decider.' },
  'cluster.decisionsRetransmitted': { kind: 'counter', unit: 'count', meaning: 'DECIDEs sent again for want of an answer.' },
  'cluster.decisionsFailed': { kind: 'counter', unit: 'count', meaning: 'Conditional writes that ended in OUTCOME_UNKNOWN here.' },
  'cluster.decisionRepeats': {
    kind: 'counter',
    unit: 'count',
    meaning: 'DECIDEs received again and answered from memory, not applied again.',
  },
  'cluster.decisionsRefused': {
    kind: 'counter',
    unit: 'count',
    meaning: 'DECIDEs refused here (another host may decide the key, or this one is still listening), and refusals this host received.',
  },
  'cluster.decisionsWaited': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Conditional writes that waited because no host could decide their key yet (membership changing).',
  },
  'cluster.decisionsWaitedFailed': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Conditional writes that waited and still ended in OUTCOME_UNKNOWN.',
  },
  'cluster.decisionWaitMs': {
    kind: 'counter',
    unit: 'ms',
    meaning: 'Time conditional writes spent from their first wait to their answer, summed.',
  },
  'cluster.decisionWaitMaxMs': { kind: 'gauge', unit: 'ms', meaning: 'The longest such wait of a conditional write.' },
  'cluster.decisionFetchesUnsure': {
    kind: 'counter',
    unit: 'count',
    meaning: "Decisions put off because the fetch of a key the decider lacked ended at its deadline, not in every owner's MISS.",
  },
  'cluster.decisionsUnheld': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Conditional writes applied at this decider whose copy no other host acknowledged in time: answered "outcome unknown".',
  },
  'cluster.decidedUnmatched': {
    kind: 'counter',
    unit: 'count',
    meaning: 'DECIDEDs that matched no operation in flight (late, or repeated).',
  },
  'cluster.updatesForwarded': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Awaited copies and deletes passed on to the holders this host remembers.',
  },
  'cluster.invalidationsFallback': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Group INVALIDATEs sent because a holder could not be recorded or did not acknowledge in time.',
  },
  'cluster.invalidationsUnacked': {
    kind: 'counter',
    unit: 'count',
    meaning:
      "Group INVALIDATEs sent because an application's write reached its deadline before every owner and holder acknowledged (one may be dead, not yet declared so).",
  },
  'cluster.invalidationsMembership': {
    kind: 'counter',
    unit: 'count',
    meaning:
      'Group INVALIDATEs sent for writes of keys that a member owned or held shortly before it left, died or changed id (hosts holding copies through it may not be reached yet), or made here while members were in probation (they may hold copies no record leads to).',
  },
  'cluster.copiesReattached': {
    kind: 'counter',
    unit: 'count',
    meaning:
      "Copies sent to a key's owners because the member this host's copy came from left, died or changed id: the owners record this host as a holder, so later writes reach it.",
  },
  'cluster.copySourcesUnrecorded': {
    kind: 'counter',
    unit: 'count',
    meaning:
      'Sources of copies not remembered because maxHolderRecords were held; meanwhile a departure re-attaches every copy this host does not own.',
  },
  'cluster.decisionsShed': {
    kind: 'counter',
    unit: 'count',
    meaning: "Peers' DECIDEs dropped unapplied: too many queued for the key or in all (the asker retransmits).",
  },
  'cluster.coalesced': { kind: 'counter', unit: 'count', meaning: 'GETs that joined a lookup already in flight for the same key.' },
  'cluster.lookupDatagrams': { kind: 'counter', unit: 'count', meaning: 'LOOKUP datagrams sent' },
  'cluster.remoteHits': { kind: 'counter', unit: 'count', meaning: 'remote lookups answered with a value' },
  'cluster.remoteMisses': {
    kind: 'counter',
    unit: 'count',
    meaning: '"Not found" because every live member answered MISS (before the deadline).',
  },
  'cluster.timeouts': { kind: 'counter', unit: 'count', meaning: '"Not found" at the deadline.' },
  'cluster.shed': { kind: 'counter', unit: 'count', meaning: '"Not found" at once: the in-flight table was full.' },
  'cluster.alone': { kind: 'counter', unit: 'count', meaning: '"Not found" at once: no live member to ask.' },
  'cluster.chunksReceived': { kind: 'counter', unit: 'count', meaning: 'reply chunks received' },
  'cluster.reassemblyDropped': { kind: 'counter', unit: 'count', meaning: 'partly received replies dropped' },
  'cluster.lateReplies': {
    kind: 'counter',
    unit: 'count',
    meaning: 'HIT/MISS datagrams for a lookup that had already finished (another holder was faster).',
  },
  'cluster.staleHits': {
    kind: 'counter',
    unit: 'count',
    meaning:
      '* HITs not stored: older than what this host holds for the key. A tombstone answers the GET "not found"; a newer live entry (a SET that landed meanwhile) answers with itself.',
  },
  'cluster.missesReceived': {
    kind: 'counter',
    unit: 'count',
    meaning: 'MISS datagrams received: per lookup, at most replicationFactor with replication on.',
  },
  'cluster.directLookups': {
    kind: 'counter',
    unit: 'count',
    meaning: "LOOKUP rounds sent straight to the key's owners instead of the group.",
  },
  'cluster.hedged': {
    kind: 'counter',
    unit: 'count',
    meaning: 'First rounds that went on to the other owners (the first was slow or missed).',
  },
  'cluster.lookupsAnswered': { kind: 'counter', unit: 'count', meaning: 'peer LOOKUPs this host answered' },
  'cluster.lookupsFromStrangers': {
    kind: 'counter',
    unit: 'count',
    meaning: 'LOOKUPs from senders that are not members (no announced address to answer at).',
  },
  'cluster.hitsSent': { kind: 'counter', unit: 'count', meaning: 'HIT replies sent' },
  'cluster.missesSent': { kind: 'counter', unit: 'count', meaning: 'MISS replies sent' },
  'cluster.missesWithheld': { kind: 'counter', unit: 'count', meaning: 'LOOKUPs for keys we do not hold and do not own: no reply needed.' },
  'cluster.chunksSent': { kind: 'counter', unit: 'count', meaning: 'reply chunks sent' },
  'cluster.invalidationsSent': { kind: 'counter', unit: 'count', meaning: 'invalidations sent' },
  'cluster.invalidationsReceived': { kind: 'counter', unit: 'count', meaning: 'invalidations received' },
  'cluster.membersJoined': { kind: 'counter', unit: 'count', meaning: 'members that joined' },
  'cluster.membersLeft': { kind: 'counter', unit: 'count', meaning: 'members that left' },
  'cluster.membersDied': { kind: 'counter', unit: 'count', meaning: 'members declared dead' },
  'cluster.membersRefused': { kind: 'counter', unit: 'count', meaning: 'ANNOUNCEs from new senders refused because maxMembers were held.' },
  'cluster.lookupsFromUntrusted': {
    kind: 'counter',
    unit: 'count',
    meaning: 'LOOKUPs from members still in probation: not answered (no reflection to an unproven address).',
  },
  'cluster.lookupsRepeated': {
    kind: 'counter',
    unit: 'count',
    meaning: 'LOOKUPs of a key this member already asked for in this turn (one BATCH): not answered again.',
  },
  'cluster.hitsOverBudget': {
    kind: 'counter',
    unit: 'count',
    meaning: "HITs not sent: the asker's HIT byte budget was spent (HIT_BUDGET_*).",
  },
  'cluster.copiesFromUntrusted': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Copies from senders that are not trusted members: dropped unacknowledged.',
  },
  'cluster.invalidationsFromStrangers': {
    kind: 'counter',
    unit: 'count',
    meaning: 'INVALIDATEs from senders that are not members: not applied.',
  },
  'cluster.replyChangesRefused': {
    kind: 'counter',
    unit: 'count',
    meaning: 'ANNOUNCEs of a known member naming another reply address than it joined with: ignored.',
  },
  'cluster.trustDeferred': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Members past probation left untrusted for now: NEW_TRUSTED_PER_HEARTBEAT were trusted this heartbeat.',
  },
  'cluster.hellosThrottled': {
    kind: 'counter',
    unit: 'count',
    meaning: 'HELLOs of known members not answered: one was answered less than a heartbeat ago.',
  },
  'cluster.announcesFromBeforeStart': {
    kind: 'counter',
    unit: 'count',
    meaning: "ANNOUNCEs from unknown senders sent before this daemon started (replayed, or a restart's leftovers): not taken.",
  },
  'cluster.isolations': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Times this host declared every trusted member dead by silence (it was cut off, or all the others went).',
  },
  'cluster.partitionsHealed': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Times a member declared dead while this host was cut off came back with the same id: a partition healed.',
  },
  'cluster.copiesForgottenAtHeal': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Copies from before a partition forgotten when it healed (they may have been overwritten or deleted meanwhile).',
  },
  'cluster.replicationPending': { kind: 'gauge', unit: 'count', meaning: 'copies waiting for acknowledgement' },
  'cluster.copiesPushed': { kind: 'counter', unit: 'count', meaning: 'replication copies sent' },
  'cluster.copiesAcked': { kind: 'counter', unit: 'count', meaning: 'copies acknowledged' },
  'cluster.copiesRetried': { kind: 'counter', unit: 'count', meaning: 'copies sent again' },
  'cluster.copiesFailed': { kind: 'counter', unit: 'count', meaning: 'copies given up after the retries' },
  'cluster.copiesDropped': {
    kind: 'counter',
    unit: 'count',
    meaning:
      'Copies not sent: queue full (or maxReplicationQueue copies owed to members in probation), or the target left before its turn.',
  },
  'cluster.copiesReceived': { kind: 'counter', unit: 'count', meaning: 'copies received from peers' },
  'cluster.copiesRefused': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Copies from senders that are not members: not stored, not acknowledged.',
  },
  'cluster.copiesUnassembled': {
    kind: 'counter',
    unit: 'count',
    meaning: "Chunked copies not taken in: more chunks than a legal sender uses, the budget, or the sender's share full.",
  },
  'cluster.copiesStale': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Copies received but not stored: older than (or the same as) what this host holds for the key.',
  },
  'cluster.handedOff': { kind: 'counter', unit: 'count', meaning: 'entries handed to a new holder' },
  'cluster.copiesOwed': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Copies noted as owed to a member in probation (sent when it is trusted).',
  },
  'cluster.replacements': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Copies queued because membership changed and a key gained an owner.',
  },
  'cluster.replacementScans': { kind: 'counter', unit: 'count', meaning: 'scans for entries whose holders changed' },
  'cluster.jobsCoalesced': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Jobs not queued because one for the same key and target was still waiting.',
  },
  'cluster.setsAwaitingCopy': {
    kind: 'counter',
    unit: 'count',
    meaning: 'SETs answered only once an owner acknowledged a copy (copies may be lost otherwise).',
  },
  'cluster.deletesQueued': { kind: 'counter', unit: 'count', meaning: 'Deletes queued to one host each (owners and remembered holders).' },
  'cluster.deleteDatagramsSent': { kind: 'counter', unit: 'count', meaning: 'DELETE datagrams sent, retries included.' },
  'cluster.deleteDatagramsReceived': { kind: 'counter', unit: 'count', meaning: 'DELETE datagrams received from members.' },
  'cluster.deletesAcked': { kind: 'counter', unit: 'count', meaning: 'deletes acknowledged' },
  'cluster.deletesRetried': { kind: 'counter', unit: 'count', meaning: 'deletes sent again' },
  'cluster.deletesFailed': { kind: 'counter', unit: 'count', meaning: 'deletes given up after the retries' },
  'cluster.deletesForwarded': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Deletes applied here and passed on to the holders this host remembers.',
  },
  'cluster.deletesRefused': {
    kind: 'counter',
    unit: 'count',
    meaning: 'DELETEs from senders that are not members: not applied, not acknowledged.',
  },
  'cluster.holdersRecorded': { kind: 'counter', unit: 'count', meaning: 'holders recorded for keys' },
  'cluster.holdersUnrecorded': { kind: 'counter', unit: 'count', meaning: 'Holders not remembered because maxHolderRecords were held.' },
  'cluster.acksSent': { kind: 'counter', unit: 'count', meaning: 'Acknowledgement datagrams sent (ACK or ACKS).' },
  'cluster.acksCovered': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Copies and deletes those acknowledged (more than acksSent when ACKS gathered several).',
  },
  'cluster.acksReceived': { kind: 'counter', unit: 'count', meaning: 'Acknowledgement datagrams received from members (ACK or ACKS).' },
  'cluster.acksUnmatched': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Acknowledged ids that settled nothing: unknown, settled already, or sent to another member.',
  },
  'cluster.acksRefused': { kind: 'counter', unit: 'count', meaning: 'ACKS from senders that are not members: not read.' },
  'cluster.datagramsSent': { kind: 'counter', unit: 'count', meaning: 'peer datagrams sent' },
  'cluster.datagramsReceived': { kind: 'counter', unit: 'count', meaning: 'peer datagrams received' },
  'cluster.bytesSent': { kind: 'counter', unit: 'bytes', meaning: 'peer datagram bytes sent' },
  'cluster.bytesReceived': { kind: 'counter', unit: 'bytes', meaning: 'peer datagram bytes received' },
  'cluster.sendErrors': { kind: 'counter', unit: 'count', meaning: 'datagram sends that failed' },
  'cluster.oversizeNotSent': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Messages not sent because they would exceed maxDatagramBytes (the caller is told).',
  },
  'cluster.batchesSent': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Datagrams sent that carried a BATCH (several messages to one destination in one turn).',
  },
  'cluster.messagesBatched': { kind: 'counter', unit: 'count', meaning: 'Messages that travelled inside a BATCH.' },
  'cluster.batchesReceived': { kind: 'counter', unit: 'count', meaning: 'Authenticated, fresh BATCH datagrams received.' },
  'cluster.duplicates': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Dual stack: second copies of a datagram that came on both families (not replays).',
  },
  'cluster.dropped.malformed': { kind: 'counter', unit: 'count', meaning: 'peer datagrams dropped: undecodable' },
  'cluster.dropped.oversize': { kind: 'counter', unit: 'count', meaning: 'peer datagrams dropped: too large' },
  'cluster.dropped.unknownKey': { kind: 'counter', unit: 'count', meaning: 'peer datagrams dropped: unknown key id' },
  'cluster.dropped.openFailed': { kind: 'counter', unit: 'count', meaning: 'peer datagrams dropped: authentication failed' },
  'cluster.dropped.stale': { kind: 'counter', unit: 'count', meaning: 'peer datagrams dropped: too old' },
  'cluster.dropped.replayed': { kind: 'counter', unit: 'count', meaning: 'peer datagrams dropped: replayed' },
  'cluster.dropped.unsolicited': { kind: 'counter', unit: 'count', meaning: 'peer datagrams dropped: a reply nobody asked for' },
  'cluster.dropped.misaddressed': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Sealed for another receiver, or a unicast-only type sent to the group.',
  },
  'cluster.dropped.mismatched': {
    kind: 'counter',
    unit: 'count',
    meaning: 'HIT/MISS whose nonce or key digest is not those of the lookup it names.',
  },
  'cluster.dropped.futureVersion': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Copies, fills and deletes whose version is ahead of its send time or our clock (cluster.ts).',
  },
  'cluster.dropped.counterJump': {
    kind: 'counter',
    unit: 'count',
    meaning: "Replay counters that jump too far ahead of the sender's highest (replay-window.ts).",
  },
  'cluster.dropped.failed': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Messages whose handling threw: dropped, so one bad message never stops the daemon.',
  },
  'cluster.ticketSealsSent': { kind: 'counter', unit: 'count', meaning: 'TICKET_SEALs sent, and taken (changed our window).' },
  'cluster.ticketSealsTaken': { kind: 'counter', unit: 'count', meaning: 'ticket-key seals accepted from peers' },
  'cluster.ticketSealsFromUntrusted': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Seals from senders that are not members, or members in probation not at their address: dropped.',
  },
  'cluster.ticketSealsForOldKey': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Seals for a key of ours that is gone (sealed just before our epoch changed): resent later.',
  },
  'cluster.ticketSealsUnopened': { kind: 'counter', unit: 'count', meaning: 'Seals that did not open (or whose X25519 failed): dropped.' },
  'cluster.ticketSealsRefused': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Seals that opened but were not taken (held already, or outside the window).',
  },
  'cluster.ticketPubsReceived': {
    kind: 'counter',
    unit: 'count',
    meaning: "TICKET_PUBs from members, and those dropped (not a member, or another epoch's).",
  },
  'cluster.ticketPubsRefused': { kind: 'counter', unit: 'count', meaning: 'ticket public keys refused' },
  'cluster.ticketKeysRetired': {
    kind: 'counter',
    unit: 'count',
    meaning: 'TICKET_KEYs (the retired unsealed-per-member form) dropped unread.',
  },
  'cluster.ephemeralKeysMade': { kind: 'counter', unit: 'count', meaning: 'Ephemeral key pairs made (one per epoch).' },
  'memcache.connections': { kind: 'gauge', unit: 'count', meaning: 'memcache connections open' },
  'memcache.commands': { kind: 'counter', unit: 'count', meaning: 'The commands all three protocols share.' },
  'memcache.getHits': { kind: 'counter', unit: 'count', meaning: 'memcache get keys found' },
  'memcache.getMisses': { kind: 'counter', unit: 'count', meaning: 'memcache get keys not found' },
  'memcache.remoteHits': { kind: 'counter', unit: 'count', meaning: 'memcache gets answered by a peer' },
  'memcache.errors': { kind: 'counter', unit: 'count', meaning: 'memcache commands answered with an error' },
  'memcache.refused': {
    kind: 'counter',
    unit: 'count',
    meaning: 'TCP connections refused: their uid maps to no tenant the listener serves (or was not found).',
  },
  'memcache.idleClosed': { kind: 'counter', unit: 'count', meaning: 'Connections closed by the idle timeout.' },
  'memcache.commandTimeouts': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Connections closed because a command line or data block did not arrive whole within `commandTimeoutMs`.',
  },
  'memcache.paused': {
    kind: 'counter',
    unit: 'count',
    meaning: "Times a connection's socket stopped being read because its replies were not taken.",
  },
  'memcache.readingPaused': { kind: 'gauge', unit: 'count', meaning: 'Connections not read right now, for that reason.' },
  'memcache.waitingForClient': {
    kind: 'gauge',
    unit: 'count',
    meaning: 'Connections whose unsent replies exceed the bound right now: the daemon waits for the client to read.',
  },
  'memcache.bufferedBytes': {
    kind: 'gauge',
    unit: 'bytes',
    meaning: 'Bytes all connections hold right now (input, read-ahead, unsent replies), against `maxBufferedBytes`.',
  },
  'memcache.overBudget': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Times a connection stopped being read and answered because the front end was over `maxBufferedBytes`.',
  },
  'memcache.remoteLookups': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Remote lookups of the front end in flight right now (at most its share, `maxRemoteLookups`).',
  },
  'memcache.lookupsWaiting': { kind: 'gauge', unit: 'count', meaning: "Remote lookups waiting for the front end's share right now." },
  'memcache.lookupsQueued': { kind: 'counter', unit: 'count', meaning: "Times a remote lookup had to wait for the front end's share." },
  'memcache.binaryCommands': { kind: 'counter', unit: 'count', meaning: 'Binary requests, served or refused.' },
  'memcache.metaCommands': { kind: 'counter', unit: 'count', meaning: 'Meta commands (mg, ms, md, ma, mn, me).' },
  'memcache.unknownCommands': {
    kind: 'counter',
    unit: 'count',
    meaning: 'Requests answered Unknown command (binary opcodes this front end does not serve, SASL).',
  },
  'memcache.bytesRead': { kind: 'counter', unit: 'bytes', meaning: 'Bytes read from and written to memcache clients.' },
  'memcache.bytesWritten': { kind: 'counter', unit: 'bytes', meaning: 'bytes written to memcache clients' },
  'memcache.cmdTouch': { kind: 'counter', unit: 'count', meaning: 'memcache touch commands' },
  'memcache.touchHits': { kind: 'counter', unit: 'count', meaning: 'touches of a held key' },
  'memcache.touchMisses': { kind: 'counter', unit: 'count', meaning: 'touches of a missing key' },
  'memcache.cmdFlush': { kind: 'counter', unit: 'count', meaning: 'memcache flush_all commands' },
  'memcache.deleteHits': { kind: 'counter', unit: 'count', meaning: 'deletes of a held key' },
  'memcache.deleteMisses': { kind: 'counter', unit: 'count', meaning: 'deletes of a missing key' },
  'memcache.incrHits': { kind: 'counter', unit: 'count', meaning: 'incr of a held key' },
  'memcache.incrMisses': { kind: 'counter', unit: 'count', meaning: 'incr of a missing key' },
  'memcache.decrHits': { kind: 'counter', unit: 'count', meaning: 'decr of a held key' },
  'memcache.decrMisses': { kind: 'counter', unit: 'count', meaning: 'decr of a missing key' },
  'memcache.casHits': { kind: 'counter', unit: 'count', meaning: 'cas that stored' },
  'memcache.casMisses': { kind: 'counter', unit: 'count', meaning: 'cas of a missing key' },
  'memcache.casBadval': { kind: 'counter', unit: 'count', meaning: 'cas refused: the value changed' },
  'tickets.epoch': { kind: 'gauge', unit: 'epoch', meaning: 'The epoch the clock is in.' },
  'tickets.rotationMs': { kind: 'gauge', unit: 'ms', meaning: 'Length of an epoch: how often the key changes, in ms.' },
  'tickets.epochs.current': { kind: 'gauge', unit: 'epoch', meaning: 'epoch of the current ticket key' },
  'tickets.epochs.next': { kind: 'gauge', unit: 'epoch', meaning: 'epoch of the next ticket key' },
  'process.rssBytes': { kind: 'gauge', unit: 'bytes', meaning: 'resident set size' },
  'process.heapUsedBytes': { kind: 'gauge', unit: 'bytes', meaning: 'V8 heap in use' },
  'process.externalBytes': { kind: 'gauge', unit: 'bytes', meaning: 'memory of Buffers and other objects outside the V8 heap' },
  'tickets.epochs.previous': {
    kind: 'gauge',
    unit: 'epoch',
    meaning: 'epoch of the previous ticket key',
    only: 'after the first ticket-key rotation',
  },
} as const satisfies Record<string, StatSpec>

export type StatPath = keyof typeof STATS

/** Per-consumer ticket delivery records: a list keyed by consumer name, not a fixed set of numbers. */
const NOT_LEAVES = new Set(['tickets.consumers'])

/** The finite numbers of a stats object, by dotted path. */
export function statLeaves(obj: unknown, prefix = '', out = new Map<string, number>()): Map<string, number> {
  if (NOT_LEAVES.has(prefix)) return out
  if (obj && typeof obj === 'object' && !Array.isArray(obj)) {
    for (const [k, v] of Object.entries(obj)) statLeaves(v, prefix ? `${prefix}.${k}` : k, out)
  } else if (typeof obj === 'number' && Number.isFinite(obj)) out.set(prefix, obj)
  return out
}

const snake = (s: string) => s.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase()).replace(/[^a-z0-9_]/g, '_')

/** The Prometheus name of a stats path: statecast_<snake_case path>, counters with _total. */
export function metricName(path: string): string {
  const base = `statecast_${snake(path.replace(/\./g, '_'))}`
  return (STATS as Record<string, StatSpec>)[path]?.kind === 'counter' ? `${base}_total` : base
}

/** Groups that exist only in some modes: every number under them is reported only then. */
export const GROUP_ONLY: Readonly<Record<string, string>> = {
  cluster: 'with the cluster on',
  memcache: 'with a memcache listener',
}

/** When `path` is reported, if not in every daemon: its own `only`, else its group's. */
export function onlyWhen(path: string): string | undefined {
  return (STATS as Record<string, StatSpec>)[path]?.only ?? GROUP_ONLY[path.split('.')[0]!]
}
