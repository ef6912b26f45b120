/**
 * Reads through membership change (membership.ts: readOwners), on cluster cores in one process
 * with fake time (test/helpers/memory-cluster.ts): a value written on a host that joined a moment
 * ago (it trusts nobody yet, so copied it nowhere) is found by every other host, and a host that
 * joined finds what the others wrote; in a settled cluster a reader asks the owners alone.
 * The same with real daemons: test/integration/raw-membership.test.ts.
 */
import t from 'tap'
import { startLab, type Core } from '../helpers/memory-cluster.js'

t.test('a settled cluster: readers ask exactly the owners, membership not changing', async (t) => {
  const { cores } = await startLab(t, 5, 21)
  for (const c of cores) {
    for (let i = 0; i < 50; i++) {
      const key = `k${i}`
      const { ids, changing } = c.cluster.membership.readOwners(key)
      const owners = c.cluster.replicator.ownersOf(key).filter((id) => id !== c.cluster.nodeId)
      if (changing || ids.join() !== owners.join()) {
        t.fail(`${c.name} ${key}: asks ${ids} (changing ${changing}), owners ${owners}`)
        return
      }
    }
  }
  t.pass('250 keys on 5 hosts: the owners, and nothing else')
})

t.test('a host that just joined: what it writes is found by every other host, and it finds what they wrote', async (t) => {
  const { lab: l, cores } = await startLab(t, 4, 22)
  const fresh = await l.add('fresh')
  // Every host knows the newcomer (its HELLO), none trusts it yet, and it trusts none of them.
  t.ok(
    await l.until(() => cores.every((c) => c.cluster.members.has(fresh.cluster.nodeId)) && fresh.cluster.members.size === 4, 1000, 1),
    'every host knows the newcomer',
  )
  t.ok(
    cores.every((c) => c.cluster.members.get(fresh.cluster.nodeId)?.trusted === false),
    'in probation everywhere',
  )
  let found = 0
  let foundByFresh = 0
  const n = 40
  for (let i = 0; i < n; i++) {
    l.set(fresh, `new-${i}`, `v${i}`)
    const reader: Core = cores[i % cores.length]!
    if ((await l.settle(reader.cluster.lookup(`new-${i}`)))?.value.toString() === `v${i}`) found++
    const writer: Core = cores[(i + 1) % cores.length]!
    l.set(writer, `old-${i}`, `w${i}`)
    if (fresh.store.peek(`old-${i}`) === undefined && (await l.settle(fresh.cluster.lookup(`old-${i}`)))?.value.toString() === `w${i}`)
      foundByFresh++
    else if (fresh.store.peek(`old-${i}`) !== undefined) foundByFresh++
  }
  t.equal(found, n, `every write of the newcomer read elsewhere (${found} of ${n})`)
  t.equal(foundByFresh, n, `every write of the others read on the newcomer (${foundByFresh} of ${n})`)
})
