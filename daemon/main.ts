#!/usr/bin/env node
/**
 * statecastd: the per-host session-state daemon.
 *
 * Exit codes: 0 clean shutdown, 1 failed at run time, 2 bad flags or config.
 */
import { parseArgs } from 'node:util'
import { ConfigError, FIELDS, apply, checkStartable, defaults, exampleToml, loadFile, type Config } from './config/config.js'
import { Daemon, VERSION } from './daemon.js'
import { createLog } from './host/log.js'
import { Notifier, listenFds } from './host/systemd.js'
import { Reloads } from './host/reloads.js'
import { disableCoreDumps } from './host/core-dumps.js'
import { loadKeyFile } from './cluster/cluster-keys.js'

const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())

/** Short spellings for the flags people type most. */
const ALIASES: Record<string, keyof Config> = {
  socket: 'socketPath',
  'admin-socket': 'adminSocketPath',
}

function usage(): string {
  const lines = [
    'Usage: statecastd [--config FILE] [--socket PATH] [--FLAG VALUE ...]',
    '       statecastd --check-config FILE [--FLAG VALUE ...]',
    '',
    'Runs the statecast session-state daemon in the foreground. With no flags it runs with built-in',
    'defaults on this machine. Flags override the config file, which overrides the defaults.',
    '',
    '  --config FILE          TOML config file',
    '  --check-config FILE    validate FILE (with any flags given, and the key file named) as start-up would; exit 0 valid, 2 invalid',
    '  --example-config       print an example config with every key, its unit and default',
    '  --socket PATH          same as --socket-path',
    '  --admin-socket PATH    same as --admin-socket-path',
    '  --version, --help',
    '',
    'Every config key is also a flag:',
  ]
  const d = defaults()
  for (const f of FIELDS) {
    const def = f.kind === 'mode' ? '0' + d[f.key].toString(8) : String(d[f.key])
    lines.push(`  --${kebab(f.key).padEnd(20)} ${f.doc} [${f.unit}; default ${def}]`)
  }
  return lines.join('\n')
}

function parse(argv: string[]) {
  const options: Record<string, { type: 'string' | 'boolean' }> = {
    config: { type: 'string' },
    'check-config': { type: 'string' },
    help: { type: 'boolean' },
    version: { type: 'boolean' },
    'example-config': { type: 'boolean' },
  }
  for (const a of Object.keys(ALIASES)) options[a] = { type: 'string' }
  for (const f of FIELDS) options[kebab(f.key)] = { type: 'string' }
  const { values } = parseArgs({ args: argv, options, allowPositionals: false, strict: true })
  const flags: Record<string, unknown> = {}
  for (const f of FIELDS) flags[f.key] = values[kebab(f.key)]
  for (const [a, key] of Object.entries(ALIASES)) if (values[a] !== undefined) flags[key] = values[a]
  return { values, flags }
}

async function main(): Promise<number> {
  let parsed: ReturnType<typeof parse>
  try {
    parsed = parse(process.argv.slice(2))
  } catch (err) {
    process.stderr.write(`statecastd: ${(err as Error).message}\n\n${usage()}\n`)
    return 2
  }
  const { values, flags } = parsed
  if (values['help']) {
    process.stdout.write(usage() + '\n')
    return 0
  }
  if (values['example-config']) {
    process.stdout.write(exampleToml())
    return 0
  }
  if (values['version']) {
    process.stdout.write(`statecastd ${VERSION}\n`)
    return 0
  }
  let config: Config
  try {
    const check = values['check-config'] as string | undefined
    if (check !== undefined) {
      // Flags given alongside count, as they would at start-up (the systemd unit passes --key-file).
      const c = apply(loadFile(check), flags, 'command line')
      checkStartable(c, check)
      // Start-up reads the key file too; a file it would refuse is not a valid config.
      if (c.clusterEnabled && c.keyFile) {
        try {
          loadKeyFile(c.keyFile)
        } catch (err) {
          throw new ConfigError(`${check}: keyFile: ${(err as Error).message}`)
        }
      }
      process.stdout.write(`${check}: valid\n`)
      return 0
    }
    const file = values['config'] as string | undefined
    config = apply(file ? loadFile(file) : defaults(), flags, 'command line')
    checkStartable(config, file ?? 'command line')
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`statecastd: ${err.message}\n`)
      return 2
    }
    throw err
  }

  const log = createLog(config.logLevel)
  // Before any secret is loaded (the key file is read in daemon.start).
  const core = disableCoreDumps()
  if (core.state === 'turned-off') log.info({ before: core.before }, 'core dumps disabled (RLIMIT_CORE lowered to 0)')
  else if (core.state === 'still-on')
    log.warn(
      { before: core.before, after: core.after, why: core.why },
      'core dumps could not be disabled: a crash may write the cluster key and sessions to disk; run under `ulimit -c 0` or LimitCORE=0',
    )
  else if (core.state === 'unknown') log.warn({ why: core.why }, 'cannot tell whether core dumps are disabled')
  const fds = listenFds()
  const daemon = new Daemon(config, { log, listenFds: { api: fds.get('api'), admin: fds.get('admin') } })
  const notify = new Notifier()
  const notifyFailed = (err: Error) => log.warn({ err: err.message }, 'systemd notification failed')
  process.on('uncaughtException', (err) => {
    log.error({ err: err.stack ?? String(err) }, 'uncaught exception; exiting')
    process.exit(70)
  })
  // Signals are taken from the first moment: Node's default for SIGHUP, SIGTERM and SIGINT ends
  // the process, and a reload sent as soon as "ready" is logged (systemd's ExecReload right after
  // start, a test) would kill a daemon that installed its handlers only after start-up. What comes
  // during start-up is kept and acted on once the daemon runs.
  let reloadEarly = false
  let stopEarly: NodeJS.Signals | undefined
  let onHup: () => void = () => {
    reloadEarly = true
  }
  let onStop: (signal: NodeJS.Signals) => void = (signal) => {
    stopEarly ??= signal
  }
  process.on('SIGHUP', () => onHup())
  process.on('SIGTERM', (signal) => onStop(signal))
  process.on('SIGINT', (signal) => onStop(signal))
  try {
    await daemon.start()
  } catch (err) {
    const e = err as Error & { code?: string }
    log.error({ code: e.code, err: e.message }, 'start-up failed')
    process.stderr.write(`statecastd: ${e.message}\n`)
    await notify.send(`STATUS=start-up failed: ${e.message}`).catch(() => {})
    return 1
  }
  const status = () => {
    const s = daemon.stats() as { store: { entries: number; hits: number; misses: number }; cluster: { members: number } | null }
    const looked = s.store.hits + s.store.misses
    return `${s.store.entries} sessions, ${s.cluster ? `${s.cluster.members} peers` : 'no cluster'}, local hit rate ${looked ? ((100 * s.store.hits) / looked).toFixed(1) : '0.0'}%`
  }
  await notify.ready(status()).catch(notifyFailed)
  // The watchdog is fed from the event loop, so a loop that hangs stops feeding it.
  notify.startWatchdog(() => true, notifyFailed)
  const statusTimer = notify.enabled ? setInterval(() => void notify.status(status()).catch(notifyFailed), 10_000) : undefined
  statusTimer?.unref()

  const reloads = new Reloads(async () => {
    await notify.send('RELOADING=1').catch(notifyFailed)
    try {
      const file = values['config'] as string | undefined
      // Read once, whole, and validated before anything is applied (readConfigFile, config.ts):
      // an empty or half-written file is refused and the running configuration kept.
      const next = apply(file ? loadFile(file) : defaults(), flags, 'command line')
      checkStartable(next, file ?? 'command line')
      const { applied, needsRestart } = await daemon.reload(next)
      log.info({ applied, needsRestart }, 'configuration reloaded')
      if (needsRestart.length) log.warn({ keys: needsRestart }, 'these changes take effect only after a restart')
    } catch (err) {
      log.error({ err: (err as Error).message }, 'reload failed; the running configuration is unchanged')
    } finally {
      await notify.send('READY=1', `STATUS=${status()}`).catch(notifyFailed)
    }
  })
  // A SIGHUP during a reload makes one more reload after it (Reloads): none is lost.
  onHup = () => reloads.request()
  if (reloadEarly) onHup()

  return new Promise<number>((resolve) => {
    let stopping = false
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        log.warn({ signal }, 'second signal during shutdown; exiting now')
        resolve(1)
        return
      }
      stopping = true
      clearInterval(statusTimer)
      log.info({ signal }, 'shutdown requested')
      void notify.stopping().catch(notifyFailed)
      daemon.stop().then(
        () => resolve(0),
        (err: unknown) => {
          log.error({ err: String(err) }, 'shutdown failed')
          resolve(1)
        },
      )
    }
    onStop = onSignal
    if (stopEarly) onSignal(stopEarly)
  })
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`statecastd: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  },
)
