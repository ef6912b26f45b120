/**
 * `npm run test:unit`: every unit test file in one process, in seconds. tap starts a process per
 * file, and its start-up cost more than most unit files take; unit tests are pure code and cluster
 * cores on fake time, so they share a process safely. They need neither root nor system packages.
 * Run from dist/test/ after a build (the script builds first).
 */
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

// Run directly (not by tap's runner), tap gives the whole process 30 s: set the runner's bound
// (package.json's tap.timeout) before the first test file loads tap.
process.env['TAP_TIMEOUT'] ??= '600'

const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'unit')
const files = fs
  .readdirSync(dir)
  .filter((f) => f.endsWith('.test.js'))
  .sort()
const started = performance.now()
process.on('exit', (code) => {
  process.stderr.write(`unit tests: ${files.length} files in ${((performance.now() - started) / 1000).toFixed(1)} s, exit ${code}\n`)
})
for (const f of files) await import(pathToFileURL(path.join(dir, f)).href)
