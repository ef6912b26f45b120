/**
 * Membership: the members this host knows (ANNOUNCE heartbeats, HELLO, LEAVE, silence), which of
 * them are trusted with copies, where each is reached, and, for readers, which members may hold a
 * key while hosts do not all see the same members.
 *
 * A member appears on its first ANNOUNCE (in probation), is trusted once it announces itself again
 * memberProbationMs later, and goes on LEAVE or after deadAfterMs of silence. Each host makes
 * these steps when it hears the datagrams, so for a few heartbeats after any change hosts
 * disagree: a member trusted here may still be in probation elsewhere, one dead here may still be
 * alive elsewhere. A writer copies to the owners under its own view (replication.ts), so a reader
 * that asks the owners under its own view misses copies placed under another. readOwners() names
 * every member that owns the key under some view between the two extremes a host may hold
 * meanwhile (see there); in a settled cluster that is the owners, nothing more.
 *
 * ANNOUNCEs from a sender not known yet are taken only when sent after this daemon started:
 * recorded group datagrams replayed to a restarted daemon (its replay window is new and empty)
 * would otherwise make it a member list of the dead, its own previous node id among them.
 */
import { AnnounceFlag, MsgType, type Address, type Message } from '../../protocol/wire.js'
import type { Config } from '../config/config.js'
import type { Log } from '../host/log.js'
import type { Clock } from './clock.js'
import type { PeerTransport } from './peer-transport.js'
import type { Incoming } from './transport.js'
import { owners } from './rendezvous.js'

/** The config keys membership takes (unit and default: FIELDS in config/config.ts). */
export type MembershipOptions = Pick<Config, 'heartbeatMs' | 'deadAfterMs' | 'maxMembers' | 'memberProbationMs' | 'replicationFactor'>

export interface Member {
  id: string
  name: string
  /** The reply address it announces (its first family). */
  reply: Address
  /** Dual stack: its reply address on the other family, as it announces it. */
  also?: Address | undefined
  lastSeen: number
  entries: number
  joinedAt: number
  /** Heard from again after its probation: it owns keys and is pushed copies. */
  trusted: boolean
  /** When it was trusted here (the clock's monotonic ms; 0 while in probation). */
  trustedAt: number
  /** When we last answered its HELLO with our ANNOUNCE and ticket secrets (the clock's monotonic ms). */
  welcomedAt: number
}

export interface MembershipCounters {
  membersJoined: number
  membersLeft: number
  membersDied: number
  /** ANNOUNCEs from new senders refused because maxMembers were held. */
  membersRefused: number
  /** ANNOUNCEs of a known member naming another reply address than it joined with: ignored. */
  replyChangesRefused: number
  /** Members past probation left untrusted for now: NEW_TRUSTED_PER_HEARTBEAT were trusted this heartbeat. */
  trustDeferred: number
  /** HELLOs of known members not answered: one was answered less than a heartbeat ago. */
  hellosThrottled: number
  /** ANNOUNCEs from unknown senders sent before this daemon started (replayed, or a restart's leftovers): not taken. */
  announcesFromBeforeStart: number
  /** Times this host declared every trusted member dead by silence (it was cut off, or all the others went). */
  isolations: number
  /** Times a member this host had declared dead while isolated came back with the same id: a partition healed. */
  partitionsHealed: number
}

/** Members that may become trusted per heartbeat (a fleet starting together takes a few more beats). */
const NEW_TRUSTED_PER_HEARTBEAT = 16

/**
 * Heartbeats after a member was trusted here during which another host may not trust it yet
 * (it heard the ANNOUNCEs at other times, or one was lost) and the re-placement scans that give
 * it its keys may still be under way: until then readers treat it as changing.
 */
export const SETTLE_HEARTBEATS = 3

/** Heartbeats of silence after which a member may be dead to other hosts already. */
export const SUSPECT_HEARTBEATS = 2

const sameAddress = (a: Address | undefined, b: Address | undefined): boolean => {
  if (a === undefined || b === undefined) return a === b
  return a.family === b.family && a.address === b.address && a.port === b.port
}

/** What an ANNOUNCE asks of the cluster core: welcome the sender (our ANNOUNCE and ticket secrets at `to`), or nothing. */
export type AnnounceOutcome = { welcome: Address } | undefined

/** Which members a reader asks for a key: `ids` (this host excluded), and whether membership is changing (ask them all at once). */
export interface ReadOwners {
  ids: string[]
  changing: boolean
}

export class Membership {
  readonly members = new Map<string, Member>()
  readonly selfId: string
  readonly counters: MembershipCounters
  /** Called when the owners may have moved: a member trusted, gone, or (no probation) joined. */
  onChange: () => void = () => {}
  /**
   * Called when this host has just declared its last trusted member dead by silence, with the
   * wall-clock ms it last heard from any of them: its copies may miss what the others write from
   * then on.
   */
  onIsolated: (lastContactWallMs: number) => void = () => {}
  /**
   * Called when, after onIsolated, a member declared dead then announces itself again with the
   * same node id and without AnnounceFlag.ISOLATED, before this host trusts anyone again: the
   * others went on without this host (a partition, not a restart of theirs, which brings new ids,
   * nor a split where that member was alone too), so the copies it kept from before
   * may have been overwritten or deleted meanwhile (see docs/consistency.md, "Partitions").
   */
  onPartitionHealed: () => void = () => {}
  readonly #o: MembershipOptions
  readonly #t: PeerTransport
  readonly #clock: Clock
  readonly #log: Log
  readonly #seeds = new Map<string, number>()
  #startedAt = 0
  /** When this daemon started, on the wall clock (ANNOUNCEs of new senders sent before it are not taken). */
  #startedWallMs = Infinity
  #trustedThisBeat = 0
  /**
   * While this host is cut off: the trusted members it declared dead by silence when it lost the
   * last of them (bounded by maxMembers, as the members were). Undefined otherwise.
   */
  #isolatedFrom: Set<string> | undefined
  /** When this host last stopped being isolated (the clock's monotonic ms). */
  #isolationEndedAt = -Infinity
  /** membersRefused when the last refusal was logged. */
  #refusedLogged = 0

  constructor(o: MembershipOptions, transport: PeerTransport, counters: MembershipCounters, log: Log, clock: Clock) {
    this.#o = o
    this.#t = transport
    this.selfId = transport.nodeIdHex
    this.counters = counters
    this.#log = log
    this.#clock = clock
  }

  /** The transport is open: from now on this daemon listens. */
  start(): void {
    this.#startedAt = this.#clock.now()
    this.#startedWallMs = this.#clock.wallMs()
  }

  /** True once we have listened long enough that an empty member list means we are alone (deadAfterMs). */
  settled(): boolean {
    return this.settledForMs() > 0
  }

  /** How long the member list has been complete, in ms (negative: still listening). */
  settledForMs(): number {
    return this.#clock.now() - this.#startedAt - this.#o.deadAfterMs
  }

  /**
   * True once we have listened long enough to have heard every live member: each answers our
   * HELLO at once and announces every heartbeat, so SETTLE_HEARTBEATS heartbeats (one lost
   * datagram and jitter included), or deadAfterMs if shorter.
   */
  complete(): boolean {
    // A host that was cut off (it declared every trusted member dead) and hears members again is
    // a newcomer to them: they dropped it and learn of it only from its next ANNOUNCEs, so until
    // they surely have, one of them may still be first in its own view for a key this host
    // outranks. It listens again as at start, and decides nothing meanwhile (decidesHere).
    const settle = Math.min(this.#o.deadAfterMs, SETTLE_HEARTBEATS * this.#o.heartbeatMs)
    const now = this.#clock.now()
    return now - this.#startedAt > settle && now - this.#isolationEndedAt > settle
  }

  /** A new heartbeat: NEW_TRUSTED_PER_HEARTBEAT more may be trusted. */
  beat(): void {
    this.#trustedThisBeat = 0
  }

  /** The members heard from within deadAfterMs. */
  alive(): Member[] {
    const now = this.#clock.now()
    const out: Member[] = []
    for (const m of this.members.values()) if (now - m.lastSeen <= this.#o.deadAfterMs) out.push(m)
    return out
  }

  /** Ids of every live member, trusted or in probation (a reader's MISSes come from these). */
  liveIds(): string[] {
    return this.alive().map((m) => m.id)
  }

  /** Ids of the live members trusted with copies, this host excluded (what owns keys: the replicator's `ReplicaPeers`). */
  aliveIds(): string[] {
    return this.alive()
      .filter((m) => m.trusted)
      .map((m) => m.id)
  }

  /** Ids of the live members still in probation. */
  probationIds(): string[] {
    return this.alive()
      .filter((m) => !m.trusted)
      .map((m) => m.id)
  }

  /**
   * True when every host is likely to count `m` among the owners as this one does: trusted here
   * for SETTLE_HEARTBEATS, and heard from within SUSPECT_HEARTBEATS.
   */
  #stable(m: Member, now: number): boolean {
    const hb = this.#o.heartbeatMs
    return (
      m.trusted && now - m.trustedAt >= SETTLE_HEARTBEATS * hb && now - m.lastSeen <= Math.min(SUSPECT_HEARTBEATS * hb, this.#o.deadAfterMs)
    )
  }

  /**
   * The members a reader asks for `key` (replicationFactor above 1): every member that is an owner
   * under some view V with S ⊆ V ⊆ L, where S is this host and the stable members (#stable) and L
   * every live member, and every member not stable (it may be the writer, which other hosts do not
   * trust yet, so it copied nowhere: it still holds the value). Another host's view lies between
   * S and L while the changes it saw differently are recent, so whichever view a writer placed
   * its copies under, one of them is asked. A member m of L is an owner under some such V exactly
   * when fewer than R stable members rank above it (take V = S plus m): walking L by rank, every
   * member is taken until R stable ones have been. In a settled cluster S = L and that is the R
   * owners; each member in change adds at most one LOOKUP per miss while it lasts.
   */
  readOwners(key: string): ReadOwners {
    const now = this.#clock.now()
    const live = this.alive()
    const r = this.#o.replicationFactor
    const stable = new Set<string>([this.selfId])
    for (const m of live) if (this.#stable(m, now)) stable.add(m.id)
    const changing = stable.size !== live.length + 1
    const all = [this.selfId, ...live.map((m) => m.id)]
    // Push to all: every member owns every key, the changing ones too.
    if (r === 0) return { ids: owners(key, all, all.length, this.#seeds).filter((id) => id !== this.selfId), changing }
    const ids: string[] = []
    let stableSeen = 0
    for (const id of owners(key, all, all.length, this.#seeds)) {
      const isStable = stable.has(id)
      if (stableSeen >= r && isStable) continue
      if (id !== this.selfId) ids.push(id)
      if (isStable) stableSeen++
    }
    return { ids, changing }
  }

  /**
   * The member that decides `key`'s conditional writes as far as this host can tell: the first
   * owner under the live view L (this host and every live member, trusted or in probation). The
   * views other hosts hold lie between the stable view S and L (readOwners), and a member first in
   * L is first under every view between them; so a host that is first in its own L, and has
   * listened long enough to know every live member (complete), is the only one that may decide
   * the key: two hosts that know each other cannot both be first in their L.
   */
  deciderOf(key: string): string {
    const all = [this.selfId, ...this.liveIds()]
    return owners(key, all, 1, this.#seeds)[0] ?? this.selfId
  }

  /** True when this host alone may decide `key` (deciderOf): it is first in L and has heard every live member. */
  decidesHere(key: string): boolean {
    return this.complete() && this.deciderOf(key) === this.selfId
  }

  /** True when member `id` has been silent for SUSPECT_HEARTBEATS: other hosts may soon count it dead. */
  suspect(id: string): boolean {
    const m = this.members.get(id)
    return m !== undefined && this.#clock.now() - m.lastSeen > Math.min(SUSPECT_HEARTBEATS * this.#o.heartbeatMs, this.#o.deadAfterMs)
  }

  /** True when the member list is complete and every member stable: readers ask the owners alone, as in a cluster that never changes. */
  steady(): boolean {
    const now = this.#clock.now()
    return this.complete() && this.alive().every((m) => this.#stable(m, now))
  }

  /** True when a datagram came from an address the member announced (daemons send from their reply socket). */
  fromOwnAddress(m: Member, rinfo: Incoming['rinfo']): boolean {
    const same = (a: Address | undefined) => a !== undefined && a.port === rinfo.port && a.address === rinfo.address.split('%')[0]
    return same(m.reply) || same(m.also)
  }

  /**
   * A member's unicast address on the first of our families it speaks (dual stack: either), from
   * what it announced (authenticated), never from a datagram's source address.
   */
  addressOf(id: string): Address | undefined {
    const m = this.members.get(id)
    if (!m) return undefined
    for (const f of this.#t.families) {
      if (m.reply.family === f) return m.reply
      if (m.also?.family === f) return m.also
    }
    return undefined
  }

  /** Where to answer a request from `sender` that names `to`: there if we speak its family, else the sender's address on ours. */
  replyTo(to: Address, sender: string): Address | undefined {
    return this.#t.replyAddressFor(to.family) ? to : this.addressOf(sender)
  }

  /** Any authenticated datagram shows its sender alive, so a few lost heartbeats on a lossy network do not declare a busy member dead. */
  heard(sender: string): Member | undefined {
    const m = this.members.get(sender)
    if (m) m.lastSeen = this.#clock.now()
    return m
  }

  /** Members silent past deadAfterMs are dropped. */
  sweep(): void {
    const now = this.#clock.now()
    let changed = false
    const died: Member[] = []
    for (const m of this.members.values()) {
      if (now - m.lastSeen > this.#o.deadAfterMs) {
        this.members.delete(m.id)
        this.counters.membersDied++
        changed = true
        if (m.trusted) died.push(m)
        this.#log.warn({ nodeId: m.id, name: m.name, silentMs: Math.round(now - m.lastSeen) }, 'member presumed dead')
      }
    }
    // The last trusted members went silent together: this host is cut off, or they all went.
    if (died.length > 0 && ![...this.members.values()].some((m) => m.trusted)) this.#isolated(died, now)
    if (changed) this.onChange()
  }

  /**
   * Whether this host's ANNOUNCEs say it was alone (AnnounceFlag.ISOLATED): from when it lost its
   * last trusted member until SETTLE_HEARTBEATS heartbeats after it trusts one again, so the
   * members it comes back to hear it in their first ANNOUNCEs from it.
   */
  isolated(): boolean {
    return this.#isolatedFrom !== undefined || this.#clock.now() - this.#isolationEndedAt < SETTLE_HEARTBEATS * this.#o.heartbeatMs
  }

  #endIsolation(): void {
    if (this.#isolatedFrom === undefined) return
    this.#isolatedFrom = undefined
    this.#isolationEndedAt = this.#clock.now()
  }

  #isolated(died: Member[], now: number): void {
    let lastSeen = -Infinity
    for (const m of died) lastSeen = Math.max(lastSeen, m.lastSeen)
    this.#isolatedFrom = new Set(died.map((m) => m.id))
    this.counters.isolations++
    this.#log.warn({ members: died.length }, 'every trusted member is silent: this host may be cut off')
    this.onIsolated(this.#clock.wallMs() - (now - lastSeen))
  }

  onLeave(sender: string): void {
    const m = this.members.get(sender)
    if (!m) return
    this.members.delete(sender)
    this.counters.membersLeft++
    this.#log.info({ nodeId: sender, name: m.name }, 'member left')
    this.onChange()
  }

  /** An ANNOUNCE from `sender`, sent at `sentAtMs` (its wall clock): returns whom to welcome, if anyone. */
  onAnnounce(sender: string, msg: Extract<Message, { type: typeof MsgType.ANNOUNCE }>, sentAtMs: number): AnnounceOutcome {
    const now = this.#clock.now()
    const known = this.members.get(sender)
    if (known) {
      // A member's reply address is fixed while it lives (a restarted daemon has a new id): a key
      // holder announcing itself anew with a third party's address would have the cluster send
      // that party every answer meant for it.
      if (!sameAddress(known.reply, msg.reply) || !sameAddress(known.also, msg.also)) {
        this.counters.replyChangesRefused++
        return undefined
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
          known.trustedAt = now
          // Trusted again without a member that went on without this host coming back (the
          // others restarted, with new ids, or were alone too): its copies stay.
          this.#endIsolation()
          this.onChange()
        }
      }
    } else {
      // Sent before we started: a datagram recorded earlier and replayed (a restarted daemon's
      // replay window is empty, so a replay is new to it), or a heartbeat still in flight when we
      // started, which the sender's next one replaces.
      if (sentAtMs < this.#startedWallMs) {
        this.counters.announcesFromBeforeStart++
        return undefined
      }
      if (this.members.size >= this.#o.maxMembers) {
        // Logged once per run of refusals (a flood would otherwise flood the log).
        if (this.counters.membersRefused++ === this.#refusedLogged)
          this.#log.warn({ maxMembers: this.#o.maxMembers }, 'member list full: ANNOUNCEs from new senders refused')
        return undefined
      }
      this.#refusedLogged = this.counters.membersRefused
      const trusted = this.#o.memberProbationMs === 0
      this.members.set(sender, {
        id: sender,
        name: msg.name,
        reply: msg.reply,
        also: msg.also,
        lastSeen: now,
        entries: msg.entries,
        joinedAt: now,
        trusted,
        trustedAt: trusted ? now : 0,
        welcomedAt: now,
      })
      this.counters.membersJoined++
      this.#log.info({ nodeId: sender, name: msg.name, reply: msg.reply }, 'member joined')
      // A member declared dead comes back with its id: it lived on. Unless it was alone as well
      // (a split in two, or every host cut off at once: neither side knows better, and the
      // copies' versions decide), it went on with others, who wrote and deleted without us.
      if (this.#isolatedFrom?.has(sender) && !(msg.flags & AnnounceFlag.ISOLATED)) {
        this.#endIsolation()
        this.counters.partitionsHealed++
        this.#log.warn({ nodeId: sender, name: msg.name }, 'a member declared dead came back: the partition healed')
        this.onPartitionHealed()
      } else if (trusted) this.#endIsolation()
      if (trusted) this.onChange()
      this.#pruneSeeds()
    }
    // A newcomer learns about us, and the ticket key, at once instead of at our next heartbeat.
    // A known member's HELLO (it restarted its view) is answered at most once per heartbeat: a
    // key holder repeating HELLO must not turn each 100-byte ANNOUNCE into kilobytes elsewhere.
    const to = this.replyTo(msg.reply, sender)
    if (known && msg.flags & AnnounceFlag.HELLO && now - known.welcomedAt < this.#o.heartbeatMs) {
      this.counters.hellosThrottled++
      return undefined
    }
    if (known && msg.flags & AnnounceFlag.HELLO) known.welcomedAt = now
    return to && (!known || msg.flags & AnnounceFlag.HELLO) ? { welcome: to } : undefined
  }

  /** Seeds only of members still known: forged members that came and went leave none behind. */
  #pruneSeeds(): void {
    if (this.#seeds.size <= 2 * (this.members.size + 1)) return
    for (const id of this.#seeds.keys()) if (id !== this.selfId && !this.members.has(id)) this.#seeds.delete(id)
  }
}
