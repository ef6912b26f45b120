/**
 * Every reply bound to its request, every unicast datagram to its receiver (issue 13, findings 2
 * and 3): real datagrams captured on their way to one daemon (through a relay in its namespace)
 * and resent to another, or to the same host after a restart.
 */
import t from 'tap'
import fs from 'node:fs'
import { NetLab } from './helpers/netns.js'
import { clusterStats, startNode, uniqueGroup, waitMembers, writeKeyFile, type Node } from './helpers/cluster.js'
import { eventually, tmpDir } from './helpers/daemon.js'
import { nft, startRelay, type Relay } from './helpers/relay.js'
import { parseKeyFile } from '../protocol/keyfile.js'
import { Keyring, MsgType, decodeBody, encodeBody, open, seal, type Message } from '../protocol/wire.js'

const B_PORT = 40010
const C_PORT = 40011

/** Opens a captured datagram with the test's cluster key, to tell its type. */
function opener(keyFile: string): (d: Buffer) => Message | undefined {
  const ring = new Keyring(parseKeyFile(fs.readFileSync(keyFile, 'utf8')))
  return (d) => {
    try {
      return decodeBody(open(ring, d).body).msg
    } catch {
      return undefined
    }
  }
}

async function lab3(t: { teardown(fn: () => unknown): void }, args: string[]) {
  const lab = NetLab.create(t, 3)
  const dir = tmpDir('sc-bind-')
  const keyFile = writeKeyFile(dir)
  const { group, port } = uniqueGroup()
  const start = (i: number, extra: string[] = []) => startNode(t, { dir, name: `h${i}`, keyFile, group, port, prefix: lab.exec(i), args: ['--interface', lab.addr(i), ...args, ...extra] })
  const nodes: Node[] = [await start(1), await start(2, ['--unicast-port', String(B_PORT)]), await start(3, ['--unicast-port', String(C_PORT)])]
  await waitMembers(nodes, 2)
  const relay = await startRelay(t, lab, 2, dir, B_PORT)
  return { lab, dir, keyFile, nodes, relay, start, open: opener(keyFile) }
}

const captured = (relay: Relay, open: (d: Buffer) => Message | undefined, type: number) => relay.seen.filter((d) => d.via === 'capture' && open(d.bytes)?.type === type)

t.test('a HIT captured on its way to B and resent to C, while C waits for its first lookup, does not answer it', async (t) => {
  const { lab, nodes, relay, open } = await lab3(t, ['--replication-factor', '1', '--lookup-timeout-ms', '3000'])
  const [a, b, c] = nodes as [Node, Node, Node]
  const alice = Buffer.from('alice-tls-session-master-secret-0123456789')
  await a.client.set('alice-session', alice)
  // B's first lookup (request id 1): A answers with a HIT to B, through the relay.
  t.same(await b.client.get('alice-session'), alice, 'B fetched Alice\'s session from A')
  const hit = await eventually(() => captured(relay, open, MsgType.HIT)[0], 5000, 'the HIT to B captured')
  // C's own lookup must still be waiting when the replay arrives: its answers (MISS from A and B)
  // are kept from it; only the relay's injection socket reaches C's unicast port.
  nft(lab, 3, `table ip scblock {\n chain in {\n type filter hook input priority 0; policy accept;\n udp dport ${C_PORT} udp sport != ${relay.injectPort} drop\n }\n}\n`)
  const before = (await clusterStats(c))['dropped']
  const bob = c.client.get('bob-session-that-does-not-exist', { timeoutMs: 10_000 })
  await eventually(async () => (await clusterStats(c))['lookups'] >= 1, 5000, 'C waits for its first lookup')
  await relay.inject(lab.addr(3), C_PORT, hit!.bytes)
  t.equal(await bob, undefined, 'C answers "not found" for Bob\'s key, not Alice\'s value')
  const after = (await clusterStats(c))['dropped']
  t.ok(after['misaddressed'] > before['misaddressed'], `the replay counted (misaddressed ${before['misaddressed']} -> ${after['misaddressed']})`)
  t.equal(await c.client.get('bob-session-that-does-not-exist', { localOnly: true }), undefined, 'nothing stored under Bob\'s key')
  t.equal((await clusterStats(c))['remoteHits'], 0, 'no remote hit on C')
})
