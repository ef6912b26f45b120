/**
 * What the protocol handlers (text.ts, binary-commands.ts, meta-commands.ts) ask of a
 * connection: answers queued in order, data blocks to read, bytes to discard, a hangup.
 * connection.ts implements it; the handlers never touch the socket.
 */
import type { StoreError } from '../../store/session-store.js'
import type { DecisionError } from '../session-ops.js'
import type { BinLimits } from './binary.js'
import type { CommandCounters, Fetch, MemcacheCommands } from './commands.js'

/** What the connections and protocol handlers need of the front end (server.ts implements it). */
export interface FrontEnd {
  readonly counters: CommandCounters & {
    commands: number
    binaryCommands: number
    metaCommands: number
    unknownCommands: number
    bytesRead: number
    bytesWritten: number
    paused: number
    readingPaused: number
    waitingForClient: number
    commandTimeouts: number
  }
  readonly commands: MemcacheCommands
  /** The VERSION reply. */
  readonly version: string
  readonly maxKeyBytes: number
  /** Keys starting with the tenant marker are refused (a daemon with tenants: they would name another tenant's). */
  readonly refuseMarker: boolean
  readonly maxValueBytes: number
  readonly flushAllowed: boolean
  readonly commandTimeoutMs: number
  readonly binaryLimits: BinLimits
  /** mg's win and stale flags, per key and version (meta-commands.ts). */
  readonly metaState: Map<string, { version: bigint; stale: boolean; won: boolean }>
  stats(sub: string): [string, number | string][] | 'reset' | undefined
  /** Memory budget (connection.ts): whether a connection must stop, a holding changed, a connection is gone. */
  squeezes(reported: number, held: number, conn: Wakeable): boolean
  account(delta: number): void
  forget(conn: Wakeable): void
}

/**
 * A reply: text (latin1), bytes, or bytes of which `secret` is a copy of a session value (wiped
 * once the socket has written it); undefined for none (noreply, a quiet command's success).
 */
export type Reply = string | Buffer | { parts: Buffer[]; secret?: Buffer } | undefined

/** A store error (or, undefined, a bug) as this protocol words it. */
export type Fail = (err: StoreError | DecisionError | undefined) => Reply

export interface Sink {
  readonly fe: FrontEnd
  /**
   * A command's reply, made when its turn comes. `noreply` drops it; `close` hangs up after it;
   * `ahead`: a plain write (set, delete, touch) that may start while an earlier plain write waits
   * for its copies (replies stay in order).
   */
  enqueue(run: () => Reply | Promise<Reply>, noreply?: boolean, cost?: number, close?: boolean, fail?: Fail, ahead?: boolean): void
  reply(text: string, noreply?: boolean): void
  /** An error reply, counted. */
  error(text: string, noreply?: boolean): void
  /** A text get/gets/gat/gats line, answered key by key as the client takes it. */
  getLine(line: string, pos: number, withCas: boolean, touch?: number): void
  /**
   * The next `bytes` bytes and a CRLF are a data block: `run` gets a copy (wiped once it is
   * done); a block not ended by CRLF is answered `CLIENT_ERROR bad data chunk`.
   */
  expectData(bytes: number, noreply: boolean, run: (data: Buffer) => Reply | Promise<Reply>, ahead?: boolean): void
  /** The next `bytes` bytes of input are discarded (a refused value). */
  swallow(bytes: number): void
  /** Answers what came before, then hangs up; nothing more is read. */
  quit(): void
  /** Answers what came before, says `reply`, and hangs up (a fatal protocol error), counted. */
  fatal(reply: Reply): void
  /** A read of `key` started now, within this connection's share of remote lookups (else at its turn). */
  prefetch(key: string): Fetch
  /** Gives back a prefetch's share once its value is taken. */
  taken(f: Fetch): void
}

/** A connection stopped for the front end's memory budget, woken when it is under it again. */
export interface Wakeable {
  wake(): void
}
