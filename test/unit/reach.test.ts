/** reach.ts: copies re-attached when their source departs, and writes sent to the group for a window after. */
import t from 'tap'
import { Reach } from '../../daemon/cluster/replication/reach.js'
import { owners } from '../../daemon/cluster/rendezvous.js'

const SELF = 'aa00000000000001'

/** A Reach over a fake membership and store: `members` are the live ids, `held` the keys stored here with their TTL. */
function lab(o: { max?: number; windowMs?: number } = {}) {
  const w = {
    now: 1000,
    members: new Set<string>(),
    held: new Map<string, number>(),
    holders: new Map<string, string[]>(),
    copies: [] as [string, string][],
    counters: { copiesReattached: 0, copySourcesUnrecorded: 0 },
  }
  const r = new Reach(
    {
      selfId: SELF,
      store: {
        peek: (k) => (w.held.has(k) ? { value: Buffer.from('v'), flags: 0, version: 1n } : undefined),
        remainingTtl: (k) => w.held.get(k) ?? 0,
        *entries() {
          for (const [k, ttl] of w.held) yield [k, { value: Buffer.from('v'), flags: 0, version: 1n }, ttl]
        },
      },
      isMember: (id) => w.members.has(id),
      memberIds: () => w.members,
      ownersAmong: (key, members) => owners(key, members, 2),
      ownersOf: (key) => owners(key, [SELF, ...w.members], 2),
      holdersOf: (key) => w.holders.get(key) ?? [],
      holderMembers: () => new Set([...w.holders.values()].flat()),
      copy: (key, to) => w.copies.push([key, to]),
      monotonicMs: () => w.now,
    },
    { max: o.max ?? 1000, windowMs: o.windowMs ?? 500 },
    w.counters,
  )
  return { w, r }
}

const ids = ['bb00000000000002', 'cc00000000000003', 'dd00000000000004', 'ee00000000000005']

/** Keys of which SELF is no owner among SELF and `members`, and of which it is. */
function keysBy(members: string[], n: number): { notOwned: string[]; owned: string[] } {
  const notOwned: string[] = []
  const owned: string[] = []
  for (let i = 0; notOwned.length < n || owned.length < n; i++) {
    const k = `k${i}`
    ;(owners(k, [SELF, ...members], 2).includes(SELF) ? owned : notOwned).push(k)
  }
  return { notOwned: notOwned.slice(0, n), owned: owned.slice(0, n) }
}

t.test('a copy whose source departs goes to the owners, unless this host owns the key or holds it no more', async (t) => {
  const { w, r } = lab()
  for (const id of ids) w.members.add(id)
  r.membersChanged()
  const [x, y] = ids as [string, string]
  const after = ids.filter((id) => id !== x)
  const { notOwned, owned } = keysBy(after, 3)
  for (const k of [...notOwned, ...owned]) {
    w.held.set(k, 60_000)
    r.copied(k, x, 60_000)
  }
  // One more copy came from y: y stays, so it is not touched.
  const fromY = keysBy(after, 5).notOwned[4]!
  w.held.set(fromY, 60_000)
  r.copied(fromY, y, 60_000)
  // A copy from x that was deleted since: nothing to re-attach.
  w.held.delete(notOwned[2]!)
  r.forget(notOwned[2]!)
  w.members.delete(x)
  r.membersChanged()
  const expected = notOwned.slice(0, 2).flatMap((k) => owners(k, [SELF, ...after], 2).map((o) => [k, o]))
  t.same(w.copies, expected, 'each live copy from x that SELF does not own goes to both owners')
  t.equal(w.counters.copiesReattached, expected.length)

  // The re-attached copies are now sourced at their first owner: when it departs, they go again
  // (unless SELF became an owner meanwhile: owners are written to directly).
  w.copies = []
  const k = notOwned[0]!
  const first = owners(k, [SELF, ...after], 2)[0]!
  w.members.delete(first)
  r.membersChanged()
  const ownsNow = owners(k, [SELF, ...after.filter((id) => id !== first)], 2).includes(SELF)
  t.equal(
    w.copies.some(([c]) => c === k),
    !ownsNow,
    'a re-attached copy is re-attached again when the owner it went to first departs',
  )
})

t.test('writes go to the group for the window after a departure, only for keys the departed owned or held', async (t) => {
  const { w, r } = lab({ windowMs: 500 })
  for (const id of ids) w.members.add(id)
  r.membersChanged()
  const x = ids[0]!
  const ownedByX: string[] = []
  const neither: string[] = []
  for (let i = 0; ownedByX.length < 3 || neither.length < 3; i++) {
    const k = `w${i}`
    ;(owners(k, [SELF, ...ids], 2).includes(x) ? ownedByX : neither).push(k)
  }
  const heldByX = neither[2]!
  w.holders.set(heldByX, [x])
  t.notOk(r.invalidates(ownedByX[0]!), 'no departure: no INVALIDATE')
  w.members.delete(x)
  r.membersChanged()
  t.ok(r.invalidates(ownedByX[0]!), 'a key the departed member owned')
  t.ok(r.invalidates(heldByX), 'a key the departed member is recorded as holding')
  t.notOk(r.invalidates(neither[0]!), 'a key it neither owned nor held')
  w.now += 501
  t.notOk(r.invalidates(ownedByX[1]!), 'past the window, nothing')
})

t.test('a source not recorded (table full) makes a departure re-attach every copy this host does not own', async (t) => {
  const { w, r } = lab({ max: 1 })
  for (const id of ids) w.members.add(id)
  r.membersChanged()
  const [x, y] = ids as [string, string]
  const after = ids.filter((id) => id !== y)
  const { notOwned } = keysBy(after, 2)
  w.held.set(notOwned[0]!, 60_000)
  r.copied(notOwned[0]!, x, 60_000)
  w.held.set(notOwned[1]!, 60_000)
  r.copied(notOwned[1]!, x, 60_000)
  t.equal(w.counters.copySourcesUnrecorded, 1, 'the second source is not recorded, and counted')
  w.members.delete(y)
  r.membersChanged()
  t.same(
    [...new Set(w.copies.map(([k]) => k))].sort(),
    [notOwned[1]!],
    'y was no recorded source, but the copy whose source is unknown is re-attached',
  )
  w.now += 61_000
  r.sweep()
  t.equal(r.size, 0, 'sources of expired copies are forgotten')
})
