/** The remote-fetch flow between hosts that have IPv6 addresses only: multicast group and listed peers. */
import t from 'tap'
import crypto from 'node:crypto'
import { NetLab } from '../helpers/netns.js'
import {
  GENEROUS_LOOKUPS,
  clusterStats,
  hasMembers,
  readableOnceConverged,
  replicationSettled,
  startNode,
  waitMembers,
  writeKeyFile,
  type Node,
} from '../helpers/cluster.js'
import { eventually, tmpDir } from '../helpers/daemon.js'
import { needs, NETNS } from '../helpers/needs.js'

const NEEDS = needs(NETNS)

async function v6cluster(t: { teardown(fn: () => unknown): void }, extra: string[] = []) {
  const lab = NetLab.create(t, 3, { ipv6Only: true })
  const dir = tmpDir('sc-v6-')
  const keyFile = writeKeyFile(dir)
  const group = `ff02::5c:${crypto.randomInt(1, 0xffff).toString(16)}`
  const port = 20000 + crypto.randomInt(40000)
  const nodes: Node[] = await Promise.all(
    [1, 2, 3].map((i) =>
      startNode(t, {
        dir,
        name: `v${i}`,
        keyFile,
        group,
        port,
        prefix: lab.exec(i),
        args: ['--interface', `${lab.addr(i)}%eth0`, '--replication-factor', '1', ...extra],
      }),
    ),
  )
  await waitMembers(nodes, 2)
  return nodes
}

t.test('IPv6 only: remote fetch, not found, 64 KiB, delete everywhere', NEEDS, async (t) => {
  const [h1, h2, h3] = await v6cluster(t, GENEROUS_LOOKUPS)
  const peers = await h1!.client.peers()
  t.same(
    peers.map((p) => String(p['address']).replace(/:\d+$/, '')).sort(),
    ['fd77::1', 'fd77::2', 'fd77::3'],
    'members by their IPv6 addresses',
  )
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
  await eventually(
    async () =>
      (await h1!.client.get('s6', { localOnly: true })) === undefined && (await h3!.client.get('s6', { localOnly: true })) === undefined,
    20_000,
    'deleted everywhere',
  )
  t.pass('deleted everywhere')
})

t.test('IPv6 only, listed peers without multicast, with replication', NEEDS, async (t) => {
  const peers = [1, 2, 3].map((i) => `[fd77::${i}]:47701`).join(',')
  const lab = NetLab.create(t, 3, { ipv6Only: true })
  const dir = tmpDir('sc-v6u-')
  const keyFile = writeKeyFile(dir)
  const nodes: Node[] = await Promise.all(
    [1, 2, 3].map((i) =>
      startNode(t, {
        dir,
        name: `u${i}`,
        keyFile,
        group: 'ff02::5c:1',
        port: 47700,
        prefix: lab.exec(i),
        args: [
          '--interface',
          `${lab.addr(i)}%eth0`,
          '--multicast-enabled',
          'false',
          '--peers',
          peers,
          '--unicast-port',
          '47701',
          ...GENEROUS_LOOKUPS,
        ],
      }),
    ),
  )
  await waitMembers(nodes, 2)
  const keys = Array.from({ length: 200 }, (_, i) => `k${i}`)
  const val = (k: string) => Buffer.from(`v6-${k}`.padEnd(100, '.'))
  for (const k of keys) await nodes[0]!.client.set(k, val(k))
  await replicationSettled(nodes)
  await nodes[0]!.stop('SIGKILL')
  t.same((await readableOnceConverged([nodes[1]!, nodes[2]!], keys, val, 1)).lost, [], 'every session readable after the writer died')
})

/** Namespaces with both address families, a key, and one group of each family on one port. */
function dualStackLab(t: { teardown(fn: () => unknown): void }, n: number) {
  const lab = NetLab.create(t, n, { dualStack: true })
  const dir = tmpDir('sc-ds-')
  return {
    lab,
    dir,
    keyFile: writeKeyFile(dir),
    group4: `239.255.${crypto.randomInt(256)}.${1 + crypto.randomInt(250)}`,
    group6: `ff02::5d:${crypto.randomInt(1, 0xffff).toString(16)}`,
    port: 20000 + crypto.randomInt(40000),
  }
}

t.test(
  'dual stack: an IPv4 daemon, a dual-stack daemon and an IPv6 daemon share sessions (a migration without a flag day)',
  NEEDS,
  async (t) => {
    // Every host has both address families; the daemons are configured as a fleet moving from
    // IPv4 to IPv6 is, one host at a time: host 1 still IPv4 only, host 2 both, host 3 IPv6 only.
    const { lab, dir, keyFile, group4, group6, port } = dualStackLab(t, 3)
    const common = ['--replication-factor', '1', ...GENEROUS_LOOKUPS]
    const v4 = await startNode(t, {
      dir,
      name: 'four',
      keyFile,
      group: group4,
      port,
      prefix: lab.exec(1),
      args: ['--interface', lab.addr4(1), ...common],
    })
    const dual = await startNode(t, {
      dir,
      name: 'dual',
      keyFile,
      group: group4,
      port,
      prefix: lab.exec(2),
      args: ['--interface', lab.addr4(2), '--dual-stack-group', group6, '--dual-stack-interface', `${lab.addr6(2)}%eth0`, ...common],
    })
    const v6 = await startNode(t, {
      dir,
      name: 'six',
      keyFile,
      group: group6,
      port,
      prefix: lab.exec(3),
      args: ['--interface', `${lab.addr6(3)}%eth0`, ...common],
    })
    await eventually(async () => await hasMembers(dual, 2), 30_000, 'the dual-stack daemon sees both others')
    await eventually(
      async () => (await hasMembers(v4, 1)) && (await hasMembers(v6, 1)),
      30_000,
      'each single-stack daemon sees the dual-stack one',
    )
    const peers = await dual.client.peers()
    t.same(
      peers.map((p) => String(p['address']).replace(/:\d+$/, '')).sort(),
      ['10.77.0.1', '10.77.0.2', 'fd77::3'],
      'the dual-stack daemon reaches host 1 over IPv4 and host 3 over IPv6',
    )
    t.equal(
      String(peers.find((p) => p['self'])?.['otherAddress']).replace(/:\d+$/, ''),
      'fd77::2',
      'and lists its own IPv6 reply address beside the IPv4 one',
    )
    const seenBy6 = (await v6.client.peers()).find((p) => p['name'] === 'dual')!
    t.same(
      [String(seenBy6['address']).replace(/:\d+$/, ''), String(seenBy6['otherAddress']).replace(/:\d+$/, '')],
      ['fd77::2', '10.77.0.2'],
      'the IPv6 host reaches it at the IPv6 address it announced',
    )

    // Each single-stack daemon's sessions reach the dual-stack host, and through it each other's
    // family's host only by way of host 2 (a copy fetched there is then served from there).
    await v4.client.set('from-four', 'stored over ipv4')
    await v6.client.set('from-six', 'stored over ipv6')
    await dual.client.set('from-dual', 'stored on both')
    const a = await dual.client.getEntry('from-four')
    t.equal(a?.value.toString(), 'stored over ipv4')
    t.equal(a?.remote, true, 'fetched from the IPv4-only host')
    const b = await dual.client.getEntry('from-six')
    t.equal(b?.value.toString(), 'stored over ipv6')
    t.equal(b?.remote, true, 'fetched from the IPv6-only host')
    t.equal((await v4.client.get('from-dual'))?.toString(), 'stored on both', 'the IPv4 host fetches from the dual-stack host')
    t.equal((await v6.client.get('from-dual'))?.toString(), 'stored on both', 'the IPv6 host fetches from the dual-stack host')
    t.equal((await v6.client.get('from-four'))?.toString(), 'stored over ipv4', "host 3 gets host 1's session from host 2's copy")
    t.equal(await v4.client.get('absent'), undefined)
    t.equal((await clusterStats(v4))['timeouts'], 0, '"not found" from MISS, before the deadline')

    // The dual-stack daemon's group datagrams arrive on both families at no host here (each other
    // host has one family), and a delete reaches both sides.
    await dual.client.delete('from-dual')
    await eventually(
      async () =>
        (await v4.client.get('from-dual', { localOnly: true })) === undefined &&
        (await v6.client.get('from-dual', { localOnly: true })) === undefined,
      20_000,
      'deleted on both sides',
    )
    t.pass('deleted on both sides')
    const ds = await clusterStats(dual)
    t.comment(
      `dual-stack host: ${ds['datagramsSent']} datagrams sent, ${ds['datagramsReceived']} received, ${ds['sendErrors']} send errors`,
    )
  },
)

t.test('dual stack with replication: a single-stack host copies to the dual-stack host on its own family', NEEDS, async (t) => {
  // The IPv6-only host learns the dual-stack host's IPv6 address from its ANNOUNCE (the
  // dual-stack host's first family is IPv4), and pushes copies there.
  const { lab, dir, keyFile, group4, group6, port } = dualStackLab(t, 3)
  const v4 = await startNode(t, {
    dir,
    name: 'four',
    keyFile,
    group: group4,
    port,
    prefix: lab.exec(1),
    args: ['--interface', lab.addr4(1), ...GENEROUS_LOOKUPS],
  })
  const dual = await startNode(t, {
    dir,
    name: 'dual',
    keyFile,
    group: group4,
    port,
    prefix: lab.exec(2),
    args: [
      '--interface',
      lab.addr4(2),
      '--dual-stack-group',
      group6,
      '--dual-stack-interface',
      `${lab.addr6(2)}%eth0`,
      ...GENEROUS_LOOKUPS,
    ],
  })
  const v6 = await startNode(t, {
    dir,
    name: 'six',
    keyFile,
    group: group6,
    port,
    prefix: lab.exec(3),
    args: ['--interface', `${lab.addr6(3)}%eth0`, ...GENEROUS_LOOKUPS],
  })
  await eventually(async () => (await hasMembers(dual, 2)) && (await hasMembers(v4, 1)) && (await hasMembers(v6, 1)), 60_000, 'membership')
  const keys = Array.from({ length: 40 }, (_, i) => `r${i}`)
  for (const k of keys) await v6.client.set(k, `six-${k}`)
  await replicationSettled([v4, dual, v6])
  const s6 = await clusterStats(v6)
  t.equal(s6['copiesDropped'], 0, 'no copy dropped for want of an address')
  t.equal(s6['copiesAcked'], s6['copiesPushed'], `${s6['copiesPushed']} copies pushed, all acknowledged`)
  let onDual = 0
  for (const k of keys) if ((await dual.client.get(k, { localOnly: true }))?.toString() === `six-${k}`) onDual++
  t.equal(onDual, keys.length, 'the dual-stack host holds a copy of every session the IPv6 host stored (the only other owner it knows)')
  await v6.stop('SIGKILL')
  for (const k of keys) t.equal((await v4.client.get(k))?.toString(), `six-${k}`, `${k} readable on the IPv4 host after the IPv6 host died`)
})

t.test('dual stack on both ends: each datagram is taken once, the copy on the other family counted as a duplicate', NEEDS, async (t) => {
  const { lab, dir, keyFile, group4, group6, port } = dualStackLab(t, 2)
  const nodes: Node[] = await Promise.all(
    [1, 2].map((i) =>
      startNode(t, {
        dir,
        name: `d${i}`,
        keyFile,
        group: group4,
        port,
        prefix: lab.exec(i),
        args: [
          '--interface',
          lab.addr4(i),
          '--dual-stack-group',
          group6,
          '--dual-stack-interface',
          `${lab.addr6(i)}%eth0`,
          '--replication-factor',
          '1',
          ...GENEROUS_LOOKUPS,
        ],
      }),
    ),
  )
  await waitMembers(nodes, 1)
  await nodes[0]!.client.set('k', 'v')
  t.equal((await nodes[1]!.client.get('k'))?.toString(), 'v')
  // Heartbeats go to both groups: each arrives twice.
  await eventually(async () => (await clusterStats(nodes[1]!))['duplicates'] >= 4, 20_000, 'second copies of heartbeats')
  const s = await clusterStats(nodes[1]!)
  t.ok(s['duplicates'] >= 4, `${s['duplicates']} second copies counted as duplicates (${s['datagramsReceived']} datagrams received)`)
  t.equal(s['dropped'].replayed, 0, 'none counted as replays')
  t.equal((await clusterStats(nodes[1]!))['members'], 1, 'one member, not two')
})
