/**
 * No stale copy after a write returns, when the host a copy was fetched from goes away (issue 22
 * point 3 under membership change). Four hosts: H fetches keys from their first owner X (H owns
 * none of them), then X is SIGKILLed, SIGTERMed, or SIGKILLed and started again with a new node
 * id; the keys are then overwritten and deleted on a third host W, in batches: at once (no one
 * has noticed X is gone), once W noticed, once every host did, and a while later. After each
 * write is answered, H must serve the new value, and after each delete nothing: X's record that
 * H holds a copy died with X, so H is reached only because it re-attached its copy to the owners
 * or because the write also went to the group (docs/consistency.md, "No stale copy").
 * HOLDER_DEPARTURE_KEYS sets the keys per case (default 240 candidates, about 40 exercised).
 */
import t from 'tap'
import { GENEROUS_LOOKUPS, clusterStats, startCluster, startNode, type Node } from '../helpers/cluster.js'
import { eventually } from '../helpers/daemon.js'
import { owners } from '../../daemon/cluster/rendezvous.js'

const CANDIDATES = Number(process.env.HOLDER_DEPARTURE_KEYS ?? 240)

const departures = async (n: Node) => {
  const c = await clusterStats(n)
  return c.membersDied + c.membersLeft
}

for (const how of ['SIGKILL', 'SIGTERM', 'restart'] as const) {
  t.test(`a host that fetched from a member that goes away (${how}) never serves the old value`, async (t) => {
    const { nodes, dir, keyFile, group, port } = await startCluster(t, 4, GENEROUS_LOOKUPS)
    const [x, h, w, y] = nodes as [Node, Node, Node, Node]
    const ids = await Promise.all(nodes.map(async (n) => (await clusterStats(n)).nodeId))
    const [xId, hId] = ids as [string, string]
    // Keys whose first owner is X and of which H is no owner (replicationFactor 2): H's fetch is
    // answered by X alone, and only X records that H holds a copy.
    const keys: string[] = []
    for (let i = 0; i < CANDIDATES; i++) {
      const key = `hd-${process.pid}-${how}-${i}`
      const top = owners(key, ids, 2)
      if (top[0] === xId && !top.includes(hId)) keys.push(key)
    }
    t.ok(keys.length >= 10, `${keys.length} keys with X first and H no owner`)
    const v = (k: string, n: number) => Buffer.from(`${k} v${n}`.padEnd(120, '.'))
    for (const k of keys) await w.client.set(k, v(k, 0))
    for (const k of keys) t.ok((await h.client.get(k))?.equals(v(k, 0)), `H fetches ${k}`, { diagnostic: false })
    const fetchedFromX = (await clusterStats(x)).hitsSent
    t.ok(fetchedFromX >= keys.length, `X answered H's fetches (${fetchedFromX} HITs)`)

    const before = await Promise.all([h, w, y].map(departures))
    const bad = { oldAfterSet: 0, missAfterSet: 0, oldAfterDelete: 0 }
    const round = async (batch: string[]) => {
      for (const k of batch) {
        await w.client.set(k, v(k, 1))
        const got = await h.client.get(k)
        if (!got) bad.missAfterSet++
        else if (!got.equals(v(k, 1))) bad.oldAfterSet++
        if (!(await w.client.delete(k))) bad.missAfterSet++
        if (await h.client.get(k)) bad.oldAfterDelete++
      }
    }
    const quarter = Math.ceil(keys.length / 4)
    const batches = [0, 1, 2, 3].map((i) => keys.slice(i * quarter, (i + 1) * quarter))

    await x.stop(how === 'SIGTERM' ? 'SIGTERM' : 'SIGKILL')
    if (how === 'restart') await startNode(t, { dir, name: 'a2', keyFile, group, port, args: GENEROUS_LOOKUPS })
    // Nobody has noticed yet (after a SIGKILL): W's copies to X go unanswered.
    await round(batches[0]!)
    await eventually(async () => (await departures(w)) > before[1]!, 60_000, 'W notices X is gone')
    await round(batches[1]!)
    await eventually(
      async () => (await Promise.all([h, w, y].map(departures))).every((d, i) => d > before[i]!),
      60_000,
      'every host notices X is gone',
    )
    await round(batches[2]!)
    // Past the window in which writes also go to the group: H is reached through its re-attached copies.
    await new Promise((r) => setTimeout(r, 2000))
    await round(batches[3]!)
    const hs = await clusterStats(h)
    t.comment(
      `${how}: ${keys.length} keys; H re-attached ${hs.copiesReattached} copies; W sent ${(await clusterStats(w)).invalidationsUnacked} INVALIDATEs at deadlines and ${(await clusterStats(w)).invalidationsMembership} for departed owners`,
    )
    t.same(bad, { oldAfterSet: 0, missAfterSet: 0, oldAfterDelete: 0 }, `H serves no old value of ${keys.length} keys`)
  })
}
