/**
 * Every number the daemon reports is declared in STATS (protocol/stats.ts), and every declared
 * number is reported: a real cluster of two daemons with the memcache front end and /metrics on,
 * after sets, gets (local, remote, missing) and memcache traffic, so the cluster, replication and
 * memcache counters all appear. A STATS row with `only` names the mode it needs; this test runs
 * none of those modes, so those rows are checked by absence only.
 */
import t from 'tap'
import net from 'node:net'
import { STATS, statLeaves, metricName } from '../../protocol/stats.js'
import { startNode, uniqueGroup, waitMembers, writeKeyFile } from '../helpers/cluster.js'
import { eventually, freePort, tmpDir } from '../helpers/daemon.js'

function memcache(port: number, lines: string, until: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1')
    let got = ''
    s.on('data', (d) => {
      got += d.toString('latin1')
      if (until.test(got)) {
        s.end()
        resolve(got)
      }
    })
    s.on('error', reject)
    s.write(lines)
  })
}

t.test('a cluster of two reports exactly the declared numbers', async (t) => {
  const dir = tmpDir('sc-stats-')
  const keyFile = writeKeyFile(dir)
  const { group, port } = uniqueGroup()
  const mc = [await freePort(), await freePort()]
  const metrics = await freePort()
  const nodes = await Promise.all(
    ['a', 'b'].map((name, i) =>
      startNode(t, {
        dir,
        name,
        keyFile,
        group,
        port,
        args: ['--memcache-listen', `127.0.0.1:${mc[i]}`, ...(i === 0 ? ['--metrics-listen', `127.0.0.1:${metrics}`] : [])],
      }),
    ),
  )
  await waitMembers(nodes, 1)
  const [a, b] = nodes as [(typeof nodes)[0], (typeof nodes)[0]]
  for (let i = 0; i < 20; i++) await a.client.set(`k${i}`, `v${i}`)
  for (let i = 0; i < 20; i++) await b.client.get(`k${i}`)
  await b.client.get('missing')
  await a.client.delete('k0')
  await memcache(mc[0]!, 'set m 0 0 1\r\nx\r\nget m\r\nget nothing\r\n', /END\r\n.*END\r\n/s)

  const reported = new Map<string, number>()
  await eventually(async () => {
    for (const n of nodes) for (const [k, v] of statLeaves(await n.admin.stats())) reported.set(k, v)
    return true
  })
  const declared = Object.keys(STATS)
  const undeclared = [...reported.keys()].filter((k) => !(k in STATS))
  t.same(undeclared, [], 'every number the daemons report is declared in STATS')
  if (undeclared.length) t.comment(JSON.stringify(Object.fromEntries([...reported].filter(([k]) => undeclared.includes(k)))))
  // This test runs the cluster and memcache modes, so only a row's own `only` exempts it.
  const always = declared.filter((k) => !(STATS as Record<string, { only?: string }>)[k]!.only)
  const never = always.filter((k) => !reported.has(k))
  t.same(never, [], 'every declared number without `only` is reported')

  const text = await (await fetch(`http://127.0.0.1:${metrics}/metrics`)).text()
  for (const k of always.filter((k) => STATS[k as keyof typeof STATS].kind !== 'info')) {
    const name = metricName(k)
    t.match(text, new RegExp(`^# TYPE ${name} ${STATS[k as keyof typeof STATS].kind}$`, 'm'), `/metrics has ${name}`)
  }
})
