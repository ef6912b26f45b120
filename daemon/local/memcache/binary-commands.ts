/**
 * The binary protocol's requests (binary.ts parses them) handed to the commands, answered as
 * memcached 1.6 answers them: the opcode and opaque echoed, the entry's cas in the header,
 * memcached's status codes and texts for errors, quiet commands silent on success (getq/getkq on
 * a miss), a noop always answered. Every request gets an answer or, for a quiet one, a
 * deliberate silence; what this front end cannot serve gets Unknown command, counted.
 */
import {
  BinStatus,
  HEADER_BYTES,
  NO_CREATE,
  Opcode,
  encodeResponse,
  errorResponse,
  responseHeader,
  type BinParse,
  type BinRequest,
} from './binary.js'
import type { Outcome, Result } from './commands.js'
import type { Fail, Reply, Sink } from './sink.js'

/** A refused request: answered (unless memcached says nothing), swallowed or hung up on, counted. */
export function binaryReject(c: Sink, r: Extract<BinParse, { kind: 'reject' }>): void {
  const fe = c.fe
  fe.counters.binaryCommands++
  if (r.status === BinStatus.UNKNOWN_COMMAND) fe.counters.unknownCommands++
  if (r.close) return c.fatal(r.silent ? undefined : errorResponse(r.opcode, r.opaque, r.status))
  fe.counters.errors++
  if (r.swallow > 0) c.swallow(r.swallow)
  const key = r.orDelete
  // memcached drops the old value of a set refused for its size: no stale session outlives it.
  c.enqueue(() => {
    // void: a delete answers at once (no fetch comes first) and its outcome is not this reply's.
    if (key) void fe.commands.remove(key.toString('latin1'))
    return errorResponse(r.opcode, r.opaque, r.status)
  })
}

/** Handles one request; `req`'s key and value are the caller's copies. */
export function binaryRequest(c: Sink, req: BinRequest): void {
  const fe = c.fe
  const cmds = fe.commands
  fe.counters.binaryCommands++
  fe.counters.commands++
  const key = req.key.toString('latin1')
  const { opcode, opaque } = req
  const ok = (o: { cas?: bigint; extras?: Buffer; key?: Buffer; value?: Buffer } = {}): Buffer =>
    encodeResponse({ opcode, status: BinStatus.OK, opaque, ...o })
  const err = (status: number): Buffer => {
    fe.counters.errors++
    return errorResponse(opcode, opaque, status)
  }
  const fail: Fail = (e) => err(e?.code === 'TOO_LARGE' ? BinStatus.E2BIG : BinStatus.EINTERNAL)
  const q = req.quiet
  const then = <T>(r: Result<T>, f: (v: T) => Reply): Reply | Promise<Reply> => (r instanceof Promise ? r.then(f) : f(r))
  const cas = req.cas === 0n ? undefined : req.cas
  switch (req.kind) {
    case 'get': {
      const f = c.prefetch(key)
      const answer = (): Reply => {
        const held = cmds.take(f)
        c.taken(f)
        if (!held) {
          if (q) return undefined
          // getk's miss carries the key and no text, as memcached's.
          return req.withKey
            ? errorResponse(opcode, opaque, BinStatus.KEY_ENOENT, req.key)
            : errorResponse(opcode, opaque, BinStatus.KEY_ENOENT)
        }
        let version = held.version
        if (req.touch !== undefined) {
          cmds.touchHeld(key, req.touch)
          version = cmds.db.version(key) || version
        }
        const extras = Buffer.allocUnsafe(4)
        extras.writeUInt32BE(held.flags >>> 0)
        const kl = req.withKey ? req.key.length : 0
        const h = responseHeader({
          opcode,
          status: BinStatus.OK,
          opaque,
          cas: version,
          extrasLength: 4,
          keyLength: kl,
          valueLength: held.value.length,
        })
        // Small replies are one buffer (the connection joins them); the value is the secret copy.
        return { parts: req.withKey ? [h, extras, req.key, held.value] : [h, extras, held.value], secret: held.value }
      }
      return c.enqueue(() => (f.remote && !f.done ? f.remote.then(answer) : answer()), false, 0, false, fail)
    }
    case 'touch':
      return c.enqueue(
        () =>
          then(cmds.touch(key, req.exptime), (r) => {
            if (r.outcome !== 'TOUCHED') return err(BinStatus.KEY_ENOENT)
            const extras = Buffer.allocUnsafe(4)
            extras.writeUInt32BE((r.flags ?? 0) >>> 0)
            return ok({ ...(r.cas !== undefined ? { cas: r.cas } : {}), extras })
          }),
        false,
        0,
        false,
        fail,
      )
    case 'store':
    case 'concat': {
      const mode =
        req.command === Opcode.SET
          ? 'set'
          : req.command === Opcode.ADD
            ? 'add'
            : req.command === Opcode.REPLACE
              ? 'replace'
              : req.command === Opcode.APPEND
                ? 'append'
                : 'prepend'
      const value = req.value
      const flags = req.kind === 'store' ? req.flags : 0
      const exptime = req.kind === 'store' ? req.exptime : 0
      // memcached reads exptime as a signed time_t from the unsigned field.
      const signedExp = exptime | 0
      return c.enqueue(
        () => {
          // The copy holds a session value: wiped once stored (the store keeps its own).
          const wipe = () => value.fill(0)
          let r: ReturnType<typeof cmds.store>
          try {
            r = cmds.store(mode, key, flags, signedExp, value, cas)
          } catch (e) {
            wipe()
            throw e
          }
          if (r instanceof Promise) void r.then(wipe, wipe)
          else wipe()
          return then(r, (x) =>
            x.outcome === 'STORED' ? (q ? undefined : ok(x.cas !== undefined ? { cas: x.cas } : {})) : err(storeStatus(mode, x.outcome)),
          )
        },
        false,
        value.length,
        false,
        fail,
      )
    }
    case 'delete':
      return c.enqueue(
        () =>
          then(cmds.delete(key, cas), (o) =>
            o === 'DELETED' ? (q ? undefined : ok()) : err(o === 'EXISTS' ? BinStatus.KEY_EEXISTS : BinStatus.KEY_ENOENT),
          ),
        false,
        0,
        false,
        fail,
      )
    case 'delta': {
      const create = req.exptime === NO_CREATE ? undefined : { initial: req.initial, exptime: req.exptime | 0 }
      return c.enqueue(
        () =>
          then(cmds.delta(key, req.command === Opcode.INCREMENT, req.delta, create, cas), (r) => {
            if (r.outcome !== 'STORED')
              return err(
                r.outcome === 'NON_NUMERIC'
                  ? BinStatus.DELTA_BADVAL
                  : r.outcome === 'EXISTS'
                    ? BinStatus.KEY_EEXISTS
                    : r.outcome === 'NOT_STORED'
                      ? BinStatus.NOT_STORED
                      : BinStatus.KEY_ENOENT,
              )
            if (q) return undefined
            const v = Buffer.allocUnsafe(8)
            v.writeBigUInt64BE(r.value ?? 0n)
            return ok({ ...(r.cas !== undefined ? { cas: r.cas } : {}), value: v })
          }),
        false,
        0,
        false,
        fail,
      )
    }
    case 'flush':
      // memcached answers a refused flush with Auth failure (flush_enabled no).
      if (!fe.flushAllowed) return c.enqueue(() => err(BinStatus.AUTH_ERROR))
      return c.enqueue(() => {
        cmds.flushAll(req.delay | 0)
        return q ? undefined : ok()
      })
    case 'noop':
      return c.enqueue(() => ok())
    case 'version':
      return c.enqueue(() => ok({ value: Buffer.from(fe.version, 'latin1') }))
    case 'verbosity':
      // Accepted and ignored (the daemon's log level is `logLevel`).
      return c.enqueue(() => ok())
    case 'quit':
      if (q) return c.quit()
      c.enqueue(() => ok(), false, 0, true)
      return
    case 'stat': {
      const sub = key
      return c.enqueue(() => {
        const rows = fe.stats(sub)
        if (rows === undefined) return err(BinStatus.KEY_ENOENT)
        const parts: Buffer[] = []
        if (rows !== 'reset')
          for (const [k, v] of rows)
            parts.push(
              encodeResponse({ opcode, status: 0, opaque, key: Buffer.from(k, 'latin1'), value: Buffer.from(String(v), 'latin1') }),
            )
        parts.push(ok())
        return { parts }
      })
    }
  }
}

/** memcached's status for a storage command that did not store (complete_update_bin). */
function storeStatus(mode: string, o: Outcome): number {
  switch (o) {
    case 'EXISTS':
      return BinStatus.KEY_EEXISTS
    case 'NOT_FOUND':
      return BinStatus.KEY_ENOENT
    case 'TOO_LARGE':
      return BinStatus.E2BIG
    default:
      return mode === 'add' ? BinStatus.KEY_EEXISTS : mode === 'replace' ? BinStatus.KEY_ENOENT : BinStatus.NOT_STORED
  }
}

/** Bytes a binary request's header occupies: the connection waits for at least this much. */
export const BINARY_HEADER_BYTES = HEADER_BYTES
