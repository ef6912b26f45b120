/**
 * The binary protocol's codec (daemon/local/memcache/binary.ts): golden bytes (the responses'
 * bytes are memcached 1.6.18's, captured from it), memcached's refusals, round trips, and random
 * or cut input: the parser only ever answers need / request / reject, and reads nothing out of frame.
 */
import t from 'tap'
import {
  BinStatus,
  HEADER_BYTES,
  Opcode,
  decodeResponses,
  encodeParsed,
  encodeRequest,
  encodeResponse,
  errorResponse,
  parseRequest,
  type BinParse,
} from '../../daemon/local/memcache/binary.js'
import { mutate, prng } from '../helpers/fuzz.js'

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const limits = { maxKeyBytes: 250, maxValueBytes: 1024 * 1024, maxOtherBodyBytes: 0 }
const u32 = (...n: number[]) => Buffer.concat(n.map((x) => hex(x.toString(16).padStart(8, '0'))))

const requests: { name: string; bytes: string; req: Record<string, unknown> }[] = [
  {
    name: 'GET',
    bytes: '80 00 0002 00 00 0000 00000002 deadbeef 0000000000000000 6b31',
    req: {
      kind: 'get',
      opcode: Opcode.GET,
      command: Opcode.GET,
      quiet: false,
      opaque: 0xdeadbeef,
      cas: 0n,
      key: Buffer.from('k1'),
      withKey: false,
    },
  },
  {
    name: 'GETKQ',
    bytes: '80 0d 0002 00 00 0000 00000002 00000001 0000000000000000 6b31',
    req: {
      kind: 'get',
      opcode: Opcode.GETKQ,
      command: Opcode.GETK,
      quiet: true,
      opaque: 1,
      cas: 0n,
      key: Buffer.from('k1'),
      withKey: true,
    },
  },
  {
    name: 'SET with cas',
    bytes: '80 01 0002 08 00 0000 0000000f 00000003 0000000000000009 00000007 0000012c 6b31 68656c6c6f',
    req: {
      kind: 'store',
      opcode: Opcode.SET,
      command: Opcode.SET,
      quiet: false,
      opaque: 3,
      cas: 9n,
      key: Buffer.from('k1'),
      flags: 7,
      exptime: 300,
      value: Buffer.from('hello'),
    },
  },
  {
    name: 'ADDQ',
    bytes: '80 12 0001 08 00 0000 0000000a 00000000 0000000000000000 00000000 00000000 6b 78',
    req: {
      kind: 'store',
      opcode: Opcode.ADDQ,
      command: Opcode.ADD,
      quiet: true,
      opaque: 0,
      cas: 0n,
      key: Buffer.from('k'),
      flags: 0,
      exptime: 0,
      value: Buffer.from('x'),
    },
  },
  {
    name: 'INCREMENT',
    bytes: '80 05 0001 14 00 0000 00000015 00000004 0000000000000000 0000000000000001 0000000000000005 ffffffff 6e',
    req: {
      kind: 'delta',
      opcode: Opcode.INCREMENT,
      command: Opcode.INCREMENT,
      quiet: false,
      opaque: 4,
      cas: 0n,
      key: Buffer.from('n'),
      delta: 1n,
      initial: 5n,
      exptime: 0xffffffff,
    },
  },
  {
    name: 'TOUCH',
    bytes: '80 1c 0001 04 00 0000 00000005 00000000 0000000000000000 00000064 6b',
    req: {
      kind: 'touch',
      opcode: Opcode.TOUCH,
      command: Opcode.TOUCH,
      quiet: false,
      opaque: 0,
      cas: 0n,
      key: Buffer.from('k'),
      exptime: 100,
    },
  },
  {
    name: 'GATQ',
    bytes: '80 1e 0001 04 00 0000 00000005 00000000 0000000000000000 00000064 6b',
    req: {
      kind: 'get',
      opcode: Opcode.GATQ,
      command: Opcode.GAT,
      quiet: true,
      opaque: 0,
      cas: 0n,
      key: Buffer.from('k'),
      withKey: false,
      touch: 100,
    },
  },
  {
    name: 'APPEND',
    bytes: '80 0e 0001 00 00 0000 00000002 00000000 0000000000000000 6b 78',
    req: {
      kind: 'concat',
      opcode: Opcode.APPEND,
      command: Opcode.APPEND,
      quiet: false,
      opaque: 0,
      cas: 0n,
      key: Buffer.from('k'),
      value: Buffer.from('x'),
    },
  },
  {
    name: 'DELETEQ',
    bytes: '80 14 0001 00 00 0000 00000001 00000000 0000000000000000 6b',
    req: { kind: 'delete', opcode: Opcode.DELETEQ, command: Opcode.DELETE, quiet: true, opaque: 0, cas: 0n, key: Buffer.from('k') },
  },
  {
    name: 'FLUSH with delay',
    bytes: '80 08 0000 04 00 0000 00000004 00000000 0000000000000000 0000000a',
    req: { kind: 'flush', opcode: Opcode.FLUSH, command: Opcode.FLUSH, quiet: false, opaque: 0, cas: 0n, key: Buffer.alloc(0), delay: 10 },
  },
  {
    name: 'NOOP',
    bytes: '80 0a 0000 00 00 0000 00000000 00000007 0000000000000000',
    req: { kind: 'noop', opcode: Opcode.NOOP, command: Opcode.NOOP, quiet: false, opaque: 7, cas: 0n, key: Buffer.alloc(0) },
  },
  {
    name: 'STAT settings',
    bytes: '80 10 0008 00 00 0000 00000008 00000000 0000000000000000 73657474696e6773',
    req: { kind: 'stat', opcode: Opcode.STAT, command: Opcode.STAT, quiet: false, opaque: 0, cas: 0n, key: Buffer.from('settings') },
  },
]

for (const r of requests) {
  t.test(`request ${r.name}`, async (t) => {
    const bytes = hex(r.bytes)
    const p = parseRequest(bytes, limits)
    t.equal(p.kind, 'request')
    if (p.kind !== 'request') return
    t.equal(p.bytes, bytes.length)
    t.same(p.req, r.req, 'parse')
    t.same(encodeParsed(p.req), bytes, 'mirror')
    for (let cut = 0; cut < bytes.length; cut++) {
      const q = parseRequest(bytes.subarray(0, cut), limits)
      if (q.kind !== 'need') t.fail(`cut at ${cut}: ${q.kind}`)
      else if (q.bytes <= cut) t.fail(`cut at ${cut}: asks for ${q.bytes} bytes`)
    }
  })
}

t.test('responses: the bytes memcached 1.6.18 sends', async (t) => {
  // get hit (flags 7, "hello", cas 1), getk miss, add of an existing key, noop, version.
  t.same(
    encodeResponse({ opcode: Opcode.GET, status: 0, opaque: 0xdeadbeef, cas: 1n, extras: u32(7), value: Buffer.from('hello') }),
    hex('81 00 0000 04 00 0000 00000009 deadbeef 0000000000000001 00000007 68656c6c6f'),
  )
  t.same(
    errorResponse(Opcode.GETK, 0xdeadbeef, BinStatus.KEY_ENOENT, Buffer.from('nokey')),
    hex('81 0c 0005 00 00 0001 00000005 deadbeef 0000000000000000 6e6f6b6579'),
  )
  t.same(
    errorResponse(Opcode.GET, 0xdeadbeef, BinStatus.KEY_ENOENT),
    hex('81 00 0000 00 00 0001 00000009 deadbeef 0000000000000000 4e6f7420666f756e64'),
  )
  t.same(errorResponse(Opcode.ADD, 1, BinStatus.KEY_EEXISTS).subarray(24).toString(), 'Data exists for key.')
  t.same(encodeResponse({ opcode: Opcode.NOOP, status: 0, opaque: 5 }), hex('81 0a 0000 00 00 0000 00000000 00000005 0000000000000000'))
  const { responses, rest } = decodeResponses(
    Buffer.concat([encodeResponse({ opcode: Opcode.VERSION, status: 0, opaque: 2, value: Buffer.from('1.6.18') }), hex('81 0a')]),
  )
  t.equal(responses.length, 1)
  t.equal(responses[0]!.value.toString(), '1.6.18')
  t.equal(rest.length, 2)
})

t.test("memcached's refusals", async (t) => {
  const rej = (b: Buffer) => parseRequest(b, limits) as Extract<BinParse, { kind: 'reject' }>
  // A header that is not a request: hang up, no answer (memcached closes).
  const bad = rej(hex('81 0a 0000 00 00 0000 00000000 00000000 0000000000000000'))
  t.match(bad, { kind: 'reject', close: true, silent: true })
  // key + extras longer than the body: Unknown command and a hangup.
  t.match(rej(hex('80 00 0005 00 00 0000 00000002 00000000 0000000000000000 6b31')), {
    kind: 'reject',
    status: BinStatus.UNKNOWN_COMMAND,
    close: true,
  })
  // A key over 250 bytes: Invalid arguments and a hangup.
  t.match(rej(encodeRequest({ opcode: Opcode.GET, key: Buffer.alloc(251, 97) })), { status: BinStatus.EINVAL, close: true })
  // A set without extras, a get with extras: Invalid arguments.
  t.match(rej(encodeRequest({ opcode: Opcode.SET, key: Buffer.from('k'), value: Buffer.from('x') })), {
    status: BinStatus.EINVAL,
    close: true,
  })
  t.match(rej(encodeRequest({ opcode: Opcode.GET, key: Buffer.from('k'), extras: u32(1) })), { status: BinStatus.EINVAL, close: true })
  // An unknown opcode, and SASL (not offered): Unknown command, the body swallowed, the connection kept.
  t.match(rej(encodeRequest({ opcode: 0x50, key: Buffer.from('k'), value: Buffer.from('abc') })), {
    status: BinStatus.UNKNOWN_COMMAND,
    close: false,
    bytes: HEADER_BYTES,
    swallow: 4,
  })
  t.match(rej(encodeRequest({ opcode: Opcode.SASL_LIST_MECHS })), { status: BinStatus.UNKNOWN_COMMAND, close: false })
  // A value over the limit: Too large, known from the header and key alone; the value swallowed; a set drops the old value.
  const big = encodeRequest({
    opcode: Opcode.SET,
    key: Buffer.from('k'),
    extras: Buffer.alloc(8),
    value: Buffer.alloc(limits.maxValueBytes + 1),
  })
  const r = rej(big.subarray(0, HEADER_BYTES + 9))
  t.match(r, { status: BinStatus.E2BIG, close: false, bytes: HEADER_BYTES + 9, swallow: limits.maxValueBytes + 1 })
  t.same(r.orDelete, Buffer.from('k'))
  t.equal(parseRequest(big.subarray(0, HEADER_BYTES + 3), limits).kind, 'need')
})

t.test('random bytes and mutated requests: only need, request or reject, never out of frame', async (t) => {
  const r = prng(23)
  const seeds = requests.map((x) => hex(x.bytes))
  let decoded = 0
  for (let i = 0; i < 50_000; i++) {
    const input =
      i % 5 === 0
        ? Buffer.from(Array.from({ length: r() % 64 }, () => r() & 0xff))
        : mutate(seeds[r() % seeds.length]!, seeds[r() % seeds.length]!, r)
    const p = parseRequest(input, limits)
    if (p.kind === 'request') {
      decoded++
      if (p.bytes > input.length) throw new Error('a request beyond the input')
      // What parses is the same request again when encoded.
      const again = parseRequest(encodeParsed(p.req), limits)
      if (
        again.kind !== 'request' ||
        JSON.stringify(again.req, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)) !==
          JSON.stringify(p.req, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))
      )
        throw new Error(`does not round-trip: ${input.toString('hex')}`)
    } else if (p.kind === 'reject') {
      if (!p.close && p.bytes > input.length) throw new Error('a reject that consumes beyond the input')
    } else if (p.bytes <= input.length) throw new Error(`needs ${p.bytes} with ${input.length} present`)
  }
  t.ok(decoded > 1000, `${decoded} of 50,000 mutated inputs were requests`)
})
