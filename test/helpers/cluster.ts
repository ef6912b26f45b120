/** Clusters of real daemons on loopback multicast, each test on its own group and port. */
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { StatecastClient } from '../../client/index.js'
import { DgramAsPromised, type SocketAsPromised } from 'dgram-as-promised'
import { formatKeyFile, newClusterKey, parseKeyFile, type ClusterKey } from '../../protocol/keyfile.js'
import { Keyring, type Address } from '../../protocol/wire.js'
import type { Cluster } from '../../daemon/cluster/cluster.js'
import { eventually, startDaemon, tmpDir, type Running } from './daemon.js'

/** A new cluster key already in force (a minute old, so clock steps between hosts do not matter). */
export function newKey(): ClusterKey {
  return newClusterKey(Math.floor(Date.now() / 1000) - 60)
}

export function writeKeyFile(dir: string, keys: ClusterKey[] = [newKey()], name = 'cluster.key', mode = 0o600): string {
  const file = path.join(dir, name)
  fs.writeFileSync(file, formatKeyFile(keys), { mode })
  fs.chmodSync(file, mode)
  return file
}

/** A group and port no other test uses at the same time. */
export function uniqueGroup(): { group: string; port: number } {
  const b = crypto.randomBytes(3)
  return { group: `239.255.${b[0]}.${1 + (b[1]! % 250)}`, port: 20000 + (b.readUInt16BE(1) % 40000) }
}

/** Client request deadline in cluster tests; lookup deadlines that tests configure stay below it. */
export const CLIENT_TIMEOUT_MS = 60_000

/**
 * Lookup settings for tests that count outcomes: a deadline a machine at load 10 meets, so a
 * "not found" can only come from MISSes and a fill never gives up on a slow but live owner.
 */
export const GENEROUS_LOOKUPS = ['--lookup-timeout-ms', '20000', '--lookup-retries', '4']

/**
 * Copy settings for tests that count lost sessions: an ACK wait a loaded machine meets (the 100 ms
 * default is a latency choice; missed, it retries into a storm that a busy host cannot drain
 * before the retries run out), retries enough that 20% loss each way cannot exhaust them (21 tries
 * all lost: 0.36^21, about 5e-10 per copy) and a clean shutdown with time to hand every session over.
 */
export const GENEROUS_COPIES = ['--replication-ack-timeout-ms', '1000', '--replication-retries', '20', '--handoff-timeout-ms', '60000']

export interface Node extends Running {
  client: StatecastClient
  admin: StatecastClient
  name: string
}

export async function startNode(
  t: { teardown(fn: () => unknown): void },
  opts: { dir: string; name: string; keyFile: string; group: string; port: number; args?: string[]; prefix?: string[] },
): Promise<Node> {
  const d = await startDaemon(t, {
    dir: opts.dir,
    name: opts.name,
    ...(opts.prefix ? { prefix: opts.prefix } : {}),
    args: [
      '--key-file',
      opts.keyFile,
      '--group',
      opts.group,
      '--port',
      String(opts.port),
      '--node-name',
      opts.name,
      '--heartbeat-ms',
      '200',
      '--dead-after-ms',
      '1000',
      '--member-probation-ms',
      '400',
      ...(opts.args ?? []),
    ],
  })
  // A request's own deadline far above any lookup deadline a test sets (lookupTimeoutMs), so a
  // loaded machine shows up as a slow answer, never as a client-side TIMEOUT.
  const client = await StatecastClient.connect({ socketPath: d.socket, timeoutMs: CLIENT_TIMEOUT_MS })
  const admin = await StatecastClient.connect({ socketPath: d.adminSocket, timeoutMs: CLIENT_TIMEOUT_MS })
  t.teardown(() => {
    client.destroy()
    admin.destroy()
  })
  return Object.assign(d, { client, admin, name: opts.name })
}

export async function startCluster(
  t: { teardown(fn: () => unknown): void },
  n: number,
  args: string[] = [],
): Promise<{ nodes: Node[]; dir: string; keyFile: string; group: string; port: number }> {
  const dir = tmpDir('sc-cl-')
  const keyFile = writeKeyFile(dir)
  const { group, port } = uniqueGroup()
  // Started side by side: each start is mostly waiting for a new process to load.
  const nodes = await Promise.all(
    Array.from({ length: n }, (_, i) => startNode(t, { dir, name: String.fromCharCode(97 + i), keyFile, group, port, args })),
  )
  await waitMembers(nodes, n - 1)
  return { nodes, dir, keyFile, group, port }
}

/** The `cluster` section of `stats()`, typed after what `Cluster.stats()` spreads into it. */
export type ClusterStats = {
  nodeId: string
  members: number
  trustedMembers: number
  membershipSteady: boolean
  inflightLookups: number
  hedgeDelayMs: number
  replicationPending: number
} & Cluster['lookups']['counters'] &
  Cluster['counters'] &
  Cluster['replicator']['counters'] &
  Cluster['transport']['counters'] &
  Cluster['ticketGossip']['counters'] &
  Cluster['decisions']['counters']

/** The names of `ClusterStats`' numbers, for helpers that sum or subtract counters by name. */
export type ClusterCounter = { [K in keyof ClusterStats]: ClusterStats[K] extends number ? K : never }[keyof ClusterStats]

export async function clusterStats(n: Node): Promise<ClusterStats> {
  return ((await n.admin.stats()) as { cluster: ClusterStats }).cluster
}

/** True when `n` sees `count` live members, each past its probation (trusted with copies). */
export async function hasMembers(n: Node, count: number): Promise<boolean> {
  const c = await clusterStats(n)
  return c['members'] === count && c['trustedMembers'] === count && c['membershipSteady'] !== false
}

export async function waitMembers(nodes: Node[], count: number): Promise<void> {
  // Trusted too: until then a member owns no keys and is pushed no copies (memberProbationMs);
  // and steady: readers ask the owners alone, as in a cluster that never changed (membership.ts).
  await eventually(
    async () =>
      (await Promise.all(nodes.map(clusterStats))).every(
        (c) => c['members'] === count && c['trustedMembers'] === count && c['membershipSteady'] !== false,
      ),
    60_000,
    `every node sees ${count} members`,
  )
}

/** Waits until no daemon has copies queued, in flight, or a re-placement scan scheduled. */
export async function replicationSettled(nodes: Node[]): Promise<void> {
  await eventually(
    async () => {
      const s = await Promise.all(nodes.map(clusterStats))
      return s.every((c) => c['replicationPending'] === 0)
    },
    120_000,
    'replication queues drained',
  )
}

/** Every key readable from every node (remote fetches allowed); resolves the keys that were not. */
export async function unreadable(nodes: Node[], keys: string[], value: (k: string) => Buffer): Promise<string[]> {
  const missing: string[] = []
  for (const n of nodes) {
    for (let i = 0; i < keys.length; i += 50) {
      const got = await Promise.all(keys.slice(i, i + 50).map((k) => n.client.get(k)))
      got.forEach((v, j) => {
        const k = keys[i + j]!
        if (!v?.equals(value(k))) missing.push(`${n.name}:${k}`)
      })
    }
  }
  return missing
}

/**
 * Every key readable from every node, once failure detection has caught up. A read that races it
 * (the key's owner just died and is still a member) may fail; such reads are made again once
 * every node sees `members` live members. A session still unreadable then is lost. Resolves the
 * keys lost (as unreadable does) and the count of first reads that had to be made again.
 */
export async function readableOnceConverged(
  nodes: Node[],
  keys: string[],
  value: (k: string) => Buffer,
  members: number,
): Promise<{ lost: string[]; retried: number }> {
  const first = await unreadable(nodes, keys, value)
  if (first.length === 0) return { lost: [], retried: 0 }
  await waitMembers(nodes, members)
  const lost: string[] = []
  for (const n of nodes) {
    const again = first.filter((m) => m.startsWith(`${n.name}:`)).map((m) => m.slice(n.name.length + 1))
    lost.push(...(await unreadable([n], again, value)))
  }
  return { lost, retried: first.length }
}

/**
 * What a key holder needs to forge peer datagrams in an attack test: the cluster's keys (from the
 * test's key file) and the id to seal with, and a UDP socket on a loopback port, closed at the
 * test's teardown, with its address as a reply address.
 */
export async function keyHolder(
  t: { teardown(fn: () => unknown): void },
  keyFile: string,
): Promise<{ ring: Keyring; keyId: number; sock: SocketAsPromised; me: Address }> {
  const ring = new Keyring(parseKeyFile(fs.readFileSync(keyFile, 'utf8')))
  const sock = DgramAsPromised.createSocket({ type: 'udp4' })
  t.teardown(() => sock.close())
  await sock.bind(0, '127.0.0.1')
  return { ring, keyId: [...ring.keys.keys()][0]!, sock, me: { family: 4, address: '127.0.0.1', port: sock.address().port } }
}

/** A daemon's unicast address and node id, as its own line in `peers` shows them. */
export async function unicastOf(n: Node): Promise<{ address: Address; id: Buffer }> {
  const self = (await n.client.peers()).find((p) => p['self'])!
  const a = String(self['address'])
  const i = a.lastIndexOf(':')
  return { address: { family: 4, address: a.slice(0, i), port: Number(a.slice(i + 1)) }, id: Buffer.from(String(self['nodeId']), 'hex') }
}
