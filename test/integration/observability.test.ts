/** Prometheus metrics, `statecast watch` and `statecast check-config` against real daemons. */
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { CLIENT_TIMEOUT_MS, startCluster, startNode } from '../helpers/cluster.js'
import { freePort, runCli, startDaemon, tmpDir } from '../helpers/daemon.js'

t.test('the metrics endpoint exposes counters, gauges and latency histograms', async (t) => {
  const port = await freePort()
  const d = await startDaemon(t, { args: ['--metrics-listen', `127.0.0.1:${port}`, '--cluster-enabled', 'false'] })
  const { StatecastClient } = await import('../../client/index.js')
  const c = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: CLIENT_TIMEOUT_MS })
  t.teardown(() => c.destroy())
  await c.set('k', 'v')
  await c.get('k')
  await c.get('absent')
  const res = await fetch(`http://127.0.0.1:${port}/metrics`)
  t.equal(res.status, 200)
  t.match(res.headers.get('content-type'), /text\/plain/)
  const text = await res.text()
  t.match(text, /^# TYPE statecast_store_hits_total counter\nstatecast_store_hits_total 1$/m, 'counters')
  t.match(text, /^statecast_store_misses_total 1$/m)
  t.match(text, /^# TYPE statecast_store_entries gauge\nstatecast_store_entries 1$/m, 'gauges')
  t.match(text, /^# TYPE statecast_remote_lookup_seconds histogram$/m, 'lookup latency histogram')
  t.match(text, /^# TYPE statecast_replication_ack_seconds histogram$/m, 'replication latency histogram')
  t.equal((await fetch(`http://127.0.0.1:${port}/nope`)).status, 404)
  const refused = await startDaemon(t, { args: ['--metrics-listen', '0.0.0.0:9477'], wait: false })
  t.equal(await refused.exited, 2, 'a non-loopback metrics listener is refused')
})

t.test('a cluster daemon fills the lookup histogram', async (t) => {
  const port = await freePort()
  const { nodes } = await startCluster(t, 2, ['--replication-factor', '1'])
  const probe = nodes[0]!
  const dir = path.dirname(probe.socket)
  const keyFile = path.join(dir, 'cluster.key')
  const args = probe.proc.spawnargs
  const group = args[args.indexOf('--group') + 1]!
  const gport = Number(args[args.indexOf('--port') + 1])
  const m = await startNode(t, {
    dir,
    name: 'metrics',
    keyFile,
    group,
    port: gport,
    args: ['--metrics-listen', `127.0.0.1:${port}`, '--replication-factor', '1'],
  })
  await probe.client.set('remote-one', 'v')
  await m.client.get('remote-one')
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  t.match(text, /^statecast_remote_lookup_seconds_count\{outcome="hit"\} 1$/m, 'one remote hit observed')
  t.match(text, /^statecast_cluster_members \d$/m)
})

t.test('statecast watch renders rates, peers and memory; check-config validates', async (t) => {
  const { nodes } = await startCluster(t, 2)
  const out = await runCli(['--socket', nodes[0]!.adminSocket, 'watch', '--interval', '0.2', '--count', '2'])
  t.equal(out.code, 0)
  const screen = out.stdout.toString()
  t.match(screen, /^statecast watch {2}.*up \d+s/m)
  t.match(screen, /^GET\/s +\d+ +local hit rate/m)
  t.match(screen, /^peers +1 /m, 'one peer')
  t.match(screen, /^sessions +\d+ +store [\d.]+ MiB of 64\.0 MiB/m)
  const dir = tmpDir('sc-cc-')
  const good = path.join(dir, 'good.toml')
  fs.writeFileSync(good, 'maxBytes = 8388608\n')
  const bad = path.join(dir, 'bad.toml')
  fs.writeFileSync(bad, 'lookupTimeoutMs = -1\n')
  t.equal((await runCli(['check-config', good])).code, 0)
  const r = await runCli(['check-config', bad])
  t.equal(r.code, 2)
  t.match(r.stderr, /lookupTimeoutMs must be an integer from 1 to 60000 ms/)
})
