/** Listener addresses of the local front ends (memcache, metrics): loopback TCP or a Unix path. */
import net from 'node:net'

/** Parses `HOST:PORT` (IPv6 as `[::1]:PORT`) or returns undefined for a Unix path. */
export function parseListen(spec: string): { host: string; port: number } | undefined {
  if (spec.startsWith('/') || spec.startsWith('.')) return undefined
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(spec)
  if (!m) throw new Error(`listen address ${JSON.stringify(spec)} is neither HOST:PORT nor an absolute socket path`)
  const host = m[1] ?? m[2]!
  const port = Number(m[3])
  if (!net.isIP(host)) throw new Error(`listen host ${host} is not an IP address`)
  if (!(host.startsWith('127.') || host === '::1')) throw new Error(`refusing ${spec}: this listener has no authentication, so it listens on loopback addresses and Unix sockets only`)
  if (port < 1 || port > 65535) throw new Error(`listen port ${port} out of range`)
  return { host, port }
}
