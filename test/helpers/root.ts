/**
 * The checkout's root directory. `npm test` runs the tests compiled to dist/test/ (no TypeScript
 * loader in each test process), a developer may run a test file from test/ through tap's loader:
 * this module sits at test/helpers/ or at dist/test/helpers/, and both lead to the same root.
 */
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const up2 = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
export const ROOT = path.basename(up2) === 'dist' ? path.dirname(up2) : up2
