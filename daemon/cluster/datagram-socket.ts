/**
 * The part of a UDP socket the peer transport uses, so that the transport (sealing, opening,
 * staleness, replay, dual stack) can run over another network than the host's: the daemon uses
 * `udpSockets`; unit tests an in-memory network (test/helpers/memory-network.ts).
 */
import { DgramAsPromised, type SocketAsPromised } from 'dgram-as-promised'
import type dgram from 'node:dgram'
import type { RemoteInfo } from 'node:dgram'
import dns from 'node:dns'
import net from 'node:net'

export interface DatagramSocket {
  /** The event side: datagrams as they arrive, and socket errors. */
  readonly socket: {
    on(event: 'message', listener: (buf: Buffer, rinfo: RemoteInfo) => void): unknown
    on(event: 'error', listener: (err: Error) => void): unknown
  }
  bind(port: number, address: string): Promise<unknown>
  addMembership(group: string, iface: string): unknown
  setMulticastInterface(iface: string): unknown
  setMulticastTTL(ttl: number): unknown
  setMulticastLoopback(flag: boolean): unknown
  setRecvBufferSize(bytes: number): unknown
  address(): { port: number }
  /**
   * Sends one datagram; `done` hears whether it could be sent. No promise: this runs once per
   * datagram, so the transport hands every send one shared callback that counts failures.
   */
  send(buf: Buffer, port: number, address: string, done?: (err: Error | null) => void): void
  close(): Promise<unknown>
  destroy(): unknown
}

export interface DatagramSocketOptions {
  type: 'udp4' | 'udp6'
  reuseAddr?: boolean
  ipv6Only?: boolean
}

export type SocketFactory = (o: DatagramSocketOptions) => DatagramSocket

/**
 * How the sockets resolve a destination. Node's default, dns.lookup, answers even an IP literal on
 * the next tick, so a datagram sent while handling a request left only after the request's reply
 * had been written: a SET's copies reached their owners after the client could already read
 * elsewhere (issue 15). Every address we send to is a literal: passed through at once, the
 * datagram is on the wire before `send` returns (the transport's `flush`, which the front ends
 * call before they write their replies, relies on it). Node 20 calls the lookup for every send
 * on an unconnected socket, literal or not; only a connected socket skips it, and ours are not
 * (one socket talks to every peer).
 */
function literalLookup(
  host: string,
  family: unknown,
  cb: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  const f = net.isIP(host)
  if (f !== 0) cb(null, host, f)
  else dns.lookup(host, { family: family === 6 ? 6 : 4 }, cb)
}

/**
 * A host UDP socket: dgram-as-promised for binding and closing, Node's own callback `send` for the
 * datagrams. Receiving needs nothing here: on each wakeup libuv reads up to 32 datagrams from the
 * socket before it returns to the loop, so a burst costs one wakeup per 32, not one per datagram.
 */
class UdpSocket implements DatagramSocket {
  readonly #p: SocketAsPromised
  readonly socket: dgram.Socket

  constructor(o: DatagramSocketOptions) {
    this.#p = DgramAsPromised.createSocket({ ...o, lookup: literalLookup })
    this.socket = this.#p.socket
  }

  bind(port: number, address: string): Promise<unknown> {
    return this.#p.bind(port, address)
  }
  addMembership(group: string, iface: string): unknown {
    return this.#p.addMembership(group, iface)
  }
  setMulticastInterface(iface: string): unknown {
    return this.#p.setMulticastInterface(iface)
  }
  setMulticastTTL(ttl: number): unknown {
    return this.#p.setMulticastTTL(ttl)
  }
  setMulticastLoopback(flag: boolean): unknown {
    return this.#p.setMulticastLoopback(flag)
  }
  setRecvBufferSize(bytes: number): unknown {
    return this.#p.setRecvBufferSize(bytes)
  }
  address(): { port: number } {
    return this.#p.address()
  }
  send(buf: Buffer, port: number, address: string, done?: (err: Error | null) => void): void {
    // Node refuses some sends by throwing at once (port 0 is ERR_SOCKET_BAD_PORT), not through the
    // callback: an address a key holder announced can be such a one, and a throw here would leave
    // the transport's flush at the end of a turn and end the daemon. It is a failed send like any other.
    try {
      this.socket.send(buf, port, address, done)
    } catch (err) {
      done?.(err as Error)
    }
  }
  close(): Promise<unknown> {
    return this.#p.close()
  }
  destroy(): unknown {
    return this.#p.destroy()
  }
}

/** The host's UDP sockets. */
export const udpSockets: SocketFactory = (o) => new UdpSocket(o)
