/**
 * The meta protocol's line parser (daemon/local/memcache/meta.ts): memcached 1.6.18's answers to
 * bad lines (captured from it), the flags it takes, return flags in request order, and random
 * lines: the parser only ever returns a request or memcached's error text.
 */
import t from 'tap'
import { isMetaLine, metaFlagsOut, parseMeta, type MetaRequest } from '../../daemon/local/memcache/meta.js'
import { prng } from '../helpers/fuzz.js'

const L = { maxKeyBytes: 250, maxValueBytes: 1024 * 1024 }
const err = (line: string) => parseMeta(line, L) as { error: string; swallow?: number }

t.test('errors as memcached 1.6.18 gives them', async (t) => {
  t.same(err('mg'), { error: 'ERROR\r\n' })
  t.same(err('mg mk zz'), { error: 'CLIENT_ERROR invalid flag\r\n' })
  t.same(err('mg mk v v'), { error: 'CLIENT_ERROR duplicate flag\r\n' })
  t.same(err('mg mk !'), { error: 'CLIENT_ERROR invalid flag\r\n' })
  t.same(err('ms mk'), { error: 'CLIENT_ERROR bad command line format\r\n' })
  // datalen unreadable: no data block is swallowed (memcached then reads it as a command).
  t.same(err('ms mk abc'), { error: 'CLIENT_ERROR bad command line format\r\n' })
  t.same(err('ms mk 2 MX'), { error: 'CLIENT_ERROR invalid mode for ms M token\r\n', swallow: 4 })
  t.same(err('ms mk 2 S5'), { error: 'CLIENT_ERROR invalid flag\r\n', swallow: 4 })
  t.same(err('ms mk 2 Fx'), { error: 'CLIENT_ERROR bad command line format\r\n', swallow: 4 })
  t.same(err('ms mk 2 Tx'), { error: 'CLIENT_ERROR bad token in command line format\r\n', swallow: 4 })
  t.same(err(`mg mk O${'a'.repeat(40)} v`), { error: 'CLIENT_ERROR opaque token too long\r\n' })
  t.same(err('mg !!! b v'), { error: 'CLIENT_ERROR error decoding key\r\n' })
  t.same(err('mg mk v N'), { error: 'CLIENT_ERROR bad token in command line format\r\n' })
  t.same(err('ma cnt MX'), { error: 'CLIENT_ERROR invalid mode for ma M token\r\n' })
  t.same(err('me mk b c'), { error: 'CLIENT_ERROR bad command line format\r\n' })
  t.same(err(`mg ${'k'.repeat(251)} v`), { error: 'CLIENT_ERROR bad command line format\r\n' })
  t.same(err('ms mk 2000000 T0'), { error: 'SERVER_ERROR object too large for cache\r\n', swallow: 2000002 })
})

t.test('requests', async (t) => {
  const g = parseMeta('mg mk v f t c k s Oabc', L) as Extract<MetaRequest, { flags: unknown }>
  t.equal(g.cmd, 'mg')
  t.same(g.key, Buffer.from('mk'))
  t.notOk(g.quiet)
  t.equal(
    metaFlagsOut(g, 'Ofktcs', { key: g.key, base64: false, flags: 3, ttl: -1, cas: 5n, size: 5 }),
    ' f3 t-1 c5 kmk s5 Oabc',
    'return flags in the order asked, as memcached',
  )
  const s = parseMeta('ms mk 2 T0 q k Oxy MA c', L) as Extract<MetaRequest, { cmd: 'ms' }>
  t.match(s, { cmd: 'ms', datalen: 2, mode: 'A', quiet: true })
  const b = parseMeta('mg bWs= b v k', L) as Extract<MetaRequest, { flags: unknown }>
  t.same(b.key, Buffer.from('mk'))
  t.equal(metaFlagsOut(b, 'k', { key: b.key, base64: true }), ' kbWs= b', 'a base64 key is returned encoded, marked b')
  t.same(parseMeta('mn', L), { cmd: 'mn' })
  t.match(parseMeta('me mk', L), { cmd: 'me', base64: false })
  t.match(parseMeta('md mk q C12 I T30', L), { cmd: 'md', quiet: true })
  t.match(parseMeta('ma cnt N0 J10 MD D3 v t c', L), { cmd: 'ma' })
  t.match(parseMeta('mg mk P/x L/y v', L), { cmd: 'mg' }, 'P and L tokens are ignored')
  t.ok(isMetaLine('mg k v') && isMetaLine('mn') && !isMetaLine('mget k') && !isMetaLine('get k'))
})

t.test('random lines give a request or an error text, nothing else', async (t) => {
  const r = prng(3)
  const alphabet = 'mgsdanek vqbcfhtlsuOTNRFCIMJD0123456789=+/- !\t\x00\xff'
  let requests = 0
  for (let i = 0; i < 50_000; i++) {
    const len = r() % 40
    let line = ['mg ', 'ms ', 'md ', 'ma ', 'mn', 'me '][r() % 6]!
    for (let j = 0; j < len; j++) line += alphabet[r() % alphabet.length]
    const p = parseMeta(line, L)
    if ('error' in p) {
      if (!/^(ERROR|CLIENT_ERROR [^\r\n]+|SERVER_ERROR [^\r\n]+)\r\n$/.test(p.error))
        throw new Error(`odd error for ${JSON.stringify(line)}: ${p.error}`)
      if (p.swallow !== undefined && !(p.swallow >= 2)) throw new Error('odd swallow')
    } else requests++
  }
  t.ok(requests > 1000, `${requests} of 50,000 random lines were requests`)
})
