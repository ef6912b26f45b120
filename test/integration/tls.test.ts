/**
 * Real clients resume across hosts: `openssl s_client -sess_out` against server A, then
 * `-sess_in` against server B, each HTTPS server attached to its own daemon.
 */
import t from 'tap'
import https from 'node:https'
import path from 'node:path'
import { constants } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { attachSessionCache } from '../../client/tls.js'
import { GENEROUS_LOOKUPS, startCluster } from '../helpers/cluster.js'
import { eventually, tmpDir } from '../helpers/daemon.js'
import { makeCert, sClient, sessionLine } from '../helpers/tls.js'
import { needs } from '../helpers/needs.js'

const NEEDS = needs({ commands: ['openssl'] })

const dir = tmpDir('sc-tls-')
const creds = makeCert(dir)

async function serve(t: { teardown(fn: () => unknown): void }, opts: https.ServerOptions): Promise<{ server: https.Server; port: number }> {
  const server = https.createServer({ ...creds, sessionIdContext: 'statecast-test', ...opts }, (_req, res) => res.end('ok\n'))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise((r) => server.close(r)))
  server.on('connection', (s: import('node:net').Socket) => s.unref())
  return { server, port: (server.address() as AddressInfo).port }
}

for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
  t.test(`${version}: a session made on A resumes on B`, NEEDS, async (t) => {
    const { nodes } = await startCluster(t, 2, ['--replication-factor', '1', ...GENEROUS_LOOKUPS])
    const [da, db] = nodes
    // TLS 1.2 goes through session ids (tickets off); TLS 1.3 through the cluster's ticket keys.
    const opts: https.ServerOptions =
      version === 'TLSv1.2' ? { maxVersion: 'TLSv1.2', secureOptions: constants.SSL_OP_NO_TICKET } : { minVersion: 'TLSv1.3' }
    const a = await serve(t, opts)
    const b = await serve(t, opts)
    const lone = await serve(t, opts) // no statecast: the control that shows the test can fail
    // The resumption on B waits for a remote fetch: deadlines a loaded machine meets, end to end.
    const ca = attachSessionCache(a.server, { socketPath: da!.socket, lookupTimeoutMs: 30_000 })
    const cb = attachSessionCache(b.server, { socketPath: db!.socket, lookupTimeoutMs: 30_000 })
    t.teardown(() => Promise.all([ca.close(), cb.close()]))
    if (version === 'TLSv1.3') {
      await Promise.all([ca.ready(), cb.ready()])
      t.equal(ca.stats.ticketEpoch, cb.stats.ticketEpoch, 'both servers hold the cluster ticket key')
    }
    const flag = version === 'TLSv1.2' ? '-tls1_2' : '-tls1_3'
    const sess = path.join(tmpDir('sc-sess-'), 'session.pem')
    const first = await sClient(a.port, [flag, '-sess_out', sess])
    t.equal(sessionLine(first), `New ${version}`, 'first connection: full handshake on A')
    if (version === 'TLSv1.2') {
      // The session is stored after the handshake; wait until A's daemon has it.
      await eventually(() => ca.stats.stored > 0, 20_000, 'A stored the session')
      t.equal(ca.stats.stored, 1, 'A stored the session in its daemon')
    }
    const second = await sClient(b.port, [flag, '-sess_in', sess])
    t.equal(sessionLine(second), `Reused ${version}`, 'resumed on B')
    t.match(second, /HTTP\/1\.1 200/)
    if (version === 'TLSv1.2') {
      t.equal(cb.stats.resumeHits, 1, 'B found it through its daemon')
      const s = (await db!.admin.stats()) as { cluster: { remoteHits: number } }
      t.equal(s.cluster.remoteHits, 1, "which fetched it from A's daemon")
    }
    const control = await sClient(lone.port, [flag, '-sess_in', sess])
    t.equal(sessionLine(control), `New ${version}`, 'a server without statecast does not resume it')

    // With B's daemon gone, B degrades to full handshakes and keeps serving.
    await db!.stop()
    const degraded = await sClient(b.port, [flag, '-sess_in', sess])
    t.match(degraded, /HTTP\/1\.1 200/, 'B still serves with its daemon down')
    if (version === 'TLSv1.2') t.equal(sessionLine(degraded), 'New TLSv1.2', 'with a full handshake')
  })
}

t.test('sessionVersion reads the protocol of an encoded session', NEEDS, async (t) => {
  const { sessionVersion } = await import('../../client/tls.js')
  t.equal(sessionVersion(Buffer.from('3082012c020101020203040402130204', 'hex')), 0x0304)
  t.equal(sessionVersion(Buffer.from('30820100020101020203030402c02f04', 'hex')), 0x0303)
  t.equal(sessionVersion(Buffer.from('3000', 'hex')), undefined)
  t.equal(sessionVersion(Buffer.from('deadbeefdeadbeef', 'hex')), undefined)
})
