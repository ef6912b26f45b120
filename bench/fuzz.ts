/** `npm run fuzz`: both codecs under mutated inputs (the fuzzer lives in test/helpers/fuzz.ts). */
import { fuzz } from '../test/helpers/fuzz.js'

const inputs = Number(process.env['FUZZ_INPUTS'] ?? 2_000_000)
const seed = Number(process.env['FUZZ_SEED'] ?? Date.now() % 2 ** 31)
console.log(`fuzzing both codecs: ${inputs.toLocaleString('en')} inputs per target, seed ${seed}`)
const res = fuzz(inputs, seed)
console.table(res)
const total = res.reduce((a, x) => a + x.inputs, 0)
console.log(`${total.toLocaleString('en')} inputs, no decoder failed with anything but its own ProtocolError`)
