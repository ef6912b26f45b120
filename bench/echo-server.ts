/**
 * The floor for local benchmarks, run as its own process like the daemon: a bare Node Unix-socket
 * server that splits frames and answers each with the same GET-OK reply, nothing else.
 * Usage: node dist/bench/echo-server.js SOCKET_PATH VALUE_BYTES
 */
import net from 'node:net'
import { FrameDecoder, Status, encodeReply } from '../protocol/local.js'

const [socketPath, bytes] = process.argv.slice(2)
const value = Buffer.alloc(Number(bytes ?? 200), 7)
const server = net.createServer((s) => {
  const dec = new FrameDecoder(1 << 20)
  s.on('data', (chunk) => {
    s.cork()
    dec.push(chunk, (f) => s.write(encodeReply(f[4]!, f.readUInt32BE(6), Status.OK, value, 0, 300_000)))
    s.uncork()
  })
  s.on('error', () => {})
})
server.listen(socketPath!, () => process.stdout.write('ready\n'))
process.on('SIGTERM', () => process.exit(0))
