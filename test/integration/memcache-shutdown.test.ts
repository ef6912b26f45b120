/**
 * Attack review: a memcache SET that waits for a copy's ACK (copies are being lost, and this host
 * is not an owner of the key: ClusterHooks.stored()) when the daemon is told to stop (SIGTERM).
 * The SET is stored; its client must be told so, and the commands it pipelined after it answered,
 * before the connection closes. The old front end half-closed every connection at once, so the
 * reply written when the wait ended went nowhere and the client saw a bare EOF.
 */
import t from 'tap'
import net from 'node:net'
import { eventually, freePort } from '../helpers/daemon.js'
import { clusterStats, startCluster, startNode, waitMembers } from '../helpers/cluster.js'

/** A memcache connection that sends `text` and collects everything until the daemon closes it. */
function session(port: number, text: string): { got: () => string; closed: Promise<void> } {
  const s = net.connect(port, '127.0.0.1')
  let got = ''
  s.setEncoding('latin1')
  s.on('data', (d: string) => (got += d))
  s.on('error', () => {})
  s.on('connect', () => s.write(text))
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()))
  t.teardown(() => s.destroy())
  return { got: () => got, closed }
}

t.test(
  "SIGTERM while memcache SETs wait for an owner's ACK: each is answered STORED, and what was pipelined after it, before the connection closes",
  async (t) => {
    const port = await freePort()
    const probe = await startCluster(t, 0)
    const common = { dir: probe.dir, keyFile: probe.keyFile, group: probe.group, port: probe.port }
    // Members stay members while stopped (no "presumed dead" during the test); an ACK is waited for
    // 2 s, so a waiting SET waits 6 s (3 x the ACK timeout), long enough to stop the daemon meanwhile.
    const args = [
      '--replication-factor',
      '2',
      '--dead-after-ms',
      '600000',
      '--replication-ack-timeout-ms',
      '2000',
      '--shutdown-grace-ms',
      '30000',
      '--handoff-timeout-ms',
      '1000',
    ]
    const a = await startNode(t, { ...common, name: 'a', args: [...args, '--memcache-listen', `127.0.0.1:${port}`] })
    const b = await startNode(t, { ...common, name: 'b', args })
    const c = await startNode(t, { ...common, name: 'c', args })
    await waitMembers([a, b, c], 2)
    // The other owners stop answering: A's copies go unacknowledged and are retried (copies are
    // being lost), so a SET of a key A does not own waits for an ACK that does not come.
    for (const n of [b, c]) {
      process.kill(n.proc.pid!, 'SIGSTOP')
      t.teardown(() => {
        if (n.proc.exitCode === null) process.kill(n.proc.pid!, 'SIGCONT')
      })
    }
    const first = session(port, 'set loss-probe 0 0 1\r\nx\r\n')
    await eventually(async () => (await clusterStats(a))['copiesRetried'] > 0, 60_000, 'a copy retried')
    await eventually(() => first.got() === 'STORED\r\n', 60_000, 'the probe SET answered')

    // Every SET waits for its copies' ACKs (an owner's or a holder's), so all of these wait; the
    // daemon is stopped once each of them is read and waiting.
    const base = (await clusterStats(a))['setsAwaitingCopy']
    const keys = Array.from({ length: 12 }, (_, i) => `waiting-${i}`)
    const sessions = keys.map((k) => ({ k, s: session(port, `set ${k} 0 0 5\r\nvalue\r\nget ${k}\r\n`) }))
    await eventually(
      async () => (await clusterStats(a))['setsAwaitingCopy'] >= base + keys.length,
      60_000,
      "every SET waiting for its copies' ACKs",
    )
    const waiting = sessions.filter(({ s }) => s.got() === '').length
    const stopped = a.stop('SIGTERM')
    await Promise.all(sessions.map(({ s }) => s.closed))
    for (const { k, s } of sessions)
      t.equal(s.got(), `STORED\r\nVALUE ${k} 0 5\r\nvalue\r\nEND\r\n`, `${k}: answered in full before the close`)
    t.ok(waiting > 0, `${waiting} SETs were still waiting when the daemon was told to stop`)
    t.equal(await stopped, 0, 'the daemon exits cleanly')
  },
)
