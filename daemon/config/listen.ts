/**
 * Listener addresses of the local front ends (memcache, metrics), taken as memcached takes them:
 * `HOST:PORT` on a loopback address (IPv6 as `[::1]:PORT`), `localhost:PORT` (both loopback
 * addresses, as memcached's `-l localhost` binds every address localhost has), a bare `PORT`
 * (loopback, 127.0.0.1), or a Unix socket path (absolute, or starting with `.`).
 */
import net from 'node:net'

/** Parses a TCP listen address, or returns undefined for a Unix path. The first of `listenAddresses`. */
export function parseListen(spec: string): { host: string; port: number } | undefined {
  return listenAddresses(spec)?.[0]
}

/** Every address a spec listens on: `localhost:PORT` is 127.0.0.1 and ::1; undefined for a Unix path. */
export function listenAddresses(spec: string): { host: string; port: number; optional?: boolean }[] | undefined {
  if (spec.startsWith('/') || spec.startsWith('.')) return undefined
  const bare = /^\d{1,5}$/.test(spec)
  const m = bare ? [spec, undefined, '127.0.0.1', spec] : /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(spec)
  if (!m) throw new Error(`listen address ${JSON.stringify(spec)} is neither HOST:PORT, a port, nor an absolute socket path`)
  const host = m[1] ?? m[2]!
  const port = Number(m[3])
  if (port < 1 || port > 65535) throw new Error(`listen port ${port} out of range`)
  // ::1 is optional: a host without IPv6 still listens on 127.0.0.1.
  if (host === 'localhost')
    return [
      { host: '127.0.0.1', port },
      { host: '::1', port, optional: true },
    ]
  if (!net.isIP(host)) throw new Error(`listen host ${host} is not an IP address (or localhost)`)
  if (!(host.startsWith('127.') || host === '::1'))
    throw new Error(`refusing ${spec}: this listener has no authentication, so it listens on loopback addresses and Unix sockets only`)
  return [{ host, port }]
}
