/** The consistency checker (test/helpers/checker.ts) on hand-made histories: each kind of violation is flagged, and legal concurrency passes. */
import t from 'tap'
import { check, type ViolationKind } from '../helpers/checker.js'
import type { Op, OpKind, Outcome } from '../helpers/history.js'

let n = 0
/** An operation on `key` over [inv, cmp] (cmp Infinity: never completed). */
function op(kind: OpKind, key: string, inv: number, cmp: number, outcome: Outcome, extra: Partial<Op> = {}): Op {
  return { index: n++, client: extra.client ?? 'c', host: 'h', kind, key, invokeMs: inv, completeMs: cmp, outcome, ...extra }
}
const set = (v: string, inv: number, cmp: number, outcome: Outcome = 'ok', client = 'w') =>
  op('set', 'k', inv, cmp, outcome, { value: v, client })
const get = (v: string | null, inv: number, cmp: number) => op('get', 'k', inv, cmp, 'ok', { result: v, client: 'r' })
const del = (inv: number, cmp: number, outcome: Outcome = 'ok') => op('delete', 'k', inv, cmp, outcome)
const kinds = (ops: Op[], counters = new Map<string, { initial: number; final: Op | undefined }>()) =>
  check(ops, counters).violations.map((v) => v.kind)

t.test('registers: flagged', async (t) => {
  t.same(
    kinds([set('a', 0, 1), set('b', 2, 3), get('a', 4, 5)]),
    ['stale-read'],
    'a read after an acknowledged overwrite returns the old value',
  )
  t.same(kinds([set('a', 0, 1), del(2, 3), get('a', 4, 5)]), ['delete-undone'], 'a read after an acknowledged delete returns the value')
  t.same(kinds([set('a', 0, 1), get(null, 2, 3)]), ['not-found'], 'a read after an acknowledged set returns not found')
  t.same(kinds([get('a', 0, 1), set('a', 2, 3)]), ['unwritten'], 'a read returns a value written only after it completed')
  t.same(kinds([get('zz', 0, 1)]), ['unwritten'], 'a read returns a value never written')
  t.same(
    kinds([set('a', 0, 1), del(2, 3), set('b', 4, 5), get(null, 6, 7)]),
    ['not-found'],
    'a delete superseded by a later set explains no miss',
  )
})

t.test('registers: legal histories pass', async (t) => {
  t.same(kinds([get(null, 0, 1), set('a', 2, 3), get('a', 4, 5)]), [], 'initial miss, then the value')
  t.same(kinds([set('a', 0, 10), get(null, 1, 2), get('a', 3, 4)]), [], 'a read during the set may see either state')
  t.same(kinds([set('a', 0, 1), set('b', 2, 10), get('a', 3, 4), get('b', 5, 6)]), [], 'a read during an overwrite may see old or new')
  t.same(kinds([set('a', 0, 5), set('b', 1, 6), get('a', 7, 8), get('b', 9, 10)]), [], 'concurrent sets: either order')
  t.same(kinds([set('a', 0, 1), set('b', 2, Infinity, 'unknown'), get('a', 3, 4), get('b', 20, 21)]), [], 'an unknown set may land late')
  t.same(kinds([set('a', 0, 1), set('b', 2, 3, 'fail'), get('a', 4, 5)]), [], 'a failed set left the old value')
  t.same(
    kinds([set('a', 0, 1), del(2, 3, 'unknown'), get(null, 4, 5), get('a', 6, 7)]),
    [],
    'an unknown delete: each read may see either state (reads are judged one at a time)',
  )
  t.same(kinds([set('a', 0, 1), del(2, 3), get(null, 4, 5)]), [], 'not found after a delete')
})

const add = (client: string, inv: number, cmp: number, outcome: Outcome) =>
  op('add', 'l', inv, cmp, outcome, { client, value: `${client}${inv}` })
const rel = (client: string, inv: number, cmp: number) => op('release', 'l', inv, cmp, 'ok', { client })

t.test('locks', async (t) => {
  t.same(kinds([add('x', 0, 1, 'ok'), add('y', 2, 3, 'ok'), rel('x', 4, 5)]), ['lock'], 'a second holder while the first holds')
  t.same(kinds([add('x', 0, 1, 'ok'), add('y', 2, 3, 'ok')]), ['lock'], 'a second holder of a lock never released')
  t.same(kinds([add('x', 0, 1, 'ok'), rel('x', 2, 3), add('y', 4, 5, 'ok'), rel('y', 6, 7)]), [], 'one after another')
  t.same(kinds([add('x', 0, 5, 'ok'), add('y', 1, 6, 'ok')]), ['lock'], 'overlapping adds both won, neither released')
  t.same(kinds([add('x', 0, 5, 'ok'), add('y', 1, 6, 'ok'), rel('x', 7, 8)]), ['lock'], 'overlapping adds both won, released after both')
  t.same(
    kinds([add('x', 0, 1, 'ok'), add('y', 2, 3, 'fail'), rel('x', 4, 5), add('y', 3.5, 6, 'ok')]),
    [],
    'an add racing the release may win',
  )
})

t.test('counters', async (t) => {
  const incr = (inv: number, outcome: Outcome, result?: string) => op('incr', 'n', inv, inv + 1, outcome, result ? { result } : {})
  const fin = (v: string | null) => op('get', 'n', 100, 101, 'ok', { result: v })
  const counters = (f: Op) => new Map([['n', { initial: 0, final: f }]])
  t.same(
    kinds([incr(0, 'ok', '1'), incr(2, 'ok', '1')], counters(fin('1'))),
    ['counter', 'counter'],
    'a lost increment: a repeated value and a short total',
  )
  t.same(kinds([incr(0, 'ok', '1'), incr(2, 'ok', '2')], counters(fin('1'))), ['counter'], 'the final value below the acknowledged')
  t.same(kinds([incr(0, 'ok', '1')], counters(fin('3'))), ['counter'], 'the final value above acknowledged + unknown')
  t.same(kinds([incr(0, 'ok', '1'), incr(2, 'unknown'), incr(4, 'ok', '3')], counters(fin('3'))), [], 'an unknown increment that landed')
  t.same(kinds([incr(0, 'ok', '1'), incr(2, 'unknown'), incr(4, 'ok', '2')], counters(fin('2'))), [], 'an unknown increment that did not')
})

t.test('cas', async (t) => {
  const cas = (v: string, unique: string, outcome: Outcome) => op('cas', 'cs', 0, 1, outcome, { value: v, cas: unique })
  t.same(kinds([cas('a', '7', 'ok'), cas('b', '7', 'ok')]), ['cas'], 'two successes with one unique')
  t.same(kinds([cas('a', '7', 'ok'), cas('b', '7', 'fail'), cas('c', '8', 'ok')]), [], 'one success per unique')
})

t.test('counts by kind', async (t) => {
  const r = check([set('a', 0, 1), set('b', 2, 3), get('a', 4, 5), get('a', 6, 7)])
  const expected: Partial<Record<ViolationKind, number>> = { 'stale-read': 2 }
  t.equal(r.counts['stale-read'], expected['stale-read'])
  t.equal(r.counts['not-found'], 0)
})
