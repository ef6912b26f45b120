/**
 * The numbers of the peer wire that more than one part of the codec (or of the daemon) needs:
 * message types, sizes of the fixed fields, limits. Each is defined here once.
 *
 * The numbers are the protocol: append only, never renumber.
 */
import { namer } from '../tables.js'

export const MAGIC = 0x53544353 // "STCS"
/** Version 2: the receiver id in the header; the nonce in LOOKUP, nonce and key digest in HIT and MISS. */
export const VERSION = 2

/** Sizes of the integer fields. */
export const U8 = 1
export const U16 = 2
export const U32 = 4
export const U64 = 8

/** Bytes of a sender or receiver id (random per daemon start). */
export const SENDER_ID_BYTES = 8
/** Bytes of a lookup's nonce, echoed by its HIT and MISS replies. */
export const NONCE_BYTES = 8
/** Bytes of the key digest a HIT or MISS carries (a SHA-256 prefix of the key). */
export const KEY_DIGEST_BYTES = 16
/** Bytes of a session version (u64) in HIT, REPLICATE, INVALIDATE and DELETE. */
export const VERSION_BYTES = U64
/** Largest session version: a u64 (daemon/store/versions.ts makes them). */
export const VERSION_MAX = 2n ** 64n - 1n
/** Bytes of a TLS session ticket secret (Node's setTicketKeys): on the peer wire and the local one. */
export const TICKET_SECRET_BYTES = 48
/** Bytes of an X25519 public key (TICKET_PUB, TICKET_SEAL). */
export const X25519_PUBLIC_BYTES = 32
/** Bytes of a TICKET_SEAL's AES-GCM nonce and tag. */
export const TICKET_SEAL_NONCE_BYTES = 12
export const TICKET_SEAL_TAG_BYTES = 16
/** Most epochs a TICKET_PUB lists (previous, current, next and the one after). */
export const MAX_TICKET_HELD = 4

/** Bytes of the clear header and of the AES-GCM tag that ends a datagram. */
export const HEADER_BYTES = 34
export const TAG_BYTES = 16
/** Bytes of a body before its payload: type u8 and sentAtMs u64. */
export const BODY_HEAD_BYTES = U8 + U64
/** Bytes a datagram spends on everything but its payload: clear header, tag, type and time. */
export const ENVELOPE_BYTES = HEADER_BYTES + TAG_BYTES + BODY_HEAD_BYTES
/** The smallest maxDatagramBytes a daemon may run with. */
export const MIN_DATAGRAM_BYTES = 256
/** The most replIds one ACKS carries (its count is a u16). */
export const MAX_ACKS = 0xffff
/** The most messages one BATCH carries (its count is a u8). */
export const MAX_BATCH_COUNT = 255
/** Largest datagram counter: counters stay exact as numbers (a sender would need 2^53 datagrams). */
export const MAX_COUNTER = 2 ** 53 - 1

export const MsgType = {
  LOOKUP: 1,
  HIT: 2,
  MISS: 3,
  INVALIDATE: 4,
  ANNOUNCE: 5,
  LEAVE: 6,
  TICKET_KEY: 7,
  REPLICATE: 8,
  ACK: 9,
  DELETE: 10,
  BATCH: 11,
  ACKS: 12,
  DECIDE: 13,
  DECIDED: 14,
  REPLICATE_AWAITED: 15,
  DELETE_AWAITED: 16,
  TICKET_PUB: 20,
  TICKET_SEAL: 21,
} as const
export type MsgTypeCode = (typeof MsgType)[keyof typeof MsgType]
export const typeName = namer(MsgType, 'type')

/** Types that may be sent to the group (receiver NO_RECEIVER); every other type names its receiver. */
export const GROUP_TYPES: ReadonlySet<number> = new Set<number>([
  MsgType.LOOKUP,
  MsgType.INVALIDATE,
  MsgType.ANNOUNCE,
  MsgType.LEAVE,
  MsgType.TICKET_KEY,
  MsgType.TICKET_PUB,
])

export const AnnounceFlag = {
  /** The sender just started: members who hear it announce themselves back at once. */
  HELLO: 0x01,
  /** The sender speaks both IP families: its reply address on the other one follows the name. */
  DUAL_STACK: 0x02,
  /**
   * The sender lost every trusted member to silence and has trusted none since (or did so within
   * the last SETTLE_HEARTBEATS heartbeats): a host that hears it after a partition knows the sender
   * was alone too, not one of a side that went on without it (membership.ts). Daemons that do not
   * know the flag ignore it.
   */
  ISOLATED: 0x04,
} as const

/** What a DECIDED says the decider wrote (its `wrote` field when the outcome is not 0). */
export const DecidedWrote = {
  NOTHING: 0,
  /** Stored; the value follows. */
  SET: 1,
  /** An already-expired write: the key was deleted. */
  DELETE: 2,
  /** Stored, but the value is too large for one datagram: the asker drops its own copy instead. */
  SET_OMITTED: 3,
} as const
/** Why a decider refused a DECIDE (outcome 0; its `wrote` field). */
export const DecideRefusal = {
  /** The receiver is not the key's decider under its own view. */
  NOT_DECIDER: 1,
  /** The store refused the value (StoreError TOO_LARGE). */
  TOO_LARGE: 2,
  /** The store refused the TTL (StoreError BAD_TTL). */
  BAD_TTL: 3,
  /**
   * Applied at the decider, but no other host acknowledged its copy in time: a later decider may
   * not see it, so the asker answers "outcome unknown" (DecisionError OUTCOME_UNKNOWN).
   */
  OUTCOME_UNKNOWN: 4,
} as const
