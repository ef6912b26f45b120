/** 32 hosts in network namespaces on one bridge: lookups cost a constant number of datagrams. */
import t from 'tap'
import { runBench } from '../helpers/bench-run.js'
import { GENEROUS_LOOKUPS } from '../helpers/cluster.js'

t.test('32 hosts, 10,000 sessions: remote fills and "not found" with replies that do not grow with N', async (t) => {
  // The bench's 100 ms lookup deadline is for latency figures; here "not found" must come from
  // the MISSes, so the deadline is one a loaded machine meets.
  const f = await runBench<{ fills: number; repliesPerFill: number; missesPerNotFound: number; lookupDatagramsPerLookup: number; notFoundTimeouts: number }>('scale', ['32', '10000', '300', ...GENEROUS_LOOKUPS])
  t.comment(JSON.stringify(f))
  t.equal(f.fills, 300, 'every probe was a real remote fill with the right bytes')
  t.ok(f.repliesPerFill <= 2, `replies per fill: ${f.repliesPerFill}`)
  t.ok(f.missesPerNotFound <= 2, `MISS datagrams per absent key: ${f.missesPerNotFound} (R = 2), not 31`)
  t.ok(f.lookupDatagramsPerLookup < 2, `LOOKUP datagrams per lookup: ${f.lookupDatagramsPerLookup}`)
  t.equal(f.notFoundTimeouts, 0, '"not found" came from the owners\' MISSes, never the deadline')
})
