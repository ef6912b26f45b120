/**
 * Tenants as pure code: the config value and its cross-key checks, the namespace of store keys,
 * and a tenant's view of a store (daemon/local/tenants.ts). Real daemons: integration/tenants.test.ts.
 */
import t from 'tap'
import { apply, defaults, type Config } from '../../daemon/config/config.js'
import { CompactStore } from '../../daemon/store/compact-store.js'
import { LruStore } from '../../daemon/store/lru-store.js'
import {
  clientKeyProblem,
  consumersFor,
  fromStoreKey,
  tenantQuotas,
  tenantStore,
  tenantsOf,
  toStoreKey,
} from '../../daemon/local/tenants.js'
import { tenantOfStoreKey, tenantPrefix } from '../../protocol/tenant-keys.js'
import { FLOOR_BUCKETS, NO_VERSION, Tombstones } from '../../daemon/store/versions.js'

const MiB = 1024 * 1024
const tenant = (name: string, extra: object = {}) => ({ name, socketPath: `/run/sc/${name}.sock`, maxBytes: 8 * MiB, ...extra })
const config = (o: Record<string, unknown>): Config => apply(defaults(), o, 'test')

t.test('tenants config: each bad value is refused with the key named', async (t) => {
  const bad: [unknown, RegExp][] = [
    ['not json', /tenants on the command line must be a JSON array/],
    [{ a: 1 }, /tenants must be a list of tables/],
    [[1], /tenants\[0\] must be a table/],
    [[{ socketPath: '/a.sock', maxBytes: MiB }], /tenants\[0\]\.name must be 1 to 32/],
    [[tenant('x'.repeat(33))], /tenants\[0\]\.name must be 1 to 32/],
    [[tenant('a'), tenant('a', { socketPath: '/run/sc/b.sock' })], /tenants\[1\]\.name "a" is used twice/],
    [[tenant('a', { socketPath: 'a.sock' })], /tenants\[0\]\.socketPath must be an absolute path/],
    [[tenant('a', { socketMode: '0999' })], /tenants\[0\]\.socketMode must be an octal mode/],
    [[tenant('a', { socketGroup: 'no-such-group-here' })], /tenants\[0\]\.socketGroup: no group "no-such-group-here"/],
    [[tenant('a', { maxBytes: -1 })], /tenants\[0\]\.maxBytes must be an integer/],
    [[tenant('a', { maxBytes: '1' })], /tenants\[0\]\.maxBytes must be an integer/],
    [[tenant('a', { memcacheListen: ['0.0.0.0:11211'] })], /tenants\[0\]\.memcacheListen item 1 is neither a loopback/],
    [[tenant('a', { memcacheListen: 'x' })], /tenants\[0\]\.memcacheListen must be a list/],
    [[tenant('a', { memcacheUsers: ['no-such-user-here'] })], /tenants\[0\]\.memcacheUsers: no user "no-such-user-here"/],
    [[tenant('a', { memcacheUsers: [-1] })], /tenants\[0\]\.memcacheUsers must hold user names or uids/],
    [[tenant('a', { ticketConsumers: 'nginx' })], /tenants\[0\]\.ticketConsumers must be a list/],
    [
      [tenant('a', { ticketConsumers: ['nginx'] })],
      /tenants\[0\]\.ticketConsumers names "nginx", which is neither "node" \(the Node helper.s keys, TICKET_KEY\) nor the name of any ticketConsumers entry/,
    ],
    [[tenant('a', { maxBytes: 100 })], /tenants\[0\]\.maxBytes \(100\) must hold at least one entry/],
    [
      [tenant('a', { maxBytes: 40 * MiB }), tenant('b', { maxBytes: 40 * MiB })],
      /tenants' maxBytes add up to 83886080 bytes, more than maxBytes/,
    ],
    [
      [tenant('a', { socketPath: '/run/statecast/statecast.sock' })],
      /tenants\[0\]\.socketPath is the same socket or listener as socketPath/,
    ],
    [
      [tenant('a', { memcacheListen: ['/run/sc/m.sock'] }), tenant('b', { memcacheListen: ['/run/sc/m.sock'] })],
      /tenants\[1\]\.memcacheListen item 1 is the same socket or listener as tenants\[0\]\.memcacheListen item 1/,
    ],
    [[tenant('a', { colour: 'red' })], /tenants\[0\]: unknown key "colour"/],
  ]
  for (const [tenants, re] of bad)
    t.throws(
      () => config({ socketPath: '/run/statecast/statecast.sock', adminSocketPath: '/run/statecast/admin.sock', tenants }),
      { code: 'BAD_CONFIG', message: re },
      String(re),
    )
  t.throws(() => config({ memcacheTcpAccess: 'closed' }), { message: /memcacheTcpAccess must be "open", "uid" or "auth"/ })
  t.throws(() => config({ tenants: [tenant('a')], maxKeyBytes: 3 }), {
    message: /tenants\[0\]\.name leaves no room for keys within maxKeyBytes/,
  })
  const ok = config({
    tenants: JSON.stringify([
      tenant('a', {
        memcacheUsers: ['root', 33],
        memcacheListen: ['/run/sc/a-mc.sock', '127.0.0.1:11300'],
        ticketConsumers: ['nginx'],
        socketMode: '0600',
      }),
    ]),
    ticketConsumers: [{ format: 'nginx' }],
    memcacheTcpAccess: 'uid',
    memcacheUsers: 'root',
  })
  t.same(
    ok.tenants[0],
    {
      name: 'a',
      socketPath: '/run/sc/a.sock',
      socketMode: 0o600,
      socketGroup: '',
      maxBytes: 8 * MiB,
      memcacheListen: ['/run/sc/a-mc.sock', '127.0.0.1:11300'],
      memcacheUsers: [0, 33],
      ticketConsumers: ['nginx'],
      memcacheAuthFile: '',
    },
    'a valid tenant, from JSON on the command line',
  )
  t.same(ok.memcacheUsers, [0], 'users by name')
  t.same(defaults().tenants, [], 'no tenants by default')
  t.throws(() => config({ memcacheTcpAccess: 'auth' }), { message: /memcacheTcpAccess is "auth" but no memcacheAuthFile is set/ })
  t.throws(() => config({ memcacheAuthFile: '/etc/x' }), { message: /memcacheAuthFile is set but memcacheTcpAccess is "open"/ })
  t.throws(() => config({ memcacheTcpAccess: 'auth', memcacheAuthFile: 'rel' }), { message: /memcacheAuthFile must be an absolute path/ })
  t.equal(
    config({ memcacheTcpAccess: 'auth', tenants: JSON.stringify([tenant('a', { memcacheAuthFile: '/etc/a' })]) }).tenants[0]!
      .memcacheAuthFile,
    '/etc/a',
  )
  t.equal(defaults().memcacheTcpAccess, 'open', 'TCP listeners open by default, as before')
})

t.test('store keys: the namespace, the default tenant unprefixed, the marker refused', async (t) => {
  const c = config({
    tenants: [tenant('alpha', { ticketConsumers: ['nginx'] }), tenant('b')],
    ticketConsumers: [{ format: 'nginx' }, { format: 'h2o' }],
  })
  const [def, alpha, b] = tenantsOf(c)
  t.equal(def!.name, '', 'the default tenant first')
  t.equal(def!.maxBytes, c.maxBytes - 16 * MiB, 'it gets what the named tenants leave')
  t.same(
    [...tenantQuotas(c)],
    [
      ['', c.maxBytes - 16 * MiB],
      ['alpha', 8 * MiB],
      ['b', 8 * MiB],
    ],
  )
  t.equal(toStoreKey(alpha!, 'sess:1'), '\u0000alpha\u0000sess:1')
  t.equal(toStoreKey(def!, 'sess:1'), 'sess:1', "the default tenant's keys are stored as they are")
  t.equal(fromStoreKey(alpha!, '\u0000alpha\u0000sess:1'), 'sess:1')
  t.equal(fromStoreKey(b!, '\u0000alpha\u0000sess:1'), undefined, "another tenant's key is none of b's")
  t.equal(fromStoreKey(def!, '\u0000alpha\u0000sess:1'), undefined, "nor the default tenant's")
  t.equal(tenantOfStoreKey('\u0000alpha\u0000x'), 'alpha')
  t.equal(tenantOfStoreKey('plain'), '')
  t.equal(tenantOfStoreKey('\u0000\u0000x'), undefined, 'an empty name is no namespace')
  t.equal(tenantOfStoreKey('\u0000noend'), undefined)
  t.equal(tenantPrefix(''), '')
  t.equal(alpha!.maxKeyBytes, c.maxKeyBytes - 7, "a tenant's keys are shorter by its prefix")
  t.equal(clientKeyProblem(alpha!, Buffer.from('\u0000b\u0000k')), 'key starts with byte 0x00, which is reserved for tenant namespaces')
  t.equal(
    clientKeyProblem(alpha!, 'x'.repeat(alpha!.maxKeyBytes + 1)),
    `key is ${alpha!.maxKeyBytes + 1} bytes, at most ${alpha!.maxKeyBytes}`,
  )
  t.equal(clientKeyProblem(alpha!, ''), 'key is empty')
  t.equal(clientKeyProblem(alpha!, 'fine'), undefined)
  t.same(consumersFor(alpha!, c), ['nginx'], 'a tenant reads the consumers its table lists')
  t.same(consumersFor(b!, c), [], 'and none it does not')
  t.same(consumersFor(def!, c), c.apiTicketConsumers, 'the default tenant reads what apiTicketConsumers grants the main API socket')
  const solo = config({ ticketConsumers: [{ format: 'nginx' }, { format: 'h2o' }], apiTicketConsumers: ['node', 'h2o'] })
  t.same(consumersFor(tenantsOf(solo)[0]!, solo), ['node', 'h2o'], 'without tenants too')
})

for (const Engine of [CompactStore, LruStore]) {
  t.test(`${Engine.name}: a tenant's view of the store holds, lists, flushes and counts only its own keys`, async (t) => {
    const c = config({ tenants: [tenant('alpha'), tenant('b')] })
    const [def, alpha, b] = tenantsOf(c)
    const store = new Engine({ maxBytes: c.maxBytes, tenantQuotas: tenantQuotas(c) })
    const va = tenantStore(store, alpha!)
    const vb = tenantStore(store, b!)
    const vd = tenantStore(store, def!)
    t.not(vd, store, 'with tenants, the default tenant has a view too')
    va.set('k', Buffer.from('alpha'))
    vb.set('k', Buffer.from('b'))
    vd.set('k', Buffer.from('default'))
    t.same(va.get('k')?.value, Buffer.from('alpha'))
    t.same(vb.get('k')?.value, Buffer.from('b'))
    t.same(vd.get('k')?.value, Buffer.from('default'))
    t.same(va.keys(), ['k'], 'alpha lists its key by its client name')
    t.same(vd.keys(), ['k'], 'the default tenant lists none of the namespaced keys')
    t.same(
      [...va.entries()].map(([k, e]) => [k, e.value.toString()]),
      [['k', 'alpha']],
    )
    t.equal(vb.delete('k'), true)
    t.same(va.get('k')?.value, Buffer.from('alpha'), "b's delete left alpha's key")
    t.equal(vb.touch('k', 1000), false)
    t.equal(va.size, 1)
    t.equal(va.stats().maxBytes, 8 * MiB, "stats show the tenant's share")
    t.equal(va.flush(), 1, "flush drops the tenant's own entries")
    t.same(vd.get('k')?.value, Buffer.from('default'), 'and nothing else')
    const plain = new Engine({ maxBytes: c.maxBytes })
    t.equal(tenantStore(plain, tenantsOf(defaults())[0]!), plain, 'without tenants the default tenant uses the store itself')
    plain.set('\u0000alpha\u0000k', Buffer.from('x'))
    t.same(plain.get('\u0000alpha\u0000k')?.value, Buffer.from('x'), 'and a key starting with 0x00 is just a key, as before')
  })
}

t.test(
  "eviction floors: per tenant, and per bucket within a tenant; keys of tenants the store does not have are under the default's",
  async (t) => {
    const ts = new Tombstones({ lifetimeMs: 1000, max: 1, now: () => 0, tenants: ['', 'a'], seed: 7 })
    // Keys of one bucket: the floor of a bucket holds for exactly its keys of the same tenant.
    const inBucket = (prefix: string, b: number) => {
      for (let i = 0; ; i++) if (ts.bucket(`${prefix}${i}`) === b) return `${prefix}${i}`
    }
    const zz = '\u0000zz\u0000k1'
    ts.add(zz, 10n)
    ts.add('\u0000zz\u0000k2', 20n)
    const b = ts.bucket(zz)
    t.equal(ts.floor(zz), 10n, "the early-evicted tombstone of an unknown tenant raised a floor of the default tenant's")
    t.equal(ts.floor(inBucket('plain-', b)), 10n, 'which a default key of the same bucket is under')
    t.equal(ts.floor(inBucket('\u0000zz\u0000x', b)), 10n, 'and a key of the unknown tenant in that bucket')
    t.equal(ts.floor(inBucket('\u0000a\u0000x', b)), NO_VERSION, "tenant a's keys of that bucket have floors of their own")
    t.equal(ts.floor(inBucket('plain-', (b + 1) % FLOOR_BUCKETS)), NO_VERSION, 'a default key of another bucket is not floored')
    const ak = '\u0000a\u0000k'
    ts.evicted(ak, 30n)
    const ab = ts.bucket(ak)
    t.equal(ts.floor(inBucket('\u0000a\u0000y', ab)), 30n, "an eviction of a's raises a's floor of its bucket")
    t.equal(ts.floor(inBucket('\u0000a\u0000y', (ab + 1) % FLOOR_BUCKETS)), NO_VERSION, "and no other bucket of a's")
    t.equal(ts.floor(inBucket('plain-', ab)), ab === b ? 10n : NO_VERSION, "and not the default's")
    const none = new Tombstones({ lifetimeMs: 1000, max: 1, now: () => 0, seed: 7 })
    none.evicted(ak, 5n)
    t.equal(none.floor(inBucket('plain-', ab)), 5n, 'without tenants every key of a bucket shares its floor, whatever its first byte')
    t.equal(none.floor(inBucket('plain-', (ab + 1) % FLOOR_BUCKETS)), NO_VERSION, 'and other buckets are not floored')
  },
)
