/**
 * Membership between cluster cores in one process (test/helpers/memory-cluster.ts): join and
 * probation, death of a silent member, rejoin after a partition and after a restart, with fake
 * time over the in-memory network.
 */
import t from 'tap'
import { newKey } from '../helpers/cluster.js'
import { CORE_DEFAULTS, MemoryLab, startLab, type Core } from '../helpers/memory-cluster.js'

const KEYS = Array.from({ length: 30 }, (_, i) => `sess-${i}`)

const memberOf = (at: Core, other: Core) => at.cluster.members.get(other.cluster.nodeId)

t.test('join: a newcomer is a member at once, trusted (owns keys, gets copies) only after its probation', async (t) => {
  const l = new MemoryLab(21)
  t.teardown(() => l.close())
  const a = await l.add('a')
  await l.run(5000) // a alone, settled
  for (const k of KEYS) l.set(a, k, `value of ${k}`)
  const b = await l.add('b')
  const joinedAt = l.clock.now()
  await l.run(50) // b's HELLO and a's answer
  t.equal(memberOf(a, b)?.trusted, false, 'a knows b at once, in probation')
  t.equal(memberOf(b, a)?.trusted, false, 'b knows a at once, in probation')
  t.same(l.ownersOf(KEYS[0]!, a), [a], 'a member in probation owns nothing')
  await l.run(1500) // still within the probation (memberProbationMs 2000)
  t.equal(a.cluster.replicator.counters.copiesPushed, 0, 'no copies pushed to a member in probation')
  t.equal(KEYS.filter((k) => b.store.peek(k)).length, 0, 'b holds nothing yet')

  t.ok(await l.until(() => memberOf(a, b)?.trusted === true, 5000), 'trusted after its probation and another ANNOUNCE')
  t.ok(l.clock.now() - joinedAt >= 2000, 'not before memberProbationMs')
  t.ok(
    await l.until(() => KEYS.every((k) => b.store.peek(k)?.version === a.store.peek(k)!.version), 5000),
    'every key re-placed on b (R = 2 with two members)',
  )
  t.equal(a.cluster.counters.membersJoined, 1)
  t.equal(a.cluster.replicator.counters.replacementScans > 0, true, 're-placed by a scan')
})

t.test('death: a member silent for deadAfterMs is dropped, and its keys get a new owner', async (t) => {
  const { lab: l, cores } = await startLab(t, 3, 22)
  const [a, b, c] = cores as [Core, Core, Core]
  for (const k of KEYS) l.set(a, k, `value of ${k}`)
  t.ok(await l.until(() => KEYS.every((k) => l.ownersOf(k, a).every((o) => o.store.peek(k))), 10_000, 50), 'copies placed')
  const hadC = KEYS.filter((k) => l.ownersOf(k, a).includes(c))
  t.ok(hadC.length > 0, 'c owns some keys')

  const crashedAt = l.clock.now()
  l.crash(c)
  t.ok(
    await l.until(() => !a.cluster.members.has(c.cluster.nodeId) && !b.cluster.members.has(c.cluster.nodeId), 10_000, 50),
    'a and b drop c',
  )
  const silentMs = l.clock.now() - crashedAt
  t.ok(silentMs >= 3000, `not before deadAfterMs (${silentMs} ms of fake time)`)
  t.equal(a.cluster.counters.membersDied, 1, 'counted as died at a')
  t.equal(b.cluster.counters.membersDied, 1, 'counted as died at b')
  t.equal(a.cluster.counters.membersLeft, 0, 'no LEAVE came')
  t.ok(await l.until(() => hadC.every((k) => a.store.peek(k) && b.store.peek(k)), 5000, 50), 'the keys c owned are on both a and b again')
  t.ok(sum([a, b], (x) => x.cluster.replicator.counters.replacements) >= hadC.length, 're-placed copies')
})

t.test('rejoin after a partition: the member is new again, in probation, then trusted and given its keys', async (t) => {
  const { lab: l, cores } = await startLab(t, 3, 23)
  const [a, b, c] = cores as [Core, Core, Core]
  const joinedBefore = a.cluster.counters.membersJoined
  const heal = l.crash(c)
  t.ok(await l.until(() => !a.cluster.members.has(c.cluster.nodeId), 10_000, 50), 'c dropped while cut off')
  // Written while c is away: c holds none of it.
  for (const k of KEYS) l.set(a, k, `value of ${k}`)
  await l.run(1000)
  heal()
  t.ok(await l.until(() => a.cluster.members.has(c.cluster.nodeId), 3000, 10), 'c is heard again')
  t.equal(memberOf(a, c)?.trusted, false, 'in probation again')
  t.equal(a.cluster.counters.membersJoined, joinedBefore + 1, 'joined a second time')
  t.ok(
    await l.until(() => memberOf(a, c)?.trusted === true && memberOf(b, c)?.trusted === true, 10_000, 50),
    'trusted again after its probation',
  )
  const cOwns = KEYS.filter((k) => l.ownersOf(k, a).includes(c))
  t.ok(cOwns.length > 0, 'c owns some keys again')
  t.ok(
    await l.until(() => cOwns.every((k) => c.store.peek(k)?.value.toString() === `value of ${k}`), 5000, 50),
    'the keys c owns were copied to it',
  )
})

t.test('restart: a clean stop leaves at once; the host restarted (a new node id) joins through probation', async (t) => {
  const { lab: l, cores } = await startLab(t, 3, 24)
  const [a, , c] = cores as [Core, Core, Core]
  await l.settle(l.stop(c))
  await l.run(10) // the LEAVE on its way
  t.equal(a.cluster.members.has(c.cluster.nodeId), false, 'the stopped member is gone at once')
  t.equal(a.cluster.counters.membersLeft, 1, 'counted as left, not died')
  const c2 = await l.add('c', {}, c.address)
  t.not(c2.cluster.nodeId, c.cluster.nodeId, 'a restart is a new node id')
  await l.run(50)
  t.equal(memberOf(a, c2)?.trusted, false, 'the restarted host is in probation')
  t.ok(await l.converge(), 'then trusted by all')
})

t.test('a core sealing with another cluster key is never a member: its datagrams fail to open (counted)', async (t) => {
  const { lab: l, cores } = await startLab(t, 2, 25)
  const [a] = cores as [Core]
  const stranger = await l.add('stranger', {}, undefined, [newKey()])
  await l.run(10_000)
  for (const c of cores) t.equal(c.cluster.members.has(stranger.cluster.nodeId), false, `${c.name} does not know it`)
  t.equal(stranger.cluster.members.size, 0, 'it knows no one')
  t.ok(a.cluster.transport.counters.dropped.unknownKey > 0, 'its datagrams name a key a does not hold')
  t.ok(stranger.cluster.transport.counters.dropped.unknownKey > 0, 'and the other way round')
})

const sum = (cores: Core[], f: (c: Core) => number) => cores.reduce((n, c) => n + f(c), 0)

t.test(
  'replay after a restart (issue 21 finding 3): group datagrams recorded before it, replayed at their pace, plant no ghost; the restarted host is trusted after its probation',
  async (t) => {
    const { lab: l, cores } = await startLab(t, 3, 26)
    const [a, b, c] = cores as [Core, Core, Core]
    // The attacker on the segment: a socket in the group, with no key, recording what it hears.
    const tap = l.net.host('127.0.1.200')({ type: 'udp4' })
    await tap.bind(CORE_DEFAULTS.port, '0.0.0.0')
    tap.addMembership(CORE_DEFAULTS.group, '127.0.1.200')
    const recorded: { at: number; d: Buffer }[] = []
    let recording = true
    tap.socket.on('message', (d: Buffer) => recording && recorded.push({ at: l.clock.now(), d: Buffer.from(d) }))
    await l.run(10_000) // ten heartbeats of each member, across several probations
    const dead = [b.cluster.nodeId, c.cluster.nodeId]
    recording = false // the tap hears its own replays
    t.ok(recorded.length >= 20, `group datagrams recorded (${recorded.length})`)
    // c dies for good; b dies and starts again (a new node id; on a new address, as the lab cuts
    // a crashed host off by its address).
    l.crash(c)
    l.crash(b)
    const b2 = await l.add('b2')
    const startedAt = l.clock.now()
    let ghosts = 0
    const t0 = recorded[0]!.at
    for (const r of recorded) {
      const wait = r.at - t0 - (l.clock.now() - startedAt)
      if (wait > 0) await l.run(wait)
      tap.send(r.d, CORE_DEFAULTS.port, CORE_DEFAULTS.group)
      await l.run(1)
      if (dead.some((id) => b2.cluster.members.has(id))) ghosts++
    }
    t.equal(ghosts, 0, 'the restarted host never listed its previous node id nor the dead member')
    t.ok(b2.cluster.membership.counters.announcesFromBeforeStart > 0, 'the replayed ANNOUNCEs arrived and were refused (counted)')
    t.ok(
      await l.until(() => memberOf(a, b2)?.trusted === true && memberOf(b2, a)?.trusted === true, 30_000, 10),
      'a and the restarted host trust each other',
    )
    t.same([...b2.cluster.members.keys()], [a.cluster.nodeId], 'the restarted host knows a alone (c died, its previous id is no one)')
  },
)
