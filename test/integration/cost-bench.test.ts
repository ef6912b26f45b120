import t from 'tap'
import { runBench, type CostResult } from '../helpers/bench-run.js'
import { needs } from '../helpers/needs.js'

const NEEDS = needs({ commands: ['memcached'] })

t.test(
  'the cost benchmark, briefly: both mixes against statecast and memcached, every request answered, every count taken',
  NEEDS,
  async (t) => {
    // Tiny rate and durations: this checks that the bench works and counts, not what it measures.
    const r = await runBench<CostResult>('cost', [], {
      COST_SECONDS: '1',
      BENCH_WARM: '300',
      COST_WARM_SECONDS: '0.5',
      COST_RATES: '100',
      COST_SCALE_HOSTS: '4',
      COST_SCALE_RATE: '100',
      COST_SCALE_SECONDS: '1',
    })
    t.comment(JSON.stringify(r))
    t.same(
      r.cases.map((c) => c.mix),
      ['tls12', 'tls13'],
      'one case per mix',
    )
    for (const c of r.cases) {
      for (const [name, f] of [
        ['statecast', c.statecast],
        ['statecast pushing to all', c.pushToAll],
        ['memcached', c.memcached],
        ['floor', c.floor],
      ] as const) {
        t.ok(f, `${c.mix}: ${name} measured`)
        if (!f) continue
        t.ok(f.handshakes > 0, `${c.mix} ${name}: handshakes in the timed window (${f.handshakes})`)
        for (const [op, o] of Object.entries(f.ops)) t.equal(o.answered, o.sent, `${c.mix} ${name}: every ${op} answered (${o.sent})`)
        t.equal(f.unanswered + f.errors + f.dropped, 0, `${c.mix} ${name}: no error, nothing dropped`)
        t.ok(f.ops.GET.sent > 0 && f.ops.SET.sent > 0, `${c.mix} ${name}: resumptions and new sessions`)
        t.equal(f.getHits + f.getMisses, f.ops.GET.sent, `${c.mix} ${name}: every GET found or not found`)
        t.ok(f.cpuUsPerHandshake >= 0 && f.wakeupsPerHandshake > 0, `${c.mix} ${name}: CPU and wakeups read`)
        if (c.mix === 'tls13')
          t.ok(
            f.ops.DELETE.sent > 0 && f.ops.SET.sent > f.ops.GET.sent / 2,
            `${c.mix} ${name}: resumptions delete the used session and store a new one`,
          )
      }
      // Remote fills are not asserted: a GET racing its session's copy on a busy host still fills.
      t.ok(
        c.pushToAll!.datagramsSentPerHandshake! > 0,
        `${c.mix}: pushing to all, copies counted (${c.pushToAll!.datagramsSentPerHandshake} datagrams per handshake; ${c.pushToAll!.remoteFills} remote fills of ${c.pushToAll!.ops.GET.sent} GETs)`,
      )
      t.ok(c.floorRatio !== null && c.floorRatio > 0, `${c.mix}: the floor measured against memcached (${c.floorRatio}x)`)
      t.ok(
        c.statecast.datagramsSentPerHandshake! > 0 && c.statecast.datagramsReceivedPerHandshake! > 0,
        `${c.mix}: peer datagrams counted (${c.statecast.datagramsSentPerHandshake} sent, ${c.statecast.datagramsReceivedPerHandshake} received per handshake)`,
      )
    }
    t.same(
      r.scale.map((s) => [s.hosts, s.mix]),
      [
        [4, 'tls12'],
        [4, 'tls13'],
      ],
      'the scale case at 4 hosts, both mixes',
    )
    for (const s of r.scale) {
      t.ok(
        s.handshakes > 0 && s.receivedPerHostPerHandshake > 0,
        `${s.hosts} hosts ${s.mix}: datagrams received per host per handshake (${s.receivedPerHostPerHandshake})`,
      )
      t.equal(s.unanswered + s.errors, 0, `${s.hosts} hosts ${s.mix}: every request answered`)
    }
  },
)
