/**
 * Attacks on DECIDE and DECIDED found by the review of the deciders (2026-12-04), on the real
 * Cluster over the in-memory network with fake time (test/helpers/memory-cluster.ts):
 * - an on-path attacker holds back one sealed DECIDE, lets the retransmit through, and delivers
 *   the held copy later, still inside replayWindowMs: it must not be applied a second time;
 * - a decider (an insider with the cluster key) answers with a DECIDED whose version is years
 *   ahead: it must be dropped like any other far-future version, not pin the asker's clock.
 */
import t from 'tap'
import { MemoryLab, type Core } from '../helpers/memory-cluster.js'
import { CondKind } from '../../daemon/store/conditional.js'
import { versionAtWallMs, versionWallMs } from '../../daemon/store/versions.js'
import { MsgType } from '../../protocol/wire.js'

async function lab3(
  t: { teardown(fn: () => unknown): void; ok(v: unknown, m: string): void },
  seed: number,
): Promise<{ lab: MemoryLab; cores: Core[] }> {
  const lab = new MemoryLab(seed, {})
  t.teardown(() => lab.close())
  const cores: Core[] = []
  for (let i = 0; i < 3; i++) cores.push(await lab.add(`n${i}`))
  t.ok(await lab.converge(), 'the cores see each other as trusted members')
  return { lab, cores }
}

/** A key every core names `d` the decider of. */
function keyDecidedBy(cores: Core[], d: Core, prefix: string): string {
  for (let i = 0; ; i++) {
    const k = `${prefix}-${i}`
    if (cores.every((c) => c.cluster.decisions.deciderOf(k) === d.cluster.nodeId)) return k
  }
}

t.test('a DECIDE held back and delivered 16 s and 29 s later (inside replayWindowMs) is not applied again', async (t) => {
  const { lab, cores } = await lab3(t, 7)
  const [d, a] = cores as [Core, Core]
  const key = keyDecidedBy(cores, d, 'ctr')
  lab.set(d, key, '0')
  await lab.run(200)
  const carry = lab.net.carry.bind(lab.net)
  let hold = true
  let held: Parameters<typeof carry> | undefined
  lab.net.carry = (...args: Parameters<typeof carry>) => {
    const [from, , to] = args
    if (hold && from.host === a.address && to.address === d.address) {
      hold = false
      held = [from, Buffer.from(args[1]), to]
      return
    }
    return carry(...args)
  }
  const r = await lab.settle(a.cluster.decide(key, { kind: CondKind.INCR, delta: 1n }))
  t.equal(r.number, 1n, 'the incr was answered 1 (through the retransmit)')
  t.ok(held, 'the first DECIDE datagram was held back')
  for (const at of [16_000, 13_000]) {
    await lab.run(at)
    carry(...held!)
    await lab.run(500)
    t.equal(
      d.store.peek(key)?.value.toString(),
      '1',
      `the held DECIDE delivered after ${at === 16_000 ? 16 : 29} s: the counter is still 1`,
    )
  }
})

t.test('a DECIDED whose version is years ahead is dropped as a future version; the real answer is taken', async (t) => {
  const { lab, cores } = await lab3(t, 4)
  const [d, a] = cores as [Core, Core]
  const key = keyDecidedBy(cores, d, 'lk')
  // The decider's real answers are held back; the forgery is sent once the path is open again,
  // ahead of the answer to the asker's next retransmit.
  const unblock = lab.net.block((x) => x.from.address === d.address && x.toHost === a.address)
  const p = a.cluster.decide(key, { kind: CondKind.ADD, value: Buffer.from('real'), ttlMs: 60_000, flags: 0 })
  await lab.run(5)
  const future = versionAtWallMs(lab.clock.wallMs() + 10 * 365 * 86_400_000)
  const dropped = a.cluster.transport.counters.dropped.futureVersion
  unblock()
  d.cluster.transport.sendTo(d.cluster.membership.addressOf(a.cluster.nodeId)!, a.cluster.nodeId, {
    type: MsgType.DECIDED,
    reqId: 1,
    outcome: 1,
    wrote: 1,
    flags: 0,
    ttlMs: 60_000,
    version: future,
    number: 0n,
    key: Buffer.from(key, 'latin1'),
    value: Buffer.from('forged'),
  })
  await lab.settle(p)
  t.equal(a.cluster.transport.counters.dropped.futureVersion, dropped + 1, 'the forged DECIDED was dropped (futureVersion)')
  t.equal(a.store.peek(key)?.value.toString(), 'real', 'the asker holds the decided value, not the forgery')
  const year = new Date(versionWallMs(a.store.newestPeerVersion())).getUTCFullYear()
  t.ok(year <= new Date(lab.clock.wallMs()).getUTCFullYear() + 1, `the asker's newest peer version is not in the future (${year})`)
})
