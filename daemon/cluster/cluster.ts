/**
 * The peer side of the daemon: membership (ANNOUNCE heartbeats, LEAVE), answering LOOKUPs from
 * the store, remote lookups on local misses, and deletes: acknowledged DELETEs to the hosts that
 * may hold a copy (replication.ts), or one group INVALIDATE when those are unknown.
 *
 * Start: open sockets -> announce (HELLO, so members answer at once) -> heartbeats.
 * Stop, in reverse: stop heartbeats -> answer waiting lookups "not found" -> hand owned sessions
 * to the remaining owners -> LEAVE -> close sockets.
 */
import type { ClusterKey } from '../../protocol/keyfile.js'
import { AnnounceFlag, MsgType, NO_RECEIVER, hitChunkBytes, keyDigest, type Address, type Message } from '../../protocol/wire.js'
import type { ClusterHooks } from './hooks.js'
import { Lookups, type LookupOptions } from './lookups.js'
import type { Config } from '../config/config.js'
import type { Log } from '../host/log.js'
import type { SessionStore } from '../store/session-store.js'
import { versionWallMs } from '../store/versions.js'
import { Transport, type Incoming, type TransportOptions } from './transport.js'
import type { TicketKeys } from './ticket-keys.js'
import { TicketGossip } from './ticket-gossip.js'
import { Replicator, type ReplicationOptions } from './replication.js'
import { systemClock, type Clock, type TimerHandle } from './clock.js'
import type { PeerTransport } from './peer-transport.js'

/** The cluster's config keys (unit and default: FIELDS in config/config.ts) and the transport's addresses. */
export type ClusterOptions = Omit<TransportOptions, 'log' | 'keys' | 'now'> & LookupOptions & ReplicationOptions & Pick<Config, 'nodeName' | 'heartbeatMs' | 'deadAfterMs' | 'ticketKeyRotationMs' | 'handoffTimeoutMs' | 'maxMembers' | 'memberProbationMs'>

export interface Member {
  id: string
  name: string
  /** The reply address it announces (its first family). */
  reply: Address
  /** Dual stack: its reply address on the other family, as it announces it. */
  also?: Address
  lastSeen: number
  entries: number
  joinedAt: number
  /** Heard from again after its probation: it owns keys and is pushed copies. */
  trusted: boolean
  /** When we last answered its HELLO with our ANNOUNCE and ticket secrets (the clock's monotonic ms). */
  welcomedAt: number
}

export interface ClusterCounters {
  lookupsAnswered: number
  hitsSent: number
  missesSent: number
  /** LOOKUPs from senders that are not members (no announced address to answer at). */
  lookupsFromStrangers: number
  /** LOOKUPs for keys we do not hold and do not own: no reply needed. */
  missesWithheld: number
  chunksSent: number
  invalidationsSent: number
  invalidationsReceived: number
  membersJoined: number
  membersLeft: number
  membersDied: number
  /** ANNOUNCEs from new senders refused because maxMembers were held. */
  membersRefused: number
  /** LOOKUPs from members still in probation: not answered (no reflection to an unproven address). */
  lookupsFromUntrusted: number
  /** Copies from senders that are not trusted members: dropped unacknowledged. */
  copiesFromUntrusted: number
  /** INVALIDATEs from senders that are not members: not applied. */
  invalidationsFromStrangers: number
  /** ANNOUNCEs of a known member naming another reply address than it joined with: ignored. */
  replyChangesRefused: number
  /** Members past probation left untrusted for now: NEW_TRUSTED_PER_HEARTBEAT were trusted this heartbeat. */
  trustDeferred: number
  /** HELLOs of known members not answered: one was answered less than a heartbeat ago. */
  hellosThrottled: number
}

const fmt = (a: Address) => `${a.address}:${a.port}`

function sameAddress(a: Address | undefined, b: Address | undefined): boolean {
  if (a === undefined || b === undefined) return a === b
  return a.family === b.family && a.address === b.address && a.port === b.port
}

/**
 * INVALIDATE (the fallback when a key's holders are unknown: replication off, or no trusted
 * member yet) is not acknowledged: it is sent this many times, this far apart (ms), to survive loss.
 */
const INVALIDATE_REPEATS = [0, 5, 25]

/** Most owners a LOOKUP names (its count is a u8). */
const MAX_LOOKUP_EXPECT = 255

/** Members that may become trusted per heartbeat (a fleet starting together takes a few more beats). */
const NEW_TRUSTED_PER_HEARTBEAT = 16

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
    copiesFromUntrusted: 0,
    invalidationsFromStrangers: 0,
    replyChangesRefused: 0,
    trustDeferred: 0,
    hellosThrottled: 0,
  }
  readonly members = new Map<string, Member>()
  /** Ticket secrets and how they travel (ticket-gossip.ts). */
  readonly ticketGossip: TicketGossip
  readonly replicator: Replicator
  readonly #o: ClusterOptions
  readonly #store: SessionStore
  readonly #log: Log
  readonly #chunkBytes: number
  readonly #clock: Clock
  readonly #random: () => number
  #startedAt = 0
  #heartbeat: TimerHandle | undefined
  #timers = new Set<TimerHandle>()
  #stopped: Promise<void> | undefined
  /** membersRefused when the last refusal was logged. */
  #refusedLogged = 0
  /** Members made trusted since the last heartbeat. */
  #trustedThisBeat = 0

  constructor(o: ClusterOptions, keys: ClusterKey[], store: SessionStore, log: Log, deps: ClusterDeps = {}) {
    const clock = deps.clock ?? systemClock
    this.#o = o
    this.#clock = clock
    this.#random = deps.random ?? Math.random
    this.#store = store
    this.#log = log
    this.#chunkBytes = hitChunkBytes(o.maxDatagramBytes)
    this.transport = deps.transport ?? new Transport({ ...o, keys, log, now: () => clock.wallMs(), immediate: (fn) => clock.setImmediate(fn) })
    this.transport.onMessage = (m) => this.#onMessage(m)
    this.lookups = new Lookups(o, this.transport, store, {
      aliveIds: () => this.#alive().map((m) => m.id),
      // With copies on R owners, only they need to say MISS: replies stay constant with fleet size.
      expectedFor: (key) => this.#expectedFor(key),
      addressOf: (id) => this.#addressOf(id),
      settled: () => this.#settled(),
    }, clock)
    this.replicator = new Replicator(o, this.transport, store, {
      selfId: this.transport.nodeIdHex,
      aliveIds: () => this.#alive().filter((m) => m.trusted).map((m) => m.id),
      probationIds: () => this.#alive().filter((m) => !m.trusted).map((m) => m.id),
      addressOf: (id) => this.#addressOf(id),
    }, clock)
    // With membership.ts, this adapter is `this.membership` itself.
    this.ticketGossip = new TicketGossip(o, this.transport, {
      liveIds: () => this.#alive().map((m) => m.id),
      members: this.members,
      addressOf: (id) => this.#addressOf(id),
      settled: () => this.#settled(),
    }, clock)
  }

  /** The ticket secrets this daemon holds (the exporter and the API read their window). */
  get tickets(): TicketKeys {
    return this.ticketGossip.keys
  }

  /**
   * The owners a LOOKUP for `key` names (they answer MISS), or undefined to ask every member.
   * Push to all names every trusted member when the list fits one LOOKUP (at most 255 ids, within
   * maxDatagramBytes); beyond that it names none, which asks every member: the same hosts, since
   * all own every key, so no limit on the member count is needed for it.
   */
  #expectedFor(key: string): string[] | undefined {
    if (this.#o.replicationFactor === 1) return undefined
    const ids = this.replicator.ownersOf(key).filter((id) => id !== this.nodeId)
    if (this.#o.replicationFactor !== 0) return ids
    if (ids.length > MAX_LOOKUP_EXPECT) return undefined
    const expect = ids.map(() => NO_RECEIVER)
    return this.transport.fits({ type: MsgType.LOOKUP, reqId: 0, nonce: NO_RECEIVER, reply: this.transport.replyAddress, expect, key: Buffer.from(key, 'latin1') }) ? ids : undefined
  }

  /** True once we have listened long enough that the member list is complete. */
  #settled(): boolean {
    return this.#clock.now() - this.#startedAt > this.#o.deadAfterMs
  }

  get nodeId(): string {
    return this.transport.nodeIdHex
  }

  async start(): Promise<void> {
    await this.transport.start()
    this.#startedAt = this.#clock.now()
    this.#announce(AnnounceFlag.HELLO)
    this.ticketGossip.announce()
    this.#scheduleHeartbeat()
    this.#log.info({ nodeId: this.nodeId, name: this.#o.nodeName, group: `${this.#o.group}:${this.#o.port}`, ...(this.#o.second ? { dualStackGroup: this.#o.second.group, dualStackReply: this.transport.replyAddressFor(this.transport.families[1]!) } : {}), reply: this.transport.replyAddress }, 'joined the cluster')
  }

  #scheduleHeartbeat(): void {
    // Jitter keeps a fleet restarted together from announcing in lockstep.
    const delay = this.#o.heartbeatMs * (0.9 + this.#random() * 0.2)
    this.#heartbeat = this.#clock.setTimeout(() => {
      this.#trustedThisBeat = 0
      this.#announce(0)
      this.#sweep()
      this.replicator.sweep()
      this.ticketGossip.heartbeat()
      this.#scheduleHeartbeat()
    }, delay)
  }

  #announceMsg(flags: number): Message {
    const also = this.transport.families.length > 1 ? this.transport.replyAddressFor(this.transport.families[1]!) : undefined
    return { type: MsgType.ANNOUNCE, reply: this.transport.replyAddress, entries: this.#store.size, flags: also ? flags | AnnounceFlag.DUAL_STACK : flags, name: this.#o.nodeName, ...(also ? { also } : {}) }
  }

  #announce(flags: number): void {
    this.transport.sendGroup(this.#announceMsg(flags))
  }

  #alive(): Member[] {
    const now = this.#clock.now()
    const out: Member[] = []
    for (const m of this.members.values()) if (now - m.lastSeen <= this.#o.deadAfterMs) out.push(m)
    return out
  }

  #sweep(): void {
    const now = this.#clock.now()
    let changed = false
    for (const m of this.members.values()) {
      if (now - m.lastSeen > this.#o.deadAfterMs) {
        this.members.delete(m.id)
        this.counters.membersDied++
        changed = true
        this.#log.warn({ nodeId: m.id, name: m.name, silentMs: Math.round(now - m.lastSeen) }, 'member presumed dead')
      }
    }
    if (changed) {
      this.lookups.membersChanged()
      this.replicator.membersChanged()
    }
  }

  /**
   * A member's unicast address on the first of our families it speaks (dual stack: either), from
   * what it announced (authenticated), never from a datagram's source address.
   */
  /** True when a datagram came from an address the member announced (daemons send from their reply socket). */
  #fromOwnAddress(m: Member, rinfo: Incoming['rinfo']): boolean {
    const same = (a: Address | undefined) => a !== undefined && a.port === rinfo.port && a.address === rinfo.address.split('%')[0]
    return same(m.reply) || same(m.also)
  }

  #addressOf(id: string): Address | undefined {
    const m = this.members.get(id)
    if (!m) return undefined
    for (const f of this.transport.families) {
      if (m.reply.family === f) return m.reply
      if (m.also?.family === f) return m.also
    }
    return undefined
  }

  /** Where to answer a request from `sender` that names `to`: there if we speak its family, else the sender's address on ours. */
  #replyTo(to: Address, sender: string): Address | undefined {
    return this.transport.replyAddressFor(to.family) ? to : this.#addressOf(sender)
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
    const member = this.members.get(sender)
    if (member) member.lastSeen = this.#clock.now()
    if ((msg.type === MsgType.INVALIDATE || msg.type === MsgType.DELETE || msg.type === MsgType.REPLICATE || msg.type === MsgType.HIT) && this.#futureVersion(msg.version, sentAtMs)) {
      this.transport.counters.dropped.futureVersion++
      return
    }
    switch (msg.type) {
      case MsgType.LOOKUP:
        return this.#answer(msg, sender, rinfo)
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
        return this.#onAnnounce(sender, msg)
      case MsgType.TICKET_KEY:
        return this.ticketGossip.onRetired()
      case MsgType.TICKET_PUB:
        return this.ticketGossip.onPub(sender, msg, member !== undefined, member !== undefined && (member.trusted || this.#fromOwnAddress(member, rinfo)))
      case MsgType.TICKET_SEAL:
        // Only from a member past its probation, or in probation at its own address (as copies).
        return this.ticketGossip.onSeal(sender, msg, member !== undefined && (member.trusted || this.#fromOwnAddress(member, rinfo)))
      case MsgType.REPLICATE:
        // A copy is taken only from a member past its probation: an address that announced
        // itself once cannot fill the store (nor have ACKs sent anywhere).
        if (!member || !(member.trusted || this.#fromOwnAddress(member, rinfo))) {
          this.counters.copiesFromUntrusted++
          return
        }
        return this.replicator.onReplicate(sender, msg)
      case MsgType.ACK:
        return this.replicator.onAck(sender, msg.replId)
      case MsgType.ACKS:
        return this.replicator.onAcks(sender, msg.replIds)
      case MsgType.DELETE:
        // From any member, trusted or in probation (a delete made on a new host must not be
        // lost); the replicator answers only at the member's announced address.
        return this.replicator.onDelete(sender, msg)
      case MsgType.LEAVE: {
        const m = this.members.get(sender)
        if (m) {
          this.members.delete(sender)
          this.counters.membersLeft++
          this.#log.info({ nodeId: sender, name: m.name }, 'member left')
          this.lookups.membersChanged()
          this.replicator.membersChanged()
        }
        return
      }
    }
  }

  #onAnnounce(sender: string, msg: Extract<Message, { type: typeof MsgType.ANNOUNCE }>): void {
    const now = this.#clock.now()
    const known = this.members.get(sender)
    if (known) {
      // A member's reply address is fixed while it lives (a restarted daemon has a new id): a key
      // holder announcing itself anew with a third party's address would have the cluster send
      // that party every answer meant for it.
      if (!sameAddress(known.reply, msg.reply) || !sameAddress(known.also, msg.also)) {
        this.counters.replyChangesRefused++
        return
      }
      known.lastSeen = now
      known.entries = msg.entries
      known.name = msg.name
      if (!known.trusted && now - known.joinedAt >= this.#o.memberProbationMs) {
        // A few per heartbeat: each new owner is a re-placement scan of every key, and hundreds
        // of forged members made trusted at once would be hundreds of scans' worth of copies.
        // The rest become trusted at one of their next ANNOUNCEs (counted).
        if (this.#trustedThisBeat >= NEW_TRUSTED_PER_HEARTBEAT) this.counters.trustDeferred++
        else {
          this.#trustedThisBeat++
          known.trusted = true
          this.replicator.membersChanged()
        }
      }
    } else {
      if (this.members.size >= this.#o.maxMembers) {
        // Logged once per run of refusals (a flood would otherwise flood the log).
        if (this.counters.membersRefused++ === this.#refusedLogged) this.#log.warn({ maxMembers: this.#o.maxMembers }, 'member list full: ANNOUNCEs from new senders refused')
        return
      }
      this.#refusedLogged = this.counters.membersRefused
      const trusted = this.#o.memberProbationMs === 0
      this.members.set(sender, { id: sender, name: msg.name, reply: msg.reply, also: msg.also, lastSeen: now, entries: msg.entries, joinedAt: now, trusted, welcomedAt: now })
      this.counters.membersJoined++
      this.#log.info({ nodeId: sender, name: msg.name, reply: msg.reply }, 'member joined')
      if (trusted) this.replicator.membersChanged()
    }
    // A newcomer learns about us, and the ticket key, at once instead of at our next heartbeat.
    // A known member's HELLO (it restarted its view) is answered at most once per heartbeat: a
    // key holder repeating HELLO must not turn each 100-byte ANNOUNCE into kilobytes elsewhere.
    const to = this.#replyTo(msg.reply, sender)
    if (known && msg.flags & AnnounceFlag.HELLO && now - known.welcomedAt < this.#o.heartbeatMs) {
      this.counters.hellosThrottled++
      return
    }
    if (known && msg.flags & AnnounceFlag.HELLO) known.welcomedAt = now
    if (to && (!known || msg.flags & AnnounceFlag.HELLO)) {
      this.transport.sendTo(to, sender, this.#announceMsg(0))
      this.ticketGossip.welcome(to, sender)
    }
  }

  #answer(msg: Extract<Message, { type: typeof MsgType.LOOKUP }>, sender: string, rinfo: Incoming['rinfo']): void {
    // Answers go to the address the asker announced as a member, never to one a datagram names:
    // a LOOKUP from a sender not (yet) a member is left unanswered (it asks again, or its next
    // heartbeat makes it one).
    const asker = this.members.get(sender)
    const to = this.#addressOf(sender)
    if (!asker || !to) {
      this.counters.lookupsFromStrangers++
      return
    }
    // Nor to a member in probation whose LOOKUP did not come from the address it announced: that
    // address is not yet proven to be its own, and a HIT of a large value is many times the
    // LOOKUP's size (a reflector). A daemon sends everything from its announced unicast socket, so a
    // genuine newcomer (a restarted host) is answered at once.
    if (!asker.trusted && !this.#fromOwnAddress(asker, rinfo)) {
      this.counters.lookupsFromUntrusted++
      return
    }
    this.counters.lookupsAnswered++
    const key = msg.key.toString('latin1')
    const binding = { reqId: msg.reqId, nonce: msg.nonce, digest: keyDigest(msg.key) }
    const entry = this.#store.peek(key)
    const ttlMs = entry === undefined ? 0 : this.#store.remainingTtl(key)
    if (entry === undefined || ttlMs <= 0) {
      // Named owners answer MISS; others, holding nothing, stay silent. No names: everyone answers.
      if (msg.expect.length > 0 && !msg.expect.some((id) => id.equals(this.transport.nodeId))) {
        this.counters.missesWithheld++
        return
      }
      this.counters.missesSent++
      this.transport.sendTo(to, sender, { type: MsgType.MISS, ...binding })
      return
    }
    this.counters.hitsSent++
    // The asker will hold a copy for up to ttlMs: a delete that reaches this host goes on to it.
    this.replicator.holders.record(key, sender, ttlMs)
    const { value, flags, version } = entry
    const count = Math.max(1, Math.ceil(value.length / this.#chunkBytes))
    for (let i = 0; i < count; i++) {
      // The transport encodes (copies) the chunk when it is queued, so a view into the store's buffer is safe here.
      const chunk = value.subarray(i * this.#chunkBytes, (i + 1) * this.#chunkBytes)
      this.transport.sendTo(to, sender, { type: MsgType.HIT, ...binding, ttlMs, flags, totalLen: value.length, index: i, count, version, chunk })
    }
    this.counters.chunksSent += count
  }

  // ---- ClusterHooks (called by the request handler) ----

  lookup(key: string) {
    return this.lookups.lookup(key)
  }

  stored(key: string): Promise<void> | undefined {
    return this.replicator.stored(key)
  }

  deleted(key: string): void {
    const keyBytes = Buffer.from(key, 'latin1')
    // The version of the delete just made here: the store left a tombstone for it (maxTombstones
    // is at least 1, so the newest one is always there).
    const version = this.#store.version(key)
    // With copies placed by rendezvous, the hosts that may hold one are known (the owners and the
    // holders remembered here, who pass it on): no datagram to the whole fleet.
    if (this.#o.replicationFactor !== 1 && this.#alive().some((m) => m.trusted)) {
      this.replicator.deleted(key, version)
      return
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
  }

  flush(): void {
    this.transport.flush()
  }

  peers(): unknown[] {
    const now = this.#clock.now()
    // Dual stack: `address` is the one in use; `otherAddress` the one announced on the other family.
    const second = this.transport.families[1]
    const mine = second ? this.transport.replyAddressFor(second) : undefined
    const self = { nodeId: this.nodeId, name: this.#o.nodeName, address: fmt(this.transport.replyAddress), ...(mine ? { otherAddress: fmt(mine) } : {}), lastSeenMs: 0, entries: this.#store.size, self: true }
    return [
      self,
      ...[...this.members.values()].map((m) => {
        const used = this.#addressOf(m.id) ?? m.reply
        const other = [m.reply, m.also].find((a) => a && a !== used)
        return { nodeId: m.id, name: m.name, address: fmt(used), ...(other ? { otherAddress: fmt(other) } : {}), lastSeenMs: Math.round(now - m.lastSeen), entries: m.entries, self: false }
      }),
    ]
  }

  setKeys(keys: ClusterKey[]): void {
    this.transport.setKeys(keys)
  }

  stats(): Record<string, unknown> {
    return {
      nodeId: this.nodeId,
      members: this.#alive().length,
      trustedMembers: this.#alive().filter((m) => m.trusted).length,
      inflightLookups: this.lookups.inflight,
      hedgeDelayMs: this.lookups.hedgeDelayMs,
      ...this.lookups.counters,
      ...this.counters,
      replicationPending: this.replicator.pending,
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
      this.ticketGossip.wipe()
      // Sessions this host owns go to the owners that remain before the others hear LEAVE.
      const t0 = this.#clock.now()
      await this.replicator.handoff(this.#o.handoffTimeoutMs)
      if (this.replicator.counters.handedOff > 0) this.#log.info({ handedOff: this.replicator.counters.handedOff, acked: this.replicator.counters.copiesAcked, ms: Math.round(this.#clock.now() - t0) }, 'sessions handed off')
      this.replicator.close()
      // The LEAVE must be on the wire before the socket closes: close sends what is queued first.
      this.transport.sendGroup({ type: MsgType.LEAVE })
      await this.transport.close()
    })()
    return this.#stopped
  }
}
