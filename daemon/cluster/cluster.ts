/**
 * The peer side of the daemon: it routes each datagram to its part (membership.ts: ANNOUNCE,
 * LEAVE and who is trusted; lookups.ts: LOOKUPs asked and answered; replication.ts and its
 * parts in replication/: copies, deletes and their acknowledgements; ticket-gossip.ts: ticket
 * keys; decisions.ts: conditional writes), runs the heartbeat, and sends deletes:
 * acknowledged DELETEs to the hosts that may hold a copy (replication.ts), or one group
 * INVALIDATE when those are unknown.
 *
 * Start: open sockets -> announce (HELLO, so members answer at once) -> heartbeats.
 * Stop, in reverse: stop heartbeats -> answer waiting lookups "not found" -> refuse DECIDEs and
 * let the decisions under way finish (decisions.ts) -> hand owned sessions to the remaining owners
 * (both within handoffTimeoutMs) -> LEAVE -> close sockets.
 */
import type { ClusterKey } from '../../protocol/keyfile.js'
import { AnnounceFlag, MsgType, type Address, type Message } from '../../protocol/wire.js'
import type { ClusterHooks } from './hooks.js'
import { Lookups, type AnswerCounters, type LookupOptions } from './lookups.js'
import { Membership, type Member, type MembershipCounters } from './membership.js'
import type { Config } from '../config/config.js'
import type { Log } from '../host/log.js'
import type { SessionStore } from '../store/session-store.js'
import { versionAtWallMs, versionWallMs } from '../store/versions.js'
import { Transport, type Incoming, type TransportOptions } from './transport.js'
import type { TicketKeys } from './ticket-keys.js'
import { TicketGossip } from './ticket-gossip.js'
import { Replicator, type ReplicationOptions } from './replication.js'
import { systemClock, type Clock, type TimerHandle } from './clock.js'
import type { PeerTransport } from './peer-transport.js'
import { Decisions } from './decisions.js'
import type { CondOp } from '../store/conditional.js'

/** The cluster's config keys (unit and default: FIELDS in config/config.ts) and the transport's addresses. */
export type ClusterOptions = Omit<TransportOptions, 'log' | 'keys' | 'now'> &
  LookupOptions &
  ReplicationOptions &
  Pick<Config, 'nodeName' | 'heartbeatMs' | 'deadAfterMs' | 'ticketKeyRotationMs' | 'handoffTimeoutMs' | 'maxMembers' | 'memberProbationMs'>

export type { Member }

/** The core's counters: membership's and the answering side of lookups (reported as one), and the core's own. */
export interface ClusterCounters extends AnswerCounters, MembershipCounters {
  invalidationsSent: number
  invalidationsReceived: number
  /** Copies from senders that are not trusted members: dropped unacknowledged. */
  copiesFromUntrusted: number
  /** INVALIDATEs from senders that are not members: not applied. */
  invalidationsFromStrangers: number
  /** Copies from before a partition forgotten when it healed (they may have been overwritten or deleted meanwhile). */
  copiesForgottenAtHeal: number
}

const fmt = (a: Address) => `${a.address}:${a.port}`

/**
 * INVALIDATE (the fallback when a key's holders are unknown: replication off, or no trusted
 * member yet) is not acknowledged: it is sent this many times, this far apart (ms), to survive loss.
 */
const INVALIDATE_REPEATS = [0, 5, 25]

/** What a cluster core runs on besides its options: the daemon's are the defaults; unit tests pass their own. */
export interface ClusterDeps {
  /** Time and timers of the core and its parts (default `systemClock`). */
  clock?: Clock
  /** The peer transport (default: a sealed UDP `Transport` built from the options, keys and clock). */
  transport?: PeerTransport
  /** Uniform in [0, 1) for the heartbeat jitter (default Math.random); seeded tests replay a run. */
  random?: () => number
}

export class Cluster implements ClusterHooks {
  readonly transport: PeerTransport
  readonly lookups: Lookups
  readonly counters: ClusterCounters = {
    lookupsAnswered: 0,
    lookupsFromStrangers: 0,
    hitsSent: 0,
    missesSent: 0,
    missesWithheld: 0,
    chunksSent: 0,
    invalidationsSent: 0,
    invalidationsReceived: 0,
    membersJoined: 0,
    membersLeft: 0,
    membersDied: 0,
    membersRefused: 0,
    lookupsFromUntrusted: 0,
    lookupsRepeated: 0,
    hitsOverBudget: 0,
    copiesFromUntrusted: 0,
    invalidationsFromStrangers: 0,
    replyChangesRefused: 0,
    trustDeferred: 0,
    hellosThrottled: 0,
    announcesFromBeforeStart: 0,
    isolations: 0,
    partitionsHealed: 0,
    copiesForgottenAtHeal: 0,
  }
  readonly membership: Membership
  /** Ticket secrets and how they travel (ticket-gossip.ts). */
  readonly ticketGossip: TicketGossip
  readonly replicator: Replicator
  /** Conditional writes, decided at one host per key (decisions.ts). */
  readonly decisions: Decisions
  readonly #o: ClusterOptions
  readonly #store: SessionStore
  readonly #log: Log
  readonly #clock: Clock
  readonly #random: () => number
  #heartbeat: TimerHandle | undefined
  #timers = new Set<TimerHandle>()
  #stopped: Promise<void> | undefined
  /**
   * Set when this host lost its last trusted member: the versions below it are those of copies
   * taken in, or writes made here, before it was cut off.
   */
  #isolatedBelow = 0n

  constructor(o: ClusterOptions, keys: ClusterKey[], store: SessionStore, log: Log, deps: ClusterDeps = {}) {
    const clock = deps.clock ?? systemClock
    this.#o = o
    this.#clock = clock
    this.#random = deps.random ?? Math.random
    this.#store = store
    this.#log = log
    this.transport =
      deps.transport ?? new Transport({ ...o, keys, log, wallMs: () => clock.wallMs(), immediate: (fn) => clock.setImmediate(fn) })
    this.transport.onMessage = (m) => this.#onMessage(m)
    this.membership = new Membership(o, this.transport, this.counters, log, clock)
    this.replicator = new Replicator(o, this.transport, store, this.membership, clock)
    const holders = this.replicator.holders
    const holderLog = {
      record: (key: string, id: string, ttlMs: number) => holders.record(key, id, ttlMs),
      fetched: (key: string, from: string, ttlMs: number) => this.replicator.fetched(key, from, ttlMs),
    }
    this.lookups = new Lookups(o, this.transport, store, this.membership, clock, holderLog, this.counters)
    this.decisions = new Decisions(
      // Long enough for the decider to fetch the key and wait for its copies on a loaded host;
      // only a lost decider makes anyone wait this long.
      {
        deadlineMs: Math.max(5000, 20 * o.lookupTimeoutMs),
        retransmitMs: Math.max(10, o.lookupTimeoutMs / 2),
        replayWindowMs: o.replayWindowMs,
      },
      {
        transport: this.transport,
        store,
        membership: this.membership,
        clock,
        ownersOf: (key) => this.replicator.ownersOf(key),
        fetch: (key) => this.lookups.fetch(key),
        stored: (key) => this.replicator.stored(key),
        deleted: (key) => this.deleted(key),
        recordHolder: (key, id, ttlMs) => this.replicator.holders.record(key, id, ttlMs),
        fetched: (key, from, ttlMs) => this.replicator.fetched(key, from, ttlMs),
      },
    )
    this.membership.onChange = () => {
      this.lookups.membersChanged()
      this.replicator.membersChanged()
      this.decisions.membersChanged()
    }
    this.membership.onIsolated = (lastContactWallMs) => {
      // Versions are HLC values (versions.ts): what this host took in from peers is at most the
      // newest it observed, and what it wrote before it last heard from anyone has a wall part up
      // to then. Writes made here once cut off are above both, and are kept.
      const wallBound = versionAtWallMs(lastContactWallMs)
      const observed = this.#store.newestPeerVersion() + 1n
      this.#isolatedBelow = wallBound > observed ? wallBound : observed
    }
    this.membership.onPartitionHealed = () => this.#healed()
    this.ticketGossip = new TicketGossip(o, this.transport, this.membership, clock)
  }

  /**
   * A member declared dead while this host was cut off announced itself again: the others went on
   * meanwhile, and a copy kept here from before may have been overwritten or deleted there (the
   * updates and deletes meant for this host were given up, and the others' tombstones may be gone
   * by now). Served here it would be a stale read or an undone delete; pushed by the re-placement
   * scan once the members are trusted again, it would bring a deleted session back to its owners.
   * So those copies are forgotten, with no tombstone, before anyone is trusted: a read here asks
   * the owners, and the others, to whom this host is a new member, push it the keys it owns (not
   * after a cut one way only, in which the others never dropped this host: a known flaw,
   * docs/consistency.md "Partitions"). Copies written here while cut off are kept.
   */
  #healed(): void {
    const n = this.#store.forgetOlderThan(this.#isolatedBelow)
    this.counters.copiesForgottenAtHeal += n
    this.decisions.healed()
    this.#log.warn({ forgotten: n }, 'copies from before the partition forgotten')
  }

  /** The ticket secrets this daemon holds (the exporter and the API read their window). */
  get tickets(): TicketKeys {
    return this.ticketGossip.keys
  }

  /** The members this host knows (membership.ts), by node id. */
  get members(): Map<string, Member> {
    return this.membership.members
  }

  get nodeId(): string {
    return this.transport.nodeIdHex
  }

  async start(): Promise<void> {
    await this.transport.start()
    this.membership.start()
    this.#announce(AnnounceFlag.HELLO)
    this.ticketGossip.announce()
    this.#scheduleHeartbeat()
    this.#log.info(
      {
        nodeId: this.nodeId,
        name: this.#o.nodeName,
        group: `${this.#o.group}:${this.#o.port}`,
        ...(this.#o.second
          ? { dualStackGroup: this.#o.second.group, dualStackReply: this.transport.replyAddressFor(this.transport.families[1]!) }
          : {}),
        reply: this.transport.replyAddress,
      },
      'joined the cluster',
    )
  }

  #scheduleHeartbeat(): void {
    // Jitter keeps a fleet restarted together from announcing in lockstep.
    const delay = this.#o.heartbeatMs * (0.9 + this.#random() * 0.2)
    this.#heartbeat = this.#clock.setTimeout(() => {
      this.membership.beat()
      this.#announce(0)
      this.membership.sweep()
      this.replicator.sweep()
      this.ticketGossip.heartbeat()
      this.#scheduleHeartbeat()
    }, delay)
  }

  #announceMsg(flags: number): Message {
    const also = this.transport.families.length > 1 ? this.transport.replyAddressFor(this.transport.families[1]!) : undefined
    return {
      type: MsgType.ANNOUNCE,
      reply: this.transport.replyAddress,
      entries: this.#store.size,
      flags: (also ? flags | AnnounceFlag.DUAL_STACK : flags) | (this.membership.isolated() ? AnnounceFlag.ISOLATED : 0),
      name: this.#o.nodeName,
      ...(also ? { also } : {}),
    }
  }

  #announce(flags: number): void {
    this.transport.sendGroup(this.#announceMsg(flags))
  }

  /**
   * Whether a peer's version is from the future: its wall part ahead of the datagram's send time
   * or of our clock by more than the replay window. A clock runs ahead of its host's wall clock
   * only by what it observed from peers whose clocks are ahead, and a peer further ahead than the
   * replay window has all its datagrams dropped as stale; so only a forgery gets here. Taken, one
   * such version would pin every clock that saw it (later writes refused as stale) or raise a
   * tombstone floor over every real write.
   */
  #futureVersion(version: bigint, sentAtMs: number): boolean {
    const wall = versionWallMs(version)
    return wall > sentAtMs + this.#o.replayWindowMs || wall > this.#clock.wallMs() + this.#o.replayWindowMs
  }

  #onMessage({ msg, sender, sentAtMs, rinfo }: Incoming): void {
    // Any authenticated datagram shows the member alive, so a few lost heartbeats on a lossy
    // network do not declare a busy member dead.
    const member = this.membership.heard(sender)
    if (
      (msg.type === MsgType.INVALIDATE ||
        msg.type === MsgType.DELETE ||
        msg.type === MsgType.DELETE_AWAITED ||
        msg.type === MsgType.REPLICATE ||
        msg.type === MsgType.REPLICATE_AWAITED ||
        msg.type === MsgType.DECIDED ||
        msg.type === MsgType.HIT) &&
      this.#futureVersion(msg.version, sentAtMs)
    ) {
      this.transport.counters.dropped.futureVersion++
      return
    }
    switch (msg.type) {
      case MsgType.LOOKUP:
        return this.lookups.answer(msg, sender, rinfo)
      case MsgType.HIT:
        return this.lookups.onHit(sender, msg)
      case MsgType.MISS:
        return this.lookups.onMiss(sender, msg)
      case MsgType.INVALIDATE:
        if (!member) {
          this.counters.invalidationsFromStrangers++
          return
        }
        this.counters.invalidationsReceived++
        // Applied only when newer than what is held: a delayed INVALIDATE does not delete a
        // session written again since (versions.ts).
        this.#store.deleteFromPeer(msg.key.toString('latin1'), msg.version)
        return
      case MsgType.ANNOUNCE:
        return this.#onAnnounce(sender, msg, sentAtMs)
      case MsgType.TICKET_KEY:
        return this.ticketGossip.onRetired()
      case MsgType.TICKET_PUB:
        return this.ticketGossip.onPub(
          sender,
          msg,
          member !== undefined,
          member !== undefined && (member.trusted || this.membership.fromOwnAddress(member, rinfo)),
        )
      case MsgType.TICKET_SEAL:
        // Only from a member past its probation, or in probation at its own address (as copies).
        return this.ticketGossip.onSeal(
          sender,
          msg,
          member !== undefined && (member.trusted || this.membership.fromOwnAddress(member, rinfo)),
        )
      case MsgType.REPLICATE:
      case MsgType.REPLICATE_AWAITED:
        // A copy is taken only from a member past its probation: an address that announced
        // itself once cannot fill the store (nor have ACKs sent anywhere).
        if (!member || !(member.trusted || this.membership.fromOwnAddress(member, rinfo))) {
          this.counters.copiesFromUntrusted++
          return
        }
        return this.replicator.onReplicate(sender, msg)
      case MsgType.ACK:
        return this.replicator.onAck(sender, msg.replId)
      case MsgType.ACKS:
        return this.replicator.onAcks(sender, msg.replIds)
      case MsgType.DELETE:
      case MsgType.DELETE_AWAITED:
        // From any member, trusted or in probation (a delete made on a new host must not be
        // lost); the replicator answers only at the member's announced address.
        return this.replicator.onDelete(sender, msg)
      case MsgType.LEAVE:
        return this.membership.onLeave(sender)
      case MsgType.DECIDE:
        // Decided only for a member past its probation, or in probation at its own address (as copies).
        if (!member || !(member.trusted || this.membership.fromOwnAddress(member, rinfo))) {
          this.counters.copiesFromUntrusted++
          return
        }
        return this.decisions.onDecide(sender, msg)
      case MsgType.DECIDED:
        return this.decisions.onDecided(sender, msg)
    }
  }

  /** Membership takes the ANNOUNCE; a newcomer (or a known member's HELLO) is welcomed with ours and the ticket secrets. */
  #onAnnounce(sender: string, msg: Extract<Message, { type: typeof MsgType.ANNOUNCE }>, sentAtMs: number): void {
    const out = this.membership.onAnnounce(sender, msg, sentAtMs)
    if (!out) return
    this.transport.sendTo(out.welcome, sender, this.#announceMsg(0))
    this.ticketGossip.welcome(out.welcome, sender)
  }

  // ---- ClusterHooks (called by the request handler) ----

  lookup(key: string, timeoutMs?: number) {
    return this.lookups.lookup(key, timeoutMs)
  }

  stored(key: string): Promise<void> | undefined {
    return this.replicator.stored(key)?.then(() => undefined)
  }

  decide(key: string, op: CondOp) {
    return this.decisions.decide(key, op)
  }

  deleted(key: string): Promise<void> | undefined {
    const keyBytes = Buffer.from(key, 'latin1')
    // The version of the delete just made here: the store left a tombstone for it (maxTombstones
    // is at least 1, so the newest one is always there).
    const version = this.#store.version(key)
    // With copies placed by rendezvous, the hosts that may hold one are known (the owners and the
    // holders remembered here, who pass it on): no datagram to the whole fleet.
    if (this.#o.replicationFactor !== 1 && this.membership.aliveIds().length > 0) {
      return this.replicator.deletedAwaited(key, version)
    }
    this.counters.invalidationsSent++
    for (const delay of INVALIDATE_REPEATS) {
      const send = () => this.transport.sendGroup({ type: MsgType.INVALIDATE, version, key: keyBytes })
      if (delay === 0) send()
      else {
        const t = this.#clock.setTimeout(() => {
          this.#timers.delete(t)
          send()
        }, delay)
        this.#timers.add(t)
      }
    }
    return undefined
  }

  flush(): void {
    this.transport.flush()
  }

  peers(): unknown[] {
    const now = this.#clock.now()
    // Dual stack: `address` is the one in use; `otherAddress` the one announced on the other family.
    const second = this.transport.families[1]
    const mine = second ? this.transport.replyAddressFor(second) : undefined
    const self = {
      nodeId: this.nodeId,
      name: this.#o.nodeName,
      address: fmt(this.transport.replyAddress),
      ...(mine ? { otherAddress: fmt(mine) } : {}),
      lastSeenMs: 0,
      entries: this.#store.size,
      self: true,
    }
    return [
      self,
      ...[...this.members.values()].map((m) => {
        const used = this.membership.addressOf(m.id) ?? m.reply
        const other = [m.reply, m.also].find((a) => a && a !== used)
        return {
          nodeId: m.id,
          name: m.name,
          address: fmt(used),
          ...(other ? { otherAddress: fmt(other) } : {}),
          lastSeenMs: Math.round(now - m.lastSeen),
          entries: m.entries,
          self: false,
        }
      }),
    ]
  }

  setKeys(keys: ClusterKey[]): void {
    this.transport.setKeys(keys)
  }

  stats(): Record<string, unknown> {
    return {
      nodeId: this.nodeId,
      members: this.membership.liveIds().length,
      trustedMembers: this.membership.aliveIds().length,
      // Readers ask the owners alone (membership.ts: steady); false while members join, leave or change trust.
      membershipSteady: this.membership.steady(),
      inflightLookups: this.lookups.inflight,
      hedgeDelayMs: this.lookups.hedgeDelayMs,
      ...this.lookups.counters,
      ...this.counters,
      replicationPending: this.replicator.pending,
      decisionsPending: this.decisions.pending,
      ...this.decisions.counters,
      ...this.replicator.counters,
      ...this.transport.counters,
      ...this.ticketGossip.counters,
    }
  }

  /** Idempotent; see the order at the top of this file. */
  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      this.#clock.clearTimeout(this.#heartbeat)
      for (const t of this.#timers) this.#clock.clearTimeout(t)
      this.lookups.close()
      this.decisions.close()
      this.ticketGossip.wipe()
      const t0 = this.#clock.now()
      // Decisions under way finish (their copies made) before the others hear LEAVE and the next
      // decider starts: it then holds every outcome given here.
      await this.decisions.idle(this.#o.handoffTimeoutMs)
      // Sessions this host owns go to the owners that remain before the others hear LEAVE.
      await this.replicator.handoff(Math.max(1, this.#o.handoffTimeoutMs - (this.#clock.now() - t0)))
      if (this.replicator.counters.handedOff > 0)
        this.#log.info(
          {
            handedOff: this.replicator.counters.handedOff,
            acked: this.replicator.counters.copiesAcked,
            ms: Math.round(this.#clock.now() - t0),
          },
          'sessions handed off',
        )
      this.replicator.close()
      // The LEAVE must be on the wire before the socket closes: close sends what is queued first.
      this.transport.sendGroup({ type: MsgType.LEAVE })
      await this.transport.close()
    })()
    return this.#stopped
  }
}
