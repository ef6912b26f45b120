/**
 * The peer transport: one UDP socket joined to the multicast group, one unicast socket for
 * replies; every datagram sealed on the way out and opened, checked for staleness and replay on
 * the way in. What fails any check is dropped and counted by reason, never answered.
 */
import crypto from 'node:crypto'
import net from 'node:net'
import os from 'node:os'
import { DgramAsPromised, type SocketAsPromised } from 'dgram-as-promised'
import type { RemoteInfo } from 'node:dgram'
import { ProtocolError } from '../protocol/errors.js'
import { sealingKey, type ClusterKey } from '../protocol/keyfile.js'
import { Keyring, decodeBody, encodeBody, open, seal, type Address, type Message } from '../protocol/wire.js'
import type { Log } from './log.js'
import { ReplayGuard } from './replay.js'

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

export interface TransportOptions {
  /** Multicast group: IPv4 (224.0.0.0/4) or IPv6 (ff00::/8), the family of `iface`. */
  group: string
  /** UDP port of the group. */
  port: number
  /**
   * Address of the interface multicast leaves and arrives on; also the unicast reply address.
   * IPv6 names the interface after a `%` (`fd00::5%eth0`), or it is looked up by address.
   */
  iface: string
  /** UDP port of the unicast socket; 0 picks a free one. */
  unicastPort: number
  /** Multicast TTL (1 = this subnet). */
  multicastTtl: number
  /** Deliver our own multicast to other daemons on this machine. */
  multicastLoopback: boolean
  /** Datagrams whose send time differs from our clock by more than this are stale, in ms. */
  replayWindowMs: number
  /** Largest datagram sent or accepted, in bytes. */
  maxDatagramBytes: number
  /** Use the multicast group (false: listed peers only, for networks without multicast). */
  multicastEnabled: boolean
  /** Listed peers' unicast addresses; what goes to the group goes to each of them too. */
  peers: Address[]
  keys: ClusterKey[]
  log: Log
  /** Wall clock in ms (send times travel between hosts). */
  now?: () => number
}

export interface DropCounters {
  malformed: number
  oversize: number
  unknownKey: number
  openFailed: number
  stale: number
  replayed: number
  unsolicited: number
}

export interface TransportCounters {
  datagramsSent: number
  datagramsReceived: number
  bytesSent: number
  bytesReceived: number
  sendErrors: number
  dropped: DropCounters
}

export interface Incoming {
  msg: Message
  /** Sender id in hex. */
  sender: string
  rinfo: RemoteInfo
}

export class Transport {
  readonly nodeId = crypto.randomBytes(8)
  readonly nodeIdHex = this.nodeId.toString('hex')
  readonly counters: TransportCounters = {
    datagramsSent: 0,
    datagramsReceived: 0,
    bytesSent: 0,
    bytesReceived: 0,
    sendErrors: 0,
    dropped: { malformed: 0, oversize: 0, unknownKey: 0, openFailed: 0, stale: 0, replayed: 0, unsolicited: 0 },
  }
  onMessage: (m: Incoming) => void = () => {}
  #o: TransportOptions
  #ring: Keyring
  #keys: ClusterKey[]
  #counter = 0
  #replay = new ReplayGuard()
  #group: SocketAsPromised | undefined
  #unicast: SocketAsPromised | undefined
  #reply: Address | undefined
  #now: () => number
  #peers: Address[] = []

  constructor(o: TransportOptions) {
    this.#o = o
    this.#keys = o.keys
    this.#ring = new Keyring(o.keys)
    this.#now = o.now ?? Date.now
  }

  /** Where peers send replies to us. */
  get replyAddress(): Address {
    if (!this.#reply) throw new Error('transport not started')
    return this.#reply
  }

  /** Replaces the key set (reload); datagrams in flight under a removed key then fail to open. */
  setKeys(keys: ClusterKey[]): void {
    this.#keys = keys
    this.#ring = new Keyring(keys)
  }

  async start(): Promise<void> {
    const o = this.#o
    const { address: ifAddr, v6, scope } = interfaceOf(o.iface)
    const type = v6 ? 'udp6' : 'udp4'
    const g = o.multicastEnabled ? DgramAsPromised.createSocket({ type, reuseAddr: true, ...(v6 ? { ipv6Only: true } : {}) }) : undefined
    const u = DgramAsPromised.createSocket({ type, ...(v6 ? { ipv6Only: true } : {}) })
    try {
      if (g) {
        // Bound to the group address (IPv4), the socket sees only this group's datagrams on the
        // port; IPv6 binds the wildcard, since a link-scope group address needs a zone to bind.
        await g.bind(o.port, v6 ? '::' : o.group)
        g.addMembership(o.group, scope)
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
      throw new Error(`cannot open the peer sockets (${o.multicastEnabled ? `group ${o.group}:${o.port}` : `unicast port ${o.unicastPort}`} on ${o.iface}): ${(err as Error).message}`)
    }
    for (const s of g ? [g, u] : [u]) {
      s.socket.on('message', (buf: Buffer, rinfo: RemoteInfo) => this.#receive(buf, rinfo))
      s.socket.on('error', (err: Error) => o.log.warn({ err: err.message }, 'peer socket error'))
    }
    this.#group = g
    this.#unicast = u
    this.#reply = { family: v6 ? 6 : 4, address: ifAddr, port: u.address().port }
    this.setPeers(o.peers)
  }

  /** Replaces the listed peers (reload); a listed address that is our own is not a peer. */
  setPeers(peers: Address[]): void {
    const me = this.#reply
    this.#peers = peers.filter((p) => !(me && p.address === me.address && p.port === me.port))
  }

  #receive(buf: Buffer, rinfo: RemoteInfo): void {
    const c = this.counters
    c.datagramsReceived++
    c.bytesReceived += buf.length
    if (buf.length > this.#o.maxDatagramBytes) {
      c.dropped.oversize++
      return
    }
    // Our own multicast comes back (loopback delivery to daemons on this host): skip it before
    // spending a decryption on it. The sender id is in the clear header at bytes 10..18.
    if (buf.length >= 18 && buf.compare(this.nodeId, 0, 8, 10, 18) === 0) return
    let opened
    try {
      opened = open(this.#ring, buf)
    } catch (err) {
      const code = err instanceof ProtocolError ? err.code : 'OPEN_FAILED'
      if (code === 'UNKNOWN_KEY') c.dropped.unknownKey++
      else if (code === 'OPEN_FAILED') c.dropped.openFailed++
      else c.dropped.malformed++
      return
    }
    const sender = opened.header.senderId.toString('hex')
    let decoded
    try {
      decoded = decodeBody(opened.body)
    } catch {
      c.dropped.malformed++
      return
    }
    if (Math.abs(this.#now() - decoded.sentAtMs) > this.#o.replayWindowMs) {
      c.dropped.stale++
      return
    }
    // Only after authentication: forged counters must not move the window.
    if (!this.#replay.accept(sender, opened.header.counter)) {
      c.dropped.replayed++
      return
    }
    this.onMessage({ msg: decoded.msg, sender, rinfo })
  }

  #seal(msg: Message): Buffer {
    const key = sealingKey(this.#keys, Math.floor(this.#now() / 1000))
    return seal(this.#ring, key.id, this.nodeId, ++this.#counter, encodeBody(msg, this.#now()))
  }

  /** Resolves once the datagram has left (or failed to: counted, never thrown). */
  #send(dgram: Buffer, port: number, address: string): Promise<void> {
    const u = this.#unicast
    if (!u) return Promise.resolve()
    this.counters.datagramsSent++
    this.counters.bytesSent += dgram.length
    return u.send(dgram, port, address).then(
      () => {},
      () => {
        this.counters.sendErrors++
      },
    )
  }

  /** Sends `msg` to the whole cluster: the multicast group and every listed peer, sealed once. */
  sendGroup(msg: Message): Promise<void> {
    const d = this.#seal(msg)
    const sends = this.#peers.map((p) => this.#send(d, p.port, p.address))
    if (this.#o.multicastEnabled) sends.push(this.#send(d, this.#o.port, this.#o.group))
    return Promise.all(sends).then(() => {})
  }

  /** Sends `msg` to one daemon's unicast address. */
  sendTo(to: Address, msg: Message): Promise<void> {
    return this.#send(this.#seal(msg), to.port, to.address)
  }

  /** Sends `msg` to several daemons' unicast addresses, sealed once. */
  sendToEach(to: readonly Address[], msg: Message): void {
    if (to.length === 0) return
    const d = this.#seal(msg)
    for (const a of to) void this.#send(d, a.port, a.address)
  }

  async close(): Promise<void> {
    const socks = [this.#group, this.#unicast]
    this.#group = this.#unicast = undefined
    await Promise.all(socks.map((s) => s?.close().catch(() => {})))
  }
}
