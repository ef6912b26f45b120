/**
 * Third-party memcache clients against the front end (issue 23): memjs (binary protocol only)
 * gives the same answer from statecast as from memcached 1.6 for every operation; a 1 MiB value
 * set through memjs on one host is read on another (chunked copies and fetches at memcached's
 * item limit); pymemcache's gets/cas with statecast's cas uniques, which are above 2^53.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import memjs from 'memjs'
import { startCluster, startNode, waitMembers } from '../helpers/cluster.js'
import { eventually, freePort, startDaemon } from '../helpers/daemon.js'
import { startMemcached } from '../helpers/memcached.js'
import { needs } from '../helpers/needs.js'

const NEEDS = needs({ commands: ['memcached'] })
const PY_NEEDS = needs({
  commands: ['/usr/bin/python3'],
  files: [{ path: '/usr/lib/python3/dist-packages/pymemcache', from: 'python3-pymemcache' }],
})

function client(port: number): memjs.Client {
  // No retries: a wrong answer must show, not be retried away; a generous timeout for a loaded machine.
  return memjs.Client.create(`127.0.0.1:${port}`, { retries: 0, timeout: 20, conntimeout: 20, logger: { log: () => {} } })
}

/** Runs `op`, giving its result or its error's message, as JSON-comparable data. */
async function outcome(op: () => Promise<unknown>): Promise<unknown> {
  try {
    const r = await op()
    return JSON.parse(
      JSON.stringify(r, (_k, v: unknown) =>
        Buffer.isBuffer(v)
          ? v.toString('latin1')
          : v && typeof v === 'object' && 'type' in v && v.type === 'Buffer'
            ? Buffer.from((v as unknown as { data: number[] }).data).toString('latin1')
            : v,
      ) ?? null,
    ) as unknown
  } catch (e) {
    return { error: (e as Error).message }
  }
}

/** Every memjs operation, in an order that exercises their outcomes (hits, misses, refusals). */
function operations(c: memjs.Client): [string, () => Promise<unknown>][] {
  const big = Buffer.alloc(500 * 1024, 0x5a)
  const tooBig = Buffer.alloc(1024 * 1024 + 10, 0x5a)
  return [
    ['get miss', () => c.get('miss')],
    ['set', () => c.set('k', 'v1', { expires: 0 })],
    ['get', () => c.get('k')],
    ['set with expiry', () => c.set('e', 'soon', { expires: 100 })],
    ['get with expiry', () => c.get('e')],
    ['add existing', () => c.add('k', 'v2')],
    ['add new', () => c.add('a', 'added')],
    ['get added', () => c.get('a')],
    ['replace existing', () => c.replace('a', 'replaced')],
    ['replace missing', () => c.replace('nope', 'x')],
    ['get replaced', () => c.get('a')],
    ['append', () => c.append('k', '+tail')],
    ['prepend', () => c.prepend('k', 'head+')],
    ['append missing', () => c.append('nope', 'x')],
    ['prepend missing', () => c.prepend('nope', 'x')],
    ['get joined', () => c.get('k')],
    ['increment missing with initial', () => c.increment('n', 1, { initial: 10 })],
    ['increment', () => c.increment('n', 5)],
    ['decrement', () => c.decrement('n', 3, {})],
    ['decrement below zero', () => c.decrement('n', 1000, {})],
    ['increment non-numeric', () => c.increment('k', 1)],
    ['increment missing without initial', () => c.increment('n2', 1)],
    ['get number', () => c.get('n')],
    ['touch', () => c.touch('k', 100)],
    ['touch missing', () => c.touch('nope', 100)],
    ['delete', () => c.delete('a')],
    ['delete missing', () => c.delete('a')],
    ['get deleted', () => c.get('a')],
    ['set 500 KB', () => c.set('big', big)],
    ['get 500 KB', async () => (await c.get('big')).value?.equals(big)],
    ['set beyond 1 MiB', () => c.set('big', tooBig)],
    ['get after a refused set', () => c.get('big')],
    ['set empty', () => c.set('empty', '')],
    ['get empty', () => c.get('empty')],
    ['set binary key', () => c.set('k\u00e9y', 'latin')],
    ['get binary key', () => c.get('k\u00e9y')],
    ['set a long key', () => c.set('l'.repeat(250), 'long')],
    ['get a long key', () => c.get('l'.repeat(250))],
    ['flush', async () => Object.values(await c.flush())],
    ['get after flush', () => c.get('k')],
    [
      'stats has the fields clients read',
      async () => {
        const s = await new Promise<Record<string, string> | null>((resolve) => c.stats((_e, _s, st) => resolve(st)))
        return [
          'pid',
          'uptime',
          'version',
          'curr_connections',
          'cmd_get',
          'cmd_set',
          'get_hits',
          'get_misses',
          'curr_items',
          'bytes',
          'limit_maxbytes',
          'threads',
          'evictions',
        ].filter((k) => s?.[k] === undefined)
      },
    ],
    // Last: both servers answer Invalid arguments and hang up (memcached's rule for a key over 250 bytes).
    ['set a too long key', () => c.set('l'.repeat(251), 'long')],
  ]
}

t.test('memjs gets the same answer from statecast as from memcached 1.6, for every operation', NEEDS, async (t) => {
  const mc = await startMemcached(t)
  const port = await freePort()
  await startDaemon(t, { args: ['--memcache-listen', `127.0.0.1:${port}`, '--cluster-enabled', 'false'] })
  const a = client(mc)
  const b = client(port)
  t.teardown(() => (a.close(), b.close()))
  const opsA = operations(a)
  const opsB = operations(b)
  let same = 0
  for (let i = 0; i < opsA.length; i++) {
    const [name, runA] = opsA[i]!
    const [ma, sb] = [await outcome(runA), await outcome(opsB[i]![1])]
    t.same(sb, ma, `${name}: ${JSON.stringify(ma).slice(0, 120)}`)
    if (JSON.stringify(sb) === JSON.stringify(ma)) same++
  }
  t.equal(same, opsA.length, `${same} of ${opsA.length} operations answered alike`)
})

t.test('a 1 MiB value set through memjs on host A is read through memjs on host B', async (t) => {
  const probe = await startCluster(t, 0)
  const pa = await freePort()
  const pb = await freePort()
  const common = { dir: probe.dir, keyFile: probe.keyFile, group: probe.group, port: probe.port }
  const na = await startNode(t, { ...common, name: 'a', args: ['--memcache-listen', `127.0.0.1:${pa}`, '--lookup-timeout-ms', '5000'] })
  const nb = await startNode(t, { ...common, name: 'b', args: ['--memcache-listen', `127.0.0.1:${pb}`, '--lookup-timeout-ms', '5000'] })
  await waitMembers([na, nb], 1)
  const a = client(pa)
  const b = client(pb)
  t.teardown(() => (a.close(), b.close()))
  const value = randomBytes(1024 * 1024)
  t.equal(await a.set('session:big', value), true, 'stored on A')
  const got = await eventually(async () => (await b.get('session:big')).value, 60_000, 'B reads the value')
  t.ok(got !== null && Buffer.from(got).equals(value), '1 MiB arrived intact on B')
})

function python(script: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn('/usr/bin/python3', ['-c', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    p.once('close', (code) => resolve({ code, stdout, stderr }))
  })
}

t.test("pymemcache's gets and cas work with statecast's cas uniques, which are above 2^53", PY_NEEDS, async (t) => {
  const port = await freePort()
  await startDaemon(t, { args: ['--memcache-listen', `127.0.0.1:${port}`, '--cluster-enabled', 'false'] })
  const script = `
import json, sys
from pymemcache.client.base import Client
c = Client(("127.0.0.1", int(sys.argv[1])), default_noreply=False)
c.set("k", b"one")
v, cas = c.gets("k")
ok = c.cas("k", b"two", cas)
stale = c.cas("k", b"three", cas)
v2, cas2 = c.gets("k")
print(json.dumps({"cas": int(cas), "ok": ok, "stale": stale, "value": v2.decode(), "changed": int(cas2) != int(cas)}))
`
  const r = await python(script, [String(port)])
  t.equal(r.code, 0, r.stderr)
  const out = JSON.parse(r.stdout) as { cas: number; ok: boolean; stale: boolean; value: string; changed: boolean }
  t.ok(out.cas > 2 ** 53, `the cas unique ${out.cas} is above 2^53 (a version: ms << 16)`)
  t.same(
    { ok: out.ok, stale: out.stale, value: out.value, changed: out.changed },
    { ok: true, stale: false, value: 'two', changed: true },
    'cas with the unique gets returned stores; with a stale one it does not',
  )
})
