/**
 * No socket ever returns an epoch secret (issue 21, finding 1 / point 2). One daemon of a
 * two-member cluster runs in this process (so the test can read the secrets it holds, which no
 * socket gives out), with real API and admin sockets; every reply to every request on both, read
 * as raw frames, every CLI output and every file written, through several rotations, is grepped
 * for every secret the daemon held (bytes, hex, base64). TICKET_KEY returns Node's derived key,
 * CONSUMER_KEYS only the consumers a socket may read, TICKET_WINDOW is refused.
 */
import t from 'tap'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { Daemon } from '../../daemon/daemon.js'
import { apply, defaults } from '../../daemon/config/config.js'
import { silentLog } from '../../daemon/host/log.js'
import { NODE_CONSUMER, deriveKey, nodeTicketKey } from '../../daemon/tickets/ticket-formats.js'
import { FrameDecoder, Op, Status, decodeReply, decodeTicketKeyBody, encodeRequest, type Request } from '../../protocol/local.js'
import { startNode, uniqueGroup, writeKeyFile } from '../helpers/cluster.js'
import { eventually, runCli, tmpDir } from '../helpers/daemon.js'

/** Sends `reqs` on a fresh connection to `socketPath`; resolves every reply frame, raw. */
function rawReplies(socketPath: string, reqs: Request[]): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath)
    const out: Buffer[] = []
    const dec = new FrameDecoder(1 << 20)
    s.on('connect', () => s.write(Buffer.concat(reqs.map(encodeRequest))))
    s.on('data', (d: Buffer) => {
      dec.push(d, (f: Buffer) => {
        out.push(Buffer.from(f))
        if (out.length === reqs.length) s.end()
      })
    })
    s.on('error', reject)
    s.on('close', () => resolve(out))
  })
}

t.test('no socket reply, CLI output or file carries an epoch secret', async (t) => {
  const dir = tmpDir('sc-sec-')
  const keyFile = writeKeyFile(dir)
  const { group, port } = uniqueGroup()
  const keyDir = fs.mkdtempSync('/dev/shm/sc-sec-')
  t.teardown(() => fs.rmSync(keyDir, { recursive: true, force: true }))
  const config = apply(
    defaults(),
    {
      socketPath: path.join(dir, 'in.sock'),
      adminSocketPath: path.join(dir, 'in-admin.sock'),
      keyFile,
      group,
      port,
      nodeName: 'in',
      heartbeatMs: 200,
      deadAfterMs: 1000,
      memberProbationMs: 400,
      ticketKeyRotationMs: 2000,
      ticketDir: keyDir,
      apiTicketConsumers: ['node', 'edge'],
      ticketConsumers: [{ name: 'edge', format: 'nginx' }, { format: 'haproxy' }, { format: 'apache' }, { format: 'h2o' }],
      // Two tenants, each with its own API socket and the ticket consumers its table grants.
      tenants: [
        { name: 'alpha', socketPath: path.join(dir, 'alpha.sock'), maxBytes: 8 * 1024 * 1024, ticketConsumers: ['edge'] },
        { name: 'beta', socketPath: path.join(dir, 'beta.sock'), maxBytes: 8 * 1024 * 1024, ticketConsumers: ['node', 'haproxy'] },
      ],
    },
    'test',
  )
  const d = new Daemon(config, { log: silentLog })
  await d.start()
  t.teardown(() => d.stop())
  await startNode(t, { dir, name: 'p', keyFile, group, port, args: ['--ticket-key-rotation-ms', '2000'] })

  const secrets = new Map<number, Buffer>()
  const hold = () => {
    for (const k of d.cluster!.tickets.all()) secrets.set(k.epoch, Buffer.from(k.key))
  }
  const consumers = [
    ['node', NODE_CONSUMER],
    ['nginx', 'edge'],
    ['haproxy', 'haproxy'],
    ['apache', 'apache'],
    ['h2o', 'h2o'],
    ['node', 'other'],
    ['nginx', 'nginx'],
    ['bogus', 'x'],
  ] as const
  const reqs: Request[] = [
    { op: Op.PING, id: 1, flags: 0 },
    { op: Op.STATS, id: 2, flags: 0 },
    { op: Op.PEERS, id: 3, flags: 0 },
    { op: Op.TICKET_KEY, id: 4, flags: 0 },
    { op: Op.TICKET_WINDOW, id: 5, flags: 0 },
    { op: Op.KEYS, id: 6, flags: 0, prefix: Buffer.alloc(0), limit: 0 },
    { op: Op.SET, id: 7, flags: 0, key: Buffer.from('k'), value: Buffer.from('v'), ttlMs: 0 },
    { op: Op.GET, id: 8, flags: 0, key: Buffer.from('k') },
    ...consumers.map(([format, consumer], i) => ({ op: Op.CONSUMER_KEYS, id: 100 + i, flags: 0, format, consumer })),
  ]
  const replies: { socket: string; op: number; status: number; raw: Buffer; body: Buffer }[] = []
  let cli = ''
  const first = (await eventually(() => d.cluster!.tickets.current?.epoch, 30_000, 'a ticket secret'))!
  // Until three rotations went by, every request on both sockets, again and again.
  await eventually(
    async () => {
      hold()
      for (const [name, sock] of [
        ['api', config.socketPath],
        ['admin', config.adminSocketPath],
        ['alpha', config.tenants[0]!.socketPath],
        ['beta', config.tenants[1]!.socketPath],
      ] as const) {
        for (const raw of await rawReplies(sock, reqs)) {
          const r = decodeReply(raw)
          replies.push({ socket: name, op: r.op, status: r.status, raw, body: Buffer.from(r.body) })
        }
      }
      hold()
      return [...secrets.keys()].filter((e) => e > first).length >= 3
    },
    60_000,
    'three rotations',
  )
  for (const args of [
    ['stats'],
    ['--json', 'stats'],
    ['tickets'],
    ['--json', 'tickets'],
    ['peers'],
    ['tickets', 'export', '--format', 'nginx', '--dir', path.join(keyDir, 'exported')],
    ['--json', 'tickets', 'export', '--format', 'h2o', '--dir', path.join(keyDir, 'exported-h2o')],
  ]) {
    const r = await runCli(['--socket', config.adminSocketPath, ...args])
    t.equal(r.code, 0, `statecast ${args.join(' ')}`)
    cli += r.stdout.toString() + r.stderr
  }
  hold()

  // What each socket was told.
  const of = (socket: string, op: number) => replies.filter((r) => r.socket === socket && r.op === op)
  for (const socket of ['api', 'admin']) {
    t.ok(
      of(socket, Op.TICKET_WINDOW).every((r) => r.status === Status.DENIED),
      `${socket}: TICKET_WINDOW is refused`,
    )
    const tk = of(socket, Op.TICKET_KEY).filter((r) => r.status === Status.OK)
    t.ok(tk.length > 0, `${socket}: TICKET_KEY answered`)
    for (const r of tk) {
      const k = decodeTicketKeyBody(r.body)
      const s = secrets.get(k.epoch)!
      t.ok(
        k.key.equals(nodeTicketKey(deriveKey('node', NODE_CONSUMER, { epoch: k.epoch, secret: s }))),
        `${socket}: TICKET_KEY of epoch ${k.epoch} is the "node" consumer's derived key`,
      )
    }
  }
  const consumerStatus = (socket: string, i: number) => [
    ...new Set(
      replies.filter((r) => r.socket === socket && r.op === Op.CONSUMER_KEYS && r.raw.readUInt32BE(6) === 100 + i).map((r) => r.status),
    ),
  ]
  t.same(consumerStatus('api', 0), [Status.OK], 'api: may read the Node consumer')
  t.same(consumerStatus('api', 1), [Status.OK], 'api: may read a consumer the config grants (edge)')
  for (const i of [2, 3, 4, 5, 6]) t.same(consumerStatus('api', i), [Status.DENIED], `api: may not read ${consumers[i]!.join('/')}`)
  for (const i of [0, 1, 2, 3, 4, 5, 6]) t.same(consumerStatus('admin', i), [Status.OK], `admin: reads ${consumers[i]!.join('/')}`)
  t.same(consumerStatus('admin', 7), [Status.DENIED], 'admin: an unknown format is refused')
  // A tenant's socket reads exactly its own consumers (its [[tenants]] ticketConsumers), one check for both ops.
  t.same(consumerStatus('alpha', 1), [Status.OK], 'alpha: reads its own consumer (edge)')
  for (const i of [0, 2, 3, 4, 5, 6, 7])
    t.same(consumerStatus('alpha', i), [Status.DENIED], `alpha: may not read ${consumers[i]!.join('/')}`)
  t.ok(
    of('alpha', Op.TICKET_KEY).length > 0 && of('alpha', Op.TICKET_KEY).every((r) => r.status === Status.DENIED),
    'alpha: TICKET_KEY (the "node" consumer, not granted) is refused',
  )
  for (const i of [0, 2]) t.same(consumerStatus('beta', i), [Status.OK], `beta: reads its own consumer ${consumers[i]!.join('/')}`)
  for (const i of [1, 3, 4, 5, 6, 7])
    t.same(consumerStatus('beta', i), [Status.DENIED], `beta: may not read ${consumers[i]!.join('/')} (alpha's edge included)`)
  const btk = of('beta', Op.TICKET_KEY).filter((r) => r.status === Status.OK)
  t.ok(btk.length > 0, 'beta: TICKET_KEY answered (it is granted "node")')
  for (const r of btk) {
    const k = decodeTicketKeyBody(r.body)
    t.ok(
      k.key.equals(nodeTicketKey(deriveKey('node', NODE_CONSUMER, { epoch: k.epoch, secret: secrets.get(k.epoch)! }))),
      `beta: TICKET_KEY of epoch ${k.epoch} is the "node" consumer's derived key`,
    )
  }

  // The grep: every secret, as bytes in any reply frame or file, as hex or base64 in any text.
  const files: Buffer[] = []
  const walk = (p: string) => {
    for (const f of fs.readdirSync(p, { withFileTypes: true })) {
      if (f.isDirectory()) walk(path.join(p, f.name))
      else files.push(fs.readFileSync(path.join(p, f.name)))
    }
  }
  walk(keyDir)
  t.ok(
    secrets.size >= 4 && replies.length > 100 && files.length > 5,
    `${secrets.size} secrets, ${replies.length} replies, ${files.length} files`,
  )
  const blobs = [...replies.map((r) => r.raw), ...files, Buffer.from(cli)]
  const texts = blobs.map((b) => b.toString('latin1')).join('\n')
  const leaks: string[] = []
  for (const [epoch, s] of secrets) {
    if (blobs.some((b) => b.includes(s))) leaks.push(`epoch ${epoch}: bytes`)
    for (const enc of [s.toString('hex'), s.toString('base64').replace(/=+$/, ''), s.toString('base64url')])
      if (texts.includes(enc) || texts.includes(enc.toUpperCase())) leaks.push(`epoch ${epoch}: text`)
    // Any 16 bytes of it (a key cut from the secret, as Node's used to be).
    for (let off = 0; off + 16 <= s.length; off += 16)
      if (blobs.some((b) => b.includes(s.subarray(off, off + 16)))) leaks.push(`epoch ${epoch}: bytes ${off}..${off + 16}`)
  }
  t.same(leaks, [], 'no epoch secret, or a slice of one, in any reply, file or CLI output')
})
