/**
 * The network floor for remote fills, run as its own process: joins the group on loopback and
 * answers every datagram with a unicast copy to its sender. No sealing, no parsing.
 * Usage: node dist/bench/mcast-echo.js GROUP PORT
 */
import { DgramAsPromised } from 'dgram-as-promised'

const [group, port] = process.argv.slice(2)
const s = DgramAsPromised.createSocket({ type: 'udp4', reuseAddr: true })
await s.bind(Number(port), group)
s.addMembership(group!, '127.0.0.1')
s.socket.on('message', (msg: Buffer, rinfo) => s.socket.send(msg, rinfo.port, rinfo.address))
process.stdout.write('ready\n')
process.on('SIGTERM', () => process.exit(0))
