import t from 'tap'
import fc from 'fast-check'
import {
  EMPTY_CHUNK,
  FrameDecoder,
  Op,
  ReqFlag,
  ReplyFlag,
  Status,
  decodeGetBody,
  decodeReply,
  decodeRequest,
  encodeError,
  encodeReply,
  encodeRequest,
  decodeTicketWindowBody,
  encodeTicketWindowBody,
  TICKET_KEY_BODY_BYTES,
  decodeRequestFlags,
  decodeTicketKeyBody,
  encodeRequestFlags,
  encodeTicketKeyBody,
  peekRequestHeader,
  keyProblem,
  requestLength,
  type Request,
  decodeConsumerKeysBody,
  encodeConsumerKeysBody,
} from '../../protocol/local.js'
import { ProtocolError } from '../../protocol/errors.js'
import { onlyProtocolErrors } from '../helpers/fuzz.js'

const b = (s: string) => Buffer.from(s)
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex')

// Golden frames: the bytes are the protocol. A change here is a wire break.
const requests: { name: string; message: Request; bytes: string }[] = [
  { name: 'PING', message: { op: Op.PING, id: 5, flags: 0 }, bytes: '00000006 01 00 00000005' },
  { name: 'GET', message: { op: Op.GET, id: 1, flags: 0, key: b('ab') }, bytes: '00000008 02 00 00000001 6162' },
  { name: 'GET local-only', message: { op: Op.GET, id: 10, flags: ReqFlag.LOCAL_ONLY, key: b('x') }, bytes: '00000007 02 01 0000000a 78' },
  {
    name: 'SET',
    message: { op: Op.SET, id: 2, flags: 0, ttlMs: 1000, key: b('k'), value: b('vv') },
    bytes: '0000000f 03 00 00000002 000003e8 0001 6b 7676',
  },
  {
    name: 'SET empty value',
    message: { op: Op.SET, id: 2, flags: 0, ttlMs: 0, key: b('k'), value: b('') },
    bytes: '0000000d 03 00 00000002 00000000 0001 6b',
  },
  { name: 'DELETE', message: { op: Op.DELETE, id: 3, flags: 0, key: b('k') }, bytes: '00000007 04 00 00000003 6b' },
  { name: 'TOUCH', message: { op: Op.TOUCH, id: 4, flags: 0, ttlMs: 5, key: b('k') }, bytes: '0000000b 05 00 00000004 00000005 6b' },
  { name: 'STATS', message: { op: Op.STATS, id: 6, flags: 0 }, bytes: '00000006 06 00 00000006' },
  { name: 'KEYS', message: { op: Op.KEYS, id: 7, flags: 0, limit: 10, prefix: b('p') }, bytes: '0000000b 07 00 00000007 0000000a 70' },
  { name: 'FLUSH', message: { op: Op.FLUSH, id: 8, flags: 0 }, bytes: '00000006 08 00 00000008' },
  { name: 'PEERS', message: { op: Op.PEERS, id: 0xffffffff, flags: 0 }, bytes: '00000006 09 00 ffffffff' },
  { name: 'TICKET_KEY', message: { op: Op.TICKET_KEY, id: 1, flags: 0 }, bytes: '00000006 0a 00 00000001' },
  { name: 'TICKET_WINDOW', message: { op: Op.TICKET_WINDOW, id: 2, flags: 0 }, bytes: '00000006 0b 00 00000002' },
  {
    name: 'CONSUMER_KEYS',
    message: { op: Op.CONSUMER_KEYS, id: 3, flags: 0, format: 'nginx', consumer: 'web' },
    bytes: '0000000f 10 00 00000003 05 6e67696e78 776562',
  },
]

for (const f of requests) {
  t.test(`request ${f.name}`, async (t) => {
    const bytes = hex(f.bytes)
    t.same(encodeRequest(f.message), bytes, 'generate')
    t.equal(requestLength(f.message), bytes.length, 'encoding length')
    t.same(decodeRequest(bytes), f.message, 'parse')
    t.same(encodeRequest(decodeRequest(bytes)), bytes, 'mirror')
  })
}

t.test('reply golden frames', async (t) => {
  const getOk = hex('0000000c 82 00 00000001 00 000003e8 76')
  t.same(encodeReply(Op.GET, 1, Status.OK, b('v'), 0, 1000), getOk)
  const r = decodeReply(getOk)
  t.same({ op: r.op, id: r.id, flags: r.flags, status: r.status }, { op: Op.GET, id: 1, flags: 0, status: Status.OK })
  t.same(decodeGetBody(r.body), { ttlMs: 1000, value: b('v') })
  t.same(encodeReply(Op.GET, 1, Status.OK, b('v'), ReplyFlag.REMOTE, 1000), hex('0000000c 82 01 00000001 00 000003e8 76'))
  t.same(encodeReply(Op.GET, 1, Status.NOT_FOUND), hex('00000007 82 00 00000001 01'))
  t.same(encodeReply(Op.SET, 2, Status.OK), hex('00000007 83 00 00000002 00'))
  const err = encodeError(Op.GET, 3, Status.BAD_KEY, 'e')
  t.same(err, hex('00000008 82 00 00000003 05 65'))
  t.equal(decodeReply(err).body.toString(), 'e')
})

t.test('decode errors carry codes', async (t) => {
  const code = (fn: () => unknown) => {
    try {
      fn()
    } catch (e) {
      return e instanceof ProtocolError ? e.code : `foreign: ${String(e)}`
    }
    return 'no error'
  }
  t.equal(
    code(() => decodeRequest(hex('000000'))),
    'TRUNCATED',
    'short header',
  )
  t.equal(
    code(() => decodeRequest(hex('00000009 02 00 00000001 6162'))),
    'TRUNCATED',
    'length claims more',
  )
  t.equal(
    code(() => decodeRequest(hex('00000006 02 00 00000001 6162'))),
    'TRAILING',
    'length claims less',
  )
  t.equal(
    code(() => decodeRequest(hex('00000006 7f 00 00000001'))),
    'UNKNOWN_OP',
  )
  t.equal(
    code(() => decodeRequest(hex('00000007 82 00 00000001 00'))),
    'UNKNOWN_OP',
    'a reply as a request',
  )
  t.equal(
    code(() => decodeRequest(hex('00000006 01 80 00000001'))),
    'BAD_FIELD',
    'unknown flags',
  )
  t.equal(
    code(() => decodeRequest(hex('00000007 01 00 00000001 00'))),
    'TRAILING',
    'PING with a body',
  )
  t.equal(
    code(() => decodeRequest(hex('0000000d 03 00 00000001 00000000 0009 6b'))),
    'TRUNCATED',
    'SET key length beyond the frame',
  )
  t.equal(
    code(() => decodeRequest(hex('00000008 03 00 00000001 0000'))),
    'TRUNCATED',
    'SET without key length',
  )
  t.equal(
    code(() => decodeReply(hex('00000006 82 00 00000001'))),
    'TRUNCATED',
    'reply without status',
  )
  t.equal(
    code(() => decodeReply(hex('00000006 02 00 00000001'))),
    'UNKNOWN_OP',
    'a request as a reply',
  )
  t.equal(
    code(() => decodeGetBody(hex('0001'))),
    'TRUNCATED',
  )
})

t.test('keyProblem', async (t) => {
  t.match(keyProblem(b('')), /empty/)
  t.match(keyProblem(Buffer.alloc(251)), /251 bytes, at most 250/)
  t.equal(keyProblem(Buffer.alloc(250)), undefined)
  t.match(keyProblem(b('abc'), 2), /at most 2/)
})

const keyArb = fc.uint8Array({ minLength: 1, maxLength: 250 }).map((a) => Buffer.from(a))
const bytesArb = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a))
const base = { id: fc.integer({ min: 0, max: 0xffffffff }), flags: fc.constantFrom(0, 1, 2, 3) }
const requestArb: fc.Arbitrary<Request> = fc.oneof(
  fc.record({ ...base, op: fc.constantFrom(Op.PING, Op.STATS, Op.FLUSH, Op.PEERS, Op.TICKET_KEY, Op.TICKET_WINDOW) }),
  fc.record({ ...base, op: fc.constantFrom(Op.GET, Op.DELETE), key: keyArb }),
  fc.record({ ...base, op: fc.constant(Op.SET), key: keyArb, value: bytesArb(2000), ttlMs: fc.integer({ min: 0, max: 0xffffffff }) }),
  fc.record({ ...base, op: fc.constant(Op.TOUCH), key: keyArb, ttlMs: fc.integer({ min: 0, max: 0xffffffff }) }),
  fc.record({ ...base, op: fc.constant(Op.KEYS), prefix: bytesArb(250), limit: fc.integer({ min: 0, max: 0xffffffff }) }),
  fc.record({
    ...base,
    op: fc.constant(Op.CONSUMER_KEYS),
    format: fc.string({ maxLength: 10 }).map((x) => Buffer.from(x).toString('latin1')),
    consumer: fc.string({ maxLength: 64 }).map((x) => Buffer.from(x).toString('latin1')),
  }),
)

t.test('round trip of arbitrary requests', async (t) => {
  fc.assert(
    fc.property(requestArb, (req) => {
      const bytes = encodeRequest(req)
      t.same(decodeRequest(bytes), req)
      return bytes.length === requestLength(req)
    }),
    { numRuns: 500 },
  )
  t.pass('500 requests round-tripped')
})

t.test('random bytes only ever fail with ProtocolError', async (t) => {
  fc.assert(
    fc.property(bytesArb(300), (buf) => onlyProtocolErrors(() => decodeRequest(buf)) && onlyProtocolErrors(() => decodeReply(buf))),
    { numRuns: 3000 },
  )
  // Random bodies behind a well-formed header reach every op's body parser.
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 3 }), bytesArb(40), (op, flags, body) => {
      const frame = Buffer.concat([Buffer.alloc(10), body])
      frame.writeUInt32BE(frame.length - 4, 0)
      frame[4] = op
      frame[5] = flags
      return onlyProtocolErrors(() => decodeRequest(frame)) && onlyProtocolErrors(() => decodeReply(frame))
    }),
    { numRuns: 5000 },
  )
  t.pass('no foreign exception')
})

t.test('FrameDecoder splits a stream cut anywhere', async (t) => {
  fc.assert(
    fc.property(
      fc.array(requestArb, { minLength: 1, maxLength: 20 }),
      fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1 }),
      (reqs, cuts) => {
        const stream = Buffer.concat(reqs.map(encodeRequest))
        const dec = new FrameDecoder(1 << 20)
        const out: Request[] = []
        let off = 0
        let i = 0
        while (off < stream.length) {
          const n = cuts[i++ % cuts.length]!
          dec.push(stream.subarray(off, off + n), (f) => out.push(decodeRequest(Buffer.from(f))))
          off += n
        }
        t.same(out, reqs)
        return dec.buffered === 0
      },
    ),
    { numRuns: 200 },
  )
})

t.test('FrameDecoder refuses an oversized length before buffering it', async (t) => {
  const dec = new FrameDecoder(100)
  t.throws(() => dec.push(hex('00010000'), () => t.fail('no frame')), { code: 'FRAME_TOO_LARGE' })
  const ok = new FrameDecoder(100)
  const frames: Buffer[] = []
  ok.push(hex('00000006 01 00 00000005 0000'), (f) => frames.push(Buffer.from(f)))
  t.equal(frames.length, 1)
  t.equal(ok.buffered, 2, 'a partial length prefix waits')
})

t.test('TICKET_WINDOW reply body: golden bytes, round trip, bounds', async (t) => {
  const secret = (x: number) => Buffer.alloc(48, x)
  const w = {
    epoch: 7,
    rotationMs: 3_600_000,
    secrets: [
      { epoch: 6, secret: secret(0xaa) },
      { epoch: 7, secret: secret(0xbb) },
    ],
  }
  const golden = hex(`00000007 0036ee80 02 00000006 ${'aa'.repeat(48)} 00000007 ${'bb'.repeat(48)}`)
  t.same(encodeTicketWindowBody(w), golden, 'generate')
  t.same(decodeTicketWindowBody(golden), w, 'parse')
  t.same(encodeTicketWindowBody(decodeTicketWindowBody(golden)), golden, 'mirror')
  t.same(decodeTicketWindowBody(hex('00000007 0036ee80 00')), { epoch: 7, rotationMs: 3_600_000, secrets: [] }, 'an empty window')
  t.throws(() => decodeTicketWindowBody(golden.subarray(0, golden.length - 1)), ProtocolError, 'a short secret')
  t.throws(() => decodeTicketWindowBody(Buffer.concat([golden, hex('00')])), ProtocolError, 'trailing bytes')
  t.throws(() => decodeTicketWindowBody(hex('00000007 0036ee80 04')), ProtocolError, 'more than three secrets')
  t.throws(
    () => encodeTicketWindowBody({ ...w, secrets: [{ epoch: 1, secret: Buffer.alloc(47) }] }),
    ProtocolError,
    'a secret of the wrong size',
  )
  const reply = encodeReply(Op.TICKET_WINDOW, 9, Status.OK, golden)
  t.same(decodeReply(reply).body, golden, 'carried in a reply after the status byte')
})

t.test('TICKET_WINDOW body decoder fails only with its own error on random bytes', async () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => onlyProtocolErrors(() => decodeTicketWindowBody(Buffer.from(bytes)))))
})

t.test('CONSUMER_KEYS reply body: golden bytes, round trip, bounds', async (t) => {
  const k = (slot: number, real: boolean, epoch: number, x: number, aes: number, hmac: number) => ({
    slot,
    real,
    epoch,
    name: Buffer.alloc(16, x),
    aes: Buffer.alloc(aes, x + 1),
    hmac: Buffer.alloc(hmac, x + 2),
  })
  const w = { epoch: 7, rotationMs: 3_600_000, keys: [k(0, false, 6, 0x10, 2, 1), k(1, true, 7, 0x20, 1, 2)] }
  const golden = hex(`00000007 0036ee80 02 00 00 00000006 ${'10'.repeat(16)} 02 1111 01 12 01 01 00000007 ${'20'.repeat(16)} 01 21 02 2222`)
  t.same(encodeConsumerKeysBody(w), golden, 'generate')
  t.same(decodeConsumerKeysBody(golden), w, 'parse')
  t.same(encodeConsumerKeysBody(decodeConsumerKeysBody(golden)), golden, 'mirror')
  t.throws(() => decodeConsumerKeysBody(golden.subarray(0, golden.length - 1)), ProtocolError, 'a short key')
  t.throws(() => decodeConsumerKeysBody(Buffer.concat([golden, hex('00')])), ProtocolError, 'trailing bytes')
  t.throws(() => decodeConsumerKeysBody(hex('00000007 0036ee80 04')), ProtocolError, 'more than three keys')
  t.throws(
    () => encodeConsumerKeysBody({ ...w, keys: [{ ...w.keys[0]!, name: Buffer.alloc(15) }] }),
    ProtocolError,
    'a name of the wrong size',
  )
})

t.test('CONSUMER_KEYS body decoder fails only with its own error on random bytes', async () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => onlyProtocolErrors(() => decodeConsumerKeysBody(Buffer.from(bytes)))))
})

t.test('FrameDecoder stopped by its callback keeps the rest and carries on from there', async (t) => {
  fc.assert(
    fc.property(fc.array(requestArb, { minLength: 1, maxLength: 20 }), fc.array(fc.boolean(), { minLength: 1 }), (reqs, stops) => {
      const stream = Buffer.concat(reqs.map(encodeRequest))
      const dec = new FrameDecoder(1 << 20)
      const out: Request[] = []
      let i = 0
      let all = dec.push(stream, (f) => (out.push(decodeRequest(Buffer.from(f))), !stops[i++ % stops.length]))
      while (!all) all = dec.push(EMPTY_CHUNK, (f) => (out.push(decodeRequest(Buffer.from(f))), !stops[i++ % stops.length]))
      t.same(out, reqs)
      return dec.buffered === 0
    }),
    { numRuns: 200 },
  )
})

t.test('TICKET_KEY reply body: golden bytes, round trip, bounds', async (t) => {
  const k = { epoch: 7, remainingMs: 3_600_000, key: Buffer.alloc(48, 0xaa) }
  const golden = hex(`00000007 0036ee80 ${'aa'.repeat(48)}`)
  t.equal(TICKET_KEY_BODY_BYTES, 56)
  t.same(encodeTicketKeyBody(k), golden, 'generate')
  t.same(decodeTicketKeyBody(golden), k, 'parse')
  t.same(encodeTicketKeyBody(decodeTicketKeyBody(golden)), golden, 'mirror')
  t.same(
    encodeTicketKeyBody({ ...k, remainingMs: 2 ** 40 }).subarray(4, 8),
    hex('ffffffff'),
    'the remaining time saturates at the largest u32',
  )
  t.same(encodeTicketKeyBody({ ...k, remainingMs: -1 }).subarray(4, 8), hex('00000000'), 'and never goes below 0')
  t.throws(() => encodeTicketKeyBody({ ...k, key: Buffer.alloc(47) }), { code: 'BAD_FIELD' }, 'a key of the wrong size')
  t.throws(() => decodeTicketKeyBody(golden.subarray(0, 55)), { code: 'TRUNCATED' }, 'a short key')
  t.throws(() => decodeTicketKeyBody(Buffer.concat([golden, hex('00')])), { code: 'TRAILING' }, 'a byte too many')
  const reply = encodeReply(Op.TICKET_KEY, 9, Status.OK, golden)
  t.same(decodeTicketKeyBody(decodeReply(reply).body), k, 'carried in a reply after the status byte')
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.uint8Array({ minLength: 48, maxLength: 48 }),
      (epoch, remainingMs, key) => {
        const x = { epoch, remainingMs, key: Buffer.from(key) }
        t.same(decodeTicketKeyBody(encodeTicketKeyBody(x)), x)
        return true
      },
    ),
    { numRuns: 200 },
  )
})

t.test('TICKET_KEY body decoder fails only with its own error on random bytes', async (t) => {
  fc.assert(
    fc.property(bytesArb(120), (body) => onlyProtocolErrors(() => decodeTicketKeyBody(body))),
    { numRuns: 2000 },
  )
  t.pass('no foreign exception')
})

t.test('request flags: golden values, round trip, unknown bits refused', async (t) => {
  t.equal(encodeRequestFlags({}), 0x00)
  t.equal(encodeRequestFlags({ localOnly: true }), 0x01)
  t.equal(encodeRequestFlags({ noPropagate: true }), 0x02)
  t.equal(encodeRequestFlags({ localOnly: true, noPropagate: true }), 0x03)
  t.equal(encodeRequestFlags({ localOnly: false, noPropagate: undefined }), 0x00, 'absent and false are off')
  t.equal(ReqFlag.LOCAL_ONLY | ReqFlag.NO_PROPAGATE, 0x03, 'the named constants are those bits')
  for (const flags of [0, 1, 2, 3]) t.equal(encodeRequestFlags(decodeRequestFlags(flags)), flags, `mirror 0x0${flags}`)
  t.same(decodeRequestFlags(0x01), { localOnly: true, noPropagate: false })
  for (const bad of [0x04, 0x80, 0xff, 0x100, -1, 1.5])
    t.throws(() => decodeRequestFlags(bad), { code: 'BAD_FIELD' }, `0x${bad.toString(16)}`)
  t.throws(() => decodeRequest(hex('00000007 02 04 00000001 78')), { code: 'BAD_FIELD' }, 'a request with an unknown flag')
  fc.assert(
    fc.property(fc.integer({ min: -1000, max: 1000 }), (n) => onlyProtocolErrors(() => decodeRequestFlags(n))),
    { numRuns: 2000 },
  )
})

t.test('request header peek: what an error reply to any frame echoes', async (t) => {
  t.same(peekRequestHeader(hex('00000007 02 00 0000002a 78')), { op: Op.GET, id: 42 }, 'golden: a whole GET')
  t.same(peekRequestHeader(hex('00000006 7f 00 01020304')), { op: 0x7f, id: 0x01020304 }, 'an unknown op')
  t.same(
    peekRequestHeader(hex('00000006 83 00 00000009')),
    { op: Op.SET, id: 9 },
    'a reply sent as a request: the op without the reply bit',
  )
  t.same(peekRequestHeader(hex('00000002 05 00')), { op: Op.TOUCH, id: 0 }, 'too short for an id')
  t.same(peekRequestHeader(hex('00000000')), { op: 0, id: 0 }, 'too short for an op')
  t.same(peekRequestHeader(Buffer.alloc(0)), { op: 0, id: 0 }, 'nothing at all')
  fc.assert(
    fc.property(requestArb, (req) => {
      t.same(peekRequestHeader(encodeRequest(req)), { op: req.op, id: req.id })
      return true
    }),
    { numRuns: 200 },
  )
  fc.assert(
    fc.property(bytesArb(40), (frame) => {
      const { op, id } = peekRequestHeader(frame)
      return op >= 0 && op < 0x80 && id >= 0 && id <= 0xffffffff
    }),
    { numRuns: 3000 },
  )
})
