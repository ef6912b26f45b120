/**
 * The one error type of statecast: `StatecastError` with a code from the closed union
 * `ErrorCode`, and one subclass per failure domain. Callers branch on `code`, never on the
 * message or the class name. ERRORS below is the table of every code: the classes that may throw
 * it, what it means and where a user sees it; docs/errors.md is that table, and
 * test/unit/errors.test.ts keeps the two equal.
 *
 * This module lives in protocol/ because every room (daemon, client, cli) may import protocol/.
 */

/** The classes that throw statecast errors, by their `name`. */
export type ErrorClassName =
  | 'StatecastError'
  | 'ProtocolError'
  | 'KeyFileError'
  | 'KeyError'
  | 'ConfigError'
  | 'StoreError'
  | 'LookupError'
  | 'DecisionError'
  | 'UnixListenerError'
  | 'TicketExportError'
  | 'UsageError'

interface ErrorRow {
  /** The classes that may carry this code (a client-side StatecastError relays the daemon's status codes). */
  readonly by: readonly ErrorClassName[]
  readonly meaning: string
  /** Where a user meets it. */
  readonly seen: string
}

const CLIENT_SEES = 'client library: the rejected promise; `statecast` prints it and exits non-zero'

export const ERRORS = {
  // The codecs (protocol/): a decoder given any bytes returns a message or throws one of these.
  TRUNCATED: {
    by: ['ProtocolError'],
    meaning: 'fewer bytes than the layout or a length field requires',
    seen: 'daemon log (malformed frame or peer datagram); MALFORMED to the client',
  },
  TRAILING: { by: ['ProtocolError'], meaning: 'more bytes than the layout accounts for', seen: 'daemon log; MALFORMED to the client' },
  FRAME_TOO_LARGE: {
    by: ['ProtocolError'],
    meaning: 'a length prefix above the configured bound',
    seen: 'daemon log; TOO_LARGE to the client, which is then disconnected',
  },
  UNKNOWN_OP: {
    by: ['ProtocolError', 'StatecastError'],
    meaning: 'an operation or message type not in the table (the daemon answers status UNKNOWN_OP)',
    seen: 'daemon log; client library error of that code',
  },
  BAD_FIELD: {
    by: ['ProtocolError'],
    meaning: 'a field outside its allowed range (empty key, bad flag, ...)',
    seen: 'daemon log; MALFORMED to the client',
  },
  BAD_MAGIC: { by: ['ProtocolError'], meaning: 'a peer datagram that is not ours', seen: 'daemon log and the dropped-datagram counters' },
  BAD_VERSION: {
    by: ['ProtocolError'],
    meaning: 'a peer datagram of a protocol version we do not speak',
    seen: 'daemon log and the dropped-datagram counters',
  },
  UNKNOWN_KEY: {
    by: ['ProtocolError'],
    meaning: 'a peer datagram sealed with a key id we do not hold',
    seen: 'daemon log and the dropped-datagram counters',
  },
  OPEN_FAILED: {
    by: ['ProtocolError'],
    meaning: 'authentication of a sealed peer datagram failed',
    seen: 'daemon log and the dropped-datagram counters',
  },

  // Keys and configuration, at start-up and on reload.
  BAD_KEY_FILE: {
    by: ['KeyFileError'],
    meaning: 'the cluster key file cannot be read or parsed',
    seen: 'statecastd start-up or reload: stderr and log',
  },
  NO_KEY: {
    by: ['KeyError'],
    meaning: 'no cluster key file, or none given for a non-loopback interface',
    seen: 'statecastd start-up: stderr and log',
  },
  KEY_FILE_EXPOSED: {
    by: ['KeyError'],
    meaning: 'the key file is readable by group or others, or owned by another user',
    seen: 'statecastd start-up: stderr and log',
  },
  BAD_CONFIG: {
    by: ['ConfigError'],
    meaning: 'a config file, flag or environment variable is invalid',
    seen: 'statecastd start-up or reload: stderr and log',
  },

  // The store.
  TOO_LARGE: {
    by: ['StoreError', 'StatecastError'],
    meaning: 'a value, entry or tenant quota too large to store, or a request too large to send (status TOO_LARGE)',
    seen: `${CLIENT_SEES}; memcache SERVER_ERROR / E2BIG`,
  },
  BAD_TTL: {
    by: ['StoreError', 'StatecastError'],
    meaning: 'a TTL that is not a non-negative number of ms (status BAD_TTL)',
    seen: CLIENT_SEES,
  },

  // The cluster.
  DATAGRAM_TOO_LARGE: {
    by: ['LookupError'],
    meaning: 'the LOOKUP for this key would not fit in maxDatagramBytes',
    seen: 'client: status TOO_LARGE on a GET that misses locally',
  },
  OUTCOME_UNKNOWN: {
    by: ['DecisionError'],
    meaning:
      "a conditional write (add, cas, incr, ...) sent to the key's decider got no answer within the deadline, or the decider left or died, or no host could decide the key within the deadline (membership changing): it may or may not have been applied",
    seen: 'memcache: SERVER_ERROR outcome unknown (binary: status 0x84); daemon stats decisionsFailed',
  },
  TOO_LARGE_TO_FORWARD: {
    by: ['DecisionError'],
    meaning: "a conditional write whose value does not fit one datagram, on a host that is not the key's decider",
    seen: 'memcache: SERVER_ERROR value too large to forward to the decider',
  },

  // The Unix-socket listener.
  ADDRESS_IN_USE: {
    by: ['UnixListenerError'],
    meaning: 'another daemon answers on the socket path',
    seen: 'statecastd start-up: stderr and log',
  },
  NOT_A_SOCKET: {
    by: ['UnixListenerError'],
    meaning: 'the socket path exists and is not a socket',
    seen: 'statecastd start-up: stderr and log',
  },
  LISTEN_FAILED: {
    by: ['UnixListenerError'],
    meaning: 'the socket could not be bound or listened on',
    seen: 'statecastd start-up: stderr and log',
  },
  UNSAFE_DIRECTORY: {
    by: ['UnixListenerError'],
    meaning: "the socket's directory is writable by others or not ours",
    seen: 'statecastd start-up: stderr and log',
  },

  // TLS ticket-key delivery to consumers.
  UNSAFE_DIR: {
    by: ['TicketExportError'],
    meaning: "a consumer's ticket directory is a symlink, not absolute, or open to others",
    seen: '`statecast stats` tickets.consumers[].lastDelivery.code; daemon log',
  },
  NOT_TMPFS: {
    by: ['TicketExportError'],
    meaning: "a consumer's ticket directory is not on tmpfs",
    seen: '`statecast stats` tickets.consumers[].lastDelivery.code; daemon log',
  },
  DIR: {
    by: ['TicketExportError'],
    meaning: "a consumer's ticket directory cannot be prepared",
    seen: '`statecast stats` tickets.consumers[].lastDelivery.code; daemon log',
  },
  WRITE: {
    by: ['TicketExportError'],
    meaning: "a consumer's ticket key files cannot be written",
    seen: '`statecast stats` tickets.consumers[].lastDelivery.code; daemon log',
  },
  ADMIN_SOCKET: {
    by: ['TicketExportError'],
    meaning: "HAProxy's admin socket refused or failed the key update",
    seen: '`statecast stats` tickets.consumers[].lastDelivery.code; daemon log',
  },
  RELOAD: {
    by: ['TicketExportError'],
    meaning: "a consumer's reload command failed",
    seen: '`statecast stats` tickets.consumers[].lastDelivery.code; daemon log',
  },

  // The client library (client/): its own failures, then the daemon's error statuses it relays.
  TIMEOUT: {
    by: ['StatecastError', 'TicketExportError'],
    meaning: "the request's deadline passed before the reply came (or a consumer's admin socket did not answer in time)",
    seen: `${CLIENT_SEES}; ticket delivery: lastDelivery.code`,
  },
  ABORTED: { by: ['StatecastError'], meaning: "the caller's AbortSignal fired", seen: CLIENT_SEES },
  CLOSED: { by: ['StatecastError'], meaning: 'the client was closed before the request completed', seen: CLIENT_SEES },
  CONNECTION_LOST: {
    by: ['StatecastError'],
    meaning: 'the connection dropped with the request sent: it may or may not have applied',
    seen: CLIENT_SEES,
  },
  UNREACHABLE: { by: ['StatecastError'], meaning: 'no daemon accepts connections on the socket path', seen: CLIENT_SEES },
  QUEUE_FULL: { by: ['StatecastError'], meaning: 'too many requests waiting for a connection', seen: CLIENT_SEES },
  PROTOCOL: { by: ['StatecastError'], meaning: 'the daemon sent something this client cannot decode', seen: CLIENT_SEES },
  BAD_ARGUMENT: {
    by: ['StatecastError'],
    meaning: "the call's arguments are unusable (checked before anything is sent)",
    seen: CLIENT_SEES,
  },
  MALFORMED: { by: ['StatecastError'], meaning: 'status MALFORMED: the daemon could not decode the request', seen: CLIENT_SEES },
  BAD_KEY: { by: ['StatecastError'], meaning: 'status BAD_KEY: empty, too long or reserved key', seen: CLIENT_SEES },
  BUSY: { by: ['StatecastError'], meaning: 'status BUSY: the daemon sheds load', seen: CLIENT_SEES },
  INTERNAL: {
    by: ['StatecastError'],
    meaning: 'status INTERNAL: the daemon failed unexpectedly (also the code of an unclassified ticket-delivery failure)',
    seen: `${CLIENT_SEES}; ticket delivery: lastDelivery.code`,
  },
  SHUTTING_DOWN: { by: ['StatecastError'], meaning: 'status SHUTTING_DOWN: the daemon is stopping', seen: CLIENT_SEES },
  DENIED: { by: ['StatecastError'], meaning: 'status DENIED: this connection may not do that', seen: CLIENT_SEES },

  // The CLI.
  USAGE: { by: ['UsageError'], meaning: 'bad command line for `statecast`', seen: '`statecast`: stderr, exit status 2' },
} as const satisfies Record<string, ErrorRow>

/** Every code statecast throws. */
export type ErrorCode = keyof typeof ERRORS

/** The codes the class named `N` may carry. */
export type CodeOf<N extends ErrorClassName> = {
  [C in ErrorCode]: N extends (typeof ERRORS)[C]['by'][number] ? C : never
}[ErrorCode]

/** The base class: every error statecast throws on purpose is one, with a code from ERRORS. */
export class StatecastError<C extends ErrorCode = ErrorCode> extends Error {
  readonly code: C
  /** The daemon's status byte, for errors the daemon reported to a client. */
  readonly status: number | undefined
  constructor(code: C, message: string, status?: number) {
    super(message)
    this.name = 'StatecastError'
    this.code = code
    this.status = status
  }
}

/** True when `err` is a statecast error of one of `codes` (any class). */
export function hasCode<C extends ErrorCode>(err: unknown, ...codes: C[]): err is StatecastError<C> {
  return err instanceof StatecastError && (codes as ErrorCode[]).includes((err as StatecastError).code)
}

export type ProtocolErrorCode = CodeOf<'ProtocolError'>

/** The one error the codecs throw. A decoder given any bytes either returns a message or throws this; nothing else escapes. */
export class ProtocolError extends StatecastError<ProtocolErrorCode> {
  constructor(code: ProtocolErrorCode, message: string) {
    super(code, message)
    this.name = 'ProtocolError'
  }
}

/** Throws TRUNCATED unless `have` holds at least `need` bytes. */
export function needBytes(have: number, need: number, what: string): void {
  if (have < need) throw new ProtocolError('TRUNCATED', `${what}: need ${need} bytes, have ${have}`)
}
