/**
 * Structured logging: one JSON object per line on stdout, for journald and log shippers.
 * Only daemon/ logs. Hot paths count instead of logging, and session data (keys' values, key
 * material) never reaches a log line.
 */
import { pino } from 'pino'

/** The subset of pino's logger the daemon uses, so tests can pass a recorder. */
export interface Log {
  error(obj: object, msg: string): void
  warn(obj: object, msg: string): void
  info(obj: object, msg: string): void
  debug(obj: object, msg: string): void
  child(bindings: object): Log
  /** The least severe level written (pino's setter); absent on loggers that cannot change it. */
  level?: string
}

export type LogLevel = 'error' | 'warn' | 'info' | 'debug'
export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug']

export function createLog(level: LogLevel = 'info', destination: number = 1): Log {
  return pino(
    {
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    // Synchronous writes: a line logged just before exit must not be lost.
    pino.destination({ dest: destination, sync: true }),
  )
}

/** A logger that drops everything (library use and unit tests). */
export const silentLog: Log = {
  error() {},
  warn() {},
  info() {},
  debug() {},
  child() {
    return silentLog
  },
}
