/**
 * Conditional writes decided at one host per key (daemon/cluster/decisions.ts), with real daemons
 * and the memcache front end: concurrent `add` of one key from several hosts has exactly one
 * winner, concurrent `incr` lose nothing, one `cas` per unique value succeeds, a large append
 * decided elsewhere works, and a decider SIGKILLed mid-operation never yields two winners. The
 * add, incr and cas cases run twice: with this file's line client and with a third-party client,
 * pymemcache (test/helpers/conditional_rounds.py, one connection per host and thread, released
 * together by a barrier each round).
 *
 * STATECAST_COND_ROUNDS sets the rounds (default 300; 10000 by hand). Only outcome counts are
 * asserted, never times.
 */
import path from 'node:path'
import { spawn } from 'node:child_process'
import t, { type Test } from 'tap'
import { GENEROUS_LOOKUPS, clusterStats, replicationSettled, type ClusterCounter } from '../helpers/cluster.js'
import { owners } from '../../daemon/cluster/rendezvous.js'
import { mcConnect, startMcCluster, type McConn } from '../helpers/memcache-cluster.js'
import { ROOT } from '../helpers/root.js'
import { needs } from '../helpers/needs.js'

const ROUNDS = Number(process.env['STATECAST_COND_ROUNDS'] ?? 300)

/**
 * For the cas rounds, whose gets on another host right after the set is a remote read: a lookup
 * deadline a loaded machine meets (the default 50 ms is not, and a gets it ends is not a cas
 * outcome). An owner's MISS still shows, and the decisions' deadline becomes 100 s.
 */
const CAS_LOOKUPS = ['--lookup-timeout-ms', '5000', '--lookup-retries', '4']

const won = (reply: string[]) => reply[0] === 'STORED'
const answered = (reply: string[]) => ['STORED', 'NOT_STORED', 'EXISTS', 'NOT_FOUND'].includes(reply[0]!)

async function addRounds(t: Test, conns: McConn[], tag: string): Promise<void> {
  let bad = 0
  let errors = 0
  for (let i = 0; i < ROUNDS; i++) {
    const key = `lock-${tag}-${i}`
    const replies = await Promise.all(conns.map((c) => c.cmd(`add ${key} 0 60 1`, 'x')))
    const wins = replies.filter(won).length
    errors += replies.filter((r) => !answered(r)).length
    if (wins !== 1) {
      bad++
      if (bad <= 3) t.comment(`round ${i}: ${JSON.stringify(replies)}`)
    }
  }
  t.equal(bad, 0, `${ROUNDS} rounds of add from ${conns.length} hosts: exactly one winner in each`)
  t.equal(errors, 0, 'no errors in a healthy cluster')
}

t.test('add from 2 and 3 hosts, right after start: exactly one wins each round', async (t) => {
  const { nodes } = await startMcCluster(t, 3)
  const conns = await Promise.all(nodes.map((n) => mcConnect(t, n.mcPort)))
  // At once: startMcCluster returns as soon as every host trusts the others, not when settled.
  await addRounds(t, conns.slice(0, 2), 'two')
  await addRounds(t, conns, 'three')
  const stats = await Promise.all(nodes.map(clusterStats))
  const sum = (k: ClusterCounter) => stats.reduce((a, s) => a + s[k], 0)
  t.ok(sum('decisionsRemote') > 0, `some adds were decided remotely (${sum('decisionsRemote')})`)
  t.comment(
    `decisionsLocal ${sum('decisionsLocal')} decisionsRemote ${sum('decisionsRemote')} retransmitted ${sum('decisionsRetransmitted')} ` +
      `repeats ${sum('decisionRepeats')} refused ${sum('decisionsRefused')} failed ${sum('decisionsFailed')}`,
  )
})

t.test('1,000 concurrent incr over 3 hosts end at exactly 1,000; cas with one unique: one wins', async (t) => {
  const { nodes } = await startMcCluster(t, 3, CAS_LOOKUPS)
  const conns = await Promise.all(nodes.map((n) => mcConnect(t, n.mcPort)))
  t.same(await conns[0]!.cmd('set counter 0 300 1', '0'), ['STORED'])
  const incrs: Promise<string[]>[] = []
  for (let i = 0; i < 1000; i++) incrs.push(conns[i % 3]!.cmd('incr counter 1'))
  const replies = await Promise.all(incrs)
  t.equal(replies.filter((r) => /^\d+$/.test(r[0]!)).length, 1000, 'every incr answered with a number')
  const numbers = new Set(replies.map((r) => r[0]))
  t.equal(numbers.size, 1000, 'every incr saw its own value: none lost, none repeated')
  for (const c of conns) t.match((await c.cmd('get counter'))[1], /^1000 *$/, 'every host reads 1000')

  let bad = 0
  let getsMissed = 0
  for (let i = 0; i < ROUNDS; i++) {
    const key = `cas-${i}`
    t.same(await conns[i % 3]!.cmd(`set ${key} 0 60 1`, 'a'), ['STORED'])
    const g = await conns[(i + 1) % 3]!.cmd(`gets ${key}`)
    const unique = g[0]!.split(' ')[4]
    if (unique === undefined) {
      // A read after a set elsewhere that missed: not a cas outcome, counted on its own.
      getsMissed++
      continue
    }
    const r = await Promise.all([conns[1]!.cmd(`cas ${key} 0 60 1 ${unique}`, 'b'), conns[2]!.cmd(`cas ${key} 0 60 1 ${unique}`, 'c')])
    if (r.filter(won).length !== 1) {
      bad++
      if (bad <= 3) t.comment(`round ${i}: ${JSON.stringify(r)}`)
    }
  }
  const stats = await Promise.all(nodes.map(clusterStats))
  const sum = (k: ClusterCounter) => stats.reduce((a, s) => a + s[k], 0)
  t.comment(
    `cas: ${bad} rounds without exactly one winner, ${getsMissed} gets missed; lookups MISS-settled ${sum('remoteMisses')}, timeouts ${sum('timeouts')}, members declared dead ${sum('membersDied')}`,
  )
  t.equal(bad, 0, `${ROUNDS} rounds: exactly one cas per unique value`)
  t.equal(getsMissed, 0, 'every gets after the set found the key')
})

t.test('a large append decided on another host', async (t) => {
  // One decider for all three appends needs one view of the members throughout: copying 900 KB
  // can stall a daemon on a loaded machine past the helpers' 1 s dead-after, and a host declared
  // dead moves the key's decider. And each append waits for its 900 KB copies to be acknowledged,
  // one after another at the decider, which on a loaded machine outlasts the default 5 s
  // decision deadline (an "outcome unknown" for an append that was applied): generous lookups
  // make that deadline 20 times theirs. Failure detection and deadlines are not what this tests.
  const { nodes } = await startMcCluster(t, 3, ['--max-value-bytes', String(1 << 20), '--dead-after-ms', '60000', ...GENEROUS_LOOKUPS])
  const conns = await Promise.all(nodes.map((n) => mcConnect(t, n.mcPort)))
  const big = Buffer.alloc(900_000, 'v')
  t.same(await conns[0]!.cmd(`set big 0 300 ${big.length}`, big), ['STORED'])
  // The copies of a 900 KB value take a while; this test is about the append, not the fill.
  await replicationSettled(nodes)
  // From every host: at least two of them are not its decider.
  for (const c of conns) t.same(await c.cmd('append big 0 0 3', 'abc'), ['STORED'])
  const stats = await Promise.all(nodes.map(clusterStats))
  t.comment(
    `per host: ${JSON.stringify(stats.map((s) => ({ local: s['decisionsLocal'], remote: s['decisionsRemote'], refused: s['decisionsRefused'], died: s['membersDied'] })))}`,
  )
  t.ok(stats.reduce((a, s) => a + Number(s['decisionsRemote']), 0) >= 2, 'appends were decided remotely')
  const decider = stats.findIndex((s) => Number(s['decisionsLocal']) >= 3)
  t.ok(decider >= 0, 'one host decided all three')
  const got = await conns[Math.max(decider, 0)]!.cmd('get big')
  t.equal(got[1]!.length, big.length + 9, 'the value grew by all three appends')
  t.ok(got[1]!.endsWith('abcabcabc'))
  // An add whose own value is too large for one DECIDE is refused clearly on a non-decider.
  const other = (decider + 1) % 3
  const r = await conns[other]!.cmd(`add big 0 300 ${big.length}`, big)
  t.ok(r[0] === 'NOT_STORED' || r[0]!.startsWith('SERVER_ERROR'), `a large add elsewhere: ${r[0]}`)
})

t.test('the decider SIGKILLed mid-operation: outcomes or errors, never two winners', async (t) => {
  const { nodes } = await startMcCluster(t, 3)
  const conns = await Promise.all(nodes.map((n) => mcConnect(t, n.mcPort)))
  const ids = await Promise.all(nodes.map(async (n) => String((await clusterStats(n))['nodeId'])))
  // Keys whose decider (first owner by rendezvous over the three) is node 0.
  const keys: string[] = []
  for (let i = 0; keys.length < 100; i++) if (owners(`kill-${i}`, ids, 1)[0] === ids[0]) keys.push(`kill-${i}`)
  // Adds of each key from nodes 1 and 2 at once, while node 0 is killed.
  const inflight = keys.map((k) => Promise.all([conns[1]!.cmd(`add ${k} 0 60 1`, 'b'), conns[2]!.cmd(`add ${k} 0 60 1`, 'c')]))
  nodes[0]!.proc.kill('SIGKILL')
  // The survivors fail the DECIDEs they had in flight to the dead decider: that must answer the
  // clients, never crash the daemon (it once did: an unhandled copy of the rejected promise).
  const crashed: string[] = []
  nodes.slice(1).forEach((n, i) => n.proc.once('exit', (code, sig) => crashed.push(`node ${i + 1}: ${code ?? sig}`)))
  const rounds = await Promise.all(inflight)
  let twoWinners = 0
  let unknown = 0
  let unclear = 0
  for (const r of rounds) {
    if (r.filter(won).length > 1) twoWinners++
    unknown += r.filter((x) => x[0] === 'SERVER_ERROR outcome unknown').length
    unclear += r.filter((x) => !answered(x) && x[0] !== 'SERVER_ERROR outcome unknown').length
  }
  t.equal(twoWinners, 0, 'never two winners')
  t.equal(unclear, 0, 'every reply is an outcome or "outcome unknown"')
  t.comment(`outcome unknown: ${unknown} of ${rounds.length * 2}`)
  // Once the others have declared node 0 dead, a new decider takes over and decides again.
  await waitFor(async () => (await clusterStats(nodes[1]!))['members'] === 1, 30_000)
  const after = await Promise.all([conns[1]!.cmd('add after-kill 0 60 1', 'b'), conns[2]!.cmd('add after-kill 0 60 1', 'c')])
  t.equal(after.filter(won).length, 1, 'after the death: exactly one winner again')
  t.same(crashed, [], 'the surviving daemons kept running')
})

async function waitFor(cond: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await new Promise((r) => setTimeout(r, 50))
  }
}

const PY_NEEDS = needs({
  commands: ['/usr/bin/python3'],
  files: [{ path: '/usr/lib/python3/dist-packages/pymemcache', from: 'python3-pymemcache' }],
})
const PY_SCRIPT = path.join(ROOT, 'test', 'helpers', 'conditional_rounds.py')

/** Runs conditional_rounds.py with these arguments and gives the JSON it printed. */
function pymemcache<T>(t: Test, args: (string | number)[]): Promise<T> {
  return new Promise((resolve, reject) => {
    const p = spawn('/usr/bin/python3', [PY_SCRIPT, ...args.map(String)], { stdio: ['ignore', 'pipe', 'pipe'] })
    t.teardown(() => p.kill('SIGKILL'))
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    p.once('error', reject)
    p.once('close', (code) => {
      if (code !== 0) reject(new Error(`conditional_rounds.py ${args.join(' ')} exited ${code}: ${stderr}`))
      else resolve(JSON.parse(stdout) as T)
    })
  })
}

interface PyAdd {
  rounds: number
  hosts: number
  exactlyOne: number
  none: number
  several: number
  errors: number
  examples: unknown[]
}

t.test('pymemcache: add from 2 and 3 hosts, right after start: exactly one wins each round', PY_NEEDS, async (t) => {
  const { nodes } = await startMcCluster(t, 3)
  const ports = nodes.map((n) => n.mcPort)
  for (const hosts of [2, 3]) {
    const r = await pymemcache<PyAdd>(t, ['add', ROUNDS, `py${hosts}`, ...ports.slice(0, hosts)])
    t.comment(`pymemcache add from ${hosts} hosts: ${JSON.stringify(r)}`)
    t.same(
      { exactlyOne: r.exactlyOne, none: r.none, several: r.several },
      { exactlyOne: ROUNDS, none: 0, several: 0 },
      `${ROUNDS} rounds of add from ${hosts} hosts through pymemcache: exactly one winner in each`,
    )
    t.equal(r.errors, 0, 'no errors in a healthy cluster')
  }
})

interface PyIncr {
  stored: boolean
  total: number
  connections: number
  answered: number
  distinct: number
  max: number | null
  notFound: number
  errors: string[]
  errorThreads: number
  finals: (string | null)[]
}

interface PyCas {
  rounds: number
  exactlyOne: number
  none: number
  both: number
  getsMissed: number
  setFailed: number
  errors: number
  examples: unknown[]
}

t.test('pymemcache: 1,000 concurrent incr over 3 hosts end at exactly 1,000; cas with one unique: one wins', PY_NEEDS, async (t) => {
  const { nodes } = await startMcCluster(t, 3, CAS_LOOKUPS)
  const ports = nodes.map((n) => n.mcPort)
  // Four connections per host, each sending its share of the 1,000 one after another.
  const inc = await pymemcache<PyIncr>(t, ['incr', 1000, 4, ...ports])
  t.comment(`pymemcache incr: ${JSON.stringify(inc)}`)
  t.equal(inc.stored, true, 'the counter was set')
  t.same(
    { answered: inc.answered, distinct: inc.distinct, max: inc.max, notFound: inc.notFound, errorThreads: inc.errorThreads },
    { answered: 1000, distinct: 1000, max: 1000, notFound: 0, errorThreads: 0 },
    'every incr answered with its own number, the last 1000: none lost, none repeated',
  )
  t.same(inc.finals, ['1000', '1000', '1000'], 'every host reads 1000')

  const cas = await pymemcache<PyCas>(t, ['cas', ROUNDS, 'py', ...ports])
  const stats = await Promise.all(nodes.map(clusterStats))
  const sum = (k: ClusterCounter) => stats.reduce((a, s) => a + s[k], 0)
  // A gets that missed is a read after a set elsewhere: these say whether the owners answered
  // MISS, the lookup deadline ended it, or a member was declared dead meanwhile.
  t.comment(
    `pymemcache cas: ${JSON.stringify(cas)}; lookups MISS-settled ${sum('remoteMisses')}, timeouts ${sum('timeouts')}, members declared dead ${sum('membersDied')}`,
  )
  t.same(
    { exactlyOne: cas.exactlyOne, none: cas.none, both: cas.both, getsMissed: cas.getsMissed, setFailed: cas.setFailed },
    { exactlyOne: ROUNDS, none: 0, both: 0, getsMissed: 0, setFailed: 0 },
    `${ROUNDS} rounds through pymemcache: exactly one cas per unique value`,
  )
  t.equal(cas.errors, 0, 'no errors in a healthy cluster')
})
