import { StatecastError, type CodeOf } from '../protocol/errors.js'
import { Status, statusName } from '../protocol/local.js'

/**
 * Stable error codes of the client library: the rows of ERRORS (protocol/errors.ts, docs/errors.md)
 * whose class is StatecastError. Branch on `err.code`; messages are for people. They are the
 * client's own (TIMEOUT, ABORTED, CLOSED, CONNECTION_LOST, UNREACHABLE, QUEUE_FULL, PROTOCOL,
 * BAD_ARGUMENT) and the daemon's error statuses (MALFORMED, TOO_LARGE, UNKNOWN_OP, BAD_KEY, BUSY,
 * INTERNAL, SHUTTING_DOWN, DENIED, BAD_TTL).
 */
export type ClientErrorCode = CodeOf<'StatecastError'>

// The client throws the base class itself, with one of these codes (see protocol/errors.ts and docs/errors.md).
export { StatecastError }

// Each daemon error status is a client code of ERRORS: a new status without a row fails to compile.
const _statusesAreCodes: Exclude<keyof typeof Status, 'OK' | 'NOT_FOUND'> extends CodeOf<'StatecastError'> ? true : never = true
void _statusesAreCodes

/** The error for a reply whose status is neither OK nor NOT_FOUND. */
export function errorFromStatus(status: number, body: Buffer): StatecastError<ClientErrorCode> {
  const name = statusName(status)
  const code = (name in Status ? name : 'PROTOCOL') as ClientErrorCode
  const text = body.length ? body.toString('utf8') : name.toLowerCase()
  return new StatecastError(code, `statecastd: ${text}`, status)
}
