/**
 * The meta commands (meta.ts parses them) handed to the commands, answered as memcached 1.6
 * answers them: HD / VA / EN / NS / EX / NF / MN / ME, return flags in the order asked.
 *
 * Stale and win flags (mg's N and R, md's I, ms's I): this host remembers, per key and version,
 * whether the entry was marked stale and whether a client was already told it won the recache
 * (W, then Z for everyone else) in a bounded table (META_STATE_ENTRIES). It is this host's own
 * view: a client on another host may win the same recache (the dog-pile guard is per host).
 */
import type { Held, Outcome, Result } from './commands.js'
import { flagToken, metaFlagsOut, parseMeta, type MetaRequest } from './meta.js'
import { memcachedInt32 } from './numbers.js'
import type { Fail, Reply, Sink } from './sink.js'

const TOO_LARGE_APPEND = 'SERVER_ERROR out of memory storing object\r\n'
const fail: Fail = (e) => (e ? `SERVER_ERROR ${e.message}\r\n` : 'SERVER_ERROR internal error\r\n')

type Keyed = Exclude<MetaRequest, { cmd: 'mn' } | { cmd: 'me' }>

export function metaCommand(c: Sink, line: string): void {
  const fe = c.fe
  fe.counters.metaCommands++
  const r = parseMeta(line, { maxKeyBytes: fe.maxKeyBytes, maxValueBytes: fe.maxValueBytes, refuseMarker: fe.refuseMarker })
  if ('error' in r) {
    if (r.swallow) c.swallow(r.swallow)
    return c.error(r.error)
  }
  switch (r.cmd) {
    case 'mn':
      return c.reply('MN\r\n')
    case 'me':
      return c.enqueue(() => debug(c, r.key), false, 0, false, fail)
    case 'mg':
      return get(c, r)
    case 'ms':
      return set(c, r)
    case 'md':
      return c.enqueue(() => del(c, r), false, 0, false, fail)
    case 'ma':
      return c.enqueue(() => arith(c, r), false, 0, false, fail)
  }
}

const then = <T>(r: Result<T>, f: (v: T) => Reply): Reply | Promise<Reply> => (r instanceof Promise ? r.then(f) : f(r))

/** A TTL token as memcached reads it (exptime rules); undefined when absent or unreadable. */
function ttlToken(r: Keyed, f: string): number | undefined {
  const t = flagToken(r, f)
  return t === undefined ? undefined : memcachedInt32(t)
}

function debug(c: Sink, key: Buffer): Reply | Promise<Reply> {
  const cmds = c.fe.commands
  const k = key.toString('latin1')
  return cmds.then(k, () => {
    const e = cmds.db.peek(k)
    if (!e) return 'EN\r\n'
    return `ME ${k} exp=${cmds.ttlSeconds(k)} la=0 cas=${e.version} fetch=no cls=1 size=${k.length + e.value.length}\r\n`
  })
}

function get(c: Sink, r: Keyed): void {
  const fe = c.fe
  const cmds = fe.commands
  const key = r.key.toString('latin1')
  const f = c.prefetch(key)
  const answer = (): Reply | Promise<Reply> => {
    let held: Held | undefined = cmds.take(f)
    c.taken(f)
    let extra = ''
    if (!held) {
      const vivify = ttlToken(r, 'N')
      if (vivify === undefined) return r.quiet ? undefined : 'EN\r\n'
      // N: a stub of 0 bytes, and this client wins the right to recache it.
      const ttl = cmds.ttlFor(vivify)
      if (ttl < 0) return r.quiet ? undefined : 'EN\r\n'
      const empty = Buffer.alloc(0)
      return then(cmds.write(key, empty, ttl, 0), (version) => {
        fe.metaState.set(key, { version, stale: false, won: true })
        return hit(c, r, key, { value: empty, flags: 0, version }, ' W')
      })
    }
    const t = ttlToken(r, 'T')
    if (t !== undefined) {
      cmds.touchHeld(key, t)
      held = { ...held, version: cmds.db.version(key) || held.version }
    }
    const st = fe.metaState.get(key)
    const mine = st && st.version === held.version ? st : undefined
    const recache = ttlToken(r, 'R')
    const ttlLeft = cmds.ttlSeconds(key)
    const wantsWin = (mine?.stale ?? false) || (recache !== undefined && ttlLeft !== -1 && ttlLeft < recache) || (mine?.won ?? false)
    // memcached's order: Z (another client won), X (stale), W (this client wins).
    const z = wantsWin && (mine?.won ?? false)
    const w = wantsWin && !z
    if (w) fe.metaState.set(key, { version: held.version, stale: mine?.stale ?? false, won: true })
    extra = `${z ? ' Z' : ''}${mine?.stale ? ' X' : ''}${w ? ' W' : ''}`
    return hit(c, r, key, held, extra)
  }
  c.enqueue(() => (f.remote && !f.done ? f.remote.then(answer) : answer()), false, 0, false, fail)
}

function hit(c: Sink, r: Keyed, key: string, held: Held, extra: string): Reply {
  const cmds = c.fe.commands
  const flags = metaFlagsOut(
    r,
    'Ocfkstlh',
    { key: r.key, base64: r.base64, cas: held.version, flags: held.flags, size: held.value.length, ttl: cmds.ttlSeconds(key) },
    extra,
  )
  if (!r.has.has('v')) {
    held.value.fill(0)
    return `HD${flags}\r\n`
  }
  const head = Buffer.from(`VA ${held.value.length}${flags}\r\n`, 'latin1')
  return { parts: [head, held.value, CRLF], secret: held.value }
}

const CRLF = Buffer.from('\r\n')

function set(c: Sink, r: Extract<MetaRequest, { cmd: 'ms' }>): void {
  const fe = c.fe
  const cmds = fe.commands
  const key = r.key.toString('latin1')
  const flagsTok = flagToken(r, 'F')
  const flags = flagsTok === undefined ? 0 : Number(flagsTok)
  const exptime = ttlToken(r, 'T') ?? 0
  const casTok = flagToken(r, 'C')
  let cas = casTok === undefined ? undefined : BigInt(casTok)
  const mode = r.mode === 'E' ? 'add' : r.mode === 'A' ? 'append' : r.mode === 'P' ? 'prepend' : r.mode === 'R' ? 'replace' : 'set'
  c.expectData(r.datalen, false, (data) =>
    cmds.then(key, () => {
      // I with an older C: stored anyway, marked stale (memcached's invalidation of a late write).
      let stale = false
      if (cas !== undefined && r.has.has('I')) {
        const cur = cmds.db.peek(key)
        if (cur && cas < cur.version) {
          cas = undefined
          stale = true
        }
      }
      return then(cmds.store(mode, key, flags, exptime, data, cas), (x) => {
        if (x.outcome === 'TOO_LARGE') return TOO_LARGE_APPEND
        const code = x.outcome === 'STORED' ? 'HD' : x.outcome === 'EXISTS' ? 'EX' : x.outcome === 'NOT_FOUND' ? 'NF' : 'NS'
        if (code === 'HD' && stale && x.cas !== undefined) fe.metaState.set(key, { version: x.cas, stale: true, won: false })
        if (code === 'HD' && r.quiet) return undefined
        return `${code}${metaFlagsOut(r, 'Okc', { key: r.key, base64: r.base64, ...(code === 'HD' ? { cas: x.cas ?? 0n } : {}) })}\r\n`
      })
    }),
  )
}

function del(c: Sink, r: Keyed): Reply | Promise<Reply> {
  const fe = c.fe
  const cmds = fe.commands
  const key = r.key.toString('latin1')
  const casTok = flagToken(r, 'C')
  const cas = casTok === undefined ? undefined : BigInt(casTok)
  const word = (o: Outcome): Reply => {
    const code = o === 'DELETED' ? 'HD' : o === 'EXISTS' ? 'EX' : 'NF'
    if (code === 'HD' && r.quiet) return undefined
    return `${code}${metaFlagsOut(r, 'Ok', { key: r.key, base64: r.base64 })}\r\n`
  }
  if (!r.has.has('I')) return then(cmds.delete(key, cas), word)
  // I: kept, marked stale under a new version (a rewrite of the same bytes), the TTL from T if given.
  return cmds.then(key, () => {
    const old = cmds.db.peek(key)
    if (!old) return word('NOT_FOUND')
    if (cas !== undefined && old.version !== cas) return word('EXISTS')
    const t = ttlToken(r, 'T')
    const ttl = t === undefined ? cmds.db.remainingTtl(key) : cmds.ttlFor(t)
    if (ttl < 0) return then(cmds.delete(key), word)
    const copy = Buffer.from(old.value)
    try {
      return then(cmds.write(key, copy, ttl, old.flags), (version) => {
        fe.metaState.set(key, { version, stale: true, won: false })
        return word('DELETED')
      })
    } finally {
      copy.fill(0)
    }
  })
}

function arith(c: Sink, r: Keyed): Reply | Promise<Reply> {
  const cmds = c.fe.commands
  const key = r.key.toString('latin1')
  const m = flagToken(r, 'M') ?? 'I'
  const incr = m === 'I' || m === 'i' || m === '+'
  const delta = BigInt(flagToken(r, 'D') ?? '1')
  const n = ttlToken(r, 'N')
  const create = n === undefined ? undefined : { initial: BigInt(flagToken(r, 'J') ?? '0'), exptime: n }
  const casTok = flagToken(r, 'C')
  return then(cmds.delta(key, incr, delta, create, casTok === undefined ? undefined : BigInt(casTok)), (x) => {
    if (x.outcome === 'NON_NUMERIC') return 'CLIENT_ERROR cannot increment or decrement non-numeric value\r\n'
    if (x.outcome !== 'STORED')
      return `${x.outcome === 'NOT_FOUND' ? 'NF' : x.outcome === 'EXISTS' ? 'EX' : 'NS'}${metaFlagsOut(r, 'Ok', { key: r.key, base64: r.base64 })}\r\n`
    const t = ttlToken(r, 'T')
    if (t !== undefined) cmds.touchHeld(key, t)
    const flags = metaFlagsOut(r, 'Oktc', { key: r.key, base64: r.base64, ttl: cmds.ttlSeconds(key), cas: cmds.db.version(key) })
    if (r.has.has('v')) {
      const digits = String(x.value)
      return `VA ${digits.length}${flags}\r\n${digits}\r\n`
    }
    return r.quiet ? undefined : `HD${flags}\r\n`
  })
}
