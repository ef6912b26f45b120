/**
 * Remote lookups between cluster cores in one process (test/helpers/memory-cluster.ts): the
 * real Cluster, Lookups and sealed Transport over an in-memory network, with fake time.
 */
import t from 'tap'
import { MemoryLab, startLab, type Core } from '../helpers/memory-cluster.js'

const TTL_MS = 60_000

/** A key that `asker` does not own, with its owners (other cores) in the asker's order. */
function keyOwnedByOthers(l: MemoryLab, asker: Core, prefix: string): { key: string; owners: Core[] } {
  for (let i = 0; ; i++) {
    const key = `${prefix}-${i}`
    const owners = l.ownersOf(key, asker)
    if (!owners.includes(asker)) return { key, owners }
  }
}

/** The fake time a lookup took to settle, with its result. */
async function timed(l: MemoryLab, p: Promise<unknown>) {
  const t0 = l.clock.now()
  let tookMs = -1
  const found = await l.settle(
    p.then((f) => {
      tookMs = l.clock.now() - t0
      return f
    }),
  )
  return { found: found as Awaited<ReturnType<Core['cluster']['lookup']>>, tookMs }
}

t.test('fill: a key held by another core is found, stored here with its TTL, flags and version', async (t) => {
  const { lab: l, cores } = await startLab(t, 3, 1, { replicationFactor: 1 })
  const [a, b] = cores as [Core, Core]
  a.store.set('k', Buffer.from('session-1'), TTL_MS, 7)
  const { found, tookMs } = await timed(l, b.cluster.lookup('k'))
  t.equal(found?.value.toString(), 'session-1', 'the value')
  t.equal(found?.flags, 7, 'the flags')
  t.equal(found?.version, a.store.peek('k')!.version, 'the version of the copy it came from')
  t.ok(found!.ttlMs > 0 && found!.ttlMs <= TTL_MS, 'the remaining TTL')
  t.equal(b.store.peek('k')?.value.toString(), 'session-1', 'kept here')
  t.ok(tookMs < 50, 'before the deadline')
  t.equal(b.cluster.lookups.counters.remoteHits, 1)
  t.equal(b.cluster.lookups.counters.timeouts, 0)
  t.equal(a.cluster.counters.hitsSent, 1, 'the holder answered once')
})

t.test('hedge: with owners known, the first owner alone is asked; the second only when it is silent', async (t) => {
  // Fake timers tick in whole ms and a reply takes at least one: a hedge delay of a few ms leaves
  // a live first owner time to answer, as the 1 ms default does on a real network.
  const { lab: l, cores } = await startLab(t, 4, 2, { lookupHedgeMs: 5 })
  const asker = cores[3]!
  const { key, owners } = keyOwnedByOthers(l, asker, 'hedge')
  const [first, second] = owners as [Core, Core]
  l.set(first, key, 'v1', TTL_MS)
  t.ok(await l.until(() => second.store.peek(key) !== undefined, 5000), 'the copy reached the second owner')

  const quiet = await timed(l, asker.cluster.lookup(key))
  t.equal(quiet.found?.value.toString(), 'v1', 'found')
  t.equal(asker.cluster.lookups.counters.hedged, 0, 'the first owner answered: no hedge')
  t.equal(asker.cluster.lookups.counters.lookupDatagrams, 1, 'one LOOKUP')
  t.equal(second.cluster.counters.lookupsAnswered, 0, 'the second owner was not asked')

  // From the other non-owner (the asker now holds a copy), while the first owner is silent (its
  // inbound datagrams are lost): after lookupHedgeMs, the second owner is asked.
  const other = cores.find((c) => c !== asker && !owners.includes(c))!
  const unblock = l.net.block((d) => d.toHost === first.address)
  const slow = await timed(l, other.cluster.lookup(key))
  unblock()
  t.equal(slow.found?.value.toString(), 'v1', 'found at the second owner')
  t.equal(other.cluster.lookups.counters.hedged, 1, 'hedged once')
  t.equal(second.cluster.counters.hitsSent, 1, 'the second owner answered')
  t.ok(slow.tookMs < 50, 'well before the deadline')
})

t.test('retransmit: a lost LOOKUP is sent again with the same request and the fill completes', async (t) => {
  const { lab: l, cores } = await startLab(t, 2, 3, { replicationFactor: 1 })
  const [a, b] = cores as [Core, Core]
  a.store.set('k', Buffer.from('again'), TTL_MS)
  // The first round (at 0 ms) is lost; the next (at lookupTimeoutMs / (lookupRetries + 1)) is not.
  const until = l.clock.now() + 5
  const unblock = l.net.block((d) => d.from.address === b.address && l.clock.now() < until)
  const { found } = await timed(l, b.cluster.lookup('k'))
  unblock()
  t.equal(found?.value.toString(), 'again', 'found')
  t.equal(b.cluster.lookups.counters.lookupDatagrams, 2, 'two rounds')
  t.equal(b.cluster.lookups.counters.timeouts, 0)
  t.ok(l.net.counters.blocked >= 1, 'the first round was lost')
})

t.test('deadline: with no answer at all, "not found" at lookupTimeoutMs after every retransmit', async (t) => {
  const { lab: l, cores } = await startLab(t, 2, 4, { replicationFactor: 1, lookupTimeoutMs: 50, lookupRetries: 5 })
  const [a, b] = cores as [Core, Core]
  a.store.set('k', Buffer.from('unreachable'), TTL_MS)
  const unblock = l.net.block((d) => d.toHost === a.address)
  const { found, tookMs } = await timed(l, b.cluster.lookup('k'))
  unblock()
  t.equal(found, undefined, '"not found"')
  t.ok(tookMs >= 49 && tookMs <= 51, `at the deadline (${tookMs} ms of fake time)`)
  t.equal(b.cluster.lookups.counters.timeouts, 1, 'counted as a timeout')
  // Timers run in whole ms, so the rounds (every 50 / 6 ms) may fit one more before the deadline.
  t.ok(
    b.cluster.lookups.counters.lookupDatagrams >= 6,
    `the first round and lookupRetries retransmits (${b.cluster.lookups.counters.lookupDatagrams})`,
  )
  t.equal(b.cluster.lookups.inflight, 0, 'nothing left in flight')
})

t.test('a patient lookup (memcache) waits past lookupTimeoutMs with retransmits backing off, and joins lend their patience', async (t) => {
  const { lab: l, cores } = await startLab(t, 2, 4, { replicationFactor: 1, lookupTimeoutMs: 50, lookupRetries: 5 })
  const [a, b] = cores as [Core, Core]
  a.store.set('k', Buffer.from('slow-owner'), TTL_MS)
  const unblock = l.net.block((d) => d.toHost === a.address)
  const silent = await timed(l, b.cluster.lookup('k', 2000))
  t.equal(silent.found, undefined, '"not found" once the patient deadline passed')
  t.ok(silent.tookMs >= 1999 && silent.tookMs <= 2001, `at the patient deadline (${silent.tookMs} ms of fake time)`)
  // 6 rounds in the first 50 ms, then half the time waited (25, 37, 56, ... ms), at most 200 ms:
  // about 20 in all, where the first 50 ms's pace would have sent 240.
  const sent = b.cluster.lookups.counters.lookupDatagrams
  t.ok(sent >= 7 && sent <= 24, `retransmits backed off (${sent} LOOKUPs in 2 s)`)

  // An API-style lookup joined by a patient one waits as long; the owner answers in the meantime.
  const quick = b.cluster.lookup('k')
  const patient = b.cluster.lookup('k', 2000)
  await l.run(300)
  unblock()
  const [q, p] = await l.settle(Promise.all([quick, patient]))
  t.equal(q?.value.toString(), 'slow-owner', 'the joined lookup found it after its own 50 ms')
  t.equal(p?.value.toString(), 'slow-owner', 'the patient lookup found it')
})

t.test('"not found" from the owners\' MISSes, before the deadline; non-owners are not asked', async (t) => {
  const { lab: l, cores } = await startLab(t, 4, 5)
  const asker = cores[0]!
  const { key, owners } = keyOwnedByOthers(l, asker, 'absent')
  const { found, tookMs } = await timed(l, asker.cluster.lookup(key))
  t.equal(found, undefined, '"not found"')
  t.ok(tookMs < 50, `before the deadline (${tookMs} ms of fake time)`)
  const c = asker.cluster.lookups.counters
  t.equal(c.remoteMisses, 1, 'settled by MISSes')
  t.equal(c.timeouts, 0, 'not by the deadline')
  t.equal(c.missesReceived, 2, 'one MISS from each owner')
  for (const o of owners) t.equal(o.cluster.counters.missesSent, 1, `owner ${o.name} said MISS`)
  const other = cores.find((x) => x !== asker && !owners.includes(x))!
  t.equal(other.cluster.counters.lookupsAnswered, 0, 'the non-owner was not asked')
})

t.test('a lookup waiting only on an owner that dies settles when the owner is declared dead', async (t) => {
  const { lab: l, cores } = await startLab(t, 3, 6, { lookupTimeoutMs: 10_000, lookupRetries: 0 })
  const asker = cores[0]!
  const { key, owners } = keyOwnedByOthers(l, asker, 'dying')
  const [first, second] = owners as [Core, Core]
  l.crash(second)
  const p = timed(l, asker.cluster.lookup(key))
  const { found, tookMs } = await p
  t.equal(found, undefined, '"not found"')
  t.equal(first.cluster.counters.missesSent, 1, 'the live owner said MISS')
  t.ok(tookMs < 10_000, `before the 10 s deadline (${tookMs} ms of fake time): the dead owner counts as missed`)
  t.equal(asker.cluster.counters.membersDied, 1, 'the silent owner was declared dead')
})
