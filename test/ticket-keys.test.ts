import t from 'tap'
import { TicketKeys } from '../daemon/ticket-keys.js'

const id = (h: string) => Buffer.from(h, 'hex')

function node(hex: string, clock: { now: number }) {
  return new TicketKeys({ rotationMs: 60_000, graceMs: 3000, selfId: id(hex), now: () => clock.now })
}

t.test('the lowest member makes the key; others adopt it', async (t) => {
  const clock = { now: 10 * 60_000 + 100 }
  const a = node('01', clock)
  const b = node('02', clock)
  t.equal(b.tick(['01'], true), undefined, 'not the lowest: waits within the grace')
  const k = a.tick(['02'], true)
  t.ok(k, 'the lowest makes it')
  t.equal(k!.epoch, 10)
  t.equal(k!.key.length, 48)
  t.equal(b.offer(k!), true)
  t.same(b.current!.key, a.current!.key)
  t.equal(a.tick(['02'], true), undefined, 'one key per epoch')
  t.equal(a.remainingMs(), 60_000 - 100)
})

t.test('rotation, tie-break and convergence', async (t) => {
  const clock = { now: 5 * 60_000 }
  const a = node('01', clock)
  const b = node('02', clock)
  const c = node('03', clock)
  // A partition: a and c both think they are the lowest and make keys for epoch 5.
  const ka = a.tick([], true)!
  const kc = c.tick([], true)!
  t.equal(c.offer(ka), true, 'the lower creator wins within an epoch')
  t.equal(a.offer(kc), false, 'the higher creator loses')
  t.equal(b.offer(kc), true)
  t.equal(b.offer(ka), true, 'b converges on the lower creator whatever the order')
  t.same(b.current!.key, ka.key)
  const old = a.current!.key
  clock.now += 60_000
  const k6 = a.tick(['02', '03'], true)!
  t.equal(k6.epoch, 6, 'the next epoch brings a new key')
  t.ok(old.every((x) => x === 0), 'the replaced key is wiped')
  t.equal(b.offer(ka), false, 'an older epoch never wins back')
  t.equal(b.offer(k6), true)
  t.equal(b.offer({ ...k6, epoch: 9 }), false, 'a far future epoch is refused')
})

t.test('a member makes its own key when the lowest stays silent past the grace', async (t) => {
  const clock = { now: 7 * 60_000 + 1000 }
  const b = node('02', clock)
  t.equal(b.tick(['01'], true), undefined)
  clock.now += 3000
  t.ok(b.tick(['01'], true), 'made after the grace')
  const lone = node('05', clock)
  t.equal(lone.tick([], false), undefined, 'a daemon that just started waits to hear the cluster')
  t.ok(lone.tick([], true), 'and alone once settled, makes its own')
})

t.test('beats: whether a key offered to us loses, so its sender should be told the winner', async (t) => {
  const clock = { now: 5 * 60_000 }
  const a = node('01', clock)
  const c = node('03', clock)
  t.equal(a.beats({ epoch: 5, creator: id('03'), key: Buffer.alloc(48) }), false, 'no key yet: nothing to tell')
  const ka = a.tick([], true)!
  const kc = c.tick([], true)!
  t.equal(a.offer(kc), false)
  t.equal(a.beats(kc), true, 'same epoch, higher maker: ours wins')
  t.equal(c.beats(ka), false, 'same epoch, lower maker: theirs wins')
  t.equal(a.beats(ka), false, 'our own key does not lose to itself')
  t.equal(a.beats({ ...kc, epoch: 4 }), true, 'an older epoch loses')
  t.equal(a.beats({ ...kc, epoch: 6 }), false, 'a later epoch wins')
  t.equal(a.beats({ ...kc, epoch: 9 }), false, 'a far future epoch is refused, not answered')
})
