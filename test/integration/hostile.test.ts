/**
 * A running cluster under garbage: its group flooded with random, truncated, oversized, wrongly
 * keyed, bit-flipped and replayed datagrams, its API socket with random and half-written frames
 * and abrupt disconnects, while it keeps answering correctly. Plus a short soak.
 */
import t from 'tap'
import dgram from 'node:dgram'
import net from 'node:net'
import { DgramAsPromised } from 'dgram-as-promised'
import { Keyring, MsgType, encodeBody, seal } from '../../protocol/wire.js'
import { Op, encodeRequest } from '../../protocol/local.js'
import { mutate, prng } from '../helpers/fuzz.js'
import { runBench, type SoakResult } from '../helpers/bench-run.js'
import { CLIENT_TIMEOUT_MS, clusterStats, newKey, replicationSettled, startCluster, unreadable } from '../helpers/cluster.js'
import { eventually } from '../helpers/daemon.js'
import type { DropCounters } from '../../daemon/cluster/peer-transport.js'

t.test('a flood of hostile datagrams and frames: every drop counted, every answer right', async (t) => {
  // Reads run during the flood on a busy machine: a lookup deadline long enough for that, with
  // retransmits close together in case the flood pushes a LOOKUP or HIT out of a receive buffer.
  const { nodes, group, port } = await startCluster(t, 3, ['--lookup-timeout-ms', String(CLIENT_TIMEOUT_MS / 3), '--lookup-retries', '50'])
  const val = (k: string) => Buffer.from(`secret-state-${k}`.padEnd(300, '*'))
  const keys = Array.from({ length: 200 }, (_, i) => `keep-${i}`)
  await Promise.all(keys.map((k) => nodes[0]!.client.set(k, val(k))))
  await replicationSettled(nodes)

  const spy = DgramAsPromised.createSocket({ type: 'udp4', reuseAddr: true })
  t.teardown(() => spy.close())
  await spy.bind(port, group)
  spy.addMembership(group, '127.0.0.1')
  const captured: Buffer[] = []
  const capture = (m: Buffer) => captured.length < 50 && captured.push(m)
  spy.socket.on('message', capture)
  // Heartbeats and ticket keys go to the group several times a second.
  await eventually(() => captured.length >= 20, 30_000, 'real datagrams captured')
  // Stop capturing before the flood, or the flood's own datagrams would be "replayed".
  spy.socket.off('message', capture)
  t.ok(captured.length >= 20, `captured ${captured.length} real datagrams to replay and mangle`)

  const out = dgram.createSocket('udp4')
  t.teardown(() => out.close())
  await new Promise<void>((r) => out.bind(0, '127.0.0.1', r))
  out.setMulticastInterface('127.0.0.1')
  const r = prng(99)
  const stranger = { ...newKey(), id: 0x5eed }
  const strangerRing = new Keyring([stranger])
  const kinds: Record<string, () => Buffer> = {
    random: () => Buffer.from(Array.from({ length: 1 + (r() % 200) }, () => r() & 0xff)),
    truncated: () => captured[r() % captured.length]!.subarray(0, r() % 60),
    oversized: () => Buffer.alloc(2000 + (r() % 4000), 0x41),
    wrongKey: () =>
      seal(
        strangerRing,
        stranger.id,
        Buffer.alloc(8, r() & 0xff),
        1 + r(),
        encodeBody(
          {
            type: MsgType.LOOKUP,
            reqId: r(),
            nonce: Buffer.alloc(8, 1),
            reply: { family: 4, address: '127.0.0.1', port: 9 },
            expect: [],
            key: Buffer.from('keep-1'),
          },
          Date.now(),
        ),
      ),
    bitFlipped: () => mutate(captured[r() % captured.length]!, captured[0]!, r),
    replayed: () => captured[r() % captured.length]!,
  }
  const before = await Promise.all(nodes.map(clusterStats))
  // Five batches of each kind: every kind reaches every daemon many times over; more only repeats.
  const perKind = 500
  // Correct traffic runs while the flood does.
  const reads = (async () => {
    let wrong = 0
    for (let round = 0; round < 5; round++) {
      for (const k of keys.slice(round * 40, round * 40 + 40)) {
        const v = await nodes[2]!.client.get(k)
        if (!v?.equals(val(k))) wrong++
      }
    }
    return wrong
  })()
  // A flood, but one the receive buffers can take, since what the kernel drops is never counted:
  // batches of 100 (well under a daemon's 4 MiB receive buffer), each sent once every daemon
  // has taken in the one before, however slow a busy machine makes it.
  const received = async () => Promise.all(nodes.map(async (n) => (await clusterStats(n))['datagramsReceived']))
  for (const make of Object.values(kinds)) {
    for (let i = 0; i < perKind; i += 100) {
      const was = await received()
      await Promise.all(Array.from({ length: 100 }, () => new Promise((res) => out.send(make(), port, group, res))))
      await eventually(async () => (await received()).every((n, j) => n >= was[j]! + 100), 30_000, 'every daemon took in the batch')
    }
  }
  // The API socket: random frames, half-written frames, and connections cut mid-frame.
  const sock = nodes[1]!.socket
  for (let i = 0; i < 150; i++) {
    await new Promise<void>((resolve) => {
      const s = net.connect(sock)
      s.on('error', () => resolve())
      s.on('close', () => resolve())
      s.on('connect', () => {
        const good = encodeRequest({ op: Op.SET, id: i, flags: 0, ttlMs: 0, key: Buffer.from('keep-1'), value: Buffer.from('EVIL') })
        const kind = i % 3
        if (kind === 0) s.end(Buffer.from(Array.from({ length: 1 + (r() % 100) }, () => r() & 0xff)))
        else if (kind === 1) s.end(good.subarray(0, r() % good.length))
        else {
          s.write(good.subarray(0, 12))
          s.destroy()
        }
      })
      setTimeout(() => (s.destroy(), resolve()), 500)
    })
  }
  t.equal(await reads, 0, 'reads during the flood all returned the right bytes')
  const after = await Promise.all(nodes.map(clusterStats))
  const delta = (k: keyof DropCounters) => after.reduce((a, s, i) => a + s['dropped'][k] - before[i]!['dropped'][k], 0)
  const counted = {
    malformed: delta('malformed'),
    oversize: delta('oversize'),
    unknownKey: delta('unknownKey'),
    openFailed: delta('openFailed'),
    replayed: delta('replayed'),
    stale: delta('stale'),
    misaddressed: delta('misaddressed'),
  }
  t.comment(`drops counted over three daemons: ${JSON.stringify(counted)}`)
  // Each daemon receives every flood datagram (the batches fit its receive buffer).
  t.ok(counted.oversize >= 3 * perKind, `oversized datagrams counted (${counted.oversize} of ${3 * perKind})`)
  t.ok(counted.unknownKey >= 3 * perKind, `wrongly keyed datagrams counted (${counted.unknownKey} of ${3 * perKind})`)
  t.ok(counted.replayed >= perKind, `replays counted (${counted.replayed}; each replay reaches the two daemons that did not send it)`)
  // A flip in the receiver id of a group datagram makes it misaddressed (dropped before opening).
  t.ok(
    counted.malformed + counted.openFailed + counted.misaddressed >= 3 * 3 * perKind * 0.6,
    `random, truncated and flipped datagrams counted (${counted.malformed + counted.openFailed + counted.misaddressed})`,
  )
  t.same(await unreadable(nodes, keys, val), [], 'the store is intact: every session, every byte, on every node')
  for (const n of nodes) t.ok(await n.client.ping(), `${n.name} still serves`)
})

t.test('a short soak: steady memory, no descriptor leaks, every answer right', async (t) => {
  const r = await runBench<SoakResult>('soak', [], { SOAK_SECONDS: '12', SOAK_SAMPLE_MS: '1000', SOAK_MAX_BYTES: String(2 * 1024 * 1024) })
  t.comment(
    `soak ${r.seconds} s: ${r.ops} ops (${r.opsPerSec}/s), GET p50 ${r.getP50Us} us p99 ${r.getP99Us} us, RSS growth ${r.rssGrowthPct.join('/')}%, fds ${r.fds.at(-1)!.join('/')}`,
  )
  t.equal(r.errors, 0, 'no errors')
  t.equal(r.wrong, 0, 'no wrong answers')
  t.ok(
    r.fdGrowth.every((g) => g <= 0),
    'no descriptor growth',
  )
  t.ok(
    r.rssGrowthPct.every((g) => g < 30),
    `resident memory steady after warm-up (${r.rssGrowthPct.join('%, ')}%)`,
  )
})
