import t from 'tap'
import { owners } from '../../daemon/cluster/rendezvous.js'

const members = ['01aa', '02bb', '03cc', '04dd', '05ee', '06ff']

t.test('owners are stable, distinct, and spread evenly', async (t) => {
  const count = new Map<string, number>()
  let bad = 0
  for (let i = 0; i < 12000; i++) {
    const o = owners(`k${i}`, members, 2)
    if (new Set(o).size !== 2 || owners(`k${i}`, [...members].reverse(), 2).join() !== o.join()) bad++
    for (const id of o) count.set(id, (count.get(id) ?? 0) + 1)
  }
  t.equal(bad, 0, 'two distinct owners, whatever the member order')
  for (const [id, n] of count) t.ok(n > 3400 && n < 4600, `${id} owns ${n} of 24000 copies (4000 expected)`)
})

t.test('removing a member moves only the keys it owned', async (t) => {
  let moved = 0
  let owned = 0
  for (let i = 0; i < 5000; i++) {
    const before = owners(`k${i}`, members, 2)
    const after = owners(
      `k${i}`,
      members.filter((m) => m !== '03cc'),
      2,
    )
    if (before.includes('03cc')) owned++
    else if (before.join() !== after.join()) moved++
  }
  t.equal(moved, 0, 'keys the departed member did not own keep their owners')
  t.ok(owned > 1300, `the departed member owned ${owned} keys`)
})
