/**
 * Apache httpd's mod_ssl, unchanged, resumes sessions across two hosts through statecast's
 * memcache front end: `SSLSessionCache memcache:` on each Apache points at its own daemon.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { startCluster, startNode } from './helpers/cluster.js'
import { freePort, tmpDir } from './helpers/daemon.js'
import { makeCert, sClient, sessionLine } from './helpers/tls.js'

async function apache(t: { teardown(fn: () => unknown): void }, dir: string, name: string, memcachePort: number): Promise<number> {
  const root = path.join(dir, name)
  fs.mkdirSync(root, { mode: 0o755 })
  const port = await freePort()
  const conf = path.join(root, 'httpd.conf')
  fs.writeFileSync(
    conf,
    [
      `ServerRoot "${root}"`,
      `PidFile ${root}/httpd.pid`,
      `ErrorLog ${root}/error.log`,
      'LogLevel warn',
      `Listen 127.0.0.1:${port}`,
      'LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so',
      'LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so',
      'LoadModule socache_memcache_module /usr/lib/apache2/modules/mod_socache_memcache.so',
      'LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so',
      'User www-data',
      'Group www-data',
      'ServerName localhost',
      `DocumentRoot ${root}`,
      `SSLSessionCache memcache:127.0.0.1:${memcachePort}`,
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
  execFileSync('apache2', ['-f', conf, '-k', 'start'], { env: { ...process.env, APACHE_RUN_DIR: root }, stdio: 'inherit' })
  t.teardown(() => {
    try {
      execFileSync('apache2', ['-f', conf, '-k', 'stop'], { env: { ...process.env, APACHE_RUN_DIR: root }, stdio: 'ignore' })
    } catch {
      /* already gone */
    }
  })
  // Wait for Apache to accept connections.
  for (let i = 0; i < 100; i++) {
    try {
      execFileSync('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${port}`], { stdio: 'ignore' })
      break
    } catch {
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  return port
}

t.test('Apache mod_ssl on two hosts resumes TLS 1.2 and TLS 1.3 sessions through statecast', async (t) => {
  const probe = await startCluster(t, 0)
  const dir = probe.dir
  fs.chmodSync(dir, 0o755)
  const creds = makeCert(dir)
  fs.writeFileSync(path.join(dir, 'key.pem'), creds.key)
  fs.writeFileSync(path.join(dir, 'cert.pem'), creds.cert)
  const mc = [await freePort(), await freePort()]
  const nodes = [
    await startNode(t, { dir, name: 'a', keyFile: probe.keyFile, group: probe.group, port: probe.port, args: ['--memcache-listen', `127.0.0.1:${mc[0]}`, '--replication-factor', '1'] }),
    await startNode(t, { dir, name: 'b', keyFile: probe.keyFile, group: probe.group, port: probe.port, args: ['--memcache-listen', `127.0.0.1:${mc[1]}`, '--replication-factor', '1'] }),
  ]
  const { waitMembers } = await import('./helpers/cluster.js')
  await waitMembers(nodes, 1)
  const web = [await apache(t, dir, 'apache-a', mc[0]!), await apache(t, dir, 'apache-b', mc[1]!)]
  for (const [flag, version] of [['-tls1_2', 'TLSv1.2'], ['-tls1_3', 'TLSv1.3']] as const) {
    const sess = path.join(dir, `sess-${version}.pem`)
    t.equal(sessionLine(await sClient(web[0]!, [flag, '-sess_out', sess])), `New ${version}`, `${version}: full handshake on Apache A`)
    t.equal(sessionLine(await sClient(web[1]!, [flag, '-sess_in', sess])), `Reused ${version}`, `${version}: resumed on Apache B`)
  }
  const s = (await nodes[1]!.admin.stats()) as { memcache: { remoteHits: number } }
  t.equal(s.memcache.remoteHits, 2, 'B\'s daemon fetched both sessions from A\'s')
})
