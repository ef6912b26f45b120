/**
 * The one error the codecs throw. Callers branch on `code`, never on the message.
 * A decoder given any bytes either returns a message or throws this; nothing else escapes.
 */
export type ProtocolErrorCode =
  | 'TRUNCATED' // fewer bytes than the layout or a length field requires
  | 'TRAILING' // more bytes than the layout accounts for
  | 'FRAME_TOO_LARGE' // a length prefix above the configured bound
  | 'UNKNOWN_OP' // an operation or message type not in the table
  | 'BAD_FIELD' // a field outside its allowed range (empty key, bad flag, ...)
  | 'BAD_MAGIC' // a peer datagram that is not ours
  | 'BAD_VERSION' // a peer datagram of a protocol version we do not speak
  | 'UNKNOWN_KEY' // sealed with a key id we do not hold
  | 'OPEN_FAILED' // authentication of a sealed datagram failed

export class ProtocolError extends Error {
  readonly code: ProtocolErrorCode
  constructor(code: ProtocolErrorCode, message: string) {
    super(message)
    this.name = 'ProtocolError'
    this.code = code
  }
}

/** Throws TRUNCATED unless `have` holds at least `need` bytes. */
export function needBytes(have: number, need: number, what: string): void {
  if (have < need) throw new ProtocolError('TRUNCATED', `${what}: need ${need} bytes, have ${have}`)
}
