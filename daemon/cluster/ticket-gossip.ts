/**
 * How the ticket secrets of ticket-keys.ts travel between daemons: forward-secret, so that the
 * cluster key plus every datagram ever recorded does not reveal a past epoch's secret.
 *
 * Every daemon holds one ephemeral X25519 key pair per wall epoch (`period`), made when the epoch
 * begins and dropped when it ends. With every heartbeat it multicasts a TICKET_PUB: its public key
 * and which epochs' secrets it holds (with the member it took each from). The datagram is sealed
 * and bound to its sender by the cluster key, which is what authenticates the public key.
 *
 * A secret goes to a member that lacks it in a TICKET_SEAL, unicast: AES-256-GCM under
 * HKDF(X25519(our key of this epoch, its key of this epoch), both ids, the epoch and both public
 * keys). Of the members that hold an epoch's secret (by their TICKET_PUBs), the one with the lowest
 * id sends it; at most once per heartbeat per member and epoch, and again at the next heartbeat
 * while that member's TICKET_PUB still says it lacks it (loss). So:
 *   - a member joining mid-epoch gets previous, current and next at once (its HELLO carries its
 *     TICKET_PUB; the answer its seals);
 *   - the key maker dying changes nothing held; the next lowest holder passes the secrets on to
 *     newcomers and the next lowest member makes the next ones;
 *   - two makers racing: each epoch of the window keeps the secret first held (ticket-keys.ts);
 *     the epoch after next converges on the lowest holder's before any server uses it;
 *   - a restarted daemon has a new id and new keys, and is sent the window like any newcomer.
 *
 * A secret is taken only from a member past its probation, or in probation but sending from the
 * address it announced (the rule for session copies), with its maker recorded as that sender: a
 * datagram can no more name another creator than it can come from a member that never joined.
 *
 * What an attacker with the cluster key and a recording learns: the public keys and sealed
 * secrets. Opening a seal needs one of the two private keys of its epoch, which exist only in the
 * memory of the two daemons, from the start of that epoch until its end. Past epochs' secrets are
 * wiped when they leave the window (ticket-keys.ts). Residual: a private key is an OpenSSL object
 * behind a Node KeyObject; we drop every reference at the epoch's end, and OpenSSL clears it when
 * V8 collects the object, which may be some time later.
 */
import crypto from 'node:crypto'
import {
  MAX_TICKET_HELD,
  MsgType,
  TICKET_SECRET_BYTES,
  TICKET_SEAL_NONCE_BYTES,
  X25519_PUBLIC_BYTES,
  type Address,
  type Message,
} from '../../protocol/wire.js'
import type { Clock } from './clock.js'
import type { PeerTransport } from './peer-transport.js'
import { TicketKeys } from './ticket-keys.js'

type PubMsg = Extract<Message, { type: typeof MsgType.TICKET_PUB }>
type SealMsg = Extract<Message, { type: typeof MsgType.TICKET_SEAL }>

/**
 * What the gossip asks of membership: a subset of membership.ts's `Membership` (on a branch
 * without it, cluster.ts passes an adapter of the same shape).
 */
export interface GossipMembers {
  /** Ids (hex) of every live member, trusted or in probation. */
  liveIds(): string[]
  /** The members known, by id; `trusted`: past its probation. */
  readonly members: ReadonlyMap<string, { trusted: boolean }>
  addressOf(id: string): Address | undefined
  /** True once the member list is complete (we listened for deadAfterMs). */
  settled(): boolean
}

export interface TicketGossipOptions {
  /** Length of an epoch, in ms. */
  ticketKeyRotationMs: number
  heartbeatMs: number
}

export interface TicketGossipCounters {
  /** TICKET_SEALs sent, and taken (changed our window). */
  ticketSealsSent: number
  ticketSealsTaken: number
  /** Seals from senders that are not members, or members in probation not at their address: dropped. */
  ticketSealsFromUntrusted: number
  /** Seals for a key of ours that is gone (sealed just before our epoch changed): resent later. */
  ticketSealsForOldKey: number
  /** Seals that did not open (or whose X25519 failed): dropped. */
  ticketSealsUnopened: number
  /** Seals that opened but were not taken (held already, or outside the window). */
  ticketSealsRefused: number
  /** TICKET_PUBs from members, and those dropped (not a member, or another epoch's). */
  ticketPubsReceived: number
  ticketPubsRefused: number
  /** TICKET_KEYs (the retired unsealed-per-member form) dropped unread. */
  ticketKeysRetired: number
  /** Ephemeral key pairs made (one per epoch). */
  ephemeralKeysMade: number
}

const SEAL_SALT = Buffer.from('statecast ticket seal v1')

interface OwnKey {
  period: number
  privateKey: crypto.KeyObject
  pub: Buffer
}

interface PeerPub {
  period: number
  pub: Buffer
  /** epoch -> the holder it names (hex). */
  held: Map<number, string>
  /** The TICKET_PUB came from a trusted member or from the member's own address. */
  ok: boolean
}

/** An X25519 public key object from its 32 raw bytes. */
function publicKeyOf(raw: Buffer): crypto.KeyObject {
  return crypto.createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: raw.toString('base64url') }, format: 'jwk' })
}

/** The seal's context: additional data of the AEAD and HKDF's info. */
function sealInfo(epoch: number, sealer: Buffer, recipient: Buffer, sealerPub: Buffer, recipientPub: Buffer): Buffer {
  const e = Buffer.alloc(4)
  e.writeUInt32BE(epoch >>> 0)
  return Buffer.concat([Buffer.from('ticket secret\0'), e, sealer, recipient, sealerPub, recipientPub])
}

/** The AES-256-GCM key of one seal: wipe it after use. */
function sealKey(own: crypto.KeyObject, theirs: Buffer, info: Buffer): Buffer {
  const shared = crypto.diffieHellman({ privateKey: own, publicKey: publicKeyOf(theirs) })
  try {
    // X25519 of a small-order point is all zeros: no secret at all.
    if (shared.every((b) => b === 0)) throw new Error('X25519 gave zeros')
    return Buffer.from(crypto.hkdfSync('sha256', shared, SEAL_SALT, info, 32))
  } finally {
    shared.fill(0)
  }
}

export class TicketGossip {
  readonly keys: TicketKeys
  readonly counters: TicketGossipCounters = {
    ticketSealsSent: 0,
    ticketSealsTaken: 0,
    ticketSealsFromUntrusted: 0,
    ticketSealsForOldKey: 0,
    ticketSealsUnopened: 0,
    ticketSealsRefused: 0,
    ticketPubsReceived: 0,
    ticketPubsRefused: 0,
    ticketKeysRetired: 0,
    ephemeralKeysMade: 0,
  }
  readonly #o: TicketGossipOptions
  readonly #t: PeerTransport
  readonly #m: GossipMembers
  readonly #clock: Clock
  #own: OwnKey | undefined
  readonly #peers = new Map<string, PeerPub>()
  /** `member:epoch` -> when we last sealed that epoch to that member (monotonic ms). */
  readonly #sentAt = new Map<string, number>()
  /** When membership first said settled (monotonic ms). */
  #settledAt: number | undefined

  constructor(o: TicketGossipOptions, transport: PeerTransport, members: GossipMembers, clock: Clock) {
    this.#o = o
    this.#t = transport
    this.#m = members
    this.#clock = clock
    this.keys = new TicketKeys({
      rotationMs: o.ticketKeyRotationMs,
      graceMs: 3 * o.heartbeatMs,
      selfId: transport.nodeId,
      now: () => clock.wallMs(),
    })
  }

  /** Our key pair of this epoch, made when the epoch begins; the previous epoch's is dropped. */
  #key(): OwnKey {
    const period = this.keys.epochNow()
    if (this.#own?.period === period) return this.#own
    const { privateKey, publicKey } = crypto.generateKeyPairSync('x25519')
    const pub = Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url')
    this.#own = { period, privateKey, pub }
    this.counters.ephemeralKeysMade++
    // Members' keys of an epoch that ended are of no use (they made new ones).
    for (const [id, p] of this.#peers) if (p.period < period - 1) this.#peers.delete(id)
    return this.#own
  }

  #pubMsg(): Message {
    const k = this.#key()
    const held = this.keys
      .all()
      .slice(-MAX_TICKET_HELD)
      .map((x) => ({ epoch: x.epoch, holder: x.creator }))
    return { type: MsgType.TICKET_PUB, period: k.period, pub: k.pub, held }
  }

  /** With the start-up HELLO: our key, so the members answer with the window at once. */
  announce(): void {
    this.#t.sendGroup(this.#pubMsg())
  }

  /** Answers a newcomer's HELLO: our key and holdings, unicast. */
  welcome(to: Address, id: string): void {
    this.#t.sendTo(to, id, this.#pubMsg())
  }

  /**
   * Every heartbeat: makes the secrets that fall to us, tells the cluster our key and holdings,
   * and seals to each member what it lacks and we are the one to send.
   */
  heartbeat(): void {
    const now0 = this.#clock.now()
    if (this.#settledAt === undefined && this.#m.settled()) this.#settledAt = now0
    this.keys.tick(this.#m.liveIds(), this.#settledAt === undefined ? -1 : now0 - this.#settledAt)
    this.#t.sendGroup(this.#pubMsg())
    const now = this.#clock.now()
    for (const [k, at] of this.#sentAt) if (now - at > 4 * this.#o.heartbeatMs) this.#sentAt.delete(k)
    for (const id of this.#m.liveIds()) this.#sealOwed(id)
  }

  /** Which member sends epoch `epoch` to others: the lowest id among the holders we know of. */
  #sealerOf(epoch: number): string {
    let low = this.#t.nodeIdHex
    const alive = new Set(this.#m.liveIds())
    for (const [id, p] of this.#peers) if (id < low && alive.has(id) && p.held.has(epoch)) low = id
    return low
  }

  /** Seals to `id` each secret it lacks that we are to send (at most once per heartbeat each). */
  #sealOwed(id: string): void {
    const p = this.#peers.get(id)
    if (!p || !(p.ok || this.#m.members.get(id)?.trusted)) return
    const own = this.#key()
    // Only to the key of the epoch we are in: a member whose clock is an epoch off gets its
    // secrets once both of us are in the same epoch (a heartbeat after the boundary).
    if (p.period !== own.period) return
    const to = this.#m.addressOf(id)
    if (!to) return
    const now = this.#clock.now()
    const next2 = this.keys.epochNow() + 2
    for (const k of this.keys.all()) {
      const theirs = p.held.get(k.epoch)
      // It lacks it, or holds the epoch after next from a higher holder (which may change yet).
      const owed = theirs === undefined || (k.epoch >= next2 && theirs > this.#t.nodeIdHex)
      if (!owed || this.#sealerOf(k.epoch) !== this.#t.nodeIdHex) continue
      const slot = `${id}:${k.epoch}`
      const last = this.#sentAt.get(slot)
      if (last !== undefined && now - last < this.#o.heartbeatMs / 2) continue
      this.#sentAt.set(slot, now)
      const msg = this.#seal(k.epoch, k.key, own, Buffer.from(id, 'hex'), p.pub)
      if (!msg) continue
      this.#t.sendTo(to, id, msg)
      this.counters.ticketSealsSent++
    }
  }

  #seal(epoch: number, secret: Buffer, own: OwnKey, recipient: Buffer, recipientPub: Buffer): Message | undefined {
    const info = sealInfo(epoch, this.#t.nodeId, recipient, own.pub, recipientPub)
    let key: Buffer
    try {
      key = sealKey(own.privateKey, recipientPub, info)
    } catch {
      this.counters.ticketSealsUnopened++
      return undefined
    }
    const nonce = crypto.randomBytes(TICKET_SEAL_NONCE_BYTES)
    const c = crypto.createCipheriv('aes-256-gcm', key, nonce)
    c.setAAD(info)
    const sealed = Buffer.concat([c.update(secret), c.final()])
    key.fill(0)
    return {
      type: MsgType.TICKET_SEAL,
      epoch,
      sealerPub: own.pub,
      recipientPub: Buffer.from(recipientPub),
      nonce,
      sealed,
      tag: c.getAuthTag(),
    }
  }

  /**
   * A member's key and holdings. `ok`: it is trusted, or in probation and sent this from its
   * announced address. Answered at once with what it lacks, when that falls to us.
   */
  onPub(sender: string, msg: PubMsg, isMember: boolean, ok: boolean): void {
    const period = this.keys.epochNow()
    if (!isMember || msg.pub.length !== X25519_PUBLIC_BYTES || msg.period < period - 1 || msg.period > period + 1) {
      this.counters.ticketPubsRefused++
      return
    }
    const have = this.#peers.get(sender)
    // The newest key of a member wins; an older epoch's (a reordered datagram) is ignored.
    if (have && msg.period < have.period) return
    this.counters.ticketPubsReceived++
    const held = new Map<number, string>()
    for (const h of msg.held) held.set(h.epoch, h.holder.toString('hex'))
    this.#peers.set(sender, { period: msg.period, pub: Buffer.from(msg.pub), held, ok: ok || (have?.ok ?? false) })
    this.#sealOwed(sender)
  }

  /** A secret sealed to us. Taken only from a trusted member (see the top of this file). */
  onSeal(sender: string, msg: SealMsg, ok: boolean): void {
    if (!ok) {
      this.counters.ticketSealsFromUntrusted++
      return
    }
    const own = this.#key()
    if (!msg.recipientPub.equals(own.pub)) {
      this.counters.ticketSealsForOldKey++
      return
    }
    const senderId = Buffer.from(sender, 'hex')
    const info = sealInfo(msg.epoch, senderId, this.#t.nodeId, msg.sealerPub, own.pub)
    let secret: Buffer
    try {
      const key = sealKey(own.privateKey, msg.sealerPub, info)
      const d = crypto.createDecipheriv('aes-256-gcm', key, msg.nonce)
      key.fill(0)
      d.setAAD(info)
      d.setAuthTag(msg.tag)
      secret = Buffer.concat([d.update(msg.sealed), d.final()])
    } catch {
      this.counters.ticketSealsUnopened++
      return
    }
    if (secret.length === TICKET_SECRET_BYTES && this.keys.offer({ epoch: msg.epoch, creator: senderId, key: secret }))
      this.counters.ticketSealsTaken++
    else this.counters.ticketSealsRefused++
    secret.fill(0)
  }

  /** A TICKET_KEY of the retired kind: a raw secret under the cluster key. Never taken. */
  onRetired(): void {
    this.counters.ticketKeysRetired++
  }

  wipe(): void {
    this.keys.wipe()
    this.#own = undefined
    this.#peers.clear()
  }
}
