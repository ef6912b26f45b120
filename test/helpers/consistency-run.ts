/**
 * The workload of the consistency tests: clients, each bound to one host's memcache front end,
 * run random set/get/delete on a few register keys, add/delete as a lock, incr on a counter and
 * gets/cas on a CAS key, recording every operation in a History, while the test's scenario changes
 * the cluster (joins, restarts, partitions). The checker (checker.ts) judges the history after.
 */
import crypto from 'node:crypto'
import { History, type Op } from './history.js'
import { McClient, McError } from './memcache-client.js'
import type { CheckResult } from './checker.js'
import { check } from './checker.js'

/** Operations per phase of a scenario (between two faults). */
export const OPS_PER_PHASE = Number(process.env['CONSISTENCY_OPS_PER_PHASE'] ?? 600)
/** Clients over all hosts. */
export const CLIENTS = Number(process.env['CONSISTENCY_CLIENTS'] ?? 8)

export const REGISTER_KEYS = ['reg-0', 'reg-1', 'reg-2', 'reg-3']
export const LOCK_KEY = 'lock-0'
export const COUNTER_KEY = 'ctr-0'
export const CAS_KEY = 'cas-0'

/**
 * A host as the clients see it: its name and memcache target (a socket path), or undefined while
 * the host is down or paused (its clients then wait, issuing nothing).
 */
export interface Endpoint {
  name: string
  target: string | undefined
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export class Workload {
  readonly history = new History()
  readonly #endpoints: Endpoint[]
  #stopped = false
  #runners: Promise<void>[] = []
  #done = 0
  #waiters: { at: number; resolve: () => void }[] = []
  readonly #timeoutMs: number

  /** `endpoints` may change while the run goes on (the scenario sets `target`). */
  constructor(endpoints: Endpoint[], opts: { timeoutMs?: number } = {}) {
    this.#endpoints = endpoints
    this.#timeoutMs = opts.timeoutMs ?? 5000
  }

  /** Writes the counter's and the CAS key's initial values through `endpoint`, acknowledged, before any client starts. */
  async init(endpoint: Endpoint): Promise<void> {
    const c = new McClient(endpoint.target!, 30_000)
    try {
      for (const [key, value] of [
        [COUNTER_KEY, '0'],
        [CAS_KEY, 'cas-init'],
      ] as const) {
        const op = await this.#op(c, endpoint.name, 'init', { kind: 'set', key, value })
        if (op.outcome !== 'ok') throw new Error(`initial set of ${key}: ${op.note}`)
      }
    } finally {
      c.close()
    }
  }

  /** Starts `clients` clients spread over the endpoints in turn. */
  start(clients = CLIENTS): void {
    for (let i = 0; i < clients; i++)
      this.#runners.push(this.#client(`c${this.#runners.length}`, this.#endpoints[i % this.#endpoints.length]!))
  }

  /** Starts `n` more clients on `ep` (a host that joined). */
  startOn(ep: Endpoint, n: number): void {
    for (let i = 0; i < n; i++) this.#runners.push(this.#client(`c${this.#runners.length}`, ep))
  }

  /** Resolves once `n` more operations have completed. */
  ops(n: number): Promise<void> {
    const at = this.#done + n
    return new Promise((resolve) => this.#waiters.push({ at, resolve }))
  }

  async stop(): Promise<void> {
    this.#stopped = true
    await Promise.all(this.#runners)
  }

  /** Reads the counter through `endpoint` once the run is over and checks the history. */
  async check(endpoint: Endpoint): Promise<CheckResult> {
    const c = new McClient(endpoint.target!, 30_000)
    let final: Op | undefined
    try {
      final = await this.#op(c, endpoint.name, 'final', { kind: 'get', key: COUNTER_KEY })
    } finally {
      c.close()
    }
    return check(this.history.ops, new Map([[COUNTER_KEY, { initial: 0, final }]]))
  }

  #count(): void {
    this.#done++
    this.#waiters = this.#waiters.filter((w) => (w.at <= this.#done ? (w.resolve(), false) : true))
  }

  async #client(name: string, ep: Endpoint): Promise<void> {
    let conn: McClient | undefined
    let target: string | undefined
    let seq = 0
    while (!this.#stopped) {
      if (ep.target !== target) {
        conn?.close()
        conn = undefined
        target = ep.target
      }
      if (target === undefined) {
        await sleep(10)
        continue
      }
      conn ??= new McClient(target, this.#timeoutMs)
      const value = () => `${name}-${++seq}-${crypto.randomBytes(3).toString('hex')}`
      const p = Math.random()
      const key = REGISTER_KEYS[Math.floor(Math.random() * REGISTER_KEYS.length)]!
      if (p < 0.3) await this.#op(conn, ep.name, name, { kind: 'set', key, value: value() })
      else if (p < 0.62) await this.#op(conn, ep.name, name, { kind: 'get', key })
      else if (p < 0.68) await this.#op(conn, ep.name, name, { kind: 'delete', key })
      else if (p < 0.78) {
        const add = await this.#op(conn, ep.name, name, { kind: 'add', key: LOCK_KEY, value: value() })
        if (add.outcome === 'ok') {
          await sleep(2)
          // The holder releases, retrying until the server answers (an unknown release leaves the lock held in the checker's eyes meanwhile).
          for (let i = 0; i < 20; i++) {
            if (ep.target === undefined) await sleep(50)
            else if (ep.target !== target) {
              conn.close()
              target = ep.target
              conn = new McClient(target, this.#timeoutMs)
            }
            if ((await this.#op(conn, ep.name, name, { kind: 'release', key: LOCK_KEY })).outcome !== 'unknown') break
          }
        }
      } else if (p < 0.88) await this.#op(conn, ep.name, name, { kind: 'incr', key: COUNTER_KEY })
      else {
        const g = await this.#op(conn, ep.name, name, { kind: 'get', key: CAS_KEY, cas: 'gets' })
        if (g.outcome === 'ok' && g.result !== null && g.note)
          await this.#op(conn, ep.name, name, { kind: 'cas', key: CAS_KEY, value: value(), cas: g.note })
      }
    }
    conn?.close()
  }

  /** Runs one operation, records it and how it ended. */
  async #op(c: McClient, host: string, client: string, o: { kind: Op['kind']; key: string; value?: string; cas?: string }): Promise<Op> {
    const gets = o.kind === 'get' && o.cas === 'gets'
    const op = this.history.invoke({
      client,
      host,
      kind: gets ? 'get' : o.kind,
      key: o.key,
      ...(o.value !== undefined ? { value: o.value } : {}),
    })
    try {
      switch (o.kind) {
        case 'get': {
          const v = await c.get(o.key, gets)
          this.history.complete(op, 'ok', v ? v.value : null, gets && v ? String(v.cas) : undefined)
          break
        }
        case 'set':
        case 'add':
        case 'cas': {
          op.cas = o.cas!
          if (o.kind !== 'cas') delete op.cas
          const r = await c.store(o.kind, o.key, o.value!, o.kind === 'cas' ? BigInt(o.cas!) : undefined)
          this.history.complete(op, r === 'STORED' ? 'ok' : /^(NOT_STORED|EXISTS|NOT_FOUND)$/.test(r) ? 'fail' : 'unknown', undefined, r)
          break
        }
        case 'delete':
        case 'release': {
          const r = await c.delete(o.key)
          // NOT_FOUND leaves the key absent, as a delete does.
          this.history.complete(op, r === 'DELETED' || r === 'NOT_FOUND' ? 'ok' : 'unknown', undefined, r)
          break
        }
        case 'incr': {
          const r = await c.incr(o.key)
          this.history.complete(op, /^\d+$/.test(r) ? 'ok' : r === 'NOT_FOUND' ? 'fail' : 'unknown', /^\d+$/.test(r) ? r : undefined, r)
          break
        }
      }
    } catch (err) {
      this.history.complete(op, 'unknown', undefined, err instanceof McError ? err.code : String(err))
    }
    // Only ops on the workload's keys count toward phases (the final read is outside them).
    if (client !== 'final' && client !== 'init') this.#count()
    return op
  }
}
