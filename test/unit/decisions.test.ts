/**
 * Conditional writes decided at one host per key (daemon/cluster/decisions.ts), on cluster cores
 * with fake time: retransmits under loss, repeats answered from memory (never applied twice), and
 * a lost decider giving OUTCOME_UNKNOWN instead of an outcome.
 */
import t from 'tap'
import { startLab, type Core } from '../helpers/memory-cluster.js'
import { CondKind, CondOutcome } from '../../daemon/store/conditional.js'
import { DecisionError } from '../../daemon/cluster/decisions.js'
import { MsgType } from '../../protocol/wire.js'

/** A key whose decider is `core` (as every core sees it). */
function keyDecidedBy(cores: Core[], core: Core, prefix: string): string {
  for (let i = 0; ; i++) {
    const k = `${prefix}-${i}`
    if (cores.every((c) => c.cluster.decisions.deciderOf(k) === core.cluster.nodeId)) return k
  }
}

t.test('add of one key from every core: one wins; the others see NOT_STORED', async (t) => {
  const { lab, cores } = await startLab(t, 3, 1)
  for (let round = 0; round < 30; round++) {
    const key = `lock-${round}`
    const all = Promise.all(
      cores.map((c) => c.cluster.decide(key, { kind: CondKind.ADD, value: Buffer.from(c.name), ttlMs: 60_000, flags: 0 })),
    )
    const rs = await lab.settle(all)
    t.equal(rs.filter((r) => r.outcome === CondOutcome.STORED).length, 1, `round ${round}: one winner`)
  }
  const remote = cores.reduce((a, c) => a + c.cluster.decisions.counters.decisionsRemote, 0)
  t.equal(remote, 60, 'two of three adds in each round were sent to the decider')
})

t.test('incr under 30% loss and duplicates: retransmitted, deduplicated, none lost or doubled', async (t) => {
  const { lab, cores } = await startLab(t, 3, 7)
  const decider = cores[0]!
  const key = keyDecidedBy(cores, decider, 'ctr')
  decider.store.set(key, Buffer.from('0'), 60_000)
  void decider.cluster.stored(key)
  await lab.run(100)
  lab.net.faults = { loss: 0.3, duplicate: 0.3, minDelayMs: 0, maxDelayMs: 3 }
  const incrs = []
  for (let i = 0; i < 60; i++)
    incrs.push(cores[1 + (i % 2)]!.cluster.decide(key, { kind: CondKind.INCR, delta: 1n }).catch((e: unknown) => e))
  const rs = await lab.settle(Promise.all(incrs), 60_000, 1)
  const ok = rs.filter((r) => !(r instanceof Error))
  const unknown = rs.filter((r) => r instanceof DecisionError).length
  t.equal(ok.length + unknown, 60, 'every incr answered or OUTCOME_UNKNOWN')
  const value = Number(decider.store.peek(key)!.value.toString().trim())
  t.ok(value >= ok.length && value <= 60, `the count (${value}) holds every acknowledged incr and none twice`)
  const numbers = new Set(ok.map((r) => (r as { number: bigint }).number))
  t.equal(numbers.size, ok.length, 'no two incrs saw the same value')
  const c = (k: 'decisionsRetransmitted' | 'decisionRepeats') => cores.reduce((a, x) => a + x.cluster.decisions.counters[k], 0)
  t.ok(c('decisionsRetransmitted') > 0, `retransmitted (${c('decisionsRetransmitted')})`)
  t.ok(c('decisionRepeats') > 0, `repeats answered from memory (${c('decisionRepeats')})`)
  t.equal(decider.cluster.decisions.counters.decisionsLocal, 60, 'each incr applied once on the decider')
})

t.test('a decider that stops answering: OUTCOME_UNKNOWN at the deadline, never an outcome', async (t) => {
  const { lab, cores } = await startLab(t, 3, 3)
  const decider = cores[0]!
  const key = keyDecidedBy(cores, decider, 'gone')
  const undo = lab.crash(decider)
  const p = cores[1]!.cluster.decide(key, { kind: CondKind.ADD, value: Buffer.from('x'), ttlMs: 60_000, flags: 0 }).catch((e: unknown) => e)
  const r = await lab.settle(p, 10_000, 5)
  t.ok(r instanceof DecisionError && r.code === 'OUTCOME_UNKNOWN', 'the asker gets OUTCOME_UNKNOWN')
  t.ok(cores[1]!.cluster.decisions.counters.decisionsRetransmitted > 0, 'it retransmitted before giving up')
  t.equal(cores[1]!.store.peek(key), undefined, 'nothing stored on the asker')
  undo()
})

t.test('a flood of DECIDEs for one key: at most 64 queued, the rest dropped unapplied', async (t) => {
  const { lab, cores } = await startLab(t, 3, 5)
  const decider = cores[0]!
  const key = keyDecidedBy(cores, decider, 'flood')
  const d = decider.cluster.decisions
  // REPLACE of a key nobody holds: each waits its fetch in the key's chain.
  for (let reqId = 1; reqId <= 200; reqId++)
    d.onDecide(cores[1]!.cluster.nodeId, {
      type: MsgType.DECIDE,
      reqId,
      kind: CondKind.REPLACE,
      flags: 0,
      ttlMs: 60_000,
      unique: 0n,
      delta: 0n,
      key: Buffer.from(key, 'latin1'),
      value: Buffer.alloc(1000),
    })
  t.equal(d.counters.decisionsShed, 200 - 64, 'beyond 64 queued for the key: shed')
  t.equal(d.counters.decisionsLocal, 64, '64 taken')
  await lab.run(30_000)
  t.notOk(decider.store.peek(key), 'none of them replaced a key nobody holds')
})
