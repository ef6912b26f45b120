/**
 * An in-memory datagram network for cluster cores in one process: the sockets of the peer
 * transport (daemon/cluster/datagram-socket.ts), with multicast groups and unicast ports, and
 * every datagram delivered through a fake clock's timers. The real `Transport` runs over it
 * unchanged: every message is sealed, opened, checked for staleness and replay, and decoded by
 * the real wire codec, so a unit test of the cluster core exercises the wire path too.
 *
 * The test controls the faults, drawn from a seeded PRNG so a failing run can be replayed:
 * loss, duplication, a delay per datagram (a spread of delays reorders datagrams), and `block`
 * rules that drop chosen datagrams (a host that is down, a link that is cut). Nothing here
 * touches a real socket.
 */
import type { RemoteInfo } from 'node:dgram'
import net from 'node:net'
import type { DatagramSocket, DatagramSocketOptions, SocketFactory } from '../../daemon/cluster/datagram-socket.js'
import type { FakeClock } from './fake-clock.js'
import { prng } from './fuzz.js'

/** What every datagram goes through; shares are 0..1. */
export interface Faults {
  /** Share of datagrams lost. */
  loss: number
  /** Share of delivered datagrams delivered a second time (with its own delay). */
  duplicate: number
  /** Each copy's delay is uniform in [minDelayMs, maxDelayMs]: when they differ, datagrams overtake each other. */
  minDelayMs: number
  maxDelayMs: number
}

export const NO_FAULTS: Faults = { loss: 0, duplicate: 0, minDelayMs: 0, maxDelayMs: 0 }

export interface Endpoint {
  address: string
  port: number
}

/** A datagram on its way, as a `block` rule sees it (the bytes are sealed: rules go by address). */
export interface Datagram {
  from: Endpoint
  to: Endpoint
  /** True when sent to a multicast group (`to` is the group); each member's copy is judged alone. */
  group: boolean
  /** The host (its interface address) this copy is for: for a group datagram, one member. */
  toHost: string
  bytes: number
}

export interface NetworkCounters {
  sent: number
  delivered: number
  lost: number
  blocked: number
  duplicated: number
  /** Sent to an address and port no open socket is bound to. */
  unreachable: number
}

const FIRST_EPHEMERAL_PORT = 40_000

const isMulticast = (address: string) =>
  net.isIPv6(address)
    ? address.toLowerCase().startsWith('ff')
    : Number(address.split('.')[0]) >= 224 && Number(address.split('.')[0]) <= 239

class MemorySocket implements DatagramSocket {
  readonly v6: boolean
  /** The interface address of the host that opened it. */
  readonly host: string
  bound: Endpoint | undefined
  readonly groups = new Set<string>()
  closed = false
  #onMessage: ((buf: Buffer, rinfo: RemoteInfo) => void)[] = []
  readonly socket = {
    on: (event: 'message' | 'error', listener: ((buf: Buffer, rinfo: RemoteInfo) => void) | ((err: Error) => void)): unknown => {
      // A memory socket has no errors to report: only datagrams.
      if (event === 'message') this.#onMessage.push(listener as (buf: Buffer, rinfo: RemoteInfo) => void)
      return this.socket
    },
  }
  readonly #net: MemoryNetwork

  constructor(network: MemoryNetwork, host: string, o: DatagramSocketOptions) {
    this.#net = network
    this.host = host
    this.v6 = o.type === 'udp6'
  }

  async bind(port: number, address: string): Promise<unknown> {
    this.bound = this.#net.bind(this, port, address)
    return this.bound
  }

  addMembership(group: string): unknown {
    this.groups.add(group)
    return this
  }

  setMulticastInterface(): unknown {
    return this
  }

  setMulticastTTL(): unknown {
    return this
  }

  setMulticastLoopback(): unknown {
    return this
  }

  setRecvBufferSize(): unknown {
    return this
  }

  address(): { port: number } {
    if (!this.bound) throw new Error('memory socket not bound')
    return { port: this.bound.port }
  }

  send(buf: Buffer, port: number, address: string, done?: (err: Error | null) => void): void {
    if (this.closed || !this.bound) {
      done?.(new Error('memory socket closed or not bound'))
      return
    }
    this.#net.carry(this, buf, { address, port })
    done?.(null)
  }

  deliver(buf: Buffer, from: Endpoint): void {
    if (this.closed) return
    const rinfo: RemoteInfo = { address: from.address, family: this.v6 ? 'IPv6' : 'IPv4', port: from.port, size: buf.length }
    for (const l of this.#onMessage) l(buf, rinfo)
  }

  async close(): Promise<unknown> {
    this.destroy()
    return undefined
  }

  destroy(): unknown {
    this.closed = true
    this.#net.unbind(this)
    return this
  }
}

export class MemoryNetwork {
  readonly counters: NetworkCounters = { sent: 0, delivered: 0, lost: 0, blocked: 0, duplicated: 0, unreachable: 0 }
  /** Applies to every datagram from now on; change it at any point of a test. */
  faults: Faults = { ...NO_FAULTS }
  readonly #clock: FakeClock
  readonly #random: () => number
  readonly #sockets = new Set<MemorySocket>()
  readonly #rules = new Set<(d: Datagram) => boolean>()
  #nextPort = FIRST_EPHEMERAL_PORT

  constructor(clock: FakeClock, seed = 1) {
    this.#clock = clock
    const next = prng(seed)
    this.#random = () => next() / 2 ** 32
  }

  /** The sockets of the host whose interface address is `address`, for `TransportOptions.sockets`. */
  host(address: string): SocketFactory {
    return (o) => {
      const s = new MemorySocket(this, address, o)
      this.#sockets.add(s)
      return s
    }
  }

  /** Drops every datagram `drop` is true for (counted as blocked) until the returned function is called. */
  block(drop: (d: Datagram) => boolean): () => void {
    this.#rules.add(drop)
    return () => this.#rules.delete(drop)
  }

  /** Cuts a host off: nothing it sends arrives, nothing sent to it arrives (a crash, as the others see it). */
  isolate(address: string): () => void {
    return this.block((d) => d.from.address === address || d.toHost === address)
  }

  /** Open sockets (a closed transport leaves none). */
  get openSockets(): number {
    return [...this.#sockets].filter((s) => !s.closed).length
  }

  bind(s: MemorySocket, port: number, address: string): Endpoint {
    if (port === 0) port = this.#nextPort++
    else if (
      !isMulticast(address) &&
      address !== '::' &&
      [...this.#sockets].some((o) => o !== s && !o.closed && o.bound?.port === port && o.bound.address === address)
    ) {
      throw Object.assign(new Error(`bind EADDRINUSE ${address}:${port}`), { code: 'EADDRINUSE' })
    }
    return { address, port }
  }

  unbind(s: MemorySocket): void {
    this.#sockets.delete(s)
  }

  carry(from: MemorySocket, buf: Buffer, to: Endpoint): void {
    this.counters.sent++
    const src = from.bound!
    const group = isMulticast(to.address)
    const receivers = [...this.#sockets].filter(
      (s) => !s.closed && s.bound?.port === to.port && (group ? s.groups.has(to.address) : s.bound.address === to.address),
    )
    if (receivers.length === 0) {
      this.counters.unreachable++
      return
    }
    for (const r of receivers) {
      const d: Datagram = { from: src, to, group, toHost: r.host, bytes: buf.length }
      if ([...this.#rules].some((drop) => drop(d))) {
        this.counters.blocked++
        continue
      }
      if (this.#random() < this.faults.loss) {
        this.counters.lost++
        continue
      }
      const copies = this.#random() < this.faults.duplicate ? 2 : 1
      if (copies === 2) this.counters.duplicated++
      for (let i = 0; i < copies; i++) {
        const copy = Buffer.from(buf)
        const { minDelayMs: lo, maxDelayMs: hi } = this.faults
        this.#clock.setTimeout(
          () => {
            if (r.closed) return
            this.counters.delivered++
            r.deliver(copy, src)
          },
          lo + this.#random() * Math.max(0, hi - lo),
        )
      }
    }
  }
}
