/**
 * The peer wire between daemons, in four parts:
 *   constants.ts  message types, field sizes and limits (each defined once)
 *   messages.ts   one record per message type: its payload's length, write and read, and the table
 *   body.ts       plaintext bodies: one message or a BATCH
 *   envelope.ts   the sealed datagram: clear header, AES-256-GCM, the keyring
 * Each file opens with the diagram of its layout.
 */
export * from './constants.js'
export { type Address } from './address.js'
export {
  type Codec,
  type Message,
  type MessageOf,
  type PayloadType,
  ACKS_OVERHEAD_BYTES,
  CODECS,
  HIT_OVERHEAD_BYTES,
  REPLICATE_OVERHEAD_BYTES,
  acksPerDatagram,
  hitChunkBytes,
  maxChunkCount,
  replicateChunkBytes,
} from './messages.js'
export * from './body.js'
export * from './envelope.js'
