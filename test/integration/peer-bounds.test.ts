/**
 * Bounds that must hold against a sender with the cluster key (issue 13, finding 8): chunked copies
 * that announce 65,535 chunks, and 20,000 forged members. Real daemons on loopback; the datagrams
 * are sealed with the test cluster's key file.
 */
import t from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import { DgramAsPromised } from 'dgram-as-promised'
import { parseKeyFile } from '../../protocol/keyfile.js'
import { Keyring, MsgType, decodeMessages, encodeBody, open, seal, type Message } from '../../protocol/wire.js'
import { clusterStats, replicationSettled, startCluster } from '../helpers/cluster.js'
import { eventually } from '../helpers/daemon.js'

function sealer(keyFile: string) {
  const ring = new Keyring(parseKeyFile(fs.readFileSync(keyFile, 'utf8')))
  const keyId = [...ring.keys.keys()][0]!
  return {
    seal: (sender: Buffer, counter: number, m: Message, receiver?: Buffer) =>
      seal(ring, keyId, sender, counter, encodeBody(m, Date.now()), receiver),
    /** The messages of a datagram (several when it is a BATCH), or undefined when it does not open. */
    open: (d: Buffer) => {
      try {
        return decodeMessages(open(ring, d).body).msgs
      } catch {
        return undefined
      }
    },
  }
}

/** Resident memory of a process, in bytes (VmRSS). */
function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m![1]) * 1024
}

/** Sends datagrams in batches the receive buffers can take (what the kernel drops is never counted). */
async function sendAll(
  sock: ReturnType<typeof DgramAsPromised.createSocket>,
  dgrams: Buffer[],
  port: number,
  address: string,
  after?: () => void,
): Promise<void> {
  for (let i = 0; i < dgrams.length; i += 100) {
    await Promise.all(dgrams.slice(i, i + 100).map((d) => sock.send(d, port, address)))
    after?.()
    await new Promise((r) => setTimeout(r, 2))
  }
}

async function fakeReplySocket(t: { teardown(fn: () => unknown): void }) {
  const s = DgramAsPromised.createSocket({ type: 'udp4' })
  t.teardown(() => s.close())
  await s.bind(0, '127.0.0.1')
  return s
}

t.test('copies announcing 65,535 chunks from a member: refused before they cost memory; a local GET still answers', async (t) => {
  const { nodes, keyFile, group, port } = await startCluster(t, 2, ['--replication-factor', '2', '--dead-after-ms', '5000'])
  const a = nodes[0]!
  const { seal: sealAs } = sealer(keyFile)
  const self = (await a.client.peers()).find((p) => p['self'])!
  const [addr, uport] = [String(self['address']).split(':')[0]!, Number(String(self['address']).split(':')[1])]
  const aId = Buffer.from(String(self['nodeId']), 'hex')
  await a.client.set('local-session', Buffer.from('still-here'))

  // The attacker joins as a member (its ANNOUNCE sealed with the cluster key), then floods.
  const reply = await fakeReplySocket(t)
  const sender = crypto.randomBytes(8)
  let counter = 1
  // It keeps announcing itself until past its probation: copies are taken only from trusted members.
  const announce = () =>
    void reply.send(
      sealAs(sender, counter++, {
        type: MsgType.ANNOUNCE,
        reply: { family: 4, address: '127.0.0.1', port: reply.address().port },
        entries: 0,
        flags: 0,
        name: 'attacker',
      }),
      port,
      group,
    )
  announce()
  const beat = setInterval(announce, 150)
  t.teardown(() => clearInterval(beat))
  await eventually(async () => (await clusterStats(a))['trustedMembers'] === 2, 20_000, 'the attacker is a trusted member')
  // Its heartbeats stop before the flood (their counters would move the replay window past the
  // flood's); with deadAfterMs 5 s it stays a member meanwhile.
  clearInterval(beat)

  const n = 1200
  const flood: Buffer[] = []
  for (let i = 0; i < n; i++) {
    // The finding: 65,535 chunks of 0 bytes; and 65,535 chunks of 1 byte (which no sender needs for 64 KiB).
    const empty = i % 2 === 0
    const m: Message = {
      type: MsgType.REPLICATE,
      replId: i + 1,
      ttlMs: 60_000,
      flags: 0,
      totalLen: empty ? 0 : 65_535,
      index: 0,
      count: 65_535,
      version: 1n,
      key: Buffer.from(`k${i}`),
      chunk: empty ? Buffer.alloc(0) : Buffer.from('x'),
    }
    flood.push(sealAs(sender, counter++, m, aId))
  }
  const before = await clusterStats(a)
  const base = rss(a.proc.pid!)
  let peak = base
  const sample = () => (peak = Math.max(peak, rss(a.proc.pid!)))
  await sendAll(reply, flood, uport, addr, sample)
  await eventually(
    async () => {
      sample()
      return (await clusterStats(a))['datagramsReceived'] - before['datagramsReceived'] >= n
    },
    20_000,
    'every flood datagram reached the daemon',
  )
  const after = await clusterStats(a)
  sample()
  const grew = peak - base
  t.comment(
    `VmRSS ${(base / 2 ** 20).toFixed(1)} MB before, peak ${(peak / 2 ** 20).toFixed(1)} MB during ${n} copies of 65,535 chunks (+${(grew / 2 ** 20).toFixed(1)} MB)`,
  )
  t.ok(grew < 48 * 2 ** 20, `resident memory grew ${(grew / 2 ** 20).toFixed(1)} MB (< 48 MB; the reassembly budget is 8 MiB)`)
  const refused =
    after['dropped']['malformed'] - before['dropped']['malformed'] + (after['copiesUnassembled'] ?? 0) - (before['copiesUnassembled'] ?? 0)
  t.equal(refused, n, `all ${n} copies refused and counted (malformed: 0-byte chunks; unassembled: more chunks than a sender needs)`)
  t.equal(after['copiesReceived'], before['copiesReceived'], 'none taken in')
  t.same(await a.client.get('local-session'), Buffer.from('still-here'), 'a local GET answers')
})

t.test('20,000 forged ANNOUNCEs: at most maxMembers members, and no session is pushed to them', async (t) => {
  const maxMembers = 64
  const { nodes, keyFile, group, port } = await startCluster(t, 2, ['--replication-factor', '2', '--max-members', String(maxMembers)])
  const [a, b] = nodes as [(typeof nodes)[0], (typeof nodes)[0]]
  const { seal: sealAs, open: openAs } = sealer(keyFile)
  const fake = await fakeReplySocket(t)
  const got = new Map<string, number>()
  fake.socket.on('message', (d: Buffer) => {
    for (const type of openAs(d)?.map((m) => String(m.type)) ?? ['unopened']) got.set(type, (got.get(type) ?? 0) + 1)
  })
  const reply = { family: 4 as const, address: '127.0.0.1', port: fake.address().port }
  const forged = Array.from({ length: 20_000 }, () =>
    sealAs(crypto.randomBytes(8), 1, { type: MsgType.ANNOUNCE, reply, entries: 0, flags: 0, name: 'forged' }),
  )
  let most = 0
  await sendAll(fake, forged, port, group, () => void clusterStats(a).then((s) => (most = Math.max(most, s['members']))))
  // Real sessions written while the forged members are alive go to the real member only.
  const keys = Array.from({ length: 100 }, (_, i) => `real-${i}`)
  for (const k of keys) await a.client.set(k, Buffer.from(`value-${k}`))
  const s = await clusterStats(a)
  most = Math.max(most, s['members'])
  t.ok(most <= maxMembers, `at most ${maxMembers} members while forged ANNOUNCEs arrived (saw ${most}; ${s['membersRefused']} refused)`)
  t.ok(s['membersRefused'] > 0, 'new senders refused once the member list was full (counted)')
  // The flood may have kept B's heartbeats out too (a full list refuses every newcomer): once the
  // forged members are dead, B is a trusted member again and gets every copy.
  await eventually(
    async () => (await clusterStats(a))['trustedMembers'] === 1 && (await clusterStats(a))['members'] === 1,
    30_000,
    'B a trusted member again, the forged ones gone',
  )
  await replicationSettled([a, b])
  const onB = await Promise.all(keys.map((k) => b.client.get(k, { localOnly: true })))
  t.equal(onB.filter((v, i) => v?.equals(Buffer.from(`value-${keys[i]}`))).length, keys.length, 'every session copied to the real member')
  await clusterStats(a)
  t.equal(
    (got.get(String(MsgType.REPLICATE)) ?? 0) + (got.get(String(MsgType.REPLICATE_AWAITED)) ?? 0),
    0,
    `no copy pushed to a forged member (datagrams at their address by type: ${JSON.stringify(Object.fromEntries(got))})`,
  )
})
