/**
 * Real TLS servers from Debian's packages (nginx, HAProxy, Apache httpd, h2o), each started in
 * the foreground or with its own pid file, on its own loopback address and port, with a config of
 * its own that takes its session ticket keys from a directory statecastd writes. Stopped at
 * teardown, also on failure.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { APACHE_MODULES } from './apache.js'
import { newKey, uniqueGroup, writeKeyFile } from './cluster.js'
import { makeCert } from './tls.js'

export type ServerKind = 'nginx' | 'haproxy' | 'apache' | 'h2o'

export interface TlsServer {
  kind: ServerKind
  host: string
  port: number
  /** The directory the server reads its ticket keys from (the consumer's dir). */
  keyDir: string
  /** The consumer table statecastd needs to feed this server. */
  consumer: Record<string, unknown>
  /** The server's main process id now. */
  pid(): number
  /** The server's own log (error log), for the key-material grep. */
  logText(): string
  stop(): Promise<void>
}

interface Teardown {
  teardown(fn: () => unknown): void
}

export function have(kind: ServerKind): boolean {
  const bin = { nginx: '/usr/sbin/nginx', haproxy: '/usr/sbin/haproxy', apache: '/usr/sbin/apache2', h2o: '/usr/bin/h2o' }[kind]
  return fs.existsSync(bin) && (kind !== 'apache' || fs.existsSync(path.join(APACHE_MODULES, 'mod_ssl.so')))
}

async function accepting(host: string, port: number, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, host, () => (s.destroy(), resolve(true)))
      s.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`nothing accepts on ${host}:${port} within ${ms} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

function waitExit(p: ChildProcess): Promise<void> {
  return p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((r) => p.once('close', () => r()))
}

/** Where a server's config lives, and what statecastd needs to tell it of new keys. */
export function serverConsumer(kind: ServerKind, o: { dir: string; name: string; keyDir: string }): Record<string, unknown> {
  const root = path.join(o.dir, o.name)
  switch (kind) {
    case 'nginx': {
      const conf = path.join(root, 'nginx.conf')
      return { reloadCommand: ['nginx', '-p', root, '-c', conf, '-e', path.join(root, 'error.log'), '-s', 'reload'] }
    }
    case 'haproxy':
      return { adminSocket: path.join(root, 'admin.sock') }
    case 'apache':
      // A graceful restart by signal: `apache2 -k graceful` would start an Apache that is not running.
      return { reloadCommand: ['pkill', '--signal', 'USR1', '--pidfile', path.join(root, 'httpd.pid')] }
    case 'h2o':
      return { group: 'nogroup' }
  }
}

/** A memcached (or statecastd's memcache front end) that h2o keeps its session-ID cache in. */
export interface SessionCacheStore {
  host: string
  port: number
}

/**
 * Starts one server. `dir` holds cert.pem and key.pem; the server gets `dir/<name>/` for its
 * config and logs and reads its keys from `keyDir` (which must already hold them).
 * `sessionCache` (h2o only): resume by h2o's own session-ID cache in that store, over the ASCII
 * protocol, with tickets off, instead of by the ticket file (`keyDir` is then not read).
 */
export async function startServer(
  t: Teardown,
  kind: ServerKind,
  o: { dir: string; name: string; host: string; port: number; keyDir: string; sessionCache?: SessionCacheStore },
): Promise<TlsServer> {
  if (o.sessionCache && kind !== 'h2o') throw new Error(`sessionCache is for h2o only, not ${kind}`)
  const root = path.join(o.dir, o.name)
  fs.mkdirSync(root, { recursive: true, mode: 0o755 })
  const cert = path.join(o.dir, 'cert.pem')
  const key = path.join(o.dir, 'key.pem')
  const log = path.join(root, 'error.log')
  fs.writeFileSync(log, '')
  let proc: ChildProcess | undefined
  let pid = () => proc!.pid!
  let stop: () => Promise<void>
  const consumer = serverConsumer(kind, o)
  const spawnFg = (cmd: string, args: string[]) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', fs.openSync(path.join(root, 'stderr.log'), 'a')] })
    stop = async () => {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM')
      await waitExit(p)
    }
    return p
  }
  switch (kind) {
    case 'nginx': {
      const conf = path.join(root, 'nginx.conf')
      fs.writeFileSync(
        conf,
        [
          'daemon off;',
          'worker_processes 1;',
          `pid ${root}/nginx.pid;`,
          `error_log ${log} info;`,
          'events { worker_connections 64; }',
          'http {',
          '  access_log off;',
          ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((x) => `  ${x}_temp_path ${root}/${x};`),
          '  server {',
          `    listen ${o.host}:${o.port} ssl;`,
          `    ssl_certificate ${cert};`,
          `    ssl_certificate_key ${key};`,
          '    ssl_protocols TLSv1.2 TLSv1.3;',
          // No session-id cache: whatever resumes here resumes by ticket.
          '    ssl_session_cache off;',
          '    ssl_session_tickets on;',
          `    include ${o.keyDir}/keys.conf;`,
          '    location / { return 200 "ok\\n"; }',
          '  }',
          '}',
          '',
        ].join('\n'),
      )
      proc = spawnFg('nginx', ['-p', root, '-c', conf, '-e', log])
      break
    }
    case 'haproxy': {
      const conf = path.join(root, 'haproxy.cfg')
      const pem = path.join(root, 'site.pem')
      fs.writeFileSync(pem, Buffer.concat([fs.readFileSync(cert), fs.readFileSync(key)]), { mode: 0o600 })
      const sock = path.join(root, 'admin.sock')
      fs.writeFileSync(
        conf,
        [
          'global',
          `  stats socket ${sock} mode 600 level admin`,
          `  log stdout format raw local0 info`,
          'defaults',
          '  mode http',
          '  log global',
          '  timeout connect 5s',
          '  timeout client 10s',
          '  timeout server 10s',
          'frontend fe',
          `  bind ${o.host}:${o.port} ssl crt ${pem} tls-ticket-keys ${o.keyDir}/tls-ticket-keys`,
          '  http-request return status 200 content-type text/plain string ok',
          '',
        ].join('\n'),
      )
      const p = spawn('haproxy', ['-db', '-f', conf], { stdio: ['ignore', fs.openSync(log, 'a'), fs.openSync(log, 'a')] })
      proc = p
      stop = async () => {
        if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM')
        await waitExit(p)
      }
      break
    }
    case 'apache': {
      const conf = path.join(root, 'httpd.conf')
      fs.writeFileSync(
        conf,
        [
          `ServerRoot "${root}"`,
          `PidFile ${root}/httpd.pid`,
          `DefaultRuntimeDir ${root}`,
          `ErrorLog ${log}`,
          'LogLevel info ssl:info',
          `Listen ${o.host}:${o.port}`,
          `LoadModule mpm_event_module ${APACHE_MODULES}/mod_mpm_event.so`,
          `LoadModule authz_core_module ${APACHE_MODULES}/mod_authz_core.so`,
          `LoadModule ssl_module ${APACHE_MODULES}/mod_ssl.so`,
          'User www-data',
          'Group www-data',
          'ServerName localhost',
          `DocumentRoot ${root}`,
          'StartServers 1',
          'ServerLimit 1',
          'ThreadsPerChild 8',
          'MaxRequestWorkers 8',
          'MinSpareThreads 1',
          'MaxSpareThreads 8',
          // No session-id cache: whatever resumes here resumes by ticket.
          'SSLSessionCache none',
          'SSLSessionTickets on',
          `SSLSessionTicketKeyFile ${o.keyDir}/ticket.key`,
          `<VirtualHost ${o.host}:${o.port}>`,
          '  ServerName localhost',
          '  SSLEngine on',
          `  SSLCertificateFile ${cert}`,
          `  SSLCertificateKeyFile ${key}`,
          '</VirtualHost>',
          '',
        ].join('\n'),
      )
      const env = { ...process.env, APACHE_RUN_DIR: root }
      execFileSync('apache2', ['-f', conf, '-k', 'start'], { env, stdio: 'ignore' })
      const pidFile = path.join(root, 'httpd.pid')
      pid = () => Number(fs.readFileSync(pidFile, 'utf8').trim())
      stop = async () => {
        let p = 0
        try {
          p = pid()
          execFileSync('apache2', ['-f', conf, '-k', 'stop'], { env, stdio: 'ignore' })
        } catch {
          /* already gone */
        }
        // Wait for the parent to be gone so its port and files are free.
        for (let i = 0; p && i < 200 && fs.existsSync(`/proc/${p}`); i++) await new Promise((r) => setTimeout(r, 25))
      }
      t.teardown(() => stop())
      break
    }
    case 'h2o': {
      const conf = path.join(root, 'h2o.conf')
      fs.mkdirSync(path.join(root, 'www'), { mode: 0o755 })
      fs.writeFileSync(path.join(root, 'www', 'index.html'), 'ok\n')
      fs.writeFileSync(
        conf,
        [
          // h2o started by root drops to this user; the ticket file is readable by its group.
          'user: nobody',
          `error-log: ${log}`,
          'listen:',
          `  host: ${o.host}`,
          `  port: ${o.port}`,
          '  ssl:',
          `    certificate-file: ${cert}`,
          `    key-file: ${key}`,
          '    minimum-version: TLSv1.2',
          '    ocsp-update-interval: 0',
          'ssl-session-resumption:',
          // mode cache turns tickets off (SSL_OP_NO_TICKET), so only the cache can resume.
          ...(o.sessionCache
            ? [
                '  mode: cache',
                '  cache-store: memcached',
                '  memcached:',
                `    host: ${o.sessionCache.host}`,
                `    port: ${o.sessionCache.port}`,
                '    protocol: ASCII',
              ]
            : ['  mode: ticket', '  ticket-store: file', `  ticket-file: ${o.keyDir}/tickets.yaml`]),
          'hosts:',
          '  default:',
          '    paths:',
          '      /:',
          `        file.dir: ${root}/www`,
          '',
        ].join('\n'),
      )
      proc = spawnFg('h2o', ['-c', conf])
      break
    }
  }
  if (proc) {
    const p = proc
    // SIGTERM first, so a master stops its workers; SIGKILL if it hangs.
    t.teardown(async () => {
      if (p.exitCode !== null || p.signalCode !== null) return
      p.kill('SIGTERM')
      const timer = setTimeout(() => p.kill('SIGKILL'), 5000)
      await waitExit(p)
      clearTimeout(timer)
    })
  }
  const logText = () =>
    [log, path.join(root, 'stderr.log')]
      .filter((f) => fs.existsSync(f))
      .map((f) => fs.readFileSync(f, 'utf8'))
      .join('\n')
  try {
    await accepting(o.host, o.port)
    // h2o loads its ticket file in a thread of its own, after it accepts: until then it encrypts
    // tickets with a random key of its own. Its memcached client connects in a thread of its own
    // too, and drops every request until it has: a session stored before then is lost.
    if (kind === 'h2o') {
      const [ready, what] = o.sessionCache
        ? [`connected to memcached at ${o.sessionCache.host}:${o.sessionCache.port}`, 'connect to its session cache']
        : ['session ticket secrets have been (re)loaded', 'load its ticket file']
      const deadline = Date.now() + 30_000
      while (!logText().includes(ready)) {
        if (Date.now() > deadline) throw new Error(`h2o did not ${what} within 30 s`)
        await new Promise((r) => setTimeout(r, 50))
      }
    }
  } catch (err) {
    await stop!()
    const text = [log, path.join(root, 'stderr.log')]
      .filter((f) => fs.existsSync(f))
      .map((f) => fs.readFileSync(f, 'utf8'))
      .join('\n')
    throw new Error(`${kind} did not start: ${(err as Error).message}\n${text.slice(-2000)}`)
  }
  return {
    kind,
    host: o.host,
    port: o.port,
    keyDir: o.keyDir,
    consumer,
    pid: () => pid(),
    logText,
    stop: () => stop(),
  }
}

/**
 * A directory on tmpfs for a test with real TLS servers: a throwaway certificate readable by the
 * servers' unprivileged users, and the keys and groups of two clusters (`one` feeds the hosts
 * that should resume each other's sessions, `other` the negative control).
 */
export function serverLab(t: { teardown(fn: () => unknown): void }, prefix: string) {
  const dir = fs.mkdtempSync(`/dev/shm/${prefix}`)
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  // The servers drop root (h2o to nobody), and must still reach their config and certificate.
  fs.chmodSync(dir, 0o755)
  makeCert(dir)
  fs.chmodSync(path.join(dir, 'key.pem'), 0o644)
  const one = { keyFile: writeKeyFile(dir), ...uniqueGroup() }
  const other = { keyFile: writeKeyFile(dir, [newKey()], 'other.key'), ...uniqueGroup() }
  return { dir, one, other }
}
