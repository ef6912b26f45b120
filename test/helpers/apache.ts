/**
 * Apache httpd with mod_ssl, unmodified, as a TLS terminator for tests and the TLS benchmark: one
 * instance per "host", one event-MPM child, its session cache given as an `SSLSessionCache`
 * value (`shmcb:...` for a per-server cache, `memcache:HOST:PORT` for statecast's memcache front
 * end or a central memcached).
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { freePortSync } from './ports.js'

export const APACHE_MODULES = '/usr/lib/apache2/modules'

export function haveApache(): boolean {
  return fs.existsSync(path.join(APACHE_MODULES, 'mod_ssl.so')) && fs.existsSync(path.join(APACHE_MODULES, 'mod_socache_memcache.so'))
}

export interface Apache {
  port: number
  /** The parent and its children now (for CPU accounting). */
  pids(): number[]
  stop(): void
}

/**
 * Starts Apache in `dir/name` with the certificate `dir/cert.pem` and key `dir/key.pem` (`dir`
 * must be readable by www-data). Session tickets are off, so TLS 1.2 and 1.3 resume through the
 * session cache.
 */
export async function startApache(dir: string, name: string, sessionCache: string): Promise<Apache> {
  const root = path.join(dir, name)
  fs.mkdirSync(root, { mode: 0o755 })
  const port = await freePortSync()
  const conf = path.join(root, 'httpd.conf')
  const socache = sessionCache.startsWith('shmcb:') ? 'shmcb' : 'memcache'
  fs.writeFileSync(
    conf,
    [
      `ServerRoot "${root}"`,
      `PidFile ${root}/httpd.pid`,
      `ErrorLog ${root}/error.log`,
      'LogLevel warn',
      `Listen 127.0.0.1:${port}`,
      `LoadModule mpm_event_module ${APACHE_MODULES}/mod_mpm_event.so`,
      `LoadModule authz_core_module ${APACHE_MODULES}/mod_authz_core.so`,
      `LoadModule socache_${socache}_module ${APACHE_MODULES}/mod_socache_${socache}.so`,
      `LoadModule ssl_module ${APACHE_MODULES}/mod_ssl.so`,
      'User www-data',
      'Group www-data',
      'ServerName localhost',
      `DocumentRoot ${root}`,
      // One worker process per host, so its CPU is easy to account for.
      'StartServers 1',
      'ServerLimit 1',
      'ThreadsPerChild 32',
      'MaxRequestWorkers 32',
      'MinSpareThreads 1',
      'MaxSpareThreads 32',
      `SSLSessionCache ${sessionCache}`,
      'SSLSessionCacheTimeout 300',
      'SSLSessionTickets off',
      `<VirtualHost 127.0.0.1:${port}>`,
      '  ServerName localhost',
      '  SSLEngine on',
      `  SSLCertificateFile ${dir}/cert.pem`,
      `  SSLCertificateKeyFile ${dir}/key.pem`,
      '</VirtualHost>',
      '',
    ].join('\n'),
  )
  const env = { ...process.env, APACHE_RUN_DIR: root }
  execFileSync('apache2', ['-f', conf, '-k', 'start'], { env, stdio: 'inherit' })
  const stop = () => {
    try {
      execFileSync('apache2', ['-f', conf, '-k', 'stop'], { env, stdio: 'ignore' })
    } catch {
      /* already gone */
    }
  }
  const pidFile = path.join(root, 'httpd.pid')
  try {
    await untilAccepting(port)
    for (let i = 0; i < 100 && !fs.existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 20))
  } catch (err) {
    stop()
    throw err
  }
  const parent = Number(fs.readFileSync(pidFile, 'utf8').trim())
  return {
    port,
    stop,
    pids: () => {
      const children = fs
        .readdirSync('/proc')
        .filter((d) => /^\d+$/.test(d))
        .filter((d) => {
          try {
            const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8')
            return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === parent
          } catch {
            return false
          }
        })
        .map(Number)
      return [parent, ...children]
    },
  }
}

async function untilAccepting(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)))
      s.once('error', () => resolve(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`Apache did not accept connections on 127.0.0.1:${port} within 5 s`)
}
