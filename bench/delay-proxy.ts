/**
 * A TCP proxy on loopback that holds every chunk of bytes, in each direction, for half a
 * round-trip time before passing it on: clients that connect through it see a network with that
 * RTT, which loopback lacks. Used by the demo, where a resumed TLS 1.2 handshake saves a round
 * trip only if there is one to save.
 *
 * Each direction delays every chunk (and the end of the stream) by the same time, so bytes keep
 * their order: Node fires timers of equal duration in the order they were set. The TCP handshake
 * itself is not delayed (the kernel completes it before the proxy sees the connection).
 */
import net from 'node:net'
import type { AddressInfo } from 'node:net'

export interface DelayProxy {
  port: number
  close(): Promise<void>
}

/** Relays `from` to `to`, each chunk and the end `oneWayMs` late. */
function relay(from: net.Socket, to: net.Socket, oneWayMs: number): void {
  from.on('data', (chunk: Buffer) => {
    setTimeout(() => {
      if (!to.destroyed) to.write(chunk)
    }, oneWayMs)
  })
  from.on('end', () => {
    setTimeout(() => {
      if (!to.destroyed) to.end()
    }, oneWayMs)
  })
}

/** Listens on a free loopback port and forwards each connection to 127.0.0.1:`targetPort`. */
export async function startDelayProxy(targetPort: number, rttMs: number): Promise<DelayProxy> {
  const oneWayMs = rttMs / 2
  const open = new Set<net.Socket>()
  const server = net.createServer({ allowHalfOpen: true }, (down) => {
    const up = net.connect({ port: targetPort, host: '127.0.0.1', allowHalfOpen: true })
    for (const s of [down, up]) {
      s.setNoDelay(true)
      open.add(s)
      s.once('close', () => open.delete(s))
      // Either side failing ends the connection for both, as a reset would.
      s.once('error', () => {
        down.destroy()
        up.destroy()
      })
    }
    // Both halves closed: nothing more can pass, so the pair is done.
    const done = () => {
      if (down.writableFinished && up.writableFinished) {
        down.destroy()
        up.destroy()
      }
    }
    down.on('finish', done)
    up.on('finish', done)
    relay(down, up, oneWayMs)
    relay(up, down, oneWayMs)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      for (const s of open) s.destroy()
      await new Promise((r) => server.close(r))
    },
  }
}
