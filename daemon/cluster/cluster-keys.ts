/**
 * Loading the cluster key file. The file must be readable by its owner only: a key that group or
 * others can read is refused, since anyone holding it can read every session in the cluster.
 */
import fs from 'node:fs'
import path from 'node:path'
import { StatecastError, type CodeOf } from '../../protocol/errors.js'
import { KeyFileError, formatKeyFile, newClusterKey, parseKeyFile, type ClusterKey } from '../../protocol/keyfile.js'

/** A key file that is missing or exposed; one that cannot be read or parsed is a KeyFileError. */
export class KeyError extends StatecastError<CodeOf<'KeyError'>> {
  constructor(code: CodeOf<'KeyError'>, message: string) {
    super(code, message)
    this.name = 'KeyError'
  }
}

export const HOW_TO_MAKE_A_KEY =
  'make one with `statecast keygen > /etc/statecast/cluster.key && chmod 600 /etc/statecast/cluster.key`, copy the same file to every host, and pass --key-file (or keyFile in the config)'

export function loadKeyFile(file: string): ClusterKey[] {
  let st: fs.Stats
  try {
    st = fs.statSync(file)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    if (e.code === 'ENOENT') throw new KeyError('NO_KEY', `key file ${file} does not exist; ${HOW_TO_MAKE_A_KEY}`)
    throw new KeyFileError(`cannot read key file ${file}: ${e.message}`)
  }
  if (st.mode & 0o077) {
    throw new KeyError(
      'KEY_FILE_EXPOSED',
      `key file ${file} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: group or others may read it; run chmod 600 ${file}`,
    )
  }
  // Its owner can read and replace it (issue 21 point 13): root or this daemon's user only.
  const me = typeof process.getuid === 'function' ? process.getuid() : -1
  if (me >= 0 && st.uid !== 0 && st.uid !== me) {
    throw new KeyError(
      'KEY_FILE_EXPOSED',
      `key file ${file} belongs to uid ${st.uid}, not to root or this daemon's user (uid ${me}), who may read and replace it; run chown root ${file}`,
    )
  }
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    throw new KeyFileError(`cannot read key file ${file}: ${(err as Error).message}`)
  }
  return parseKeyFile(text, file)
}

/**
 * For development runs on one machine only: the key at `file`, created (mode 0600) if missing,
 * so that several daemons started by the same user share it.
 */
export function devKey(file: string): { keys: ClusterKey[]; created: boolean } {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
  try {
    const fd = fs.openSync(file, 'wx', 0o600)
    fs.writeSync(
      fd,
      formatKeyFile(
        [newClusterKey(Math.floor(Date.now() / 1000))],
        'statecast DEVELOPMENT key, created by statecastd for loopback use only',
      ),
    )
    fs.closeSync(fd)
    return { keys: loadKeyFile(file), created: true }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    return { keys: loadKeyFile(file), created: false }
  }
}
