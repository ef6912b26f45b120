/**
 * No stale copy after a write returns (issue 22 point 3): hosts B and C fetch a key written on A;
 * once an overwrite (on A, then on B), a touch or a delete has been answered to its client, every
 * host that held a copy serves the new value (or, after the delete, nothing): no read of the old
 * value and no miss. NO_STALE_TRIES sets the rounds (default 300; 10,000 by hand).
 */
import t from 'tap'
import { startCluster } from '../helpers/cluster.js'
import { eventually } from '../helpers/daemon.js'

const TRIES = Number(process.env.NO_STALE_TRIES ?? 300)

t.test(`no host serves the previous value once a write returned (${TRIES} rounds)`, async (t) => {
  const { nodes } = await startCluster(t, 3)
  const [a, b, c] = nodes as [(typeof nodes)[0], (typeof nodes)[0], (typeof nodes)[0]]
  const bad = { overwriteA: 0, overwriteB: 0, touch: 0, delete: 0, missed: 0 }
  const v = (k: string, n: number) => Buffer.from(`${k} version ${n}`.padEnd(200, '.'))
  for (let i = 0; i < TRIES; i++) {
    const key = `ns-${process.pid}-${i}`
    await a.client.set(key, v(key, 0))
    for (const h of [b, c]) await eventually(async () => (await h.client.get(key))?.equals(v(key, 0)), 30_000, `${h.name} fetches ${key}`)

    await a.client.set(key, v(key, 1))
    for (const h of [b, c]) {
      const got = await h.client.get(key)
      if (!got) bad.missed++
      else if (!got.equals(v(key, 1))) bad.overwriteA++
    }
    await b.client.set(key, v(key, 2))
    for (const h of [a, c]) {
      const got = await h.client.get(key)
      if (!got) bad.missed++
      else if (!got.equals(v(key, 2))) bad.overwriteB++
    }
    await a.client.touch(key, 120_000)
    for (const h of [b, c]) {
      const got = await h.client.get(key)
      if (!got) bad.missed++
      else if (!got.equals(v(key, 2))) bad.touch++
    }
    if (!(await a.client.delete(key))) bad.missed++
    for (const h of [b, c]) if (await h.client.get(key)) bad.delete++
  }
  t.same(bad, { overwriteA: 0, overwriteB: 0, touch: 0, delete: 0, missed: 0 }, `no old value and no miss in ${TRIES} rounds`)
})
