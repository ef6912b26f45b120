/**
 * A memcache connection before it is authenticated (auth.ts says what each request is): nothing
 * is served, each request is answered, and once a user's password checks, the connection is
 * handed, with whatever the client sent after its login, to the server of the user's tenant.
 *
 * Bounded: the input held is at most one auth request (MAX_TEXT_AUTH_BYTES and a line); the
 * whole exchange must end within `timeoutMs`; MAX_AUTH_FAILURES failed logins, or
 * MAX_REFUSED requests refused before a login, close the connection; and a client that does not
 * read its replies is not read from (the socket pauses until they drain), so replies cannot pile
 * up in memory.
 */
import type net from 'node:net'
import { authStep, type AuthUsers } from './auth.js'

/** Failed logins one connection may make before it is closed. */
export const MAX_AUTH_FAILURES = 3
/** Requests other than a login (each refused) one connection may send before it is closed. */
export const MAX_REFUSED = 16
/** How long a refused connection may take to receive its error before it is destroyed, in ms. */
const LINGER_MS = 1000

export interface AuthCounters {
  /** Logins that succeeded (connections served as their user's tenant). */
  succeeded: number
  /** Logins that failed: a wrong user or password, a user of a tenant this listener does not serve, malformed. */
  failed: number
  /** Requests refused because the connection was not authenticated. */
  unauthenticated: number
  /** Connections closed because they did not authenticate within the time allowed. */
  timeouts: number
}

export interface GateOptions {
  users: () => AuthUsers
  /** Tenants this listener serves, by name. */
  serves: ReadonlySet<string>
  version: string
  timeoutMs: number
  counters: AuthCounters
  /** Serves the authenticated connection as `tenant`; its unread input has been put back. */
  hand: (s: net.Socket, tenant: string) => void
}

export function gate(s: net.Socket, o: GateOptions): void {
  let buf: Buffer = Buffer.alloc(0)
  let failures = 0
  let refused = 0
  let done = false
  const timer = setTimeout(() => {
    o.counters.timeouts++
    s.destroy()
  }, o.timeoutMs || 30_000)
  timer.unref()
  const finish = () => {
    done = true
    clearTimeout(timer)
    s.off('data', onData)
    s.off('end', onEnd)
  }
  const hangUp = (reply?: Buffer) => {
    finish()
    buf.fill(0)
    const t = setTimeout(() => s.destroy(), LINGER_MS)
    t.unref()
    s.once('close', () => clearTimeout(t))
    s.end(reply ?? Buffer.alloc(0), () => s.destroy())
  }
  const onEnd = () => {
    if (!done) hangUp()
  }
  /** Writes a reply; false when the client is not reading them: stop until they drain. */
  const reply = (b: Buffer): boolean => {
    if (s.write(b)) return true
    s.pause()
    s.once('drain', () => {
      if (done) return
      s.resume()
      readInput()
    })
    return false
  }
  const onData = (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
    readInput()
  }
  const readInput = () => {
    for (;;) {
      const step = authStep(buf, o.version)
      if (step.kind === 'need') return
      const rest = buf.subarray(step.bytes)
      if (step.kind === 'reply') {
        if (step.refused) {
          o.counters.unauthenticated++
          refused++
        }
        if (step.failure) {
          o.counters.failed++
          failures++
        }
        buf.subarray(0, step.bytes).fill(0)
        buf = rest
        if (step.close || failures >= MAX_AUTH_FAILURES || refused >= MAX_REFUSED) return hangUp(step.reply)
        if (!reply(step.reply)) return
        continue
      }
      const tenant = o.users().check(step.user, step.password)
      step.user.fill(0)
      step.password.fill(0)
      buf.subarray(0, step.bytes).fill(0)
      buf = rest
      if (tenant === undefined || !o.serves.has(tenant)) {
        o.counters.failed++
        failures++
        if (failures >= MAX_AUTH_FAILURES) return hangUp(step.fail)
        if (!reply(step.fail)) return
        continue
      }
      o.counters.succeeded++
      finish()
      s.write(step.ok)
      // What the client pipelined after its login is the tenant's connection's first input.
      s.pause()
      if (rest.length > 0) s.unshift(Buffer.from(rest))
      buf.fill(0)
      o.hand(s, tenant)
      return
    }
  }
  s.on('data', onData)
  s.on('end', onEnd)
}
