/**
 * The part of a UDP socket the peer transport uses, so that the transport (sealing, opening,
 * staleness, replay, dual stack) can run over another network than the host's: the daemon uses
 * `udpSockets`; unit tests an in-memory network (test/helpers/memory-network.ts).
 */
import { DgramAsPromised } from 'dgram-as-promised'
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
  /** Resolves once the datagram has left; rejects when it could not be sent. */
  send(buf: Buffer, port: number, address: string): Promise<unknown>
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
 * datagram is on the wire before `send` returns.
 */
function literalLookup(host: string, family: unknown, cb: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  const f = net.isIP(host)
  if (f !== 0) cb(null, host, f)
  else dns.lookup(host, { family: family === 6 ? 6 : 4 }, cb)
}

/** The host's UDP sockets. */
export const udpSockets: SocketFactory = (o) => DgramAsPromised.createSocket({ ...o, lookup: literalLookup })
