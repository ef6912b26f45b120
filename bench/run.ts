/**
 * npm run bench: every case next to its baseline measured in the same run. Prints a table and
 * writes bench/results/latest.json. Never part of npm test. BENCH_MS sets each measurement's length
 * (the cost group has its own settings: COST_* in bench/cost.ts; the writes group WRITES_* in
 * bench/writes.ts).
 */
import fs from 'node:fs'
import path from 'node:path'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { benchLocal, benchMemcache } from './local.js'
import { benchRemote } from './remote.js'
import { benchMemory } from './memory.js'
import { benchPeers } from './peers.js'
import { benchTls } from './tls.js'
import { benchScale } from './scale.js'
import { benchCost } from './cost.js'
import { benchWrites } from './writes.js'

const ms = Number(process.env['BENCH_MS'] ?? 3000)
const only = process.argv[2]
const rows: Record<string, unknown>[] = []
const show = (group: Record<string, unknown>[]) => {
  console.table(group)
  rows.push(...group)
}
if (!only || only === 'local') show(await benchLocal(ms, [1, 8, 32]))
if (!only || only === 'local' || only === 'memcache') show(await benchMemcache(ms, [1, 8]))
if (!only || only === 'peers') show(await benchPeers(ms, [1, 8, 32]))
if (!only || only === 'remote')
  show([
    ...(await benchRemote(Number(process.env['BENCH_N'] ?? 2000), 1)),
    ...(await benchRemote(Number(process.env['BENCH_N'] ?? 2000), 2)),
    ...(await benchRemote(Number(process.env['BENCH_N'] ?? 2000), 2, 0)),
  ])
if (!only || only === 'writes') show(await benchWrites())
if (!only || only === 'tls') show(await benchTls())
if ((!only && process.getuid?.() === 0) || only === 'scale') show(await benchScale())
if (!only || only === 'cost') show(await benchCost())
if (!only || only === 'memory') show(await benchMemory([100_000, 1_000_000]))
const out = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'results')
fs.mkdirSync(out, { recursive: true })
const file = path.join(out, 'latest.json')
fs.writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, ms, rows }, null, 2))
console.log(`wrote ${file}`)
