/**
 * memcached's auth file (`memcached -Y FILE`, also its SASL password database): one `user:password`
 * line per user, the password being the rest of the line. statecast reads one per tenant
 * (`memcacheAuthFile`, top level for the default tenant, or in a [[tenants]] table): a user of a
 * tenant's file is that tenant on a memcache TCP listener with memcacheTcpAccess = "auth".
 *
 * The file holds passwords, so it is refused unless it is a regular file owned by root or this
 * daemon's user, neither readable nor writable by others nor writable by its group (0640 or
 * 0600), as the config file is checked (config.ts readConfigFile). Errors name the file and the
 * line, never its text.
 */
import fs from 'node:fs'

/** Longest user name and password, in bytes (SASL PLAIN's limit for each, RFC 4616). */
export const MAX_AUTH_FIELD_BYTES = 255
/** Most users one file may list. */
export const MAX_AUTH_USERS = 10_000
/** Largest auth file read, in bytes. */
const MAX_AUTH_FILE_BYTES = 4 * 1024 * 1024

export interface AuthUser {
  user: Buffer
  password: Buffer
}

/**
 * The users of an auth file. `what` names the config key (for messages). Throws an Error whose
 * message names the file and what is wrong with it.
 */
export function readAuthFile(path: string, what: string): AuthUser[] {
  let fd: number
  try {
    fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOFOLLOW)
  } catch (err) {
    throw new Error(`${what}: cannot read auth file ${path}: ${(err as NodeJS.ErrnoException).code ?? 'read failed'}`)
  }
  let bytes: Buffer
  try {
    const st = fs.fstatSync(fd)
    if (!st.isFile()) throw new Error(`${what}: auth file ${path} is not a regular file; refusing it`)
    if (st.mode & 0o027)
      throw new Error(
        `${what}: auth file ${path} has mode 0${(st.mode & 0o777).toString(8)}: it holds passwords, and others may read it or its group may write it; refusing it: run chmod 0640 ${path}`,
      )
    const me = typeof process.getuid === 'function' ? process.getuid() : -1
    if (me >= 0 && st.uid !== 0 && st.uid !== me)
      throw new Error(
        `${what}: auth file ${path} belongs to uid ${st.uid}, not to root or this daemon's user (uid ${me}); refusing it: run chown root ${path}`,
      )
    if (st.size > MAX_AUTH_FILE_BYTES) throw new Error(`${what}: auth file ${path} is larger than ${MAX_AUTH_FILE_BYTES} bytes`)
    bytes = fs.readFileSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  try {
    return parseAuthFile(bytes, `${what}: auth file ${path}`)
  } finally {
    bytes.fill(0)
  }
}

/** The users of an auth file's bytes; `where` prefixes messages. */
export function parseAuthFile(bytes: Buffer, where: string): AuthUser[] {
  const users: AuthUser[] = []
  const seen = new Set<string>()
  let line = 0
  for (let at = 0; at < bytes.length;) {
    line++
    let end = bytes.indexOf(10, at)
    if (end < 0) end = bytes.length
    let stop = end
    if (stop > at && bytes[stop - 1] === 13) stop--
    const l = bytes.subarray(at, stop)
    at = end + 1
    if (l.length === 0) continue
    const colon = l.indexOf(58)
    if (colon < 0) throw new Error(`${where}: line ${line} is not user:password`)
    const user = l.subarray(0, colon)
    const password = l.subarray(colon + 1)
    if (user.length === 0 || user.length > MAX_AUTH_FIELD_BYTES || user.some((b) => b <= 32 || b === 127))
      throw new Error(`${where}: line ${line}: the user name must be 1 to ${MAX_AUTH_FIELD_BYTES} bytes with no space or control character`)
    if (password.length === 0 || password.length > MAX_AUTH_FIELD_BYTES || password.some((b) => b === 0 || b === 13))
      throw new Error(`${where}: line ${line}: the password must be 1 to ${MAX_AUTH_FIELD_BYTES} bytes with no NUL or CR`)
    const name = user.toString('latin1')
    if (seen.has(name)) throw new Error(`${where}: line ${line} names a user listed before`)
    seen.add(name)
    users.push({ user: Buffer.from(user), password: Buffer.from(password) })
    if (users.length > MAX_AUTH_USERS) throw new Error(`${where}: more than ${MAX_AUTH_USERS} users`)
  }
  if (users.length === 0) throw new Error(`${where} lists no user:password line`)
  return users
}
