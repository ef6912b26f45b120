/** Three daemons on loopback multicast: remote fetch, not found, chunks, invalidation, keys, replay. */
import t from 'tap'
import dgram from 'node:dgram'
import { DgramAsPromised } from 'dgram-as-promised'
import { Keyring, MsgType, decodeMessages, encodeBody, open, readHeader, seal } from '../../protocol/wire.js'
import { parseKeyFile } from '../../protocol/keyfile.js'
import fs from 'node:fs'
import {
  GENEROUS_LOOKUPS,
  clusterStats,
  newKey,
  startCluster,
  startNode,
  writeKeyFile,
  type Node,
  type ClusterCounter,
} from '../helpers/cluster.js'
import { eventually, runCli, startDaemon, tmpDir } from '../helpers/daemon.js'

// These tests are about lookups, so no copies are pushed (replication has its own tests).
const R1 = ['--replication-factor', '1']

// One three-node cluster for the tests that neither stop a node nor bring in a stranger: each
// uses keys of its own and counts by differences, so they stay independent of one another.
let shared: ReturnType<typeof startCluster> | undefined
const three = () => (shared ??= startCluster(t, 3, [...R1, ...GENEROUS_LOOKUPS]))

/** What changed in `n`'s cluster counters while `fn` ran. */
async function counted(n: Node, fn: () => Promise<unknown>): Promise<(k: ClusterCounter) => number> {
  const before = await clusterStats(n)
  await fn()
  const after = await clusterStats(n)
  return (k) => after[k] - before[k]
}

t.test('set on A, get on C: the same bytes, then served locally by C', async (t) => {
  const {
    nodes: [a, b, c],
  } = await three()
  const value = Buffer.from([0, 1, 2, 3, 250, 251, 252])
  const setAt = performance.now()
  await a!.client.set('sess-1', value, { ttlMs: 60_000 })
  let e: Awaited<ReturnType<Node['client']['getEntry']>>
  const sc = await counted(c!, async () => (e = await c!.client.getEntry('sess-1')))
  // The TTL runs while the machine is busy: what has passed since the SET is the only fair bound.
  const passed = performance.now() - setAt
  t.same(e?.value, value, 'same bytes')
  t.equal(e?.remote, true, 'fetched from a peer')
  t.ok(
    e!.ttlMs <= 60_000 && e!.ttlMs >= 60_000 - passed - 1000,
    `remaining TTL kept (${e!.ttlMs} ms, ${passed.toFixed(0)} ms after the SET)`,
  )
  const local = await c!.client.getEntry('sess-1', { localOnly: true })
  t.same(local?.value, value, 'C now holds its own copy')
  t.ok(local!.ttlMs <= e!.ttlMs, 'and the copy keeps the original expiry')
  const again = await c!.client.getEntry('sess-1')
  t.equal(again?.remote, false, 'the next GET on C is a local hit')
  t.equal(sc('lookups'), 1)
  t.equal(sc('remoteHits'), 1)

  // Concurrent GETs of one key on B become one lookup.
  let many: (Buffer | undefined)[] = []
  const sb = await counted(b!, async () => (many = await Promise.all(Array.from({ length: 20 }, () => b!.client.get('sess-1')))))
  t.ok(many.every((v) => v?.equals(value)))
  t.equal(sb('lookups'), 1, 'one lookup for 20 concurrent GETs')
  // Those read before the fill completed shared its lookup; those read after are local hits (the
  // fill can complete between two of the client's frames), and none started a lookup of its own.
  t.ok(sb('coalesced') <= 19, `${sb('coalesced')} GETs shared the one lookup, the rest were local hits`)
})

t.test('absent key: "not found" from all MISSes, before the deadline', async (t) => {
  // A deadline no loaded machine reaches: a "not found" before it can only come from the MISSes.
  const {
    nodes: [a],
  } = await three()
  const s = await counted(a!, async () => t.equal(await a!.client.get('nobody-has-this'), undefined))
  t.equal(s('remoteMisses'), 1, 'answered because every live member said MISS')
  t.equal(s('timeouts'), 0, 'not by the 20 s deadline')
})

t.test('a 64 KiB value crosses intact in chunks', async (t) => {
  const {
    nodes: [a, , c],
  } = await three()
  const big = Buffer.alloc(64 * 1024)
  for (let i = 0; i < big.length; i++) big[i] = (i * 7 + 3) & 0xff
  await a!.client.set('big', big)
  let got: Awaited<ReturnType<Node['client']['getEntry']>>
  const s = await counted(c!, async () => (got = await c!.client.getEntry('big')))
  t.equal(got?.remote, true)
  t.ok(got?.value.equals(big), 'every byte intact')
  t.ok(s('chunksReceived') >= 50, `${s('chunksReceived')} chunks received`)
})

t.test('del on B removes the key everywhere', async (t) => {
  const {
    nodes: [a, b, c],
  } = await three()
  const invalidations = (await clusterStats(a!))['invalidationsReceived']
  await a!.client.set('gone', 'soon')
  t.equal((await c!.client.get('gone'))?.toString(), 'soon')
  t.equal(await b!.client.delete('gone'), false, 'B held no copy itself')
  await eventually(
    async () =>
      (await a!.client.get('gone', { localOnly: true })) === undefined && (await c!.client.get('gone', { localOnly: true })) === undefined,
    20_000,
    'copies removed on A and C',
  )
  t.equal(await b!.client.get('gone'), undefined, 'and no host can find it')
  t.ok((await clusterStats(a!))['invalidationsReceived'] > invalidations)
})

t.test('a daemon with another key neither answers nor is answered', async (t) => {
  // A and B: a deadline a loaded machine meets, so B's one lookup is one round that A answers.
  const {
    nodes: [a, b],
    dir,
    group,
    port,
  } = await startCluster(t, 2, [...R1, ...GENEROUS_LOOKUPS])
  const otherKey = writeKeyFile(dir, [newKey()], 'other.key')
  const d = await startNode(t, { dir, name: 'd', keyFile: otherKey, group, port, args: ['--lookup-timeout-ms', '300'] })
  await a!.client.set('from-a', 'secret-a')
  await d.client.set('from-d', 'secret-d')
  await eventually(async () => (await clusterStats(a!))['dropped']['unknownKey'] > 0, 20_000, "A drops D's datagrams")
  t.equal(await d.client.get('from-a'), undefined, 'D cannot fetch from A')
  t.equal(await b!.client.get('from-d'), undefined, 'B cannot fetch from D')
  t.equal((await clusterStats(a!))['members'], 1, 'A does not count D as a member')
  t.equal((await clusterStats(d))['members'], 0, 'D sees no member')
  t.ok((await clusterStats(d))['dropped']['unknownKey'] > 0, 'D counts the datagrams it cannot open')
  t.equal((await clusterStats(a!))['lookupsAnswered'], 1, 'A answered only B, never D')
})

t.test('replayed, stale, forged and junk datagrams are dropped and counted', async (t) => {
  const {
    nodes: [a, b],
    keyFile,
    group,
    port,
  } = await three()
  // A listener on the group sees the sealed traffic, as an attacker on the segment would.
  const spy = DgramAsPromised.createSocket({ type: 'udp4', reuseAddr: true })
  t.teardown(() => spy.close())
  await spy.bind(port, group)
  spy.addMembership(group, '127.0.0.1')
  // One another daemon sent: B skips its own datagrams before its replay check, unseen and uncounted.
  const bId = String(b!.logs.find((l) => l['msg'] === 'joined the cluster')!['nodeId'])
  const captured = new Promise<Buffer>((resolve) => {
    const take = (m: Buffer) => {
      if (m.length < 34 || readHeader(m).senderId.toString('hex') === bId) return
      spy.socket.off('message', take)
      resolve(m)
    }
    spy.socket.on('message', take)
  })
  await a!.client.get('trigger-a-lookup')
  const dgramBytes = await captured
  t.equal(dgramBytes.indexOf(Buffer.from('trigger-a-lookup')), -1, 'the key does not travel in clear')

  const send = dgram.createSocket('udp4')
  t.teardown(() => send.close())
  await new Promise<void>((r) => send.bind(0, '127.0.0.1', r))
  send.setMulticastInterface('127.0.0.1')
  const inject = (buf: Buffer) => new Promise((r) => send.send(buf, port, group, r))
  const before = (await clusterStats(b!))['dropped']
  await inject(dgramBytes)
  await inject(dgramBytes)

  // With the key, a datagram sealed now but dated an hour ago is stale.
  const keys = parseKeyFile(fs.readFileSync(keyFile, 'utf8'))
  const ring = new Keyring(keys)
  const sender = Buffer.from('0102030405060708', 'hex')
  await inject(seal(ring, keys[0]!.id, sender, 1, encodeBody({ type: MsgType.LEAVE }, Date.now() - 3_600_000)))
  // Sealed with an unknown key; one with a flipped bit; and junk.
  const stranger = { ...newKey(), id: 0xabcdef01 }
  await inject(seal(new Keyring([stranger]), stranger.id, sender, 1, encodeBody({ type: MsgType.LEAVE }, Date.now())))
  const flipped = Buffer.from(dgramBytes)
  flipped[flipped.length - 1]! ^= 1
  await inject(flipped)
  await inject(Buffer.from('hello, is this memcached?'))
  const oversize = Buffer.alloc(3000, 1)
  await inject(oversize)

  await eventually(
    async () => {
      const d = (await clusterStats(b!))['dropped']
      return (
        d.replayed >= before.replayed + 2 &&
        d.stale >= before.stale + 1 &&
        d.unknownKey >= before.unknownKey + 1 &&
        d.openFailed >= before.openFailed + 1 &&
        d.malformed >= before.malformed + 1 &&
        d.oversize >= before.oversize + 1
      )
    },
    20_000,
    'every drop counted by reason',
  )
  t.pass('replayed, stale, unknown key, failed to open, malformed and oversize all counted')
  t.equal(readHeader(dgramBytes).keyId, keys[0]!.id, 'the clear header names the key id only')
  t.ok(await b!.client.ping(), 'B still serves')
  await a!.client.set('still', 'works')
  t.equal((await b!.client.get('still'))?.toString(), 'works', 'and the cluster still works')
})

t.test('peers lists members, also as JSON', async (t) => {
  const {
    nodes: [a],
  } = await three()
  const r = await runCli(['--socket', a!.adminSocket, 'peers', '--json'])
  const peers = JSON.parse(r.stdout.toString()) as {
    name: string
    self: boolean
    nodeId: string
    address: string
    lastSeenMs: number
    entries: number
  }[]
  t.same(peers.map((p) => p.name).sort(), ['a', 'b', 'c'])
  t.equal(peers.filter((p) => p.self).length, 1)
  t.ok(peers.every((p) => /^[0-9a-f]{16}$/.test(p.nodeId) && /^127\.0\.0\.1:\d+$/.test(p.address)))
  const human = await runCli(['--socket', a!.adminSocket, 'peers'])
  t.match(human.stdout.toString(), /^nodeId\s+name\s+address\s+lastSeenMs\s+entries\s+self\n/)
})

t.test('a member that leaves or dies is dropped from membership', async (t) => {
  const {
    nodes: [a, b, c],
  } = await startCluster(t, 3, R1)
  await c!.stop('SIGTERM')
  await eventually(async () => (await clusterStats(a!))['members'] === 1, 20_000, 'LEAVE seen')
  t.equal((await clusterStats(a!))['membersLeft'], 1)
  await b!.stop('SIGKILL')
  await eventually(async () => (await clusterStats(a!))['membersDied'] === 1, 20_000, 'silent member declared dead')
  t.equal((await clusterStats(a!))['members'], 0)
  t.equal(await a!.client.get('anything'), undefined, 'alone: not found at once')
})

t.test('keys: exposed key file refused, no key off loopback refused, dev key on loopback', async (t) => {
  const dir = tmpDir()
  const exposed = writeKeyFile(dir, [newKey()], 'open.key', 0o644)
  const devDir = tmpDir()
  // Four independent processes, started side by side.
  const [d1, d2, d3, kg] = await Promise.all([
    startDaemon(t, { dir, name: 'x', args: ['--key-file', exposed], wait: false }),
    startDaemon(t, { dir, name: 'y', args: ['--interface', '10.254.254.254'], wait: false }),
    // Its own directory: the development key it writes must not be there for the two above.
    startDaemon(t, { dir: devDir, name: 'z', args: ['--port', String(30000 + (process.pid % 20000))] }),
    runCli(['keygen']),
  ])
  t.equal(await d1.exited, 1)
  t.ok(
    d1.logs.some((l) => /group or others may read it; run chmod 600/.test(String(l['err']))),
    'says what is wrong and how to fix it',
  )
  t.equal(await d2.exited, 1)
  t.ok(
    d2.logs.some((l) => /without a cluster key: make one with `statecast keygen/.test(String(l['err']))),
    'refuses to join a network without a key and says how to make one',
  )
  t.ok(
    d3.logs.some((l) => /NO CLUSTER KEY CONFIGURED/.test(String(l['msg']))),
    'a development run on loopback creates a key loudly',
  )
  t.equal(fs.statSync(`${devDir}/dev-cluster.key`).mode & 0o777, 0o600)
  t.equal(kg.code, 0)
  t.equal(parseKeyFile(kg.stdout.toString()).length, 1, 'statecast keygen prints a valid key file')
})

t.test('heartbeats: one ANNOUNCE and one TICKET_PUB per member; ticket secrets never go to the group', async (t) => {
  const { nodes, keyFile, group, port } = await startCluster(t, 4)
  await eventually(
    async () => {
      const keys = await Promise.all(nodes.map((n) => n.client.ticketKey()))
      return keys.every((k) => k && k.key.equals(keys[0]!.key))
    },
    60_000,
    'every member holds the same ticket key',
  )
  // A listener on the group opens what each member multicasts. Counted against each member's
  // own ANNOUNCEs (one per heartbeat), not against the clock: a busy machine beats less often.
  const ring = new Keyring(parseKeyFile(fs.readFileSync(keyFile, 'utf8')))
  const spy = DgramAsPromised.createSocket({ type: 'udp4', reuseAddr: true })
  t.teardown(() => spy.close())
  await spy.bind(port, group)
  spy.addMembership(group, '127.0.0.1')
  const seen = new Map<string, { announces: number; pubs: number; secretsToGroup: number }>()
  spy.socket.on('message', (m: Buffer) => {
    const { header, body } = open(ring, m)
    // Several messages of one heartbeat travel as one BATCH.
    for (const msg of decodeMessages(body).msgs) {
      const from = header.senderId.toString('hex')
      const s = seen.get(from) ?? { announces: 0, pubs: 0, secretsToGroup: 0 }
      seen.set(from, s)
      if (msg.type === MsgType.ANNOUNCE) s.announces++
      if (msg.type === MsgType.TICKET_PUB) s.pubs++
      if (msg.type === MsgType.TICKET_KEY || msg.type === MsgType.TICKET_SEAL) s.secretsToGroup++
    }
  })
  await eventually(
    () => seen.size === nodes.length && [...seen.values()].every((s) => s.announces >= 10),
    60_000,
    'ten heartbeats from every member',
  )
  const each = [...seen.values()]
  t.comment(`ANNOUNCE / TICKET_PUB datagrams multicast per member: ${each.map((e) => `${e.announces}/${e.pubs}`).join(', ')}`)
  t.ok(
    each.every((e) => e.announces >= 10),
    'every member announces itself',
  )
  // One TICKET_PUB per heartbeat (its ephemeral key and holdings), in the ANNOUNCE's datagram;
  // the secrets themselves travel unicast, sealed per member (ticket-gossip.ts).
  t.ok(
    each.every((e) => e.pubs >= e.announces - 1 && e.pubs <= e.announces + 1),
    'one TICKET_PUB per heartbeat per member',
  )
  t.ok(
    each.every((e) => e.secretsToGroup === 0),
    'no ticket secret is multicast',
  )
  const keys = await Promise.all(nodes.map((n) => n.client.ticketKey()))
  t.ok(
    keys.every((k) => k!.key.equals(keys[0]!.key)),
    'still one key',
  )
})
