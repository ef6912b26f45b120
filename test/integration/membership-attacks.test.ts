/**
 * Issue 21, findings 3 and 9, with real daemons on loopback:
 * 3. group datagrams recorded before a restart and replayed at their pace (no key needed) must not
 *    make the restarted daemon a member list of the dead (its own previous node id among them);
 * 9. a key holder's one BATCH of LOOKUPs must not have a daemon send megabytes to an address it
 *    announced: one answer per (member, key) per batch, and a HIT byte budget per member.
 */
import t from 'tap'
import crypto from 'node:crypto'
import { DgramAsPromised } from 'dgram-as-promised'
import { MsgType, NO_RECEIVER, encodeBatch, encodeBody, readHeader, seal, type Message } from '../../protocol/wire.js'
import {
  clusterStats,
  hasMembers,
  keyHolder,
  replicationSettled,
  startCluster,
  startNode,
  unicastOf,
  waitMembers,
} from '../helpers/cluster.js'
import { eventually } from '../helpers/daemon.js'

t.test(
  'finding 3: group datagrams recorded before a restart and replayed at their pace: the restarted daemon trusts no ghost',
  async (t) => {
    const { nodes, dir, keyFile, group, port } = await startCluster(t, 2)
    const [a, b] = nodes as [(typeof nodes)[0], (typeof nodes)[0]]
    const oldB = (await unicastOf(b)).id.toString('hex')
    const oldA = (await unicastOf(a)).id.toString('hex')
    // The attacker on the segment: a member of the group, with no key, recording what it hears.
    const tap = DgramAsPromised.createSocket({ type: 'udp4', reuseAddr: true })
    t.teardown(() => tap.close())
    await tap.bind(port)
    tap.socket.addMembership(group, '127.0.0.1')
    tap.socket.setMulticastInterface('127.0.0.1')
    tap.socket.setMulticastLoopback(true)
    const recorded: { at: number; d: Buffer }[] = []
    tap.socket.on('message', (d: Buffer) => recorded.push({ at: performance.now(), d: Buffer.from(d) }))
    const fromOldB = () => recorded.filter((r) => readHeader(r.d).senderId.toString('hex') === oldB).length
    // Heartbeats every 200 ms, probation 400 ms: a dozen of b's spans several probations.
    await eventually(() => fromOldB() >= 12, 30_000, 'a dozen group datagrams of b recorded')
    tap.socket.removeAllListeners('message')
    await b.stop('SIGKILL')
    const startedAt = performance.now()
    const b2 = await startNode(t, { dir, name: 'b', keyFile, group, port })
    // The restarted member must still be trusted as fast as any newcomer (its probation), replay
    // or not: measured from its start to both hosts trusting each other.
    let trustedAfterMs = -1
    const trustedBoth = eventually(
      async () => (await hasMembers(a, 1)) && (await hasMembers(b2, 1)),
      60_000,
      'a and the restarted b trust each other',
    ).then(() => (trustedAfterMs = performance.now() - startedAt))
    const newB = (await unicastOf(b2)).id.toString('hex')
    t.not(newB, oldB, 'the restarted daemon has a new node id')
    // Replayed at their pace, as recorded.
    const t0 = recorded[0]!.at
    const start = performance.now()
    let seenGhost = false
    for (const r of recorded) {
      const wait = r.at - t0 - (performance.now() - start)
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
      await tap.send(r.d, port, group)
      const ids = (await b2.client.peers()).map((p) => String(p['nodeId']))
      if (ids.includes(oldB)) seenGhost = true
    }
    const peers = (await b2.client.peers()).map((p) => String(p['nodeId']))
    t.notOk(seenGhost || peers.includes(oldB), 'the restarted daemon never listed its previous node id')
    await eventually(
      async () => (await clusterStats(b2))['announcesFromBeforeStart'] > 0,
      30_000,
      'the replayed ANNOUNCEs reached the restarted daemon (and were counted)',
    )
    await waitMembers([a, b2], 1)
    const s = await clusterStats(b2)
    t.equal(s['members'], 1, 'one member: a, alive')
    t.ok(peers.includes(oldA) || (await b2.client.peers()).some((p) => p['nodeId'] === oldA), 'a is a member of the restarted daemon')
    await trustedBoth
    t.comment(`the restarted daemon and a trusted each other ${Math.round(trustedAfterMs)} ms after its start (probation 400 ms)`)
    // The harm the finding measured: writes copied to a ghost (200 SETs took 6.4 s, waiting on
    // copies to it), then lost with the restarted daemon (33 of 200). Every one is on a.
    const setsFrom = performance.now()
    for (let i = 0; i < 200; i++) await b2.client.set(`after-replay-${i}`, Buffer.from(`v${i}`))
    t.comment(`200 SETs on the restarted daemon took ${Math.round(performance.now() - setsFrom)} ms`)
    await replicationSettled([b2])
    t.equal((await clusterStats(b2))['members'], 1, 'still one member after the writes: no ghost took copies')
    await b2.stop('SIGKILL')
    let readable = 0
    for (let i = 0; i < 200; i++) if ((await a.client.get(`after-replay-${i}`))?.equals(Buffer.from(`v${i}`))) readable++
    t.equal(readable, 200, "every write made after the replay survives the restarted daemon's death: readable on a")
  },
)

t.test('finding 9: one BATCH of 40 LOOKUPs from a key holder: one answer per key, and HITs within a byte budget', async (t) => {
  const valueBytes = 100_000
  const { nodes, keyFile, group, port } = await startCluster(t, 2, ['--max-value-bytes', String(128 * 1024)])
  const [a, b] = nodes as [(typeof nodes)[0], (typeof nodes)[0]]
  const { ring, keyId, sock, me } = await keyHolder(t, keyFile)
  let received = 0
  sock.socket.on('message', (d: Buffer) => (received += d.length))
  const id = crypto.randomBytes(8)
  let counter = 1
  // A member at its own address, announcing itself every 200 ms (the heartbeat here), so it stays one however long the writes take.
  const announce = () =>
    sock.send(
      seal(
        ring,
        keyId,
        id,
        counter++,
        encodeBody({ type: MsgType.ANNOUNCE, reply: me, entries: 0, flags: 0, name: 'insider' }, Date.now()),
        NO_RECEIVER,
      ),
      port,
      group,
    )
  await announce()
  const beat = setInterval(() => void announce().catch(() => {}), 200)
  t.teardown(() => clearInterval(beat))
  await eventually(async () => (await clusterStats(a))['members'] === 2, 30_000, 'the key holder is a member of a')
  const value = crypto.randomBytes(valueBytes)
  await a.client.set('big-0', value, { noPropagate: true })
  for (let i = 1; i < 40; i++) await a.client.set(`big-${i}`, crypto.randomBytes(valueBytes), { noPropagate: true })
  const { address, id: receiver } = await unicastOf(a)
  const lookup = (key: string): Message => ({
    type: MsgType.LOOKUP,
    reqId: crypto.randomInt(1, 2 ** 31),
    nonce: crypto.randomBytes(8),
    reply: me,
    expect: [],
    key: Buffer.from(key),
  })
  const sendBatch = (msgs: Message[]) => {
    const d = seal(ring, keyId, id, counter++, encodeBatch(msgs, Date.now()), receiver)
    return sock.send(d, address.port, address.address).then(() => d.length)
  }
  const handled = async (n: number) => {
    const s = await clusterStats(a)
    return s['lookupsAnswered'] + (s['lookupsRepeated'] ?? 0) + (s['hitsOverBudget'] ?? 0) >= n
  }
  const chunkBytes = (s: Record<string, number>) => s['chunksSent']!

  // One key, 40 times in one batch.
  const before = await clusterStats(a)
  const sentBytes = await sendBatch(Array.from({ length: 40 }, () => lookup('big-0')))
  t.comment(`batch ${sentBytes} bytes`)
  await eventually(() => handled(before['lookupsAnswered'] + 40), 30_000, 'a handled the 40 LOOKUPs').catch(async (e) => {
    t.comment(JSON.stringify(await clusterStats(a)))
    throw e
  })
  const same = await clusterStats(a)
  const perValue = Math.ceil(valueBytes / 1300)
  const chunks = chunkBytes(same) - chunkBytes(before)
  t.comment(
    `one key x40: a ${sentBytes}-byte batch; a sent ${chunks} HIT chunks (${perValue}-odd per value); the key holder received ${received} bytes`,
  )
  t.ok(chunks <= perValue + 2, `one HIT for one key asked 40 times (${chunks} chunks)`)

  // 40 keys in one batch: the HIT byte budget.
  const mid = await clusterStats(a)
  await sendBatch(Array.from({ length: 40 }, (_, i) => lookup(`big-${i}`)))
  await eventually(
    () => handled(mid['lookupsAnswered'] + (mid['lookupsRepeated'] ?? 0) + (mid['hitsOverBudget'] ?? 0) + 40),
    30_000,
    'a handled the 40 LOOKUPs',
  )
  const many = await clusterStats(a)
  const bytes = (chunkBytes(many) - chunkBytes(mid)) * 1300
  t.comment(
    `40 keys: a sent ${chunkBytes(many) - chunkBytes(mid)} HIT chunks (about ${bytes} bytes); answered ${many['lookupsAnswered'] - mid['lookupsAnswered']}, over budget ${many['hitsOverBudget']}, repeated ${many['lookupsRepeated']}`,
  )
  t.ok(bytes <= 1.5 * 1024 * 1024, `HITs to one member within its budget (about ${bytes} bytes, not 40 x ${valueBytes})`)

  // An honest member still fills: b asks a for a value it lacks.
  // (The insider is a trusted member by now and may own big-0: the fill can take more than one
  // try at the default 50 ms deadline, whose last round asks the group, where a answers.)
  t.ok(
    await eventually(async () => (await b.client.get('big-0'))?.equals(value), 30_000, 'b fetches big-0'),
    'b, an honest member, still fetches from a',
  )
})
