/**
 * h2o 2.2.5 from Debian, unchanged, with its own session-ID cache (`cache-store: memcached`,
 * ASCII protocol, tickets off) kept in statecast's memcache front end (issue 16 point 4): two h2o
 * instances (127.0.0.2 and 127.0.0.3) with one certificate, each on its own host's statecastd of
 * one cluster. A session made on one resumes on the other; an h2o on a daemon of another cluster
 * does a full handshake.
 */
import t from 'tap'
import net from 'node:net'
import path from 'node:path'
import { startNode, waitMembers, type Node } from '../helpers/cluster.js'
import { eventually, freePort } from '../helpers/daemon.js'
import { sClientAt, sessionLine } from '../helpers/tls.js'
import { have, serverLab, startServer, type TlsServer } from '../helpers/tls-servers.js'
import { needs } from '../helpers/needs.js'

const NEEDS = needs({ commands: ['h2o', 'openssl'] })

/** A counter from `stats` of the memcache front end on `port`. */
function memcacheStat(port: number, name: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1')
    let out = ''
    s.setEncoding('latin1')
    s.on('data', (d: string) => {
      out += d
      if (!out.endsWith('END\r\n')) return
      s.destroy()
      const m = new RegExp(`^STAT ${name} (\\d+)\\r$`, 'm').exec(out)
      if (m) resolve(Number(m[1]))
      else reject(new Error(`no ${name} in stats: ${out.slice(0, 200)}`))
    })
    s.once('error', reject)
    s.write('stats\r\n')
  })
}

if (!have('h2o')) throw new Error('missing h2o (run scripts/install-system-deps.sh)')

t.test('h2o resumes a session made on another host through its session-ID cache in statecast', NEEDS, async (t) => {
  // Two daemons of one cluster (a, b) and one of another cluster with its own key (x).
  const { dir, one, other } = serverLab(t, 'sc-h2o-cache-')
  const nodes: Record<string, Node> = {}
  const memcachePorts: Record<string, number> = {}
  for (const h of ['a', 'b', 'x'] as const) {
    const c = h === 'x' ? other : one
    memcachePorts[h] = await freePort()
    nodes[h] = await startNode(t, {
      dir,
      name: h,
      keyFile: c.keyFile,
      group: c.group,
      port: c.port,
      args: ['--memcache-listen', `127.0.0.1:${memcachePorts[h]}`],
    })
  }
  await waitMembers([nodes['a']!, nodes['b']!], 1)

  const hosts = { a: '127.0.0.2', b: '127.0.0.3', x: '127.0.0.3' } as const
  const servers: Record<string, TlsServer> = {}
  for (const h of ['a', 'b', 'x'] as const) {
    servers[h] = await startServer(t, 'h2o', {
      dir,
      name: `h2o-${h}`,
      host: hosts[h],
      port: await freePort(),
      keyDir: '',
      sessionCache: { host: '127.0.0.1', port: memcachePorts[h]! },
    })
  }
  const connect = (h: 'a' | 'b' | 'x', args: string[]) => sClientAt(servers[h]!.host, servers[h]!.port, args)

  // With tickets off on every h2o (mode cache), a resumption on B can only come from a session A
  // stored through statecast. TLS 1.3 too: h2o 2.2.5 on OpenSSL 3 stores TLS 1.3 sessions in its
  // cache and sends stateful tickets that name them (the client's -no_ticket only concerns TLS
  // 1.2), so the 1.3 session resumes on B as well; established by experiment with Debian's h2o.
  for (const [flag, version] of [
    ['-tls1_2', 'TLSv1.2'],
    ['-tls1_3', 'TLSv1.3'],
  ] as const) {
    const sess = path.join(dir, `sess${flag}`)
    const setsBefore = await memcacheStat(memcachePorts['a']!, 'cmd_set')
    t.equal(sessionLine(await connect('a', [flag, '-no_ticket', '-sess_out', sess])), `New ${version}`, `${version}: a full handshake on A`)
    // h2o stores the session from a thread of its own, maybe after the client is done.
    await eventually(
      async () => (await memcacheStat(memcachePorts['a']!, 'cmd_set')) > setsBefore,
      30_000,
      `${version}: A's h2o stores the session in its statecastd`,
    )
    const hitsBefore = await memcacheStat(memcachePorts['b']!, 'get_hits')
    t.equal(
      sessionLine(await connect('b', [flag, '-no_ticket', '-sess_in', sess])),
      `Reused ${version}`,
      `${version}: A's session resumes on B`,
    )
    t.ok((await memcacheStat(memcachePorts['b']!, 'get_hits')) > hitsBefore, `${version}: B's h2o found the session in its statecastd`)
    t.equal(
      sessionLine(await connect('x', [flag, '-no_ticket', '-sess_in', sess])),
      `New ${version}`,
      `${version}: an h2o on another cluster's daemon does a full handshake`,
    )
  }
})
