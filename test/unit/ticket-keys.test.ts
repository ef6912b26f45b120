import t from 'tap'
import { TicketKeys, type TicketKey } from '../../daemon/cluster/ticket-keys.js'

const id = (h: string) => Buffer.from(h, 'hex')

function node(hex: string, clock: { now: number }) {
  return new TicketKeys({ rotationMs: 60_000, graceMs: 3000, selfId: id(hex), wallMs: () => clock.now })
}
const epochs = (ks: TicketKey[]) => ks.map((k) => k.epoch)

t.test('the lowest member makes the secrets of this epoch and the two after it; others adopt them', async (t) => {
  const clock = { now: 10 * 60_000 + 100 }
  const a = node('01', clock)
  const b = node('02', clock)
  t.same(b.tick(['01'], 60_000), [], 'not the lowest: waits within the grace')
  const made = a.tick(['02'], 60_000)
  t.same(epochs(made), [10, 11, 12], "the lowest makes this epoch's and the next two")
  t.equal(made[0]!.key.length, 48)
  t.not(made[0]!.key.toString('hex'), made[1]!.key.toString('hex'))
  for (const k of made) t.equal(b.offer(k), true)
  t.same(b.current!.key, a.current!.key)
  t.equal(b.current!.epoch, 10)
  t.same(b.window().next!.key, made[1]!.key, 'the next secret is held before its epoch')
  t.same(a.tick(['02'], 60_000), [], 'one secret per epoch')
  t.equal(a.remainingMs(), 60_000 - 100)
})

t.test('at the epoch boundary the next secret is already agreed: nobody makes a new current one', async (t) => {
  const clock = { now: 10 * 60_000 }
  const a = node('01', clock)
  const b = node('02', clock)
  for (const k of a.tick(['02'], 60_000)) b.offer(k)
  const next = Buffer.from(b.window().next!.key)
  clock.now = 11 * 60_000 + 10
  const made = a.tick(['02'], 60_000)
  t.same(epochs(made), [13], 'only the epoch after the new next one is made')
  t.same(b.current!.key, next, 'the secret agreed during epoch 10 encrypts in epoch 11')
  t.equal(b.window().previous!.epoch, 10, "the previous epoch's secret stays for decryption")
  for (const k of made) b.offer(k)
  const w = b.window()
  t.same([w.previous?.epoch, w.current?.epoch, w.next?.epoch], [10, 11, 12], 'the window moved one step, its next key known already')
  const old = b.window().previous!.key
  clock.now = 12 * 60_000 + 10
  b.tick(['01'], 60_000)
  t.ok(
    old.every((x) => x === 0),
    'a secret leaving the window is wiped',
  )
  t.same(
    b.all().map((k) => k.epoch),
    [11, 12, 13],
    'epoch 10 left the window',
  )
})

t.test('a secret of the window is never replaced; the epoch after next converges on the lowest holder', async (t) => {
  const clock = { now: 5 * 60_000 }
  const a = node('01', clock)
  const b = node('02', clock)
  const c = node('03', clock)
  // A partition: a and c both think they are the lowest and make secrets for epochs 5, 6 and 7.
  const ka = a.tick([], 60_000)
  const kc = c.tick([], 60_000)
  const as = (k: TicketKey, from: string) => ({ ...k, creator: id(from) })
  t.equal(c.offer(as(ka[0]!, '01')), false, "the current epoch's secret, once held, stays (a lower sender cannot replace it)")
  t.equal(c.offer(as(ka[1]!, '01')), false, "nor the next one's: servers may hold it already")
  t.equal(c.offer(as(ka[2]!, '01')), true, 'the epoch after next converges on the lower holder')
  t.equal(a.offer(as(kc[2]!, '03')), false, 'and never on the higher one')
  for (const k of kc) t.equal(b.offer(as(k, '03')), true)
  t.same(b.current!.key, kc[0]!.key)
  t.equal(b.offer(as(ka[0]!, '00')), false, 'creator 00..00 cannot replace the current secret either')
  t.same(b.current!.key, kc[0]!.key)
  t.equal(b.offer(as(ka[2]!, '01')), true)
  t.same(b.get(7)!.key, ka[2]!.key)
  t.equal(b.offer(as(ka[2]!, '00')), false, 'the same secret from a lower holder changes nothing but the holder')
  t.same(b.get(7)!.creator, id('00'))
  t.equal(b.offer({ ...ka[0]!, epoch: 8 }), false, 'three epochs ahead is too far')
  t.equal(b.offer({ ...ka[0]!, epoch: 4, key: Buffer.alloc(48, 1) }), true, 'the previous epoch, when none is held, is taken (a newcomer)')
  t.equal(b.offer({ ...ka[0]!, epoch: 4, key: Buffer.alloc(48, 2), creator: id('00') }), false, 'and then kept')
  clock.now = 8 * 60_000
  t.equal(b.offer({ ...ka[0]!, epoch: 5 }), false, 'an epoch older than the previous one is refused')
})

t.test('a member makes its own secrets when the lowest stays silent past the grace', async (t) => {
  const clock = { now: 7 * 60_000 + 1000 }
  const b = node('02', clock)
  t.same(b.tick(['01'], 60_000), [])
  clock.now += 3000
  t.same(epochs(b.tick(['01'], 60_000)), [7, 8, 9], 'made after the grace')
  const lone = node('05', clock)
  t.same(lone.tick([], -1), [], 'a daemon that just started waits to hear the cluster')
  t.same(epochs(lone.tick([], 60_000)), [7, 8, 9], 'and alone once settled, makes its own')
})

t.test('a change calls onChange; nobody makes secrets before it settled, others wait a grace after', async (t) => {
  const clock = { now: 5 * 60_000 + 10_000 }
  const a = node('01', clock)
  let changes = 0
  a.onChange = () => changes++
  t.same(a.tick(['02'], -1), [], 'the lowest too waits until it has heard the cluster')
  a.tick([], 60_000)
  t.equal(changes, 1)
  t.same(epochs(a.all()), [5, 6, 7])
  clock.now = 6 * 60_000
  a.tick([], 60_000)
  t.same(epochs(a.all()), [5, 6, 7, 8])
  t.equal(changes, 2)
  const b = node('02', clock)
  clock.now = 6 * 60_000 + 10_000
  t.same(b.tick(['01'], 1000), [], 'not the lowest, settled only a moment ago: waits')
  t.same(epochs(b.tick(['01'], 3000)), [6, 7, 8])
})
