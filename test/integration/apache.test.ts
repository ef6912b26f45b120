/**
 * Apache httpd's mod_ssl, unchanged, resumes sessions across two hosts through statecast's
 * memcache front end: `SSLSessionCache memcache:` on each Apache points at its own daemon.
 */
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { startCluster, startNode } from '../helpers/cluster.js'
import { freePort } from '../helpers/daemon.js'
import { startApache } from '../helpers/apache.js'
import { makeCert, sClient, sessionLine } from '../helpers/tls.js'
import { needs } from '../helpers/needs.js'

const NEEDS = needs({ commands: ['apache2', 'openssl'] })

async function apache(t: { teardown(fn: () => unknown): void }, dir: string, name: string, memcachePort: number): Promise<number> {
  const a = await startApache(dir, name, `memcache:127.0.0.1:${memcachePort}`)
  t.teardown(() => a.stop())
  return a.port
}

t.test('Apache mod_ssl on two hosts resumes TLS 1.2 and TLS 1.3 sessions through statecast', NEEDS, async (t) => {
  const probe = await startCluster(t, 0)
  const dir = probe.dir
  fs.chmodSync(dir, 0o755)
  const creds = makeCert(dir)
  fs.writeFileSync(path.join(dir, 'key.pem'), creds.key)
  fs.writeFileSync(path.join(dir, 'cert.pem'), creds.cert)
  const mc = [await freePort(), await freePort()]
  const nodes = [
    await startNode(t, {
      dir,
      name: 'a',
      keyFile: probe.keyFile,
      group: probe.group,
      port: probe.port,
      args: ['--memcache-listen', `127.0.0.1:${mc[0]}`, '--replication-factor', '1'],
    }),
    await startNode(t, {
      dir,
      name: 'b',
      keyFile: probe.keyFile,
      group: probe.group,
      port: probe.port,
      args: ['--memcache-listen', `127.0.0.1:${mc[1]}`, '--replication-factor', '1'],
    }),
  ]
  const { waitMembers } = await import('../helpers/cluster.js')
  await waitMembers(nodes, 1)
  const web = [await apache(t, dir, 'apache-a', mc[0]!), await apache(t, dir, 'apache-b', mc[1]!)]
  for (const [flag, version] of [
    ['-tls1_2', 'TLSv1.2'],
    ['-tls1_3', 'TLSv1.3'],
  ] as const) {
    const sess = path.join(dir, `sess-${version}.pem`)
    t.equal(sessionLine(await sClient(web[0]!, [flag, '-sess_out', sess])), `New ${version}`, `${version}: full handshake on Apache A`)
    t.equal(sessionLine(await sClient(web[1]!, [flag, '-sess_in', sess])), `Reused ${version}`, `${version}: resumed on Apache B`)
  }
  const s = (await nodes[1]!.admin.stats()) as { memcache: { remoteHits: number } }
  t.equal(s.memcache.remoteHits, 2, "B's daemon fetched both sessions from A's")
})
