import { Status, statusName } from '../protocol/local.js'

/**
 * Stable error codes of the client library. Branch on `err.code`; messages are for people.
 *   TIMEOUT          the request's deadline passed before the reply came
 *   ABORTED          the caller's AbortSignal fired
 *   CLOSED           the client was closed before the request completed
 *   CONNECTION_LOST  the connection dropped with the request sent: it may or may not have applied
 *   UNREACHABLE      no daemon accepts connections on the socket path
 *   QUEUE_FULL       too many requests waiting for a connection
 *   PROTOCOL         the daemon sent something this client cannot decode
 *   BAD_ARGUMENT     the call's arguments are unusable (checked before anything is sent)
 *   and the daemon's error statuses: MALFORMED, TOO_LARGE, UNKNOWN_OP, BAD_KEY, BUSY, INTERNAL,
 *   SHUTTING_DOWN, DENIED, BAD_TTL
 */
export type ClientErrorCode =
  | 'TIMEOUT'
  | 'ABORTED'
  | 'CLOSED'
  | 'CONNECTION_LOST'
  | 'UNREACHABLE'
  | 'QUEUE_FULL'
  | 'PROTOCOL'
  | 'BAD_ARGUMENT'
  | Exclude<keyof typeof Status, 'OK' | 'NOT_FOUND'>

export class StatecastError extends Error {
  readonly code: ClientErrorCode
  /** The daemon's status byte, for errors the daemon reported. */
  readonly status: number | undefined
  constructor(code: ClientErrorCode, message: string, status?: number) {
    super(message)
    this.name = 'StatecastError'
    this.code = code
    this.status = status
  }
}

/** The error for a reply whose status is neither OK nor NOT_FOUND. */
export function errorFromStatus(status: number, body: Buffer): StatecastError {
  const name = statusName(status)
  const code = (name in Status ? name : 'PROTOCOL') as ClientErrorCode
  const text = body.length ? body.toString('utf8') : name.toLowerCase()
  return new StatecastError(code, `statecastd: ${text}`, status)
}
