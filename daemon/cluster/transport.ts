/**
 * The peer transport: one UDP socket joined to the multicast group, one unicast socket for
 * replies; every datagram sealed on the way out and opened, checked for staleness and replay on
 * the way in. What fails any check is dropped and counted by reason, never answered.
 *
 * Dual stack: a second pair of sockets of the other IP family (its own group and interface, the
 * same ports). What goes to the group is sealed once and sent on both; a receiver with both
 * families gets it twice, takes the first copy and drops the second unopened (counted as a
 * duplicate, not a replay). Unicast goes out on the family of the address.
 *
 * Every unicast datagram is sealed for one receiver (its node id, authenticated in the header):
 * another daemon drops it as misaddressed, so a capture cannot be replayed to another host or to a
 * restarted one. Group datagrams name no receiver and carry only the types in GROUP_TYPES.
 */
import crypto from 'node:crypto'
import net from 'node:net'
import os from 'node:os'
import type { RemoteInfo } from 'node:dgram'
import { ProtocolError } from '../../protocol/errors.js'
import { sealingKey, type ClusterKey } from '../../protocol/keyfile.js'
import {
  BATCH_HEAD_BYTES,
  GROUP_TYPES,
  HEADER_BYTES,
  Keyring,
  MAX_BATCH_COUNT,
  MsgType,
  NO_RECEIVER,
  SENDER_ID_BYTES,
  TAG_BYTES,
  batchBody,
  batchEntryLength,
  datagramLength,
  decodeMessages,
  loneBody,
  open,
  readHeader,
  seal,
  typeName,
  writeBatchEntry,
  type Address,
  type Header,
  type Message,
} from '../../protocol/wire.js'
import { BoundedMap } from '../../protocol/bounded.js'
import type { Config } from '../config/config.js'
import type { Log } from '../host/log.js'
import type { Incoming, TransportCounters } from './peer-transport.js'
export type { DropCounters, Incoming, TransportCounters } from './peer-transport.js'
import { ReplayGuard, Verdict } from './replay-window.js'
import { udpSockets, type DatagramSocket, type SocketFactory } from './datagram-socket.js'
import type { PeerTransport } from './peer-transport.js'

/**
 * The interface to use: its address, whether it is IPv6, and how the socket API names it for
 * multicast (the IPv4 address, or `::%NAME` for IPv6).
 */
export function interfaceOf(iface: string): { address: string; v6: boolean; scope: string } {
  const [address, zone] = iface.split('%') as [string, string | undefined]
  if (!net.isIPv6(address)) return { address, v6: false, scope: address }
  let name = zone
  if (!name) {
    for (const [n, addrs] of Object.entries(os.networkInterfaces())) if (addrs?.some((a) => a.address === address)) name = n
  }
  if (!name) throw new Error(`no interface has the address ${address}; name it as ${address}%IFNAME`)
  return { address, v6: true, scope: `::%${name}` }
}

/** Receive buffer asked for on each peer socket. */
const RECV_BUFFER_BYTES = 4 * 1024 * 1024

/** The transport's config keys (unit and default: FIELDS in config/config.ts), addresses and parts. */
export interface TransportOptions extends Pick<
  Config,
  'group' | 'port' | 'unicastPort' | 'multicastTtl' | 'multicastLoopback' | 'replayWindowMs' | 'maxDatagramBytes' | 'multicastEnabled'
> {
  /**
   * Address of the interface multicast leaves and arrives on; also the unicast reply address.
   * IPv6 names the interface after a `%` (`fd00::5%eth0`), or it is looked up by address.
   */
  iface: string
  /** Dual stack: a second group and interface, of the other IP family than `group` and `iface`. */
  second?: { group: string; iface: string }
  /** Listed peers' unicast addresses; what goes to the group goes to each of them too. */
  peers: Address[]
  keys: ClusterKey[]
  log: Log
  /** Wall clock in ms (send times travel between hosts). */
  now?: () => number
  /** Where the sockets come from: the host's UDP by default (`udpSockets`). */
  sockets?: SocketFactory
  /**
   * Runs `fn` once the I/O of this turn has been handled: when queued messages leave. Node's
   * setImmediate by default; the cluster passes its clock's, so fake-time tests flush too.
   */
  immediate?: (fn: () => void) => unknown
}

/**
 * What one turn has for one destination, written as BATCH entries (wire.ts: writeBatchEntry)
 * behind room for the body head: sent as one datagram, a BATCH or the message alone.
 */
interface Outbox {
  /** The receiver id the datagram is sealed for (NO_RECEIVER: the group). */
  receiver: Buffer
  /** Where it goes; undefined for the group (the multicast groups and the listed peers). */
  to: Address | undefined
  body: Buffer | undefined
  /** Bytes of `body` written: the head's room and the entries. */
  used: number
  count: number
}

/** The outbox of the group; every other is keyed by its receiver's id in hex, never empty. */
const GROUP_OUTBOX = ''
/** One IP family's sockets: the group (absent without multicast) and the unicast socket. */
interface Leg {
  family: 4 | 6
  group: string
  scope: string
  g: DatagramSocket | undefined
  u: DatagramSocket
  reply: Address
}

/** Dual stack: how many recently accepted (sender, counter) pairs are remembered, with their family. */
const RECENT_PAIRS = 4096

export class Transport implements PeerTransport {
  readonly nodeId = crypto.randomBytes(SENDER_ID_BYTES)
  readonly nodeIdHex = this.nodeId.toString('hex')
  readonly counters: TransportCounters = {
    datagramsSent: 0,
    datagramsReceived: 0,
    bytesSent: 0,
    bytesReceived: 0,
    sendErrors: 0,
    oversizeNotSent: 0,
    batchesSent: 0,
    messagesBatched: 0,
    batchesReceived: 0,
    duplicates: 0,
    dropped: {
      malformed: 0,
      oversize: 0,
      unknownKey: 0,
      openFailed: 0,
      stale: 0,
      replayed: 0,
      unsolicited: 0,
      misaddressed: 0,
      mismatched: 0,
      futureVersion: 0,
      counterJump: 0,
      failed: 0,
    },
  }
  onMessage: (m: Incoming) => void = () => {}
  #o: TransportOptions
  #ring: Keyring
  #keys: ClusterKey[]
  #counter = 0
  #replay = new ReplayGuard()
  #legs: Leg[] = []
  /** Dual stack: "sender:counter" of recently accepted datagrams, with the family they came on. */
  #recent = new BoundedMap<string, 4 | 6>(RECENT_PAIRS)
  #now: () => number
  #peers: Address[] = []
  #outboxes = new Map<string, Outbox>()
  #flushPending = false
  #immediate: (fn: () => void) => unknown

  constructor(o: TransportOptions) {
    this.#o = o
    this.#keys = o.keys
    this.#ring = new Keyring(o.keys)
    this.#now = o.now ?? Date.now
    this.#immediate = o.immediate ?? setImmediate
  }

  /** Where peers send replies to us (the first family's unicast socket). */
  get replyAddress(): Address {
    const leg = this.#legs[0]
    if (!leg) throw new Error('transport not started')
    return leg.reply
  }

  /** Our reply address of `family`, if we have that family. */
  replyAddressFor(family: 4 | 6): Address | undefined {
    return this.#legFor(family)?.reply
  }

  /** The IP families we speak, the first one preferred. */
  get families(): (4 | 6)[] {
    return this.#legs.map((l) => l.family)
  }

  #legFor(family: 4 | 6): Leg | undefined {
    return this.#legs.find((l) => l.family === family)
  }

  /** Replaces the key set (reload); datagrams in flight under a removed key then fail to open. */
  setKeys(keys: ClusterKey[]): void {
    this.#keys = keys
    this.#ring = new Keyring(keys)
  }

  async start(): Promise<void> {
    const o = this.#o
    const specs = [{ group: o.group, iface: o.iface }, ...(o.second ? [o.second] : [])]
    try {
      for (const spec of specs) this.#legs.push(await this.#open(spec.group, spec.iface))
    } catch (err) {
      for (const l of this.#legs) {
        l.g?.destroy()
        l.u.destroy()
      }
      this.#legs = []
      throw err
    }
    for (const l of this.#legs) {
      for (const s of l.g ? [l.g, l.u] : [l.u]) {
        const group = s === l.g
        s.socket.on('message', (buf: Buffer, rinfo: RemoteInfo) => this.#receive(buf, rinfo, group))
        s.socket.on('error', (err: Error) => o.log.warn({ err: err.message }, 'peer socket error'))
      }
    }
    this.setPeers(o.peers)
  }

  async #open(group: string, iface: string): Promise<Leg> {
    const o = this.#o
    const { address: ifAddr, v6, scope } = interfaceOf(iface)
    const type = v6 ? 'udp6' : 'udp4'
    const createSocket = o.sockets ?? udpSockets
    const g = o.multicastEnabled ? createSocket({ type, reuseAddr: true, ...(v6 ? { ipv6Only: true } : {}) }) : undefined
    const u = createSocket({ type, ...(v6 ? { ipv6Only: true } : {}) })
    try {
      if (g) {
        // Bound to the group address (IPv4), the socket sees only this group's datagrams on the
        // port; IPv6 binds the wildcard, since a link-scope group address needs a zone to bind.
        await g.bind(o.port, v6 ? '::' : group)
        g.addMembership(group, scope)
      }
      await u.bind(o.unicastPort, ifAddr)
      // Multicast leaves from the unicast socket: through the configured interface (never the
      // default route), scoped by TTL, and looped back to daemons on this machine if asked.
      u.setMulticastInterface(scope)
      u.setMulticastTTL(o.multicastTtl)
      u.setMulticastLoopback(o.multicastLoopback)
      // Room for bursts (a 64 KiB value is ~50 datagrams); the kernel caps it at net.core.rmem_max.
      for (const s of g ? [g, u] : [u]) {
        try {
          s.setRecvBufferSize(RECV_BUFFER_BYTES)
        } catch {
          /* keep the system default */
        }
      }
    } catch (err) {
      g?.destroy()
      u.destroy()
      throw new Error(
        `cannot open the peer sockets (${o.multicastEnabled ? `group ${group}:${o.port}` : `unicast port ${o.unicastPort}`} on ${iface}): ${(err as Error).message}`,
      )
    }
    return { family: v6 ? 6 : 4, group, scope, g, u, reply: { family: v6 ? 6 : 4, address: ifAddr, port: u.address().port } }
  }

  /** Replaces the listed peers (reload); a listed address that is our own is not a peer. */
  setPeers(peers: Address[]): void {
    this.#peers = peers.filter((p) => !this.#legs.some((l) => p.address === l.reply.address && p.port === l.reply.port))
  }

  #receive(buf: Buffer, rinfo: RemoteInfo, group: boolean): void {
    const c = this.counters
    c.datagramsReceived++
    c.bytesReceived += buf.length
    if (buf.length > this.#o.maxDatagramBytes) {
      c.dropped.oversize++
      return
    }
    // The clear header is read once, before anything costs a decryption; nothing in it is
    // trusted until the datagram opens.
    let header: Header
    try {
      header = readHeader(buf)
    } catch {
      c.dropped.malformed++
      return
    }
    // Our own multicast comes back (loopback delivery to daemons on this host).
    if (header.senderId.equals(this.nodeId)) return
    // Dual stack: the second copy of a datagram sent to both groups is dropped unopened (the
    // clear header names its sender and counter; the first copy was authenticated).
    // Only group datagrams come twice; unicast ones do not enter the table.
    const family = rinfo.family === 'IPv6' ? 6 : 4
    let seen: string | undefined
    if (group && this.#legs.length > 1) {
      seen = `${header.senderId.toString('hex')}:${header.counter}`
      const first = this.#recent.get(seen)
      if (first !== undefined) {
        if (first !== family) c.duplicates++
        else c.dropped.replayed++
        return
      }
    }
    // Sealed for another daemon: not worth a decryption (the check after opening catches forgeries).
    if (!header.receiverId.equals(NO_RECEIVER) && !header.receiverId.equals(this.nodeId)) {
      c.dropped.misaddressed++
      return
    }
    let opened
    try {
      opened = open(this.#ring, buf, header)
    } catch (err) {
      const code = err instanceof ProtocolError ? err.code : 'OPEN_FAILED'
      if (code === 'UNKNOWN_KEY') c.dropped.unknownKey++
      else if (code === 'OPEN_FAILED') c.dropped.openFailed++
      else c.dropped.malformed++
      return
    }
    const sender = opened.header.senderId.toString('hex')
    // A BATCH carries several messages under one envelope: every check below is made once for
    // the datagram, and the receiver check for each message it holds.
    const batch = opened.body[0] === MsgType.BATCH
    let decoded
    try {
      decoded = decodeMessages(opened.body)
    } catch {
      c.dropped.malformed++
      return
    }
    const { sentAtMs, msgs } = decoded
    const toGroup = opened.header.receiverId.equals(NO_RECEIVER)
    if (toGroup ? msgs.some((m) => !GROUP_TYPES.has(m.type)) : !opened.header.receiverId.equals(this.nodeId)) {
      c.dropped.misaddressed++
      return
    }
    if (Math.abs(this.#now() - sentAtMs) > this.#o.replayWindowMs) {
      c.dropped.stale++
      return
    }
    // Only after authentication: forged counters must not move the window. One window per sender
    // for its group datagrams and one for those sealed to us: the two arrive on two sockets, each
    // read in order but not in order with the other, and under a backlog of thousands (a burst,
    // a busy host) the two drift further apart than the window is wide, which took fresh
    // datagrams for replays. A capture cannot cross from one window to the other: the receiver
    // id that makes a datagram one or the other is authenticated.
    const verdict = this.#replay.check(toGroup ? `${sender}/g` : sender, opened.header.counter)
    if (verdict !== Verdict.NEW) {
      if (verdict === Verdict.JUMP) c.dropped.counterJump++
      else c.dropped.replayed++
      return
    }
    if (seen !== undefined) this.#recent.set(seen, family)
    if (batch) c.batchesReceived++
    for (const msg of msgs) {
      try {
        this.onMessage({ msg, sender, sentAtMs, rinfo })
      } catch (err) {
        // A message the handlers cannot take (a value out of range somewhere deep) is this message's
        // failure, not the daemon's (nor its batch's): thrown out of the socket handler it would
        // end the process. Logged at the 1st, 2nd, 4th, 8th... failure: a flood of them must not
        // flood the log.
        if ((++c.dropped.failed & (c.dropped.failed - 1)) === 0)
          this.#o.log.warn(
            { type: typeName(msg.type), code: (err as { code?: unknown }).code ?? 'INTERNAL' },
            'peer message dropped: handling it failed',
          )
      }
    }
  }

  // ---- sending: one datagram per destination per turn ----

  /**
   * Queues `msg` for `receiver` (NO_RECEIVER: the group) at `to` (undefined: the group), or
   * counts it and returns when it alone would exceed maxDatagramBytes. The message is encoded at
   * once: a chunk may be a view into the store's buffer, which a later request in the same turn
   * may overwrite or wipe.
   */
  #queue(key: string, receiver: Buffer | undefined, to: Address | undefined, msg: Message): void {
    const alone = datagramLength(msg)
    if (alone > this.#o.maxDatagramBytes) {
      this.counters.oversizeNotSent++
      this.#o.log.warn(
        { type: typeName(msg.type), bytes: alone, maxDatagramBytes: this.#o.maxDatagramBytes },
        'datagram larger than maxDatagramBytes not sent',
      )
      return
    }
    let box = this.#outboxes.get(key)
    if (box && to && (box.to!.port !== to.port || box.to!.address !== to.address)) {
      // The same receiver at another address (it moved, or the other family): what is queued goes where it was meant to.
      this.#sendBox(box)
      box.to = to
    }
    if (!box) {
      box = { receiver: receiver ?? Buffer.from(key, 'hex'), to, body: undefined, used: 0, count: 0 }
      this.#outboxes.set(key, box)
    }
    const entry = batchEntryLength(msg)
    if (box.count > 0 && (box.used + entry > this.#o.maxDatagramBytes - HEADER_BYTES - TAG_BYTES || box.count === MAX_BATCH_COUNT))
      this.#sendBox(box)
    // Room for the largest lone message (as an entry, 4 bytes more than as a body) or a full batch.
    box.body ??= Buffer.allocUnsafe(this.#o.maxDatagramBytes - HEADER_BYTES - TAG_BYTES + 4)
    if (box.count === 0) box.used = BATCH_HEAD_BYTES
    box.used = writeBatchEntry(box.body, box.used, msg)
    box.count++
    if (!this.#flushPending) {
      this.#flushPending = true
      this.#immediate(this.#flushSoon)
    }
  }

  readonly #flushSoon = (): void => {
    this.#flushPending = false
    this.flush()
  }

  /**
   * Sends at once everything queued in this turn, one datagram per destination (more only where
   * maxDatagramBytes or the batch count says so). The end of every turn does it anyway; the local
   * front ends call it before they write their replies, so that a write's copies are on the wire
   * before the application hears the write is done.
   */
  flush(): void {
    if (this.#outboxes.size === 0) return
    for (const box of this.#outboxes.values()) this.#sendBox(box)
    // Emptied each turn: receivers come and go (a new id per daemon start).
    this.#outboxes.clear()
  }

  /** Seals and sends what `box` holds: the message itself when alone, a BATCH otherwise. */
  #sendBox(box: Outbox): void {
    const body = box.body
    if (!body || box.count === 0) return
    const count = box.count
    box.body = undefined
    box.count = 0
    const now = this.#now()
    const sealed = count === 1 ? loneBody(body, box.used, now) : batchBody(body, box.used, count, now)
    let d: Buffer
    try {
      d = seal(this.#ring, sealingKey(this.#keys, Math.floor(now / 1000)).id, this.nodeId, ++this.#counter, sealed, box.receiver)
    } catch (err) {
      // Sealing runs at the end of a turn, where a throw would end the daemon; it fails only
      // without a key to seal with (a reload took them all), and then nothing can be sent.
      this.counters.sendErrors += count
      this.#o.log.warn({ code: (err as { code?: unknown }).code ?? 'INTERNAL' }, 'peer datagram not sent: sealing failed')
      return
    }
    if (count > 1) {
      this.counters.batchesSent++
      this.counters.messagesBatched += count
    }
    if (box.to) {
      this.#send(d, box.to.port, box.to.address, box.to.family)
      return
    }
    for (const p of this.#peers) this.#send(d, p.port, p.address, p.family)
    if (this.#o.multicastEnabled) for (const l of this.#legs) this.#send(d, this.#o.port, l.group, l.family)
  }

  /** True when `msg` fits in one datagram (maxDatagramBytes). */
  fits(msg: Message): boolean {
    return datagramLength(msg) <= this.#o.maxDatagramBytes
  }

  /** Failures of any send, counted: one callback for every datagram instead of a promise each. */
  readonly #sent = (err: Error | null): void => {
    if (err) this.counters.sendErrors++
  }

  #send(dgram: Buffer, port: number, address: string, family: 4 | 6): void {
    const legs = this.#legs
    const leg = legs[0]?.family === family ? legs[0] : legs[1]?.family === family ? legs[1] : undefined
    if (!leg) {
      // An address of a family we do not speak (a listed peer, or a reply to one).
      if (legs.length > 0) this.counters.sendErrors++
      return
    }
    this.counters.datagramsSent++
    this.counters.bytesSent += dgram.length
    leg.u.send(dgram, port, address, this.#sent)
  }

  /**
   * Sends `msg` to the whole cluster: the multicast group(s) and every listed peer, sealed once,
   * with whatever else goes to the group in this turn.
   */
  sendGroup(msg: Message): void {
    if (!GROUP_TYPES.has(msg.type)) throw new Error(`${typeName(msg.type)} is never sent to the group`)
    this.#queue(GROUP_OUTBOX, NO_RECEIVER, undefined, msg)
  }

  /**
   * Sends `msg` to the daemon `receiver` (its node id in hex) at its announced address `to`,
   * with whatever else goes to it in this turn.
   */
  sendTo(to: Address, receiver: string, msg: Message): void {
    this.#queue(receiver, undefined, to, msg)
  }

  /** Sends `msg` to several daemons, each sealed for its receiver. */
  sendToEach(to: readonly { id: string; address: Address }[], msg: Message): void {
    for (const r of to) this.sendTo(r.address, r.id, msg)
  }

  /** Sends what is queued, then closes the sockets. */
  async close(): Promise<void> {
    this.flush()
    const socks = this.#legs.flatMap((l) => (l.g ? [l.g, l.u] : [l.u]))
    this.#legs = []
    await Promise.all(socks.map((s) => s.close().catch(() => {})))
  }
}
