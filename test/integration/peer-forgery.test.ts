/**
 * What one key holder (an insider, or a stolen key) must not be able to do with a few forged
 * datagrams (issue 13, the attacker's second review): crash or pin daemons with one far-future
 * version, reflect large answers to a third party, pin a member's replay counter, roll a value back
 * after an LRU eviction. Real daemons on loopback; the datagrams are sealed with the test
 * cluster's key file.
 */
import t from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import { DgramAsPromised } from 'dgram-as-promised'
import { parseKeyFile } from '../../protocol/keyfile.js'
import {
  AnnounceFlag,
  Keyring,
  MsgType,
  NO_RECEIVER,
  decodeMessages,
  encodeBody,
  open,
  seal,
  type Address,
  type Message,
} from '../../protocol/wire.js'
import {
  GENEROUS_LOOKUPS,
  clusterStats,
  startCluster,
  startNode,
  uniqueGroup,
  waitMembers,
  writeKeyFile,
  type Node,
} from '../helpers/cluster.js'
import { eventually, freePort, tmpDir } from '../helpers/daemon.js'

type Teardown = { teardown(fn: () => unknown): void }

/** A sender holding the cluster key: seals anything as anyone, with any counter. */
async function insider(t: Teardown, keyFile: string, group: string, port: number) {
  const ring = new Keyring(parseKeyFile(fs.readFileSync(keyFile, 'utf8')))
  const keyId = [...ring.keys.keys()][0]!
  const sock = DgramAsPromised.createSocket({ type: 'udp4' })
  await sock.bind(0, '127.0.0.1')
  const id = crypto.randomBytes(8)
  const me: Address = { family: 4, address: '127.0.0.1', port: sock.address().port }
  const got: Message[] = []
  sock.socket.on('message', (d: Buffer) => {
    try {
      got.push(...decodeMessages(open(ring, d).body).msgs)
    } catch {
      /* not for us */
    }
  })
  let counter = 1
  let beat: NodeJS.Timeout | undefined
  const x = {
    id,
    me,
    got,
    send: (m: Message, to: Address, o: { sender?: Buffer; ctr?: number; receiver?: Buffer } = {}) =>
      sock.send(
        seal(ring, keyId, o.sender ?? id, o.ctr ?? counter++, encodeBody(m, Date.now()), o.receiver ?? NO_RECEIVER),
        to.port,
        to.address,
      ),
    group: (m: Message, o: { sender?: Buffer; ctr?: number } = {}) => x.send(m, { family: 4, address: group, port }, o),
    /** Announces itself as a member at `reply` every 150 ms (so it passes probation and stays alive). */
    heartbeat: (reply: Address = me) => {
      clearInterval(beat)
      const ann = () => void x.group({ type: MsgType.ANNOUNCE, reply, entries: 0, flags: 0, name: 'insider' })
      ann()
      beat = setInterval(ann, 150)
    },
    stop: () => clearInterval(beat),
  }
  t.teardown(() => {
    clearInterval(beat)
    return sock.close()
  })
  return x
}

async function unicastOf(n: Node): Promise<{ address: Address; id: Buffer }> {
  const self = (await n.client.peers()).find((p) => p['self'])!
  const a = String(self['address'])
  const i = a.lastIndexOf(':')
  return { address: { family: 4, address: a.slice(0, i), port: Number(a.slice(i + 1)) }, id: Buffer.from(String(self['nodeId']), 'hex') }
}

const alive = (n: Node) => n.proc.exitCode === null && n.proc.signalCode === null

/** One memcache command's reply (up to its terminator). */
function memcache(port: number, cmd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1')
    let b = ''
    s.on('error', reject)
    s.on('data', (d) => {
      b += d
      if (/(END|STORED|ERROR[^\r]*)\r\n$/.test(b)) {
        s.end()
        resolve(b)
      }
    })
    s.write(cmd)
  })
}

/** The wall part (Unix ms) of the version memcache reports as the cas unique of `key` on `port`. */
async function versionWallMs(port: number, key: string): Promise<number> {
  const r = await memcache(port, `gets ${key}\r\n`)
  const m = /VALUE \S+ \d+ \d+ (\d+)/.exec(r)
  if (!m) throw new Error(`no value for ${key}: ${r}`)
  return Number(BigInt(m[1]!) >> 16n)
}

t.test(
  'one INVALIDATE at version 2^64-1: refused and counted; no daemon exits, writes keep replicating, a LOOKUP is answered',
  async (t) => {
    // A lookup deadline a loaded machine meets: C's read of A's session is a fill, not a race.
    const { nodes, keyFile, group, port } = await startCluster(t, 2, [
      '--replication-factor',
      '2',
      '--store-engine',
      'lru-cache',
      ...GENEROUS_LOOKUPS,
    ])
    const [a, c] = nodes as [Node, Node]
    const x = await insider(t, keyFile, group, port)
    const heard = (await clusterStats(a))['datagramsReceived']
    await x.group({ type: MsgType.INVALIDATE, version: 2n ** 64n - 1n, key: Buffer.from('nothing') })
    await eventually(async () => (await clusterStats(a))['datagramsReceived'] > heard, 30_000, 'A received it')
    await a.client.set('k', Buffer.from('v1'))
    await eventually(
      async () => (await c.client.get('k', { localOnly: true }))?.equals(Buffer.from('v1')) ?? false,
      30_000,
      'the copy of a write made after the forgery reaches C',
    )
    // The holder answers a LOOKUP for a session only it has (the old code threw in the socket handler here: exit 70).
    await a.client.set('only-on-a', Buffer.from('secret'), { noPropagate: true })
    t.same(await c.client.get('only-on-a'), Buffer.from('secret'), 'C finds the session A holds')
    t.ok(alive(a) && alive(c), 'both daemons still run')
    await eventually(
      async () => (await clusterStats(a))['dropped']['futureVersion'] >= 1 && (await clusterStats(c))['dropped']['futureVersion'] >= 1,
      30_000,
      'both refused the forged version (counted)',
    )
    t.equal((await clusterStats(a))['dropped']['failed'], 0, 'no message failed in a handler')
  },
)

t.test(
  'one INVALIDATE dated 2126: refused; the clocks stay at now, a held session is not deleted, a later delete still reaches the copy',
  async (t) => {
    const mport = await freePort()
    const dir = tmpDir('sc-forge-')
    const keyFile = writeKeyFile(dir)
    const { group, port } = uniqueGroup()
    const args = ['--replication-factor', '2', '--store-engine', 'compact']
    const a = await startNode(t, { dir, name: 'a', keyFile, group, port, args: [...args, '--memcache-listen', `127.0.0.1:${mport}`] })
    const c = await startNode(t, { dir, name: 'c', keyFile, group, port, args })
    await waitMembers([a, c], 1)
    await a.client.set('held', Buffer.from('keep-me'))
    await eventually(
      async () => (await c.client.get('held', { localOnly: true }))?.equals(Buffer.from('keep-me')) ?? false,
      30_000,
      'copy on C',
    )
    const x = await insider(t, keyFile, group, port)
    const future = BigInt(Date.UTC(2126, 0, 1)) << 16n
    await x.group({ type: MsgType.INVALIDATE, version: future, key: Buffer.from('unrelated') })
    await x.group({ type: MsgType.INVALIDATE, version: future, key: Buffer.from('held') })
    await eventually(
      async () =>
        (await clusterStats(a))['dropped']['futureVersion'] >= 2 || (await a.client.get('held', { localOnly: true })) === undefined,
      30_000,
      'A refused both, or applied them',
    )
    t.same(await a.client.get('held', { localOnly: true }), Buffer.from('keep-me'), 'the held session is not deleted by a future version')
    await a.client.set('after', Buffer.from('v'))
    const wall = await versionWallMs(mport, 'after')
    t.ok(wall < Date.now() + 60_000, `a write after the forgery is versioned at now (${new Date(wall).toISOString()}), not in 2126`)
    // The write is not refused anywhere as stale, and a delete of it reaches the copy.
    await eventually(async () => (await c.client.get('after', { localOnly: true }))?.equals(Buffer.from('v')) ?? false, 30_000, 'copy on C')
    await a.client.delete('after')
    await eventually(async () => (await c.client.get('after', { localOnly: true })) === undefined, 30_000, 'the delete reached C')
    // And a write made on C now is taken by A: A's clock and tombstones were not moved to 2126. (A
    // count of refusals on A would also count harmless duplicates: a copy A already holds, sent
    // again when a loaded machine makes the membership flap and the owners are placed anew.)
    await c.client.set('from-c', Buffer.from('w'))
    t.ok(
      await eventually(
        async () => (await a.client.get('from-c', { localOnly: true }))?.equals(Buffer.from('w')) ?? false,
        30_000,
        'the copy reached A',
      ),
      'a write made on C after the forgery is taken by A',
    )
  },
)

t.test('an insider announcing a third party as its reply address: no LOOKUP answer reaches the third party', async (t) => {
  const { nodes, keyFile, group, port } = await startCluster(t, 3, ['--replication-factor', '3'])
  await nodes[0]!.client.set('big', crypto.randomBytes(60_000))
  await eventually(
    async () => (await Promise.all(nodes.map((n) => n.client.get('big', { localOnly: true })))).every((v) => v !== undefined),
    30_000,
    'big on every host',
  )
  const victim = DgramAsPromised.createSocket({ type: 'udp4' })
  t.teardown(() => victim.close())
  await victim.bind(0, '127.0.0.1')
  // What reaches the third party, by type. The welcome a newcomer gets (our ANNOUNCE and the
  // ticket secrets, a few small datagrams once per new member) is not what is counted here: the
  // finding is the answers to LOOKUPs, a HIT of a large value being ~2,000 times its LOOKUP.
  const ring = new Keyring(parseKeyFile(fs.readFileSync(keyFile, 'utf8')))
  let answerBytes = 0
  victim.socket.on('message', (d: Buffer) => {
    try {
      if (decodeMessages(open(ring, d).body).msgs.some((m) => m.type === MsgType.HIT || m.type === MsgType.MISS)) answerBytes += d.length
    } catch {
      answerBytes += d.length
    }
  })
  const victimAddr: Address = { family: 4, address: '127.0.0.1', port: victim.address().port }
  const lookups = async (x: Awaited<ReturnType<typeof insider>>, reply: Address) => {
    for (let i = 0; i < 20; i++)
      await x.group({ type: MsgType.LOOKUP, reqId: i + 1, nonce: crypto.randomBytes(8), reply, expect: [], key: Buffer.from('big') })
  }

  // 1. A new member (in probation) naming the victim: its LOOKUPs are not answered.
  const fresh = await insider(t, keyFile, group, port)
  await fresh.group({ type: MsgType.ANNOUNCE, reply: victimAddr, entries: 0, flags: 0, name: 'x' })
  await eventually(
    async () => (await Promise.all(nodes.map(clusterStats))).every((s) => s['members'] === 3),
    30_000,
    'the insider is a member everywhere',
  )
  const before = await Promise.all(nodes.map(clusterStats))
  await lookups(fresh, victimAddr)
  await eventually(
    async () =>
      (await Promise.all(nodes.map(clusterStats))).every((s, i) => s['datagramsReceived'] - before[i]!['datagramsReceived'] >= 20),
    30_000,
    'the 20 LOOKUPs reached every host',
  )
  t.ok(
    (await Promise.all(nodes.map(clusterStats))).every((s, i) => s['lookupsFromUntrusted'] - before[i]!['lookupsFromUntrusted'] === 20),
    'every host refused the 20 LOOKUPs of a member in probation (counted)',
  )

  // 2. A trusted member that then announces the victim's address: the change is refused; answers keep going to its own address.
  const member = await insider(t, keyFile, group, port)
  member.heartbeat()
  await eventually(
    async () => (await Promise.all(nodes.map(clusterStats))).every((s) => s['trustedMembers'] >= 3),
    30_000,
    'the second insider is trusted everywhere',
  )
  await member.group({ type: MsgType.ANNOUNCE, reply: victimAddr, entries: 0, flags: 0, name: 'insider' })
  const hitsBefore = member.got.filter((m) => m.type === MsgType.HIT).length
  await lookups(member, victimAddr)
  await eventually(
    () => member.got.filter((m) => m.type === MsgType.HIT).length > hitsBefore,
    30_000,
    'answers reach the insider at its own address',
  )
  // The victim must have got nothing; a datagram to it would have arrived before the insider's HITs on loopback, but give it the time of a lookup round trip more.
  await eventually(async () => (await Promise.all(nodes.map(clusterStats))).every((s) => s['inflightLookups'] === 0), 30_000, 'quiet')
  t.equal(answerBytes, 0, 'the third party received no answer to a LOOKUP')
  t.ok(
    (await Promise.all(nodes.map(clusterStats))).every((s) => s['replyChangesRefused'] >= 1),
    'every host refused the new reply address (counted)',
  )

  // 3. Repeated HELLOs of a known member: answered at most once per heartbeat (each answer is our ANNOUNCE and every ticket secret).
  // Sent back to back, not one after another's send completes: a busy machine must not spread
  // them over several heartbeats (each heartbeat may rightly answer one).
  await Promise.all(
    Array.from({ length: 20 }, () =>
      member.group({ type: MsgType.ANNOUNCE, reply: member.me, entries: 0, flags: AnnounceFlag.HELLO, name: 'insider' }),
    ),
  )
  await eventually(
    async () => (await Promise.all(nodes.map(clusterStats))).every((s) => s['hellosThrottled'] >= 10),
    30_000,
    'most of 20 HELLOs in a row not answered, on every host (counted)',
  )
})

t.test('one LEAVE sealed as member A with counter 2^53-1: refused as a counter jump; A stays a member and is answered', async (t) => {
  const { nodes, keyFile, group, port } = await startCluster(t, 2, GENEROUS_LOOKUPS)
  const [a, c] = nodes as [Node, Node]
  const { id: aId } = await unicastOf(a)
  await a.client.set('only-on-a', Buffer.from('val'), { noPropagate: true })
  const x = await insider(t, keyFile, group, port)
  await x.group({ type: MsgType.LEAVE }, { sender: aId, ctr: 2 ** 53 - 1 })
  // A's own later datagrams are still new to C: several heartbeats pass and A stays a trusted member.
  const heard = (await clusterStats(c))['datagramsReceived']
  await eventually(async () => (await clusterStats(c))['datagramsReceived'] >= heard + 10, 30_000, 'ten more datagrams reached C')
  const s = await clusterStats(c)
  t.ok(s['dropped']['counterJump'] >= 1, 'C refused the jump (counted)')
  t.equal(s['membersLeft'], 0, 'the forged LEAVE did not remove A')
  t.equal(s['trustedMembers'], 1, 'A is a trusted member of C')
  t.same(await c.client.get('only-on-a'), Buffer.from('val'), "C's lookup is answered by A")
})

t.test('an entry evicted by LRU pressure: a delayed older copy does not roll it back', async (t) => {
  for (const engine of ['compact', 'lru-cache']) {
    await t.test(engine, async (t) => {
      const { nodes, keyFile, group, port } = await startCluster(t, 2, [
        '--replication-factor',
        '3',
        '--max-bytes',
        String(1 << 20),
        '--max-value-bytes',
        String(64 * 1024),
        '--store-engine',
        engine,
      ])
      const [a, c] = nodes as [Node, Node]
      const x = await insider(t, keyFile, group, port)
      x.heartbeat()
      await eventually(
        async () => (await clusterStats(a))['trustedMembers'] === 2 && (await clusterStats(c))['trustedMembers'] === 2,
        30_000,
        'the insider is a trusted member (gets copies)',
      )
      await a.client.set('sess', Buffer.from('v1-old'))
      const v1 = (await eventually(
        // An application's SET travels as REPLICATE_AWAITED (REPLICATE's layout).
        () => x.got.find((m) => (m.type === MsgType.REPLICATE || m.type === MsgType.REPLICATE_AWAITED) && String(m.key) === 'sess'),
        30_000,
        'the insider captured the copy of v1',
      )) as Extract<Message, { type: typeof MsgType.REPLICATE | typeof MsgType.REPLICATE_AWAITED }>
      await a.client.set('sess', Buffer.from('v2-new'))
      await eventually(
        async () => (await c.client.get('sess', { localOnly: true }))?.equals(Buffer.from('v2-new')) ?? false,
        30_000,
        'C has v2',
      )
      for (let i = 0; i < 400; i++) await c.client.set(`filler${i}`, crypto.randomBytes(4000), { noPropagate: true })
      t.equal(await c.client.get('sess', { localOnly: true }), undefined, 'v2 evicted from C')
      const cu = await unicastOf(c)
      const staleBefore = ((await c.admin.stats()) as { store: Record<string, number> }).store['staleWrites']!
      await x.send({ ...v1, replId: 4242 }, cu.address, { receiver: cu.id })
      const rolledBack = async () => String(await c.client.get('sess', { localOnly: true })) === 'v1-old'
      await eventually(
        async () =>
          ((await c.admin.stats()) as { store: Record<string, number> }).store['staleWrites']! > staleBefore || (await rolledBack()),
        30_000,
        'the delayed copy refused as stale, or applied',
      )
      t.notOk(await rolledBack(), 'C does not hold the rolled-back value')
      t.ok(
        ((await c.admin.stats()) as { store: Record<string, number> }).store['evictionsFloored']! > 0,
        'evictions raised the floor (counted)',
      )
    })
  }
})

t.test(
  '60 forged members past their probation at once: at most 16 become trusted per heartbeat; GETs are answered during the re-placement scans',
  async (t) => {
    const { nodes, keyFile, group, port } = await startCluster(t, 1, ['--replication-factor', '2', '--max-members', '100'])
    const a = nodes[0]!
    for (let i = 0; i < 20_000; i += 500)
      await Promise.all(Array.from({ length: 500 }, (_, j) => a.client.set(`k${i + j}`, Buffer.alloc(100, 1), { noPropagate: true })))
    const x = await insider(t, keyFile, group, port)
    const ids = Array.from({ length: 60 }, () => crypto.randomBytes(8))
    const announceAll = () =>
      Promise.all(
        ids.map((sender) =>
          x.group({ type: MsgType.ANNOUNCE, reply: x.me, entries: 0, flags: 0, name: 'forged' }, { sender, ctr: Date.now() }),
        ),
      )
    await announceAll()
    await eventually(async () => (await clusterStats(a))['members'] === 60, 30_000, 'the forged members joined')
    // Past the probation (400 ms here), all 60 announce again within one heartbeat.
    await eventually(
      async () => {
        await announceAll()
        return (await clusterStats(a))['trustDeferred'] > 0
      },
      30_000,
      'some were deferred (counted)',
    )
    const s = await clusterStats(a)
    t.ok(s['trustedMembers'] < 60, `not all 60 trusted at once (${s['trustedMembers']} trusted, ${s['trustDeferred']} deferred)`)
    // Meanwhile local GETs are answered (the scans yield between slices).
    for (let i = 0; i < 20; i++) t.same(await a.client.get(`k${i * 997}`, { localOnly: true }), Buffer.alloc(100, 1))
  },
)

t.test('a ticket secret from a sender that never joined, naming creator 00..00, replaces nothing (issue 21, finding 10)', async (t) => {
  const { nodes, keyFile, group, port } = await startCluster(t, 2)
  const agreed = async () => {
    const ks = await Promise.all(nodes.map((n) => n.client.ticketKey()))
    return ks.every((k) => k && k.key.equals(ks[0]!.key)) ? ks[0]! : undefined
  }
  const before = (await eventually(agreed, 60_000, 'one ticket key on both members'))!
  const x = await insider(t, keyFile, group, port)
  const zero = Buffer.alloc(8)
  const forged = crypto.randomBytes(48)
  const targets = await Promise.all(nodes.map(unicastOf))
  for (const epoch of [before.epoch, before.epoch + 1, before.epoch + 2]) {
    // The retired form (a raw secret under the cluster key), to the group and to each member...
    await x.group({ type: MsgType.TICKET_KEY, epoch, creator: zero, key: forged }, { sender: zero })
    for (const n of targets) {
      await x.send({ type: MsgType.TICKET_KEY, epoch, creator: zero, key: forged }, n.address, { sender: zero, receiver: n.id })
      // ...and the sealed one, from a sender id 00..00 that never announced itself.
      await x.send(
        {
          type: MsgType.TICKET_SEAL,
          epoch,
          sealerPub: crypto.randomBytes(32),
          recipientPub: crypto.randomBytes(32),
          nonce: crypto.randomBytes(12),
          sealed: forged,
          tag: crypto.randomBytes(16),
        },
        n.address,
        { sender: zero, receiver: n.id },
      )
    }
  }
  // Until every member has seen them (counted), or the key changed (what the old code did).
  await eventually(
    async () => {
      const ks = await Promise.all(nodes.map((n) => n.client.ticketKey()))
      if (ks.some((k) => !k!.key.equals(before.key))) return true
      const st = await Promise.all(nodes.map(clusterStats))
      return st.every((s) => s['ticketKeysRetired'] >= 1 && s['ticketSealsFromUntrusted'] >= 1)
    },
    30_000,
    'the forged secrets arrived',
  )
  const after = await Promise.all(nodes.map((n) => n.client.ticketKey()))
  for (const [i, k] of after.entries()) {
    t.equal(k!.epoch, before.epoch, `member ${i}: the same epoch`)
    t.ok(k!.key.equals(before.key), `member ${i}: the current epoch's key is unchanged`)
    t.notOk(k!.key.equals(forged), `member ${i}: the forged secret is not in force`)
  }
})
