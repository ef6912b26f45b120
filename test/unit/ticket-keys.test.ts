import t from 'tap'
import { TicketKeys, type TicketKey } from '../../daemon/cluster/ticket-keys.js'

const id = (h: string) => Buffer.from(h, 'hex')

function node(hex: string, clock: { now: number }) {
  return new TicketKeys({ rotationMs: 60_000, graceMs: 3000, selfId: id(hex), now: () => clock.now })
}
const epochs = (ks: TicketKey[]) => ks.map((k) => k.epoch)

t.test('the lowest member makes the secrets of this epoch and the two after it; others adopt them', async (t) => {
  const clock = { now: 10 * 60_000 + 100 }
  const a = node('01', clock)
  const b = node('02', clock)
  t.same(b.tick(['01'], true), [], 'not the lowest: waits within the grace')
  const made = a.tick(['02'], true)
  t.same(epochs(made), [10, 11, 12], 'the lowest makes this epoch\'s and the next two')
  t.equal(made[0]!.key.length, 48)
  t.not(made[0]!.key.toString('hex'), made[1]!.key.toString('hex'))
  for (const k of made) t.equal(b.offer(k), true)
  t.same(b.current!.key, a.current!.key)
  t.equal(b.current!.epoch, 10)
  t.same(b.window().next!.key, made[1]!.key, 'the next secret is held before its epoch')
  t.same(a.tick(['02'], true), [], 'one secret per epoch')
  t.equal(a.remainingMs(), 60_000 - 100)
})

t.test('at the epoch boundary the next secret is already agreed: nobody makes a new current one', async (t) => {
  const clock = { now: 10 * 60_000 }
  const a = node('01', clock)
  const b = node('02', clock)
  for (const k of a.tick(['02'], true)) b.offer(k)
  const next = Buffer.from(b.window().next!.key)
  clock.now = 11 * 60_000 + 10
  const made = a.tick(['02'], true)
  t.same(epochs(made), [13], 'only the epoch after the new next one is made')
  t.same(b.current!.key, next, 'the secret agreed during epoch 10 encrypts in epoch 11')
  t.equal(b.window().previous!.epoch, 10, 'the previous epoch\'s secret stays for decryption')
  for (const k of made) b.offer(k)
  const w = b.window()
  t.same([w.previous?.epoch, w.current?.epoch, w.next?.epoch], [10, 11, 12], 'the window moved one step, its next key known already')
  const old = b.window().previous!.key
  clock.now = 12 * 60_000 + 10
  b.tick(['01'], true)
  t.ok(old.every((x) => x === 0), 'a secret leaving the window is wiped')
  t.same(b.all().map((k) => k.epoch), [11, 12, 13], 'epoch 10 left the window')
})

t.test('tie-break and convergence within each epoch', async (t) => {
  const clock = { now: 5 * 60_000 }
  const a = node('01', clock)
  const b = node('02', clock)
  const c = node('03', clock)
  // A partition: a and c both think they are the lowest and make secrets for epochs 5 and 6.
  const ka = a.tick([], true)
  const kc = c.tick([], true)
  for (const k of ka) t.equal(c.offer(k), true, 'the lower creator wins within an epoch')
  for (const k of kc) t.equal(a.offer(k), false, 'the higher creator loses')
  for (const k of kc) t.equal(b.offer(k), true)
  for (const k of ka) t.equal(b.offer(k), true, 'b converges on the lower creator whatever the order')
  t.same(b.current!.key, ka[0]!.key)
  t.same(b.window().next!.key, ka[1]!.key)
  t.equal(b.offer({ ...ka[0]!, epoch: 9 }), false, 'a far future epoch is refused')
  t.equal(b.offer({ ...ka[0]!, epoch: 8, creator: id('00') }), false, 'three epochs ahead is too far')
  clock.now = 8 * 60_000
  t.equal(b.offer({ ...ka[0]!, epoch: 5 }), false, 'an epoch older than the previous one is refused')
})

t.test('a member makes its own secrets when the lowest stays silent past the grace', async (t) => {
  const clock = { now: 7 * 60_000 + 1000 }
  const b = node('02', clock)
  t.same(b.tick(['01'], true), [])
  clock.now += 3000
  t.same(epochs(b.tick(['01'], true)), [7, 8, 9], 'made after the grace')
  const lone = node('05', clock)
  t.same(lone.tick([], false), [], 'a daemon that just started waits to hear the cluster')
  t.same(epochs(lone.tick([], true)), [7, 8, 9], 'and alone once settled, makes its own')
})

t.test('winnerOver: our secret when an offered one loses, so its sender can be told', async (t) => {
  const clock = { now: 5 * 60_000 }
  const a = node('01', clock)
  const c = node('03', clock)
  t.equal(a.winnerOver({ epoch: 5, creator: id('03'), key: Buffer.alloc(48) }), undefined, 'no secret yet: nothing to tell')
  const ka = a.tick([], true)
  const kc = c.tick([], true)
  t.equal(a.offer(kc[0]!), false)
  t.same(a.winnerOver(kc[0]!)?.key, ka[0]!.key, 'same epoch, higher maker: ours wins')
  t.same(a.winnerOver(kc[1]!)?.key, ka[1]!.key, 'the next epoch too')
  t.equal(c.winnerOver(ka[0]!), undefined, 'same epoch, lower maker: theirs wins')
  t.equal(a.winnerOver(ka[0]!), undefined, 'our own secret does not lose to itself')
  t.equal(a.winnerOver({ ...kc[0]!, epoch: 9 }), undefined, 'a far future epoch is refused, not answered')
})

t.test('mine: what the maker repeats; a change calls onChange', async (t) => {
  const clock = { now: 5 * 60_000 }
  const a = node('01', clock)
  let changes = 0
  a.onChange = () => changes++
  a.tick([], true)
  t.equal(changes, 1)
  t.same(epochs(a.mine()), [5, 6, 7])
  clock.now = 6 * 60_000
  a.tick([], true)
  t.same(epochs(a.mine()), [6, 7, 8], 'the previous epoch\'s secret is no longer repeated')
  t.equal(changes, 2)
})
