import path from 'node:path'
import t from 'tap'
import { runBench, type WritesResult } from '../helpers/bench-run.js'
import { ROOT } from '../helpers/daemon.js'

t.test(
  'the writes benchmark, briefly: every case measured and counted, for this build and another dist/ named by WRITES_OTHER_DIST',
  async (t) => {
    // Few steps: this checks that the bench runs and counts, not what it measures. The "other"
    // build is this one again, which exercises the option without a second build.
    const r = await runBench<WritesResult>('writes', [], {
      WRITES_N: '40',
      BENCH_WARM: '20',
      WRITES_COUNT: '20',
      WRITES_OTHER_DIST: path.join(ROOT, 'dist'),
    })
    t.comment(JSON.stringify(r))
    t.ok(r.rttP50Us > 0, `the UDP round trip measured (${r.rttP50Us} µs)`)
    t.same(
      r.roundTrips.map((x) => x.build),
      ['this', 'other'],
      'a daemon round trip per build',
    )
    for (const x of r.roundTrips) {
      t.ok(x.fillP50Us > 0 && x.localGetP50Us > 0, `${x.build}: fills and local GETs timed`)
      t.ok(x.remoteFills > 0, `${x.build}: fills came from a peer (${x.remoteFills} of ${r.n})`)
      t.ok(x.setsAwaitingCopy > 0, `${x.build}: the writer's SETs waited for acknowledgements (${x.setsAwaitingCopy})`)
    }
    t.equal(r.cases.length, 12, 'three placements by two front ends, per build')
    for (const c of r.cases) {
      const name = `${c.build} ${c.where} ${c.via}`
      t.equal(c.n, 40, `${name}: every timed SET answered`)
      t.ok(c.p50Us > 0 && c.p99Us >= c.p50Us, `${name}: p50 and p99 (${c.p50Us}, ${c.p99Us} µs)`)
      if (c.where === 'lone') t.equal(c.datagramsSentPerSet, 0, `${name}: no peer datagrams`)
      else t.ok(c.datagramsSentPerSet > 0, `${name}: copies counted (${c.datagramsSentPerSet} datagrams sent per SET)`)
    }
  },
)
