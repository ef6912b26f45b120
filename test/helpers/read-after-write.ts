/** Write-then-read-on-another-host pairs: the read-after-write check of issue 15, point 1. */
import type { Node } from './cluster.js'

export interface PairsResult {
  /** Reads answered "not found" (the SET had returned before the GET was sent). */
  notFound: number
  /** Reads answered with other bytes than the SET wrote. */
  wrong: number
  /** Reads served by another host (a remote fill), out of `pairs`. */
  remote: number
}

/**
 * `pairs` SETs, each on one host and, as soon as it returns, a GET of the same key on another
 * (every writer and reader pair in turn), `concurrency` pairs at a time. Keys are fresh: no host
 * holds them before their SET.
 */
export async function writeThenRead(nodes: Node[], pairs: number, concurrency: number, prefix: string): Promise<PairsResult> {
  const n = nodes.length
  const r: PairsResult = { notFound: 0, wrong: 0, remote: 0 }
  let next = 0
  const worker = async () => {
    while (next < pairs) {
      const i = next++
      const writer = i % n
      // Every other host in turn: i / n picks the distance, so all ordered pairs are covered.
      const reader = (writer + 1 + (Math.floor(i / n) % (n - 1))) % n
      const key = `${prefix}-${i}`
      const value = Buffer.from(`session-${i}`.padEnd(120, '.'))
      await nodes[writer]!.client.set(key, value)
      const got = await nodes[reader]!.client.getEntry(key)
      if (!got) r.notFound++
      else if (!got.value.equals(value)) r.wrong++
      else if (got.remote) r.remote++
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return r
}
