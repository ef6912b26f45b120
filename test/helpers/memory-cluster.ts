/**
 * Cluster cores in one process, for unit tests of the peer protocol with fake time: each core is
 * the daemon's own `Cluster` with its store, over the real sealed `Transport` on an in-memory
 * network (memory-network.ts), all driven by one fake clock (fake-clock.ts). No sockets, no root,
 * no sleeping: a test moves time forward and asserts what the cores did.
 */
import { Cluster, type ClusterOptions } from '../../daemon/cluster/cluster.js'
import { Transport } from '../../daemon/cluster/transport.js'
import { silentLog } from '../../daemon/host/log.js'
import { CompactStore } from '../../daemon/store/compact-store.js'
import type { SessionStore } from '../../daemon/store/session-store.js'
import { Hlc, tombstoneLifetimeMs } from '../../daemon/store/versions.js'
import type { ClusterKey } from '../../protocol/keyfile.js'
import { fakeClock, type FakeClock } from './fake-clock.js'
import { MemoryNetwork } from './memory-network.js'
import { newKey } from './cluster.js'
import { prng } from './fuzz.js'

/** The daemon's defaults (daemon/config/config.ts) where they matter; fake time makes them cheap. */
export const CORE_DEFAULTS: Omit<ClusterOptions, 'nodeName' | 'iface'> = {
  group: '239.1.2.3',
  port: 7946,
  unicastPort: 0,
  multicastTtl: 1,
  multicastLoopback: true,
  multicastEnabled: true,
  peers: [],
  replayWindowMs: 30_000,
  maxDatagramBytes: 1400,
  heartbeatMs: 1000,
  deadAfterMs: 3000,
  lookupTimeoutMs: 50,
  lookupRetries: 5,
  lookupHedgeMs: 1,
  maxInflightLookups: 1024,
  maxReassemblyBytes: 8 * 1024 * 1024,
  maxValueBytes: 64 * 1024,
  ticketKeyRotationMs: 3_600_000,
  replicationFactor: 2,
  replicationAckTimeoutMs: 100,
  replicationAckDelayMs: 2,
  replicationRetries: 10,
  maxReplicationInflight: 256,
  maxReplicationQueue: 1_000_000,
  maxHolderRecords: 262_144,
  handoffTimeoutMs: 5000,
  maxMembers: 512,
  memberProbationMs: 2000,
}

export interface Core {
  name: string
  /** Its interface address on the memory network (a 127.0.1.x name; nothing is ever sent there). */
  address: string
  cluster: Cluster
  store: SessionStore
  /** Stops it cleanly (handoff, LEAVE); the returned promise settles as the lab's time moves. */
  stopped?: Promise<void>
}

export class MemoryLab {
  readonly clock: FakeClock
  readonly net: MemoryNetwork
  readonly keys: ClusterKey[]
  readonly cores: Core[] = []
  readonly #options: Partial<ClusterOptions>
  readonly #random: () => number
  #hosts = 0

  /** `options` apply to every core (each `add` may override); `seed` drives every fault and jitter. */
  constructor(seed = 1, options: Partial<ClusterOptions> = {}) {
    this.clock = fakeClock()
    this.net = new MemoryNetwork(this.clock, seed)
    // Made a minute before the real clock, where the fake wall clock starts.
    this.keys = [newKey()]
    this.#options = options
    const next = prng(seed ^ 0x5eed)
    this.#random = () => next() / 2 ** 32
  }

  /**
   * Starts a core on a host address of its own (a restarted host: pass the old core's `address`),
   * with the lab's cluster keys unless given others.
   */
  async add(name: string, options: Partial<ClusterOptions> = {}, address = `127.0.1.${++this.#hosts}`, keys = this.keys): Promise<Core> {
    const o: ClusterOptions = { ...CORE_DEFAULTS, ...this.#options, ...options, nodeName: name, iface: address }
    const clock = this.clock
    const store = new CompactStore({
      maxValueBytes: o.maxValueBytes,
      tombstoneLifetimeMs: tombstoneLifetimeMs(o),
      monotonicMs: () => clock.now(),
      clock: new Hlc(() => clock.wallMs()),
    })
    const transport = new Transport({
      ...o,
      keys,
      log: silentLog,
      wallMs: () => clock.wallMs(),
      immediate: (fn) => clock.setImmediate(fn),
      sockets: this.net.host(address),
    })
    const cluster = new Cluster(o, keys, store, silentLog, { clock, transport, random: this.#random })
    await cluster.start()
    const core: Core = { name, address, cluster, store }
    this.cores.push(core)
    return core
  }

  /** Moves time forward by `ms`. */
  run(ms: number): Promise<void> {
    return this.clock.advance(ms)
  }

  /** Moves time forward in `stepMs` steps until `done()` or `maxMs` passed; returns `done()`. */
  async until(done: () => boolean, maxMs: number, stepMs = 10): Promise<boolean> {
    for (let waited = 0; !done() && waited < maxMs; waited += stepMs) await this.clock.advance(stepMs)
    return done()
  }

  /** Moves time forward until `p` settles (at most `maxMs`); its value, or throws if it did not settle. */
  async settle<T>(p: Promise<T>, maxMs = 60_000, stepMs = 1): Promise<T> {
    let settled = false
    const watched = p.finally(() => {
      settled = true
    })
    if (!(await this.until(() => settled, maxMs, stepMs))) throw new Error(`not settled within ${maxMs} ms of fake time`)
    return watched
  }

  /**
   * Every core knows every other as a trusted member (probation over), long enough that readers
   * treat membership as settled (membership.ts: steady).
   */
  async converge(maxMs = 30_000): Promise<boolean> {
    const live = () => this.cores.filter((c) => !c.stopped)
    return this.until(
      () =>
        live().every(
          (c) => c.cluster.membership.steady() && live().every((o) => o === c || c.cluster.members.get(o.cluster.nodeId)?.trusted === true),
        ),
      maxMs,
      50,
    )
  }

  /** Stores `key` at `core` as an application would: SET, then the cluster's copies to the other owners. */
  set(core: Core, key: string, value: Buffer | string, ttlMs = 60_000, flags = 0): void {
    core.store.set(key, Buffer.from(value), ttlMs, flags)
    // void: the wait for a copy only ever resolves; a test that needs the copies waits for them itself.
    void core.cluster.stored(key)
  }

  /** Deletes `key` at `core` as an application would: DELETE, then the cluster's deletes to the holders. */
  delete(core: Core, key: string): void {
    core.store.delete(key)
    // void: as with set, a test that needs the deletes acknowledged waits for them itself.
    void core.cluster.deleted(key)
  }

  /** The owners of `key` as `from` sees them (live members and itself). */
  ownersOf(key: string, from: Core): Core[] {
    return from.cluster.replicator.ownersOf(key).map((id) => this.cores.find((c) => c.cluster.nodeId === id)!)
  }

  /** The running cores whose store holds `key`. */
  holding(key: string): Core[] {
    return this.cores.filter((c) => !c.stopped && c.store.peek(key) !== undefined)
  }

  /** Starts a clean stop of `core` (handoff, LEAVE); time must move for it to finish. */
  stop(core: Core): Promise<void> {
    core.stopped ??= core.cluster.stop()
    return core.stopped
  }

  /**
   * A crash as the others see it: from now on nothing it sends arrives and nothing reaches it.
   * Its own timers still run, cut off, until `close`.
   */
  crash(core: Core): () => void {
    return this.net.isolate(core.address)
  }

  /** Stops every core (time moves until all have stopped). */
  async close(): Promise<void> {
    await this.settle(Promise.all(this.cores.map((c) => this.stop(c))), 600_000, 100)
  }
}

/**
 * A lab of `n` cores (named n0, n1, ...) that all know each other as trusted members, closed at
 * the end of the test.
 */
export async function startLab(
  t: { teardown(fn: () => unknown): void; ok(v: unknown, msg: string): unknown },
  n: number,
  seed: number,
  options: Partial<ClusterOptions> = {},
): Promise<{ lab: MemoryLab; cores: Core[] }> {
  const lab = new MemoryLab(seed, options)
  t.teardown(() => lab.close())
  const cores: Core[] = []
  for (let i = 0; i < n; i++) cores.push(await lab.add(`n${i}`))
  t.ok(await lab.converge(), 'the cores see each other as trusted members')
  return { lab, cores }
}
