/**
 * Every reply bound to its request, every unicast datagram to its receiver (issue 13, findings 2
 * and 3): real datagrams captured on their way to one daemon (through a relay in its namespace)
 * and resent to another, or to the same host after a restart.
 */
import t from 'tap'
import fs from 'node:fs'
import { NetLab } from '../helpers/netns.js'
import { clusterStats, startNode, uniqueGroup, waitMembers, writeKeyFile, type Node } from '../helpers/cluster.js'
import { eventually, tmpDir } from '../helpers/daemon.js'
import { nft, startRelay, type Relay } from '../helpers/relay.js'
import { parseKeyFile } from '../../protocol/keyfile.js'
import { Keyring, MsgType, decodeMessages, encodeBody, open, seal, type Message } from '../../protocol/wire.js'
import { needs, NETNS } from '../helpers/needs.js'

const NEEDS = needs(NETNS)

const B_PORT = 40010
const C_PORT = 40011

/** Opens a captured datagram with the test's cluster key, to tell its messages (several in a BATCH). */
function opener(keyFile: string): (d: Buffer) => Message[] {
  const ring = new Keyring(parseKeyFile(fs.readFileSync(keyFile, 'utf8')))
  return (d) => {
    try {
      return decodeMessages(open(ring, d).body).msgs
    } catch {
      return []
    }
  }
}

async function lab3(t: { teardown(fn: () => unknown): void }, args: string[]) {
  const lab = NetLab.create(t, 3)
  const dir = tmpDir('sc-bind-')
  const keyFile = writeKeyFile(dir)
  const { group, port } = uniqueGroup()
  const start = (i: number, extra: string[] = []) =>
    startNode(t, { dir, name: `h${i}`, keyFile, group, port, prefix: lab.exec(i), args: ['--interface', lab.addr(i), ...args, ...extra] })
  const nodes: Node[] = [
    await start(1),
    await start(2, ['--unicast-port', String(B_PORT)]),
    await start(3, ['--unicast-port', String(C_PORT)]),
  ]
  await waitMembers(nodes, 2)
  const relay = await startRelay(t, lab, 2, dir, B_PORT)
  return { lab, dir, keyFile, nodes, relay, start, open: opener(keyFile) }
}

const captured = (relay: Relay, open: (d: Buffer) => Message[], type: number) =>
  relay.seen.filter((d) => d.via === 'capture' && open(d.bytes).some((m) => m.type === type))

t.test('a HIT captured on its way to B and resent to C, while C waits for its first lookup, does not answer it', NEEDS, async (t) => {
  const { lab, nodes, relay, open } = await lab3(t, ['--replication-factor', '1', '--lookup-timeout-ms', '3000'])
  const [a, b, c] = nodes as [Node, Node, Node]
  const alice = Buffer.from('alice-tls-session-master-secret-0123456789')
  await a.client.set('alice-session', alice)
  // B's first lookup (request id 1): A answers with a HIT to B, through the relay.
  t.same(await b.client.get('alice-session'), alice, "B fetched Alice's session from A")
  const hit = await eventually(() => captured(relay, open, MsgType.HIT)[0], 20_000, 'the HIT to B captured')
  // C's own lookup must still be waiting when the replay arrives: its answers (MISS from A and B)
  // are kept from it; only the relay's injection socket reaches C's unicast port.
  nft(
    lab,
    3,
    `table ip scblock {\n chain in {\n type filter hook input priority 0; policy accept;\n udp dport ${C_PORT} udp sport != ${relay.injectPort} drop\n }\n}\n`,
  )
  const before = (await clusterStats(c))['dropped']
  const bob = c.client.get('bob-session-that-does-not-exist', { timeoutMs: 10_000 })
  await eventually(async () => (await clusterStats(c))['lookups'] >= 1, 20_000, 'C waits for its first lookup')
  await relay.inject(lab.addr(3), C_PORT, hit!.bytes)
  t.equal(await bob, undefined, 'C answers "not found" for Bob\'s key, not Alice\'s value')
  const after = (await clusterStats(c))['dropped']
  t.ok(
    after['misaddressed'] > before['misaddressed'],
    `the replay counted (misaddressed ${before['misaddressed']} -> ${after['misaddressed']})`,
  )
  t.equal(await c.client.get('bob-session-that-does-not-exist', { localOnly: true }), undefined, "nothing stored under Bob's key")
  t.equal((await clusterStats(c))['remoteHits'], 0, 'no remote hit on C')
})

t.test(
  "a captured REPLICATE: resent to another host, or to the restarted owner, is refused and never acknowledged; a non-member's copy too",
  async (t) => {
    const { lab, nodes, relay, open, keyFile, start } = await lab3(t, ['--replication-factor', '3'])
    const [a, , c] = nodes as [Node, Node, Node]
    let b = nodes[1]!
    const v1 = Buffer.from('first-session-value-v1')
    await a.client.set('rolled', v1)
    const repl = await eventually(
      () =>
        // An application's SET travels as REPLICATE_AWAITED (REPLICATE's layout).
        captured(relay, open, MsgType.REPLICATE_AWAITED).find((d) =>
          open(d.bytes).some((m) => m.type === MsgType.REPLICATE_AWAITED && m.key.toString() === 'rolled'),
        ),
      20_000,
      'the copy to B captured',
    )
    await eventually(async () => (await c.client.get('rolled', { localOnly: true }))?.equals(v1), 20_000, 'C holds its own copy')
    // Anything sent back to the relay's injection socket: only a reply to a datagram's source could be.
    const answers = () => relay.seen.filter((d) => d.via === 'inject')

    // Resent to C: sealed for B, so C drops it, and answers nothing to the sender's address.
    const c0 = (await clusterStats(c))['dropped']['misaddressed'] ?? 0
    await c.client.delete('rolled', { noPropagate: true })
    await relay.inject(lab.addr(3), C_PORT, repl!.bytes)
    // Processed once counted as misaddressed or (before the fix) acknowledged.
    await eventually(
      async () => ((await clusterStats(c))['dropped']['misaddressed'] ?? 0) > c0 || answers().length > 0,
      20_000,
      'C processed the copy meant for B',
    )
    await clusterStats(c)
    t.equal(await c.client.get('rolled', { localOnly: true }), undefined, 'the copy deleted on C is not brought back')
    t.same(answers(), [], 'no ACK from C to the address the replay came from')

    // A copy from a sender that is not a member (sealed with the cluster key, for C): refused.
    const ring = new Keyring(parseKeyFile(fs.readFileSync(keyFile, 'utf8')))
    const cId = Buffer.from((await clusterStats(c))['nodeId'], 'hex')
    const body = encodeBody(
      {
        type: MsgType.REPLICATE,
        replId: 1,
        ttlMs: 60_000,
        flags: 0,
        totalLen: 6,
        index: 0,
        count: 1,
        version: 1n,
        key: Buffer.from('forged'),
        chunk: Buffer.from('forged'),
      },
      Date.now(),
    )
    const forged = seal(ring, ring.keys.keys().next().value!, Buffer.from('0123456789abcdef', 'hex'), 1, body, cId)
    await relay.inject(lab.addr(3), C_PORT, forged)
    await eventually(
      async () => ((await clusterStats(c))['copiesFromUntrusted'] ?? 0) >= 1 || answers().length > 0,
      20_000,
      "C processed the non-member's copy",
    )
    t.equal(await c.client.get('forged', { localOnly: true }), undefined, "the non-member's copy is not stored")
    t.same(answers(), [], 'and not acknowledged')

    // Restart B (a new node id, the same address), write a newer value, then replay the old copy.
    await b.stop()
    b = await start(2, ['--unicast-port', String(B_PORT)])
    await waitMembers([a, b, c], 2)
    const v2 = Buffer.from('second-session-value-v2')
    await a.client.set('rolled', v2)
    await eventually(async () => (await b.client.get('rolled', { localOnly: true }))?.equals(v2), 20_000, 'the restarted B holds v2')
    const b0 = (await clusterStats(b))['dropped']['misaddressed'] ?? 0
    await relay.inject(lab.addr(2), B_PORT, repl!.bytes)
    const acked = answers().length
    await eventually(
      async () => ((await clusterStats(b))['dropped']['misaddressed'] ?? 0) > b0 || answers().length > acked,
      20_000,
      'the restarted B processed the old copy',
    )
    t.ok(((await clusterStats(b))['dropped']['misaddressed'] ?? 0) > b0, 'counted as misaddressed')
    t.same(await b.client.get('rolled', { localOnly: true }), v2, 'the restarted owner keeps v2: the replayed copy did not roll it back')
    t.same(answers(), [], 'nothing acknowledged to the replayer')
  },
)
