/**
 * The memcache login's pure parts (daemon/local/memcache/auth.ts, daemon/config/auth-file.ts):
 * SASL PLAIN messages, the auth exchange cut at every byte and fed random bytes, auth files, and
 * the user check.
 */
import t from 'tap'
import { parseAuthFile } from '../../daemon/config/auth-file.js'
import { AuthUsers, authStep, parsePlain, type AuthStep } from '../../daemon/local/memcache/auth.js'
import { BinStatus, Opcode, decodeResponses, encodeRequest } from '../../daemon/local/memcache/binary.js'
import { prng } from '../helpers/fuzz.js'

const b = (s: string) => Buffer.from(s, 'latin1')

t.test('parsePlain: [authzid] NUL user NUL password, nothing else', async (t) => {
  t.same(parsePlain(b('\0alice\0pw')), { user: b('alice'), password: b('pw') })
  t.same(parsePlain(b('alice\0alice\0pw')), { user: b('alice'), password: b('pw') }, 'an authzid equal to the user')
  t.same(parsePlain(b('pw with spaces\0u\0p w')), { error: 'authzid differs from the user' })
  t.same(parsePlain(b('')), { error: 'no NUL' })
  t.same(parsePlain(b('alice')), { error: 'no NUL' })
  t.same(parsePlain(b('\0alice')), { error: 'one NUL' })
  t.same(parsePlain(b('\0\0pw')), { error: 'no user' })
  t.same(parsePlain(b('\0alice\0')), { error: 'no password' })
  t.same(parsePlain(b('\0alice\0p\0w')), { error: 'more than two NULs' })
  t.same(parsePlain(Buffer.concat([b('\0'), Buffer.alloc(256, 97), b('\0pw')])), { error: 'a field longer than 255 bytes' })
  t.same(parsePlain(Buffer.concat([b('\0u\0'), Buffer.alloc(256, 97)])), { error: 'a field longer than 255 bytes' })
})

/** Every step of `input` as authStep takes it, consuming what each step says. */
function steps(input: Buffer): AuthStep[] {
  const out: AuthStep[] = []
  let rest = input
  for (;;) {
    const s = authStep(rest, 'v')
    if (s.kind === 'need') return out
    out.push(s)
    if (s.kind === 'reply' && s.close) return out
    rest = rest.subarray(s.bytes)
  }
}

const sasl = (msg: string, mech = 'PLAIN', opcode: number = Opcode.SASL_AUTH) =>
  encodeRequest({ opcode, opaque: 9, key: b(mech), value: b(msg) })

t.test('binary steps: what memcached answers before a login', async (t) => {
  const list = steps(encodeRequest({ opcode: Opcode.SASL_LIST_MECHS, opaque: 3 }))
  t.equal(list.length, 1)
  const r = list[0]!.kind === 'reply' ? decodeResponses(list[0]!.reply).responses[0]! : undefined
  t.equal(r?.value.toString(), 'PLAIN')
  t.equal(r?.opaque, 3)
  const login = steps(sasl('\0alice\0pw'))[0]!
  t.match(login, { kind: 'login', user: b('alice'), password: b('pw') })
  for (const [what, req] of [
    ['a malformed PLAIN message', sasl('alice')],
    ['another mechanism', sasl('\0a\0b', 'CRAM-MD5')],
    ['SASL_STEP', sasl('\0a\0b', 'PLAIN', Opcode.SASL_STEP)],
  ] as const) {
    const [s] = steps(req)
    t.match(s, { kind: 'reply', close: false, failure: true }, `${what}: a failure, the connection kept`)
    if (s?.kind === 'reply') t.equal(decodeResponses(s.reply).responses[0]!.status, BinStatus.AUTH_ERROR)
  }
  for (const op of [Opcode.GET, Opcode.NOOP, Opcode.FLUSH, Opcode.STAT, 0x77]) {
    const [s] = steps(encodeRequest({ opcode: op, opaque: 1, ...(op === Opcode.GET ? { key: b('k') } : {}) }))
    t.match(s, { kind: 'reply', close: true, refused: true }, `opcode ${op}: refused and closed`)
    if (s?.kind === 'reply') t.equal(decodeResponses(s.reply).responses[0]!.status, BinStatus.AUTH_ERROR)
  }
  const big = encodeRequest({ opcode: Opcode.SASL_AUTH, key: b('PLAIN'), value: Buffer.alloc(5000) })
  t.match(steps(big.subarray(0, 24))[0], { kind: 'reply', close: true }, 'an oversized SASL body: refused from its header alone')
})

t.test('text steps: the -Y auth set', async (t) => {
  t.match(steps(b('set a 0 0 8\r\nalice pw\r\n'))[0], { kind: 'login', user: b('alice'), password: b('pw') })
  t.match(steps(b('set a 0 0 10 noreply\r\nalice p w2\r\n'))[0], { kind: 'login', user: b('alice'), password: b('p w2') })
  t.match(steps(b('get k\r\n'))[0], { kind: 'reply', close: false, refused: true })
  t.match(steps(b('set a 0 0\r\n'))[0], { kind: 'reply', close: false, refused: true }, 'a set without its size')
  t.match(steps(b('set a 0 0 -1\r\n'))[0], { kind: 'reply', close: false, refused: true })
  t.match(steps(b('set a 0 0 5\r\nalice\r\n'))[0], { kind: 'reply', failure: true }, 'no space in the token')
  t.match(steps(b('set a 0 0 4\r\na bXYZ'))[0], { kind: 'reply', failure: true }, 'data not ended by CRLF')
  t.match(steps(b('set a 0 0 16385\r\n'))[0], { kind: 'reply', close: true }, 'a token above 16 KiB')
  t.match(steps(Buffer.alloc(2049, 97))[0], { kind: 'reply', close: true }, 'no newline in 2 KiB')
})

t.test('an exchange cut at every byte gives the steps it gives whole', async (t) => {
  const streams = [
    Buffer.concat([encodeRequest({ opcode: Opcode.SASL_LIST_MECHS }), sasl('\0x\0y', 'CRAM'), sasl('\0alice\0pw')]),
    b('get k\r\nset a 0 0 7\r\nalice x\r\nset a 0 0 8\r\nalice pw\r\n'),
  ]
  for (const s of streams) {
    const whole = steps(s).map((x) => ({ kind: x.kind, bytes: x.kind === 'need' ? 0 : x.bytes }))
    for (let cut = 0; cut <= s.length; cut++) {
      // Every prefix gives a prefix of the whole's steps, each step consuming exactly what it does whole.
      const part = steps(s.subarray(0, cut)).map((x) => ({ kind: x.kind, bytes: x.kind === 'need' ? 0 : x.bytes }))
      if (JSON.stringify(part) !== JSON.stringify(whole.slice(0, part.length))) {
        t.fail(`cut at ${cut}: ${JSON.stringify(part)}`)
        return
      }
    }
    t.pass(`${s.length + 1} cuts`)
  }
})

t.test('random bytes: always a step, never an exception, never past the input', async (t) => {
  const next = prng(23)
  const rnd = () => next() / 2 ** 32
  for (let i = 0; i < 20_000; i++) {
    const n = Math.floor(rnd() * 80)
    const buf = Buffer.alloc(n)
    for (let j = 0; j < n; j++) buf[j] = Math.floor(rnd() * 256)
    if (n > 0 && rnd() < 0.5) buf[0] = 0x80
    let s: AuthStep
    try {
      s = authStep(buf, 'v')
    } catch (err) {
      t.fail(`threw on ${buf.toString('hex')}: ${(err as Error).message}`)
      return
    }
    if (s.kind !== 'need' && (s.bytes <= 0 || s.bytes > buf.length)) {
      t.fail(`step of ${s.bytes} bytes on ${n}: ${buf.toString('hex')}`)
      return
    }
  }
  t.pass('20,000 random inputs')
})

t.test('auth files: user:password lines, malformed ones refused by line number', async (t) => {
  t.same(parseAuthFile(b('a:1\r\n\nb:x:y z\n'), 'f'), [
    { user: b('a'), password: b('1') },
    { user: b('b'), password: b('x:y z') },
  ])
  t.throws(() => parseAuthFile(b('a:1\nnocolon\n'), 'f'), { message: 'f: line 2 is not user:password' })
  t.throws(() => parseAuthFile(b(':pw\n'), 'f'), { message: /line 1: the user name/ })
  t.throws(() => parseAuthFile(b('a b:pw\n'), 'f'), { message: /line 1: the user name/ })
  t.throws(() => parseAuthFile(b('a:\n'), 'f'), { message: /line 1: the password/ })
  t.throws(() => parseAuthFile(b('a:1\na:2\n'), 'f'), { message: /line 2 names a user listed before/ })
  t.throws(() => parseAuthFile(b('\n\n'), 'f'), { message: /lists no user:password line/ })
})

t.test('AuthUsers: a user is one tenant; the check needs both user and password', async (t) => {
  const u = (user: string, password: string) => ({ user: b(user), password: b(password) })
  const users = new AuthUsers(
    new Map([
      ['', [u('root-app', 'r')]],
      ['shop', [u('alice', 'pw'), u('bob', 'pw2')]],
    ]),
  )
  t.equal(users.check(b('alice'), b('pw')), 'shop')
  t.equal(users.check(b('root-app'), b('r')), '', 'the default tenant')
  t.equal(users.check(b('alice'), b('pw2')), undefined, "another user's password")
  t.equal(users.check(b('alice'), b('p')), undefined)
  t.equal(users.check(b('nobody'), b('pw')), undefined)
  t.throws(
    () =>
      new AuthUsers(
        new Map([
          ['a', [u('x', '1')]],
          ['b', [u('x', '2')]],
        ]),
      ),
    { message: /listed for tenant a and tenant b/ },
  )
})
