/**
 * The Unix listener (daemon/local/unix-listener.ts) with real daemons: issue 13 finding 9 (a daemon
 * whose listen backlog is full looked stale, and a second daemon unlinked its socket and took the
 * path).
 */
import t from 'tap'
import fs from 'node:fs'
import net from 'node:net'
import { StatecastClient } from '../../client/index.js'
import { eventually, startDaemon, tmpDir } from '../helpers/daemon.js'

/** Opens connections to `socketPath` until the kernel refuses one for a full backlog. */
async function fillBacklog(socketPath: string, max = 20_000): Promise<{ sockets: net.Socket[]; refusal: string }> {
  const sockets: net.Socket[] = []
  for (let i = 0; i < max; i++) {
    const s = net.connect(socketPath)
    const r = await new Promise<string>((resolve) => {
      s.once('connect', () => resolve('connected'))
      s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
    })
    if (r !== 'connected') return { sockets, refusal: r }
    s.on('error', () => {})
    sockets.push(s)
  }
  return { sockets, refusal: 'none' }
}

t.test('a daemon whose backlog is full is not displaced by a second daemon on its path', async (t) => {
  const dir = tmpDir()
  const a = await startDaemon(t, { dir, name: 'a', args: ['--cluster-enabled', 'false'] })
  const inode = fs.statSync(a.socket).ino
  a.proc.kill('SIGSTOP')
  t.teardown(() => a.proc.kill('SIGCONT'))
  const { sockets, refusal } = await fillBacklog(a.socket)
  t.teardown(() => sockets.forEach((s) => s.destroy()))
  t.comment(`backlog full after ${sockets.length} connections; the next connect failed with ${refusal}`)
  t.equal(refusal, 'EAGAIN', 'a full backlog answers a connect with EAGAIN, not ECONNREFUSED')

  // The second daemon has an admin socket of its own, so only the API path is contested.
  const b = await startDaemon(t, { dir, name: 'b', args: ['--cluster-enabled', 'false', '--socket', a.socket], wait: false })
  const outcome = await Promise.race([
    b.exited,
    b
      .waitLog((l) => l['msg'] === 'statecastd ready', 60_000)
      .then(
        () => 'started on the path',
        () => 'no outcome',
      ),
  ])
  t.equal(outcome, 1, 'the second daemon refuses to start (exit 1)')
  t.ok(
    b.logs.some((l) => /another process is serving on .*a\.sock.*EAGAIN/.test(String(l['err']))),
    'and says the path is served (the connect did not prove it dead)',
  )
  t.equal(fs.statSync(a.socket).ino, inode, "the first daemon's socket file is still in place")

  a.proc.kill('SIGCONT')
  for (const s of sockets) s.destroy()
  // The daemon first works through the queued connections; until then a connect may meet EAGAIN.
  const c = await eventually(
    () => StatecastClient.connect({ socketPath: a.socket, timeoutMs: 20_000 }),
    20_000,
    'a connection to the first daemon',
  )
  t.teardown(() => c.destroy())
  t.ok((await c.ping()) >= 0, 'the first daemon serves on its path again')
  t.equal(await a.stop(), 0)
  t.notOk(fs.existsSync(a.socket), 'its socket removed on a clean stop')
})

t.test('a socket file that replaced ours is not removed when we stop', async (t) => {
  const dir = tmpDir()
  const a = await startDaemon(t, { dir, name: 'a', args: ['--cluster-enabled', 'false'] })
  // Someone moves our socket aside and puts another listener on the path.
  fs.renameSync(a.socket, `${a.socket}.moved`)
  const other = net.createServer()
  await new Promise<void>((r) => other.listen(a.socket, r))
  t.teardown(() => other.close())
  t.equal(await a.stop(), 0)
  t.ok(fs.existsSync(a.socket), "the other listener's socket is left alone")
})
