/**
 * One HTTPS server in its own process, for the TLS benchmark: each "host" runs its server apart
 * from the load generator, as in a fleet. Started with fork(); sends { port } when it listens and
 * closes on "close". Arguments: version mode daemonSocket keyPem certPem [memcached].
 */
import fs from 'node:fs'
import { startTlsServer, type CacheMode, type Version } from './demo.js'

const [version, mode, socketPath, keyPath, certPath, memcached] = process.argv.slice(2)
const server = await startTlsServer(
  version as Version,
  mode as CacheMode,
  { key: fs.readFileSync(keyPath!), cert: fs.readFileSync(certPath!) },
  socketPath!,
  memcached || undefined,
)
process.send!({ port: server.port })
process.on('message', (m) => {
  if (m === 'close') void server.close().then(() => process.exit(0))
})
process.on('disconnect', () => process.exit(0))
