/**
 * Issue 13 finding 10: a client that half-closes (SHUT_WR) after a GET that needs a remote lookup
 * lost that reply (a PING sent with it was answered).
 */
import t from 'tap'
import net from 'node:net'
import { FrameDecoder, Op, ReplyFlag, Status, decodeReply, encodeRequest, type Reply } from '../../protocol/local.js'
import { startCluster } from '../helpers/cluster.js'

/** Writes `bytes`, half-closes, and collects every reply until the daemon closes its side. */
function sendAndHalfClose(socketPath: string, bytes: Buffer): Promise<{ replies: Reply[]; how: string }> {
  return new Promise((resolve) => {
    const s = net.connect({ path: socketPath, allowHalfOpen: true })
    const replies: Reply[] = []
    const dec = new FrameDecoder(1 << 24)
    s.on('data', (c) => dec.push(c, (f) => replies.push(decodeReply(Buffer.from(f)))))
    s.on('end', () => {
      s.end()
      resolve({ replies, how: 'the daemon ended its side after the replies' })
    })
    s.on('error', (err) => resolve({ replies, how: `error ${err.message}` }))
    s.on('connect', () => s.end(bytes))
  })
}

t.test('a half-closed client still gets the reply of a GET that needs a remote lookup', async (t) => {
  // R=1: the key lives on its writer only, so the other daemon has to look it up.
  const {
    nodes: [a, b],
  } = await startCluster(t, 2, ['--replication-factor', '1', '--lookup-timeout-ms', '2000'])
  const value = Buffer.from('held-only-by-a')
  await a!.client.set('far-key', value)
  t.equal(await b!.client.get('far-key', { localOnly: true }), undefined, 'B does not hold the key itself')

  const frames = Buffer.concat([
    encodeRequest({ op: Op.GET, id: 1, flags: 0, key: Buffer.from('far-key') }),
    encodeRequest({ op: Op.PING, id: 2, flags: 0 }),
  ])
  const r = await sendAndHalfClose(b!.socket, frames)
  t.comment(r.how)
  const byId = new Map(r.replies.map((x) => [x.id, x]))
  t.equal(byId.get(2)?.status, Status.OK, 'the PING is answered')
  t.equal(byId.get(1)?.status, Status.OK, 'the GET is answered after the half-close')
  const got = byId.get(1)
  t.ok(got && got.body.subarray(got.body.length - value.length).equals(value), 'with the value')
  t.ok(got && got.flags & ReplyFlag.REMOTE, 'fetched from the other daemon')
  t.equal(r.how, 'the daemon ended its side after the replies', 'and the daemon closes once the last reply is written')
  t.ok(await b!.client.ping(), 'B still serves')
})
