/**
 * Forward secrecy of ticket keys (issue 21, point 4): every datagram of a real three-daemon
 * cluster is recorded through several epochs (a network namespace of the test's own, its
 * loopback captured with an AF_PACKET socket), then an attacker is given the cluster key file.
 * It opens every datagram it can and must not recover any epoch's ticket keys: no consumer key
 * (Node's, from TICKET_KEY; nginx's, from its files) appears in any plaintext, and HKDF of every
 * 48-byte window of every plaintext, taken as an epoch secret, never yields one.
 */
import t from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import { parseKeyFile } from '../../protocol/keyfile.js'
import { Keyring, MsgType, decodeMessages, open } from '../../protocol/wire.js'
import { NODE_CONSUMER, deriveKey, nodeTicketKey } from '../../daemon/tickets/ticket-formats.js'
import { startNode, uniqueGroup, waitMembers, writeKeyFile, type Node } from '../helpers/cluster.js'
import { eventually, tmpDir } from '../helpers/daemon.js'

const ROTATION_MS = 3000
const EPOCHS = 3

// Prints the UDP payload of every IPv4 packet seen on lo (each once: outgoing copies skipped).
const CAPTURE_PY = `
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
s.bind(('lo', 0))
print('ready', flush=True)
while True:
    data, addr = s.recvfrom(70000)
    if addr[2] == socket.PACKET_OUTGOING or len(data) < 42 or data[12:14] != b'\\x08\\x00':
        continue
    ihl = (data[14] & 15) * 4
    if data[23] != 17:
        continue
    udp = 14 + ihl
    print(data[udp + 8:].hex(), flush=True)
`

t.test('recorded datagrams and the cluster key file do not reveal past ticket keys', async (t) => {
  const ns = `scfs${process.pid}x${crypto.randomBytes(2).toString('hex')}`
  execFileSync('ip', ['netns', 'add', ns])
  t.teardown(() => execFileSync('ip', ['netns', 'del', ns]))
  execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
  const cap = spawn('ip', ['netns', 'exec', ns, '/usr/bin/python3', '-u', '-c', CAPTURE_PY], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => cap.kill())
  const recorded: Buffer[] = []
  await new Promise<void>((resolve) => {
    readline.createInterface({ input: cap.stdout }).on('line', (l) => (l === 'ready' ? resolve() : recorded.push(Buffer.from(l, 'hex'))))
  })

  const dir = tmpDir('sc-fs-')
  const keyFile = writeKeyFile(dir)
  const { group, port } = uniqueGroup()
  const keyDir = fs.mkdtempSync('/dev/shm/sc-fs-')
  t.teardown(() => fs.rmSync(keyDir, { recursive: true, force: true }))
  const nodes: Node[] = []
  for (const name of ['a', 'b', 'c']) {
    const conf = path.join(dir, `${name}.toml`)
    fs.writeFileSync(
      conf,
      `heartbeatMs = 200\ndeadAfterMs = 1000\nticketKeyRotationMs = ${ROTATION_MS}\n[[ticketConsumers]]\nformat = "nginx"\ndir = ${JSON.stringify(path.join(keyDir, name))}\n`,
    )
    nodes.push(await startNode(t, { dir, name, keyFile, group, port, prefix: ['ip', 'netns', 'exec', ns], args: ['--config', conf] }))
  }
  await waitMembers(nodes, 2)

  // Every consumer key the servers held, by epoch: Node's (TICKET_KEY) and nginx's (its files).
  const nodeKeys = new Map<number, Buffer>()
  const nginxKeys = new Map<string, Buffer>()
  const collect = async () => {
    for (const n of nodes) {
      const k = await n.client.ticketKey()
      if (k) nodeKeys.set(k.epoch, k.key)
      for (const f of fs.existsSync(path.join(keyDir, n.name)) ? fs.readdirSync(path.join(keyDir, n.name)) : []) {
        if (f.endsWith('.key')) nginxKeys.set(f, fs.readFileSync(path.join(keyDir, n.name, f)))
      }
    }
  }
  const first = (await eventually(async () => (await nodes[0]!.client.ticketKey())?.epoch, 30_000, 'a ticket key'))!
  await eventually(
    async () => {
      await collect()
      return [...nodeKeys.keys()].filter((e) => e >= first).length >= EPOCHS + 1
    },
    60_000,
    `${EPOCHS} rotations`,
  )
  // One key per epoch across the cluster, so the epochs were agreed (not made per host).
  const agreed = await Promise.all(nodes.map((n) => n.client.ticketKey()))
  t.ok(
    agreed.every((k) => k!.key.equals(agreed[0]!.key)),
    'the members agree on the key in force',
  )
  cap.kill()

  // The attacker: every recorded datagram, and the key file.
  const ring = new Keyring(parseKeyFile(fs.readFileSync(keyFile, 'utf8')))
  const bodies: Buffer[] = []
  const types = new Map<number, number>()
  for (const d of recorded) {
    try {
      const { body } = open(ring, d)
      bodies.push(body)
      for (const m of decodeMessages(body).msgs) types.set(m.type, (types.get(m.type) ?? 0) + 1)
    } catch {
      /* not a statecast datagram (none expected here) */
    }
  }
  t.ok(bodies.length > 100, `the attacker opened ${bodies.length} of ${recorded.length} datagrams`)
  t.ok(
    (types.get(MsgType.TICKET_SEAL) ?? 0) >= EPOCHS,
    `the secrets did travel in the recording (${types.get(MsgType.TICKET_SEAL) ?? 0} TICKET_SEALs)`,
  )
  t.equal(types.get(MsgType.TICKET_KEY) ?? 0, 0, 'no secret travelled in the clear form')

  const wanted: Buffer[] = [...nodeKeys.values(), ...[...nginxKeys.values()].flatMap((f) => [f, f.subarray(16, 48), f.subarray(48, 80)])]
  t.ok(nodeKeys.size >= EPOCHS + 1 && nginxKeys.size >= EPOCHS, `${nodeKeys.size} Node keys and ${nginxKeys.size} nginx keys to look for`)
  const found = wanted.filter((k) => bodies.some((b) => b.includes(k)))
  t.equal(found.length, 0, 'no consumer key appears in any opened datagram')

  // Every 48-byte window of every plaintext, taken as an epoch's secret.
  let tried = 0
  const hits: number[] = []
  const epochs = [...nodeKeys.keys()]
  for (const b of bodies) {
    for (let off = 0; off + 48 <= b.length; off++) {
      const secret = b.subarray(off, off + 48)
      for (const epoch of epochs) {
        tried++
        const k = deriveKey('node', NODE_CONSUMER, { epoch, secret })
        if (nodeTicketKey(k).equals(nodeKeys.get(epoch)!)) hits.push(epoch)
      }
    }
  }
  t.ok(tried > 10_000, `${tried} candidate secrets derived`)
  t.same(hits, [], 'HKDF of what the attacker opened never yields a ticket key')
})
