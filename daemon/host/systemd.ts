/**
 * The daemon's side of systemd: socket activation (LISTEN_FDS) and service notification
 * (READY, STATUS, STOPPING, RELOADING, WATCHDOG). Both are no-ops outside systemd.
 *
 * Node cannot send on a Unix datagram socket, so notifications go through `systemd-notify`
 * with `--pid` set to this process; the unit therefore has `NotifyAccess=all`.
 */
import { execFile } from 'node:child_process'

/** The first fd systemd passes (SD_LISTEN_FDS_START). */
const FIRST_FD = 3

/**
 * Listening fds handed over by systemd, by name (FileDescriptorName=, default "unknown").
 * Only when LISTEN_PID is this process, as sd_listen_fds(3) requires.
 */
export function listenFds(env: NodeJS.ProcessEnv = process.env, pid = process.pid): Map<string, number> {
  const out = new Map<string, number>()
  if (Number(env['LISTEN_PID']) !== pid) return out
  const n = Number(env['LISTEN_FDS'] ?? 0)
  const names = (env['LISTEN_FDNAMES'] ?? '').split(':')
  for (let i = 0; i < n; i++) out.set(names[i] || (i === 0 ? 'api' : `fd${i}`), FIRST_FD + i)
  return out
}

export class Notifier {
  readonly enabled: boolean
  #watchdog: NodeJS.Timeout | undefined
  #env: NodeJS.ProcessEnv

  constructor(env: NodeJS.ProcessEnv = process.env) {
    this.#env = env
    this.enabled = Boolean(env['NOTIFY_SOCKET'])
  }

  /** Sends `VAR=value` assignments; resolves when sent (or failed: logged by the caller). */
  send(...assignments: string[]): Promise<void> {
    if (!this.enabled) return Promise.resolve()
    return new Promise((resolve, reject) => {
      execFile('systemd-notify', [`--pid=${process.pid}`, ...assignments], { env: this.#env, timeout: 5000 }, (err) =>
        // err is an Error at run time; @types/node types it through Omit<>, which the rule cannot see as one.
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
        err ? reject(err) : resolve(),
      )
    })
  }

  ready(status: string): Promise<void> {
    return this.send('READY=1', `STATUS=${status}`, `MAINPID=${process.pid}`)
  }

  status(status: string): Promise<void> {
    return this.send(`STATUS=${status}`)
  }

  stopping(): Promise<void> {
    this.stopWatchdog()
    return this.send('STOPPING=1', 'STATUS=stopping')
  }

  /**
   * Pings the watchdog at half its interval (WATCHDOG_USEC) while `healthy()` says so, so a hung
   * event loop gets the service restarted.
   */
  startWatchdog(healthy: () => boolean, onError: (err: Error) => void): void {
    const usec = Number(this.#env['WATCHDOG_USEC'] ?? 0)
    const wpid = this.#env['WATCHDOG_PID']
    if (!this.enabled || usec <= 0 || (wpid && Number(wpid) !== process.pid)) return
    this.#watchdog = setInterval(
      () => {
        if (healthy()) this.send('WATCHDOG=1').catch(onError)
      },
      Math.max(100, usec / 2000),
    )
    this.#watchdog.unref()
  }

  stopWatchdog(): void {
    clearInterval(this.#watchdog)
  }
}
