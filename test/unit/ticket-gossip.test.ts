/**
 * Ticket gossip (daemon/cluster/ticket-gossip.ts) on the real cluster core and transport over
 * the in-memory network, fake time: the cases the forward-secret design must survive. The key
 * maker dying, members joining mid-epoch, restarts, loss; one secret per epoch throughout.
 */
import t from 'tap'
import { startLab, type Core, type MemoryLab } from '../helpers/memory-cluster.js'

const ROTATION_MS = 60_000

const live = (lab: MemoryLab) => lab.cores.filter((c) => !c.stopped && !(c as Core & { dead?: boolean }).dead)
const hex = (b: Buffer | undefined) => b?.toString('hex') ?? '-'
/** Every live core holds the same previous, current and next secret, and a current one. */
function agreed(cores: Core[]): boolean {
  const w = cores.map((c) => c.cluster.tickets.window())
  const sig = (x: (typeof w)[number]) => [x.epoch, hex(x.previous?.key), hex(x.current?.key), hex(x.next?.key)].join('|')
  return w.every((x) => x.current !== undefined && sig(x) === sig(w[0]!))
}

t.test('one secret per epoch through a maker dying, a newcomer mid-epoch and 20% loss', async (t) => {
  const { lab, cores } = await startLab(t, 3, 21, { ticketKeyRotationMs: ROTATION_MS })
  t.ok(await lab.until(() => agreed(cores), 30_000, 50), 'three members agree on the window')
  const e0 = cores[0]!.cluster.tickets.epochNow()
  const sent = cores.reduce((a, c) => a + c.cluster.ticketGossip.counters.ticketSealsSent, 0)
  t.ok(sent >= 2, `the secrets went out sealed (${sent} TICKET_SEALs)`)

  // The maker (lowest id) dies; time runs two epochs on, with loss.
  lab.net.faults.loss = 0.2
  const maker = [...cores].sort((a, b) => (a.cluster.nodeId < b.cluster.nodeId ? -1 : 1))[0]!
  lab.crash(maker)
  ;(maker as Core & { dead?: boolean }).dead = true
  const rest = cores.filter((c) => c !== maker)
  await lab.run(2 * ROTATION_MS)
  t.ok(await lab.until(() => agreed(rest), 30_000, 50), 'the others still agree, two epochs on')
  t.ok(rest[0]!.cluster.tickets.epochNow() >= e0 + 2)
  t.ok(
    rest.every((c) => c.cluster.ticketGossip.counters.ephemeralKeysMade >= 3),
    'a new ephemeral key pair each epoch',
  )

  // A newcomer mid-epoch, under loss: gets previous, current and next.
  await lab.run(ROTATION_MS / 3)
  const late = await lab.add('late')
  t.ok(await lab.until(() => agreed([...rest, late]), 30_000, 50), 'the newcomer holds the same window')
  const w = late.cluster.tickets.window()
  t.ok(w.previous && w.current && w.next, 'previous, current and next')
  t.equal(late.cluster.ticketGossip.counters.ticketSealsTaken >= 3, true, 'taken from seals')

  // A restart: the same address, a new id and new keys; it is a newcomer again.
  const victim = rest[1]!
  await lab.settle(lab.stop(victim), 60_000, 10)
  const again = await lab.add('again', {}, victim.address)
  const now = [...live(lab)]
  t.ok(now.includes(again))
  t.ok(await lab.until(() => agreed(now), 30_000, 50), 'the restarted daemon holds the window too')
  lab.net.faults.loss = 0
})

t.test('a fleet started together agrees once settled: nobody makes a secret before', async (t) => {
  const { lab, cores } = await startLab(t, 4, 7, { ticketKeyRotationMs: ROTATION_MS })
  t.ok(await lab.until(() => agreed(cores), 30_000, 50), 'one window across the fleet')
  const makers = new Set(cores.map((c) => c.cluster.tickets.window().current!.creator.toString('hex')))
  t.ok(makers.size <= cores.length)
  const made = cores.filter((c) => c.cluster.tickets.all().some((k) => k.creator.equals(c.cluster.transport.nodeId)))
  t.equal(made.length, 1, 'exactly one member made the secrets (the lowest); the others took them')
})
