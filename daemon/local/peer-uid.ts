/**
 * Who is at the other end of a loopback TCP connection: on Linux the kernel lists every TCP
 * socket in /proc/net/tcp and /proc/net/tcp6 with its owner's uid, so the client's socket is the
 * line whose local address is the connection's remote end and whose remote address is ours.
 * Used by memcache TCP listeners with memcacheTcpAccess = "uid" (a memcache client has no other
 * way to say who it is; Apache's speaks only TCP).
 */
import fs from 'node:fs/promises'
import net from 'node:net'

/** The files the kernel lists TCP sockets in. */
export const PROC_NET_TCP = ['/proc/net/tcp', '/proc/net/tcp6'] as const

/**
 * An address as /proc/net/tcp{,6} prints it: the 4-byte words of the address, each printed as a
 * host-order integer in hex (so each word's bytes reversed on little-endian hosts), and the port
 * in hex. IPv4 addresses are listed in tcp6 too, as IPv4-mapped, when the socket is IPv6.
 */
function procForms(address: string, port: number): string[] {
  const p = port.toString(16).toUpperCase().padStart(4, '0')
  const le = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1
  const word = (b: number[]) => (le ? [...b].reverse() : b).map((x) => x.toString(16).toUpperCase().padStart(2, '0')).join('')
  const v4 = (a: string) => a.split('.').map(Number)
  const v6 = (a: string): number[] => {
    const parts = a.split('::')
    const head = parts[0] ? parts[0].split(':') : []
    const tail = parts.length > 1 && parts[1] ? parts[1].split(':') : []
    const groups = [...head, ...Array<string>(8 - head.length - tail.length).fill('0'), ...tail]
    return groups.flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff])
  }
  const out: string[] = []
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  const a4 = net.isIPv4(address) ? address : mapped?.[1]
  if (a4) {
    const b = v4(a4)
    out.push(`${word(b)}:${p}`)
    out.push(`${word([0, 0, 0, 0])}${word([0, 0, 0, 0])}${word([0, 0, 0xff, 0xff])}${word(b)}:${p}`)
  } else if (net.isIPv6(address)) {
    const b = v6(address.split('%')[0]!)
    out.push(`${word(b.slice(0, 4))}${word(b.slice(4, 8))}${word(b.slice(8, 12))}${word(b.slice(12, 16))}:${p}`)
  }
  return out
}

/**
 * The uid owning the client end of `socket`, an accepted loopback TCP connection, or undefined
 * when no socket of this host matches (the client has already gone, or it is not on this host).
 */
export async function peerUid(socket: net.Socket, files: readonly string[] = PROC_NET_TCP): Promise<number | undefined> {
  const { remoteAddress, remotePort, localAddress, localPort } = socket
  if (!remoteAddress || !remotePort || !localAddress || !localPort) return undefined
  const client = new Set(procForms(remoteAddress, remotePort))
  const server = new Set(procForms(localAddress, localPort))
  for (const file of files) {
    let text: string
    try {
      text = await fs.readFile(file, 'latin1')
    } catch {
      continue
    }
    for (const line of text.split('\n')) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      const f = line.trim().split(/\s+/)
      if (f.length < 8 || !client.has(f[1]!) || !server.has(f[2]!)) continue
      const uid = Number(f[7])
      if (Number.isSafeInteger(uid)) return uid
    }
  }
  return undefined
}
