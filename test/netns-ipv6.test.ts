/** The remote-fetch flow between hosts that have IPv6 addresses only: multicast group and listed peers. */
import t from 'tap'
import crypto from 'node:crypto'
import { NetLab } from './helpers/netns.js'
import { clusterStats, replicationSettled, startNode, unreadable, waitMembers, writeKeyFile, type Node } from './helpers/cluster.js'
import { eventually, tmpDir } from './helpers/daemon.js'

async function v6cluster(t: { teardown(fn: () => unknown): void }, extra: string[] = []) {
  const lab = NetLab.create(t, 3, { ipv6Only: true })
  const dir = tmpDir('sc-v6-')
  const keyFile = writeKeyFile(dir)
  const group = `ff02::5c:${crypto.randomInt(1, 0xffff).toString(16)}`
  const port = 20000 + crypto.randomInt(40000)
  const nodes: Node[] = []
  for (let i = 1; i <= 3; i++) nodes.push(await startNode(t, { dir, name: `v${i}`, keyFile, group, port, prefix: lab.exec(i), args: ['--interface', `${lab.addr(i)}%eth0`, '--replication-factor', '1', ...extra] }))
  await waitMembers(nodes, 2)
  return nodes
}

t.test('IPv6 only: remote fetch, not found, 64 KiB, delete everywhere', async (t) => {
  const [h1, h2, h3] = await v6cluster(t, ['--lookup-timeout-ms', '2000'])
  const peers = await h1!.client.peers()
  t.same(peers.map((p) => String(p['address']).replace(/:\d+$/, '')).sort(), ['fd77::1', 'fd77::2', 'fd77::3'], 'members by their IPv6 addresses')
  await h1!.client.set('s6', 'over ipv6')
  const e = await h3!.client.getEntry('s6')
  t.equal(e?.value.toString(), 'over ipv6')
  t.equal(e?.remote, true)
  t.equal(await h2!.client.get('absent'), undefined)
  t.equal((await clusterStats(h2!))['timeouts'], 0, 'not found from MISSes, before the deadline')
  const big = crypto.randomBytes(65536)
  await h2!.client.set('big', big)
  t.ok((await h1!.client.get('big'))?.equals(big), '64 KiB intact')
  await h2!.client.delete('s6')
  await eventually(async () => (await h1!.client.get('s6', { localOnly: true })) === undefined && (await h3!.client.get('s6', { localOnly: true })) === undefined, 3000, 'deleted everywhere')
  t.pass('deleted everywhere')
})

t.test('IPv6 only, listed peers without multicast, with replication', async (t) => {
  const peers = [1, 2, 3].map((i) => `[fd77::${i}]:47701`).join(',')
  const lab = NetLab.create(t, 3, { ipv6Only: true })
  const dir = tmpDir('sc-v6u-')
  const keyFile = writeKeyFile(dir)
  const nodes: Node[] = []
  for (let i = 1; i <= 3; i++) nodes.push(await startNode(t, { dir, name: `u${i}`, keyFile, group: 'ff02::5c:1', port: 47700, prefix: lab.exec(i), args: ['--interface', `${lab.addr(i)}%eth0`, '--multicast-enabled', 'false', '--peers', peers, '--unicast-port', '47701'] }))
  await waitMembers(nodes, 2)
  const keys = Array.from({ length: 200 }, (_, i) => `k${i}`)
  const val = (k: string) => Buffer.from(`v6-${k}`.padEnd(100, '.'))
  for (const k of keys) await nodes[0]!.client.set(k, val(k))
  await replicationSettled(nodes)
  await nodes[0]!.stop('SIGKILL')
  t.same(await unreadable([nodes[1]!, nodes[2]!], keys, val), [], 'every session readable after the writer died')
})
