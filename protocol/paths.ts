/**
 * Where the daemon's sockets live when nobody says otherwise. Pure: the caller passes the
 * environment and uid, so the daemon, the client library and the CLI agree without sharing state.
 *
 *   root (a system service)   /run/statecast/statecast.sock      /run/statecast/admin.sock
 *   a user with a session     $XDG_RUNTIME_DIR/statecast/...
 *   anything else (dev runs)  $TMPDIR/statecast-<uid>/...
 *
 * STATECAST_SOCKET and STATECAST_ADMIN_SOCKET override each path. Without STATECAST_ADMIN_SOCKET
 * the admin socket is `admin.sock` beside the API socket, wherever that is.
 *
 * A user's directory (the last two rows) must be private to that user (mode 0700, owned by them):
 * the daemon creates it so and refuses one that is not, and so does the CLI before connecting.
 */
export const API_SOCKET_NAME = 'statecast.sock'
export const ADMIN_SOCKET_NAME = 'admin.sock'

export interface PathEnv {
  [name: string]: string | undefined
}

export function defaultRuntimeDir(env: PathEnv, uid: number, tmpdir = '/tmp'): string {
  if (uid === 0) return '/run/statecast'
  const xdg = env['XDG_RUNTIME_DIR']
  if (xdg && xdg.startsWith('/')) return `${xdg.replace(/\/+$/, '')}/statecast`
  return `${tmpdir.replace(/\/+$/, '')}/statecast-${uid}`
}

export function defaultSocketPath(env: PathEnv, uid: number, tmpdir?: string): string {
  return env['STATECAST_SOCKET'] || `${defaultRuntimeDir(env, uid, tmpdir)}/${API_SOCKET_NAME}`
}

export function defaultAdminSocketPath(env: PathEnv, uid: number, tmpdir?: string): string {
  return env['STATECAST_ADMIN_SOCKET'] || adminSocketBeside(defaultSocketPath(env, uid, tmpdir))
}

/** The admin socket's path beside an API socket: `admin.sock` in the same directory. */
export function adminSocketBeside(socketPath: string): string {
  const slash = socketPath.lastIndexOf('/')
  return slash < 0 ? ADMIN_SOCKET_NAME : `${socketPath.slice(0, slash + 1)}${ADMIN_SOCKET_NAME}`
}
