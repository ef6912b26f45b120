/**
 * Conditional writes while membership changes (daemon/cluster/decisions.ts, membership.ts:
 * decidesHere), on cluster cores with fake time: a host decides a key only when it has listened
 * long enough and is first under its live view, so two hosts whose views disagree (a member just
 * joined, a host restarted with a new node id, a host stopping) never both decide; the others wait
 * and ask again. The same with real daemons: test/integration/decider-churn.test.ts.
 */
import t from 'tap'
import { startLab, type Core, type MemoryLab } from '../helpers/memory-cluster.js'
import { CondKind, CondOutcome } from '../../daemon/store/conditional.js'
import { DecisionError, type Decision } from '../../daemon/cluster/decisions.js'
import { MsgType } from '../../protocol/wire.js'
import { owners } from '../../daemon/cluster/rendezvous.js'

type Result = Decision | Error

const add = (c: Core, key: string): Promise<Result> =>
  c.cluster.decide(key, { kind: CondKind.ADD, value: Buffer.from(c.name), ttlMs: 600_000, flags: 0 }).catch((e: unknown) => e as Error)
const incr = (c: Core, key: string): Promise<Result> =>
  c.cluster.decide(key, { kind: CondKind.INCR, delta: 1n }).catch((e: unknown) => e as Error)

const sum = (cores: Core[], k: 'decisionsWaited' | 'decisionsRefused') => cores.reduce((a, c) => a + c.cluster.decisions.counters[k], 0)

/** Starts a round of `fn` on every core in `cores()` every `everyMs` for `forMs` of fake time; the rounds' promises. */
async function rounds(
  lab: MemoryLab,
  cores: () => Core[],
  forMs: number,
  everyMs: number,
  fn: (c: Core, round: number) => Promise<Result>,
) {
  const out: { round: number; who: string; p: Promise<Result> }[] = []
  for (let round = 0; round * everyMs < forMs; round++) {
    for (const c of cores()) out.push({ round, who: c.name, p: fn(c, round) })
    await lab.run(everyMs)
  }
  return out
}

t.test('a host joins: the old decider stops before the new one starts; one add wins per key, none fails', async (t) => {
  const { lab, cores } = await startLab(t, 3, 31)
  const fresh = await lab.add('fresh')
  const all = [...cores, fresh]
  // Rounds from the newcomer's first moment through its listening, its probation and after.
  const started = await rounds(
    lab,
    () => all,
    6000,
    50,
    (c, r) => add(c, `join-${r}`),
  )
  const rs = await lab.settle(Promise.all(started.map((s) => s.p)), 60_000, 5)
  const winners = new Map<number, number>()
  let errors = 0
  rs.forEach((r, i) => {
    if (r instanceof Error) errors++
    else if (r.outcome === CondOutcome.STORED) winners.set(started[i]!.round, (winners.get(started[i]!.round) ?? 0) + 1)
  })
  const n = started[started.length - 1]!.round + 1
  const bad = [...Array(n).keys()].filter((r) => winners.get(r) !== 1)
  t.same(bad, [], `exactly one add won in each of ${n} rounds`)
  t.equal(errors, 0, 'no add failed: they waited while no host could decide their key')
  const byFresh = [...Array(n).keys()].filter((r) => fresh.cluster.decisions.deciderOf(`join-${r}`) === fresh.cluster.nodeId).length
  t.ok(byFresh > 0, `the newcomer decides some of the keys (${byFresh} of ${n})`)
  t.ok(sum(all, 'decisionsWaited') > 0, `some adds waited (${sum(all, 'decisionsWaited')}, refused ${sum(all, 'decisionsRefused')})`)
  const longest = Math.max(...all.map((c) => c.cluster.decisions.counters.decisionWaitMaxMs))
  const waitedMs = all.reduce((a, c) => a + c.cluster.decisions.counters.decisionWaitMs, 0)
  t.comment(
    `${started.length} adds, ${sum(all, 'decisionsWaited')} waited, ${Math.round(waitedMs)} ms in all, the longest ${Math.round(longest)} ms`,
  )
})

t.test('a host restarts with a new node id (its old one silent): increments neither lost nor doubled', async (t) => {
  const { lab, cores } = await startLab(t, 3, 32)
  const keys = ['ctr-a', 'ctr-b', 'ctr-c', 'ctr-d']
  for (const key of keys)
    await lab.settle(cores[0]!.cluster.decide(key, { kind: CondKind.ADD, value: Buffer.from('0'), ttlMs: 600_000, flags: 0 }))
  let live = [...cores]
  const started: { round: number; who: string; p: Promise<Result> }[] = []
  started.push(
    ...(await rounds(
      lab,
      () => live,
      500,
      25,
      (c, r) => incr(c, keys[r % keys.length]!),
    )),
  )
  // SIGKILL: the old id is cut off and stays in the others' views until deadAfterMs; the host
  // comes back at once with a new id and an empty store.
  const undo = lab.crash(cores[1]!)
  const again = await lab.add('n1-again')
  live = [cores[0]!, cores[2]!, again]
  started.push(
    ...(await rounds(
      lab,
      () => live,
      7000,
      25,
      (c, r) => incr(c, keys[r % keys.length]!),
    )),
  )
  const rs = await lab.settle(Promise.all(started.map((s) => s.p)), 60_000, 5)
  t.ok(
    await lab.until(() => live.every((c) => c.cluster.membership.steady() && !c.cluster.members.has(cores[1]!.cluster.nodeId)), 30_000, 50),
  )
  for (const key of keys) {
    const mine = rs.filter((_, i) => keys[started[i]!.round % keys.length] === key)
    const ok = mine.filter((r): r is Decision => !(r instanceof Error))
    t.ok(
      ok.every((r) => r.outcome === CondOutcome.STORED),
      `${key}: every acknowledged incr counted`,
    )
    const unknown = mine.filter((r) => r instanceof DecisionError && r.code === 'OUTCOME_UNKNOWN').length
    t.equal(ok.length + unknown, mine.length, `${key}: every incr answered or OUTCOME_UNKNOWN`)
    const numbers = ok.map((r) => r.number)
    t.equal(new Set(numbers).size, numbers.length, `${key}: no two acknowledged incrs returned the same value`)
    const final = await lab.settle(cores[0]!.cluster.decide(key, { kind: CondKind.INCR, delta: 0n }))
    const value = Number(final.number)
    t.ok(
      value >= ok.length && value <= ok.length + unknown,
      `${key}: ${value} counts every acknowledged incr (${ok.length}) and at most the ${unknown} unknown`,
    )
  }
  undo()
})

t.test('a decider stopping refuses; its askers wait and go to the next one at LEAVE, no add lost or doubled', async (t) => {
  const { lab, cores } = await startLab(t, 4, 33)
  const leaving = cores[0]!
  const stay = cores.slice(1)
  const keys: string[] = []
  for (let i = 0; keys.length < 10; i++)
    if (stay[0]!.cluster.decisions.deciderOf(`stop-${i}`) === leaving.cluster.nodeId) keys.push(`stop-${i}`)
  // A slow handoff: the stopping host refuses for a while before its LEAVE.
  for (let i = 0; i < 2000; i++) lab.set(leaving, `bulk-${i}`, 'x'.repeat(200))
  const stopped = lab.stop(leaving)
  const started = keys.flatMap((k) => stay.map((c) => add(c, k)))
  const rs = await lab.settle(Promise.all(started), 60_000, 5)
  await lab.settle(stopped, 60_000, 5)
  for (const [i, k] of keys.entries()) {
    const mine = rs.slice(i * stay.length, (i + 1) * stay.length)
    t.equal(mine.filter((r) => !(r instanceof Error) && r.outcome === CondOutcome.STORED).length, 1, `${k}: one add won`)
  }
  t.equal(rs.filter((r) => r instanceof Error).length, 0, 'none failed')
})

t.test('a refused request id is refused again later; a new id is decided', async (t) => {
  const { lab, cores } = await startLab(t, 3, 35)
  const [a, b, c] = cores as [Core, Core, Core]
  // A key a decides, and b once a is gone.
  const ids = [a, b, c].map((x) => x.cluster.nodeId)
  let key = ''
  for (let i = 0; !key; i++) if (owners(`late-${i}`, ids, 3).join() === ids.join()) key = `late-${i}`
  const decide = (reqId: number) =>
    b.cluster.decisions.onDecide(c.cluster.nodeId, {
      type: MsgType.DECIDE,
      reqId,
      kind: CondKind.ADD,
      flags: 0,
      ttlMs: 60_000,
      unique: 0n,
      delta: 0n,
      key: Buffer.from(key, 'latin1'),
      value: Buffer.from(`v${reqId}`),
    })
  decide(7)
  t.equal(b.cluster.decisions.counters.decisionsRefused, 1, 'refused while a decides the key')
  lab.crash(a)
  t.ok(await lab.until(() => !b.cluster.members.has(a.cluster.nodeId), 10_000, 50), 'a is dropped')
  t.equal(b.cluster.decisions.deciderOf(key), b.cluster.nodeId, 'b now decides the key')
  decide(7)
  await lab.run(1000)
  t.equal(b.store.peek(key), undefined, 'the late copy of the refused DECIDE was refused again, not applied')
  t.equal(b.cluster.decisions.counters.decisionsRefused, 2)
  decide(8)
  await lab.run(1000)
  t.equal(b.store.peek(key)?.value.toString(), 'v8', 'a new request id is decided')
})

t.test('a decider lacking the key does not decide on a fetch that ended at its deadline: the add waits, then sees the key', async (t) => {
  const { lab, cores } = await startLab(t, 3, 36)
  const [a, b, c] = cores as [Core, Core, Core]
  // A key a decides with b its other owner; only b holds it (as if a's copy were lost).
  const ids = [a, b, c].map((x) => x.cluster.nodeId)
  let key = ''
  for (let i = 0; !key; i++) if (owners(`held-${i}`, ids, 3).join() === ids.join()) key = `held-${i}`
  b.store.set(key, Buffer.from('held'), 600_000)
  // b is slow to answer for a while (cut off for less than two heartbeats: not suspect, not dead).
  const undo = lab.crash(b)
  const p = add(c, key)
  await lab.run(300)
  t.equal(a.store.peek(key), undefined, 'nothing decided while the owner that holds the key does not answer')
  undo()
  const r = await lab.settle(p)
  t.ok(!(r instanceof Error) && r.outcome === CondOutcome.NOT_STORED, 'then the add sees the key: NOT_STORED')
  t.ok(a.cluster.decisions.counters.decisionFetchesUnsure > 0, `put off (${a.cluster.decisions.counters.decisionFetchesUnsure} times)`)
})
