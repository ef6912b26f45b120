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

/**
 * Pairs (issue 22, point 2) to count: an env-configurable constant, so a loaded CI runs what fits
 * in a minute or so (`STATECAST_RAW_PAIRS=10000` for the full count, by hand).
 */
export const RAW_PAIRS = Number(process.env['STATECAST_RAW_PAIRS'] ?? 3000)

/** True once `n`'s PEERS lists `count` nodes (itself included): what `statecast peers` shows. */
export async function listsAll(n: Node, count: number): Promise<boolean> {
  try {
    return (await n.client.peers()).length === count
  } catch {
    return false
  }
}

export interface ChurnResult extends PairsResult {
  /** Pairs made. */
  pairs: number
  /** Pairs not counted: the writer or reader was being stopped meanwhile (its socket closed). */
  skipped: number
  /** When each "not found" came, in ms from the start of the run. */
  notFoundAtMs: number[]
}

/**
 * SET on one host and, when it returns, GET on another, one pair at a time, for `pairs` pairs,
 * choosing writer and reader among `pool()` (the hosts up and listing every host) in turn. A
 * host leaves the pool (`busy` tells who is in a pair now) before it is stopped, so no pair is
 * cut by a stop; a pair whose socket failed anyway is skipped and counted.
 */
export async function pairsAmong(pool: () => Node[], pairs: number, prefix: string, busy: Set<Node> = new Set()): Promise<ChurnResult> {
  const r: ChurnResult = { notFound: 0, wrong: 0, remote: 0, pairs: 0, skipped: 0, notFoundAtMs: [] }
  const t0 = performance.now()
  for (let i = 0; i < pairs; i++) {
    const nodes = pool()
    if (nodes.length < 2) {
      // Every host but one is restarting: wait for the next to come back (a turn, not a sleep).
      await new Promise((resolve) => setTimeout(resolve, 5))
      i--
      continue
    }
    const n = nodes.length
    const writer = nodes[i % n]!
    const reader = nodes[((i % n) + 1 + (Math.floor(i / n) % (n - 1))) % n]!
    const key = `${prefix}-${i}`
    const value = Buffer.from(`session-${i}`.padEnd(120, '.'))
    busy.add(writer)
    busy.add(reader)
    try {
      await writer.client.set(key, value)
      const got = await reader.client.getEntry(key)
      r.pairs++
      if (!got) {
        r.notFound++
        r.notFoundAtMs.push(Math.round(performance.now() - t0))
      } else if (!got.value.equals(value)) r.wrong++
      else if (got.remote) r.remote++
    } catch {
      r.skipped++
    } finally {
      busy.delete(writer)
      busy.delete(reader)
    }
  }
  return r
}
