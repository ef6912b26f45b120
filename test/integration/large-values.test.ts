/**
 * Values up to the largest allowed are fetched remotely within the lookup deadline (issue 22,
 * point 5): with maxValueBytes at 1 MiB and the default 50 ms deadline, a 1 MiB value (about 800
 * HIT chunks) read on a host that holds no copy arrives, because the deadline scales with the
 * value's size and chunks still arriving hold back the retransmit (lookups.ts:
 * LARGE_VALUE_STEP_BYTES). Real daemons on loopback.
 */
import t from 'tap'
import crypto from 'node:crypto'
import { clusterStats, startCluster } from '../helpers/cluster.js'

const MIB = 1024 * 1024

t.test('1 MiB values read on every other host with the default lookup deadline: every one found, some by a remote fill', async (t) => {
  const { nodes } = await startCluster(t, 3, ['--max-value-bytes', String(MIB), '--max-bytes', String(256 * MIB)])
  const values = new Map<string, Buffer>()
  let found = 0
  let remote = 0
  let reads = 0
  for (let i = 0; i < 6; i++) {
    const key = `mib-${i}`
    const value = crypto.randomBytes(MIB)
    values.set(key, value)
    const writer = nodes[i % 3]!
    await writer.client.set(key, value)
    for (const reader of nodes) {
      if (reader === writer) continue
      reads++
      const got = await reader.client.getEntry(key)
      if (got?.value.equals(value)) found++
      if (got?.remote) remote++
    }
  }
  const s = await Promise.all(nodes.map(clusterStats))
  const sum = (k: string) => s.reduce((a, c) => a + (c[k] as number), 0)
  t.comment(JSON.stringify(s.map((c) => ({ sendErrors: c['sendErrors'], dropped: c['dropped'], hitsOverBudget: c['hitsOverBudget'], reassemblyDropped: c['reassemblyDropped'], lateReplies: c['lateReplies'], chunksSent: c['chunksSent'], lookupDatagrams: c['lookupDatagrams'], copiesUnassembled: c['copiesUnassembled'], copiesAcked: c['copiesAcked'] }))))
  t.comment(`${reads} reads of 1 MiB values: ${found} found, ${remote} by a remote fill; lookups timed out ${sum('timeouts')}, missed ${sum('remoteMisses')}, chunks received ${sum('chunksReceived')}`)
  t.equal(found, reads, 'every read found the whole value')
  t.ok(remote > 0, 'some reads were remote fills of 1 MiB')
  t.equal(sum('timeouts'), 0, 'no lookup ended at its deadline')
})
