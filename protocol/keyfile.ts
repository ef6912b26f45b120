/**
 * The cluster key file: one key per line, `ID CREATED KEY`, where ID is 8 hex digits (a u32 that
 * travels in every datagram's clear header), CREATED is when the key comes into force (Unix
 * seconds) and KEY is 32 random bytes in base64. Blank lines and `#` comments are ignored.
 *
 * Every key in the file opens datagrams; the newest key already in force seals. A key whose
 * CREATED lies in the future opens but does not seal yet, which is how keys rotate without
 * downtime: generate one that comes into force later (`statecast keygen --activate-in 600`),
 * append it on every host and reload; when its time comes every host seals with it, and the old
 * line can be removed once no host seals with it any more.
 */
import { randomBytes } from 'node:crypto'
import { StatecastError } from './errors.js'

export const KEY_BYTES = 32

export interface ClusterKey {
  id: number
  /** When the key comes into force, Unix seconds. */
  createdAt: number
  key: Buffer
}

/**
 * A fresh cluster key that comes into force at `createdAt` (Unix seconds): a random id and
 * KEY_BYTES random bytes. The one place keys are made (`statecast keygen`, the development key,
 * tests and the demo).
 */
export function newClusterKey(createdAt: number): ClusterKey {
  return { id: randomBytes(4).readUInt32BE(0), createdAt, key: randomBytes(KEY_BYTES) }
}

/** A key file that cannot be read or parsed: the only class that carries BAD_KEY_FILE. */
export class KeyFileError extends StatecastError<'BAD_KEY_FILE'> {
  constructor(message: string) {
    super('BAD_KEY_FILE', message)
    this.name = 'KeyFileError'
  }
}

const LINE = /^([0-9a-fA-F]{8})\s+(\d{1,12})\s+([A-Za-z0-9+/]{43}=)$/

export function parseKeyFile(text: string, where = 'key file'): ClusterKey[] {
  const keys: ClusterKey[] = []
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim()
    if (line === '' || line.startsWith('#')) continue
    const m = LINE.exec(line)
    if (!m) throw new KeyFileError(`${where}:${i + 1}: expected "ID CREATED KEY" (8 hex digits, Unix seconds, 32 bytes in base64)`)
    const id = parseInt(m[1]!, 16)
    if (keys.some((k) => k.id === id)) throw new KeyFileError(`${where}:${i + 1}: key id ${m[1]} appears twice`)
    keys.push({ id, createdAt: Number(m[2]), key: Buffer.from(m[3]!, 'base64') })
  }
  if (keys.length === 0) throw new KeyFileError(`${where}: holds no key; make one with: statecast keygen`)
  return keys
}

export function formatKey(k: ClusterKey): string {
  return `${k.id.toString(16).padStart(8, '0')} ${k.createdAt} ${k.key.toString('base64')}`
}

export function formatKeyFile(
  keys: ClusterKey[],
  comment = 'statecast cluster key file: ID CREATED(unix s) KEY(base64). Keep it secret (mode 0600).',
): string {
  return `# ${comment}\n${keys.map(formatKey).join('\n')}\n`
}

/** The key that seals at `nowSec`: the newest already in force (or, if none is, the earliest). */
export function sealingKey(keys: readonly ClusterKey[], nowSec: number): ClusterKey {
  let best: ClusterKey | undefined
  for (const k of keys) if (k.createdAt <= nowSec && (!best || k.createdAt > best.createdAt)) best = k
  if (best) return best
  return keys.reduce((a, b) => (b.createdAt < a.createdAt ? b : a))
}
