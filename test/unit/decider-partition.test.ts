/**
 * A key's decider cut off and healed (docs/consistency.md, "Through membership change" and
 * "Partitions"), on cluster cores with fake time, as the namespace checker found it: the decider
 * answered increments it could copy to no one (so the next decider counted from the value before
 * them), and once healed it decided again at once from its own old copy (so its answers repeated
 * the ones the others gave meanwhile, and its newer versions overwrote their count). With the
 * rules: an increment whose copy no other host acknowledged ends in OUTCOME_UNKNOWN; a healed
 * host listens again before it decides, and re-reads a key from its owners before its first
 * decision of it since the heal.
 */
import t from 'tap'
import { startLab, type Core, type MemoryLab } from '../helpers/memory-cluster.js'
import { CondKind, CondOutcome } from '../../daemon/store/conditional.js'
import { DecisionError, type Decision } from '../../daemon/cluster/decisions.js'

type Result = Decision | Error

const incr = (c: Core, key: string): Promise<Result> =>
  c.cluster.decide(key, { kind: CondKind.INCR, delta: 1n }).catch((e: unknown) => e as Error)

/** Starts an incr of `key` on every core in `cores` every `everyMs` for `forMs` of fake time. */
async function rounds(lab: MemoryLab, cores: Core[], key: string, forMs: number, everyMs: number): Promise<Promise<Result>[]> {
  const out: Promise<Result>[] = []
  for (let round = 0; round * everyMs < forMs; round++) {
    for (const c of cores) out.push(incr(c, key))
    await lab.run(everyMs)
  }
  return out
}

t.test('a decider cut off and healed: no increment given twice, none of the acknowledged lost', async (t) => {
  const { lab, cores } = await startLab(t, 4, 57)
  const d = cores[3]!
  const others = cores.slice(0, 3)
  // A counter decided by d (first in rank among all four).
  let key = ''
  for (let i = 0; !key; i++) if (d.cluster.decisions.deciderOf(`ctr-${i}`) === d.cluster.nodeId) key = `ctr-${i}`
  await lab.settle(d.cluster.decide(key, { kind: CondKind.ADD, value: Buffer.from('0'), ttlMs: 600_000, flags: 0 }))
  const started: Promise<Result>[] = await rounds(lab, cores, key, 500, 25)
  await lab.settle(Promise.all(started), 60_000, 5)

  // d is cut off: its own increments, made before it notices, reach no other host.
  const heal = lab.crash(d)
  const cutOff = await rounds(lab, [d], key, 600, 100)
  started.push(...cutOff)
  t.ok(
    await lab.until(() => others.every((c) => !c.cluster.members.has(d.cluster.nodeId)) && d.cluster.members.size === 0, 10_000, 20),
    'd dropped, and d dropped every member',
  )
  // The others go on under the next decider.
  started.push(...(await rounds(lab, others, key, 1000, 25)))
  await lab.settle(Promise.all(started), 60_000, 5)

  // Healed: the others increment at once, through the heal; d's clients, paused while it was
  // alone (a host cut off answers as alone, see "Partitions"), go on once it is back.
  heal()
  started.push(...(await rounds(lab, others, key, 600, 25)))
  t.ok(await lab.until(() => d.cluster.counters.partitionsHealed === 1, 10_000, 5), 'd saw the partition heal')
  started.push(...(await rounds(lab, cores, key, 3000, 50)))
  t.ok(await lab.converge(), 'every core trusts every other again')
  started.push(...(await rounds(lab, cores, key, 500, 25)))
  const rs = await lab.settle(Promise.all(started), 60_000, 5)

  t.comment(cores.map((c) => `${c.name}: ${JSON.stringify(c.cluster.decisions.counters)}`).join('\n'))
  const ok = rs.filter((r): r is Decision => !(r instanceof Error))
  const unknown = rs.filter((r) => r instanceof DecisionError && r.code === 'OUTCOME_UNKNOWN').length
  t.equal(ok.length + unknown, rs.length, 'every incr answered or OUTCOME_UNKNOWN')
  t.ok(
    ok.every((r) => r.outcome === CondOutcome.STORED),
    'every answered incr counted',
  )
  const cutResults = await Promise.all(cutOff)
  t.ok(
    cutResults.every((r) => r instanceof DecisionError),
    `the cut-off decider answered none of its own increments as done (${cutResults.map((r) => (r instanceof Error ? 'unknown' : String(r.number))).join(' ')})`,
  )
  const numbers = ok.map((r) => Number(r.number))
  const twice = numbers.filter((n, i) => numbers.indexOf(n) !== i).slice(0, 10)
  t.same(twice, [], `no two acknowledged incrs returned the same value (${ok.length} acknowledged, ${unknown} unknown)`)
  const final = await lab.settle(cores[0]!.cluster.decide(key, { kind: CondKind.INCR, delta: 0n }))
  const value = Number(final.number)
  t.ok(
    value >= ok.length && value <= ok.length + unknown,
    `${value} counts every acknowledged incr (${ok.length}) and at most the ${unknown} unknown`,
  )
})
