/**
 * The floor of one owner's round trip, run as its own process: a bare UDP socket on loopback that
 * answers every datagram with a copy to its sender. No sealing, no parsing. Prints its port.
 * Usage: node dist/bench/udp-echo.js
 */
import dgram from 'node:dgram'

const s = dgram.createSocket('udp4')
s.on('message', (msg, rinfo) => s.send(msg, rinfo.port, rinfo.address))
s.bind(0, '127.0.0.1', () => process.stdout.write(`${s.address().port}\n`))
process.on('SIGTERM', () => process.exit(0))
