/**
 * memcached's text protocol: one command line, parsed as memcached 1.6 parses it (checked against
 * memcached 1.6.18 by test/integration/memcache-diff.test.ts), handed to the commands, the answer
 * worded as memcached words it. get/gets (any number of keys), gat/gats, set/add/replace/append/
 * prepend/cas, incr/decr, delete, touch, flush_all, verbosity, version, quit, stats; `noreply` on
 * every command that takes it; keys of any bytes but space and newline up to `maxKeyBytes`; the
 * meta commands (meta-commands.ts) share the line reader.
 */
import type { Outcome } from './commands.js'
import { metaCommand } from './meta-commands.js'
import { isMetaLine } from './meta.js'
import { memcachedFlags, memcachedInt32, memcachedUint64 } from './numbers.js'
import type { Sink } from './sink.js'
import { TENANT_MARKER } from '../../../protocol/tenant-keys.js'

export const STORED = 'STORED\r\n'
export const NOT_FOUND = 'NOT_FOUND\r\n'
export const ERROR = 'ERROR\r\n'
const BAD_FORMAT = 'CLIENT_ERROR bad command line format\r\n'
const BAD_EXPTIME = 'CLIENT_ERROR invalid exptime argument\r\n'
export const TOO_LARGE = 'SERVER_ERROR object too large for cache\r\n'

/** A storage command's outcome as the text protocol words it. */
export function storeText(o: Outcome): string {
  switch (o) {
    case 'STORED':
      return STORED
    case 'EXISTS':
      return 'EXISTS\r\n'
    case 'NOT_FOUND':
      return NOT_FOUND
    case 'TOO_LARGE':
      return 'SERVER_ERROR out of memory storing object\r\n'
    default:
      return 'NOT_STORED\r\n'
  }
}

/** Handles one text (or meta) command line. */
export function textCommand(c: Sink, line: string): void {
  const fe = c.fe
  const cmds = fe.commands
  fe.counters.commands++
  const g = /^ *(gets?) +(?=[^ ])/.exec(line)
  if (g) return c.getLine(line, g[0].length, g[1] === 'gets')
  // gat/gats EXPTIME KEY...: get and touch (memcached 1.5.3+).
  // memcached answers `gat EXPTIME` with no key by END alone.
  const gat = /^ *(gats?) +([^ ]+) */.exec(line)
  if (gat) {
    const exptime = memcachedInt32(gat[2]!)
    if (exptime === undefined) return c.error(BAD_EXPTIME)
    return c.getLine(line, gat[0].length, gat[1] === 'gats', exptime)
  }
  if (isMetaLine(line)) return metaCommand(c, line)
  const tok = line.split(' ').filter((x) => x.length > 0)
  const cmd = tok[0] ?? ''
  const n = tok.length
  const noreply = tok[n - 1] === 'noreply'
  // A key may not start with the tenant marker (protocol/tenant-keys.ts): it would name another tenant's.
  const keyOk = (k: string) => k.length <= fe.maxKeyBytes && !(fe.refuseMarker && k.charCodeAt(0) === TENANT_MARKER)
  switch (cmd) {
    case 'set':
    case 'add':
    case 'replace':
    case 'append':
    case 'prepend':
    case 'cas': {
      const fields = cmd === 'cas' ? 6 : 5
      if (n !== fields && n !== fields + 1) return c.error(ERROR)
      const nr = noreply && n === fields + 1
      const key = tok[1]!
      const flags = memcachedFlags(tok[2]!)
      const exptime = memcachedInt32(tok[3]!)
      const bytes = memcachedInt32(tok[4]!)
      if (!keyOk(key) || flags === undefined || exptime === undefined || bytes === undefined || bytes < 0) return c.error(BAD_FORMAT, nr)
      const unique = cmd === 'cas' ? memcachedUint64(tok[5]!) : undefined
      if (cmd === 'cas' && unique === undefined) return c.error(BAD_FORMAT, nr)
      if (bytes > fe.maxValueBytes) {
        c.swallow(bytes + 2)
        fe.counters.errors++
        // memcached drops the old value of a refused set, so no stale session outlives it.
        return c.enqueue(() => {
          // void: a delete answers at once (no fetch comes first) and its outcome is not this reply's.
          if (cmd === 'set') void cmds.remove(key)
          return TOO_LARGE
        }, nr)
      }
      const mode = cmd === 'cas' ? 'set' : cmd
      return c.expectData(
        bytes,
        nr,
        (data) => {
          const r = cmds.store(mode, key, flags, exptime, data, unique)
          return r instanceof Promise ? r.then((x) => storeText(x.outcome)) : storeText(r.outcome)
        },
        mode === 'set' && unique === undefined,
      )
    }
    case 'incr':
    case 'decr': {
      if (n !== 3 && n !== 4) return c.error(ERROR)
      const nr = noreply && n === 4
      if (!keyOk(tok[1]!)) return c.error(BAD_FORMAT, nr)
      const delta = memcachedUint64(tok[2]!)
      if (delta === undefined) return c.error('CLIENT_ERROR invalid numeric delta argument\r\n', nr)
      return c.enqueue(() => {
        const r = cmds.delta(tok[1]!, cmd === 'incr', delta)
        const word = (x: { outcome: Outcome; value?: bigint }) =>
          x.outcome === 'STORED'
            ? `${x.value}\r\n`
            : x.outcome === 'NON_NUMERIC'
              ? 'CLIENT_ERROR cannot increment or decrement non-numeric value\r\n'
              : NOT_FOUND
        return r instanceof Promise ? r.then(word) : word(r)
      }, nr)
    }
    case 'delete': {
      if (n < 2 || n > 4) return c.error(ERROR)
      // `delete KEY [0] [noreply]`: mod_ssl sends the legacy time argument 0.
      const zero = tok[2] === '0'
      const valid = n === 2 || (n === 3 && (zero || noreply)) || (n === 4 && zero && noreply)
      if (!keyOk(tok[1]!)) return c.error(BAD_FORMAT, noreply)
      if (!valid) return c.error('CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n', noreply)
      const deleted = (o: Outcome) => (o === 'DELETED' ? 'DELETED\r\n' : NOT_FOUND)
      return c.enqueue(
        () => {
          // A promise when the delete waits for its copies to be gone (cluster/hooks.ts).
          const r = cmds.delete(tok[1]!)
          return r instanceof Promise ? r.then(deleted) : deleted(r)
        },
        noreply,
        0,
        false,
        undefined,
        true,
      )
    }
    case 'touch': {
      if (n !== 3 && n !== 4) return c.error(ERROR)
      const nr = noreply && n === 4
      if (!keyOk(tok[1]!)) return c.error(BAD_FORMAT, nr)
      const exptime = memcachedInt32(tok[2]!)
      if (exptime === undefined) return c.error(BAD_EXPTIME, nr)
      return c.enqueue(
        () => {
          const r = cmds.touch(tok[1]!, exptime)
          const word = (x: { outcome: Outcome }) => (x.outcome === 'TOUCHED' ? 'TOUCHED\r\n' : NOT_FOUND)
          return r instanceof Promise ? r.then(word) : word(r)
        },
        nr,
        0,
        false,
        undefined,
        true,
      )
    }
    case 'flush_all': {
      if (n > 3) return c.error(ERROR)
      if (!fe.flushAllowed) return c.error('CLIENT_ERROR flush_all not allowed\r\n', noreply)
      let delay = 0
      if (n !== (noreply ? 2 : 1)) {
        const d = memcachedInt32(tok[1]!)
        if (d === undefined) return c.error(BAD_EXPTIME, noreply)
        delay = d
      }
      return c.enqueue(() => {
        cmds.flushAll(delay)
        return 'OK\r\n'
      }, noreply)
    }
    case 'verbosity': {
      // Accepted and ignored (the daemon's log level is `logLevel`), checked as memcached does.
      if (n !== 2 && n !== 3) return c.error(ERROR)
      if (memcachedFlags(tok[1]!) === undefined) return c.error(BAD_FORMAT, noreply)
      return c.reply('OK\r\n', noreply)
    }
    case 'version':
      return c.reply(`VERSION ${fe.version}\r\n`)
    case 'stats':
      return c.enqueue(() => {
        const rows = fe.stats(tok.slice(1).join(' '))
        if (rows === undefined) return ERROR
        if (rows === 'reset') return 'RESET\r\n'
        return rows.map(([k, v]) => `STAT ${k} ${v}\r\n`).join('') + 'END\r\n'
      })
    case 'quit':
      // Answer what came before, then hang up; nothing after it is read.
      return c.quit()
    default:
      return c.error(ERROR)
  }
}
