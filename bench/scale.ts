/**
 * Scale: clusters of 4, 8, 16 and 32 hosts as network namespaces on one bridge (root only), R=2,
 * sessions spread over every host. From one host: remote fills and "not found" answers, with
 * their latency percentiles and the datagrams each lookup cost (LOOKUPs sent, replies received),
 * against the same measures at the smallest size. The run itself (test/helpers/scale.ts) is the
 * one test/netns/netns-scale.test.ts makes.
 */
import { scaleRun, type ScaleFigures } from '../test/helpers/scale.js'

export async function benchScale(sizes = [4, 8, 16, 32]): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = []
  let base: ScaleFigures | undefined
  for (const n of sizes) {
    const f = await scaleRun(n, n === 32 ? 10_000 : 2_000, 500)
    base ??= f
    rows.push({ case: `scale, ${n} hosts (R=2)`, ...f, fillP99VsSmallest: +(f.fillP99Us / base.fillP99Us).toFixed(2) })
  }
  return rows
}

// `node dist/bench/scale.js HOSTS SESSIONS PROBES [DAEMON FLAGS...]`: one scale run, its figures as
// one JSON line.
if (process.argv[1]?.endsWith('scale.js')) {
  const [hosts, sessions, probes, ...extra] = process.argv.slice(2)
  console.log(
    `scale-result ${JSON.stringify(await scaleRun(Number(hosts ?? 32), Number(sessions ?? 10_000), Number(probes ?? 300), extra))}`,
  )
}
