/**
 * Issue 13 review: multi-gets of missing keys on the memcache front end must not take the room in
 * the daemon's lookup table (maxInflightLookups) that API GETs of sessions on other hosts need.
 */
import t from 'tap'
import crypto from 'node:crypto'
import net from 'node:net'
import { CLIENT_TIMEOUT_MS, startCluster, startNode, waitMembers } from '../helpers/cluster.js'
import { eventually, freePort } from '../helpers/daemon.js'
import { StatecastClient } from '../../client/index.js'

/** One connection looping multi-gets of `keys` distinct missing keys until stopped; counts ENDs. */
function flood(port: number, keys: number): { stop: () => void; rounds: () => number } {
  const s = net.connect(port, '127.0.0.1')
  let rounds = 0
  let stopped = false
  let got = ''
  const send = () => {
    if (stopped) return
    const pre = crypto.randomBytes(4).toString('hex')
    s.write(`get ${Array.from({ length: keys }, (_, j) => `${pre}-${j}`).join(' ')}\r\n`)
  }
  s.on('error', () => {})
  s.on('data', (b) => {
    got = (got + b.toString('latin1')).slice(-8)
    if (got.endsWith('END\r\n')) {
      rounds++
      got = ''
      send()
    }
  })
  s.on('connect', send)
  return {
    stop: () => {
      stopped = true
      s.destroy()
    },
    rounds: () => rounds,
  }
}

t.test('API GETs of remote sessions are found while 64 memcache connections multi-get missing keys', async (t) => {
  const port = await freePort()
  // A small lookup table, so that the flood is many times what it holds (the attack used 64
  // connections against the default 1,024).
  const probe = await startCluster(t, 0)
  const common = { dir: probe.dir, keyFile: probe.keyFile, group: probe.group, port: probe.port }
  const args = ['--replication-factor', '1', '--max-inflight-lookups', '64', '--lookup-timeout-ms', '5000']
  const a = await startNode(t, { ...common, name: 'a', args: [...args, '--memcache-listen', `127.0.0.1:${port}`] })
  const b = await startNode(t, { ...common, name: 'b', args })
  await waitMembers([a, b], 1)
  const keys = Array.from({ length: 60 }, (_, i) => `remote-session-${i}`)
  for (const k of keys) await b.client.set(k, Buffer.from(`value-of-${k}`))
  t.equal(await a.client.get(keys[0]!, { localOnly: true }), undefined, 'A does not hold them itself')

  const floods = Array.from({ length: 64 }, () => flood(port, 20))
  t.teardown(() => floods.forEach((f) => f.stop()))
  // The flood is running: every connection has had a multi-get answered.
  await eventually(() => floods.every((f) => f.rounds() >= 1), 30_000, 'every flooding connection answered')
  const admin = await StatecastClient.connect({ socketPath: a.adminSocket, timeoutMs: CLIENT_TIMEOUT_MS })
  t.teardown(() => admin.destroy())
  const missing: string[] = []
  for (const k of keys) {
    const v = await a.client.get(k)
    if (!v || v.toString() !== `value-of-${k}`) missing.push(k)
  }
  const mcStats = ((await admin.stats()) as { memcache: Record<string, number> }).memcache
  const shed = ((await admin.stats()) as { cluster: { shed: number } }).cluster.shed
  const rounds = floods.reduce((n, f) => n + f.rounds(), 0)
  floods.forEach((f) => f.stop())
  t.same(
    missing,
    [],
    `every API GET of a session held by B was answered with its value (${rounds} multi-gets of 20 missing keys meanwhile)`,
  )
  t.equal(shed, 0, 'no lookup was shed for want of room in the table')
  t.ok(
    mcStats['lookupsQueued']! > 0,
    `memcache lookups waited for the front end's share (${mcStats['lookupsQueued']}) instead of being shed`,
  )
  t.ok(mcStats['remoteLookups']! <= 16, `at most a quarter of the table in flight from memcache (${mcStats['remoteLookups']})`)
  // The flood's own lookups were queued, not answered "not found" for want of room: a key held by
  // B read through the front end during another flood is found.
  const again = Array.from({ length: 64 }, () => flood(port, 20))
  t.teardown(() => again.forEach((f) => f.stop()))
  await eventually(() => again.every((f) => f.rounds() >= 1), 30_000, 'second flood running')
  const viaMc = await new Promise<string>((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    let out = ''
    s.on('data', (c) => {
      out += c.toString('latin1')
      if (out.endsWith('END\r\n')) {
        s.destroy()
        resolve(out)
      }
    })
    s.on('error', () => resolve(out))
    s.write(`get ${keys.slice(0, 20).join(' ')}\r\n`)
  })
  again.forEach((f) => f.stop())
  t.equal(viaMc.split('VALUE ').length - 1, 20, 'every key of a memcache multi-get of remote sessions found during the flood')
})

t.test(
  'a memcache GET waits for an owner that is slow to answer (memcacheLookupTimeoutMs); an API GET answers "not found" at lookupTimeoutMs',
  async (t) => {
    const port = await freePort()
    const probe = await startCluster(t, 0)
    const common = { dir: probe.dir, keyFile: probe.keyFile, group: probe.group, port: probe.port }
    // R = 1: B alone holds what it writes, so A's reads of it are remote lookups to B.
    const args = ['--replication-factor', '1', '--lookup-timeout-ms', '50']
    const a = await startNode(t, {
      ...common,
      name: 'a',
      args: [...args, '--memcache-listen', `127.0.0.1:${port}`, '--memcache-lookup-timeout-ms', '20000'],
    })
    const b = await startNode(t, { ...common, name: 'b', args })
    await waitMembers([a, b], 1)
    await b.client.set('api-key', Buffer.from('api-value'))
    await b.client.set('mc-key', Buffer.from('mc-value'))
    const admin = await StatecastClient.connect({ socketPath: a.adminSocket, timeoutMs: CLIENT_TIMEOUT_MS })
    t.teardown(() => admin.destroy())
    const timeouts = async () => ((await admin.stats()) as { cluster: { timeouts: number } }).cluster.timeouts
    const before = await timeouts()

    // B stops answering (as a host busy for a while would); both reads start while it is stopped.
    b.proc.kill('SIGSTOP')
    let resumed = false
    t.teardown(() => {
      if (!resumed) b.proc.kill('SIGCONT')
    })
    const api = a.client.get('api-key')
    const mc = net.connect(port, '127.0.0.1')
    mc.on('error', () => {})
    let reply = ''
    mc.on('data', (d: Buffer) => (reply += d.toString('latin1')))
    mc.write('get mc-key\r\n')
    t.teardown(() => mc.destroy())
    t.equal(await api, undefined, 'the API GET answered "not found" while the owner was silent')
    await eventually(async () => (await timeouts()) > before, 30_000, 'the API lookup counted as timed out')
    t.equal(reply, '', 'the memcache GET is still waiting')
    b.proc.kill('SIGCONT')
    resumed = true
    await eventually(() => reply.endsWith('END\r\n'), 30_000, 'the memcache GET answered')
    t.equal(reply, 'VALUE mc-key 0 8\r\nmc-value\r\nEND\r\n', 'the memcache GET found the value once the owner answered')
  },
)
