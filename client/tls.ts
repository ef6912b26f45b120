/**
 * statecast/tls: resumes TLS sessions across every host of the cluster for a Node `tls.Server`
 * or `https.Server`.
 *
 * Which protocol resumes by which mechanism:
 *   - TLS 1.3, and TLS 1.2 with tickets (Node's default): session tickets. Every daemon of the
 *     cluster agrees on one ticket secret per epoch (made inside the cluster, sent only sealed
 *     under ephemeral X25519 keys, never written to disk, rotated every `ticketKeyRotationMs`),
 *     and derives from it the key of each consumer; this helper is the "node" consumer: it reads
 *     its key (TICKET_KEY: derived, never the secret), installs it with `setTicketKeys` and follows
 *     rotations, so a ticket issued by any server is accepted by all.
 *   - TLS 1.2 with tickets off (`secureOptions: constants.SSL_OP_NO_TICKET`): session ids. New
 *     sessions are stored in the daemon (`newSession`), and a resuming client's session is fetched
 *     from it (`resumeSession`), from a peer if this host never saw it.
 * Node's `resumeSession` cannot resume TLS 1.3 from an external cache (it sees a random legacy
 * id), which is why TLS 1.3 goes through the shared ticket keys. The session-id hooks are
 * installed only when the server has tickets off (or `sessionIds: true`): with tickets on, every
 * version resumes through the shared keys, and a hook would only pause each TLS 1.3 handshake to
 * look up a random id that no host holds.
 *
 * Every server must use the same `sessionIdContext`: Node derives the default from the process's
 * command line, so servers started with different arguments never resume each other's sessions.
 * Pass `sessionIdContext: 'your-service'` to `createServer` on every host.
 *
 * A handshake never waits longer than `lookupTimeoutMs` on the daemon; when the daemon is down the
 * server does full handshakes and keeps serving.
 */
import crypto, { constants } from 'node:crypto'
import type tls from 'node:tls'
import { StatecastClient, type ClientOptions } from './client.js'

export interface SessionCacheOptions extends ClientOptions {
  /** Longest a resuming handshake waits for the daemon, in ms. Default 200. */
  lookupTimeoutMs?: number
  /** Install the cluster's ticket keys (TLS 1.3 and ticket-based TLS 1.2). Default true. */
  ticketKeys?: boolean
  /** How often to ask the daemon whether the ticket key changed, in ms. Default 1000. */
  ticketKeyRefreshMs?: number
  /** Prefix of the cache keys this server's sessions use. Default 'tls:'. */
  keyPrefix?: string
  /** Cache sessions by id in the daemon. Default: when the server has tickets off (SSL_OP_NO_TICKET). */
  sessionIds?: boolean
  /** Use this client instead of opening one. */
  client?: StatecastClient
}

export interface SessionCacheStats {
  stored: number
  /** TLS 1.3 sessions not stored: they resume through the shared ticket keys instead. */
  skippedTls13: number
  storeErrors: number
  resumeLookups: number
  resumeHits: number
  resumeMisses: number
  /** Resumptions answered "no" at once because the daemon was unreachable. */
  daemonDown: number
  ticketKeyChanges: number
  ticketEpoch: number | undefined
}

export interface SessionCache {
  readonly client: StatecastClient
  readonly stats: SessionCacheStats
  /** Resolves once the first cluster ticket key is installed (when ticket keys are on). */
  ready(): Promise<void>
  /** Detaches from the server and closes the client it opened. */
  close(): Promise<void>
}

/** TLS 1.3 as the protocol number OpenSSL writes into a session. */
const TLS13 = 0x0304
/** DER tags (X.690) of the two fields read below. */
const DER_SEQUENCE = 0x30
const DER_INTEGER = 0x02
/** A DER length byte with this bit set says how many length bytes follow. */
const DER_LONG_LENGTH = 0x80

/**
 * The protocol version inside an encoded session (OpenSSL's SSL_SESSION_ASN1:
 * SEQUENCE { INTEGER 1, INTEGER sslVersion, ... }), or undefined when it cannot be read.
 */
export function sessionVersion(der: Buffer): number | undefined {
  if (der[0] !== DER_SEQUENCE || der.length < 8) return undefined
  const l = der[1]!
  let off = 2 + (l & DER_LONG_LENGTH ? l & ~DER_LONG_LENGTH : 0)
  if (der[off] !== DER_INTEGER) return undefined
  off += 2 + (der[off + 1] ?? 0)
  if (der[off] !== DER_INTEGER) return undefined
  const n = der[off + 1] ?? 0
  if (n < 1 || n > 4 || off + 2 + n > der.length) return undefined
  return der.readUIntBE(off + 2, n)
}

function defaultContext(): string {
  return crypto.createHash('sha1').update(process.argv.join(' ')).digest('hex').slice(0, 32)
}

export function attachSessionCache(server: tls.Server, options: SessionCacheOptions = {}): SessionCache {
  const client = options.client ?? StatecastClient.open(options)
  const ownsClient = !options.client
  const timeoutMs = options.lookupTimeoutMs ?? 200
  const prefix = Buffer.from(options.keyPrefix ?? 'tls:')
  const stats: SessionCacheStats = {
    stored: 0,
    skippedTls13: 0,
    storeErrors: 0,
    resumeLookups: 0,
    resumeHits: 0,
    resumeMisses: 0,
    daemonDown: 0,
    ticketKeyChanges: 0,
    ticketEpoch: undefined,
  }
  const s = server as tls.Server & { sessionTimeout?: number; sessionIdContext?: string; secureOptions?: number }
  const useIds = options.sessionIds ?? ((s.secureOptions ?? 0) & constants.SSL_OP_NO_TICKET) !== 0

  if (s.sessionIdContext === defaultContext()) {
    process.emitWarning(
      "statecast/tls: this server's sessionIdContext is derived from its command line; servers started with other arguments will not resume its sessions. Pass the same sessionIdContext to createServer on every host.",
      'StatecastWarning',
    )
  }

  const onNew = (id: Buffer, data: Buffer, done: () => void) => {
    // The handshake never waits for the store.
    done()
    if (sessionVersion(data) === TLS13) {
      stats.skippedTls13++
      return
    }
    if (!client.connected) return
    const ttlMs = Math.max(1, Math.round((s.sessionTimeout ?? 300) * 1000))
    client.set(Buffer.concat([prefix, id]), data, { ttlMs }).then(
      () => stats.stored++,
      () => stats.storeErrors++,
    )
  }
  const onResume = (id: Buffer, done: (err: Error | null, data: Buffer | null) => void) => {
    stats.resumeLookups++
    if (!client.connected) {
      stats.daemonDown++
      done(null, null)
      return
    }
    client.get(Buffer.concat([prefix, id]), { timeoutMs }).then(
      (v) => {
        if (v) stats.resumeHits++
        else stats.resumeMisses++
        done(null, v ?? null)
      },
      () => {
        stats.resumeMisses++
        done(null, null)
      },
    )
  }
  if (useIds) {
    server.on('newSession', onNew)
    server.on('resumeSession', onResume)
  }

  let timer: NodeJS.Timeout | undefined
  let closed = false
  let firstKey: (() => void) | undefined
  const firstKeyInstalled = new Promise<void>((r) => (firstKey = r))
  const refresh = async () => {
    try {
      if (client.connected) {
        const k = await client.ticketKey({ timeoutMs: 1000 })
        if (k && k.epoch !== stats.ticketEpoch) {
          server.setTicketKeys(k.key)
          stats.ticketEpoch = k.epoch
          stats.ticketKeyChanges++
          firstKey?.()
        }
        k?.key.fill(0)
      }
    } catch {
      /* the daemon restarts or is busy: keep the key in force and ask again */
    }
  }
  if (options.ticketKeys !== false) {
    const every = options.ticketKeyRefreshMs ?? 1000
    const loop = () => {
      if (closed) return
      timer = setTimeout(() => void refresh().then(loop, loop), every)
      timer.unref()
    }
    client.on('connect', () => void refresh())
    if (client.connected) void refresh()
    loop()
  } else firstKey?.()

  return {
    client,
    stats,
    ready: () => firstKeyInstalled,
    async close() {
      closed = true
      clearTimeout(timer)
      server.off('newSession', onNew)
      server.off('resumeSession', onResume)
      if (ownsClient) await client.close()
    },
  }
}
