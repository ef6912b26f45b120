/**
 * Capturing unicast datagrams on their way to a daemon in a NetLab host: nftables in that host's
 * namespace redirects what arrives for the daemon's unicast port to a relay process, which prints
 * each datagram and forwards it to the daemon unchanged. The relay also sends datagrams it is given
 * (from a second socket, whose replies it prints too), so a test can replay a capture anywhere.
 */
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import type { NetLab } from './netlab.js'
import { eventually } from './daemon.js'

const RELAY_JS = `
import dgram from 'node:dgram'
import readline from 'node:readline'
const [addr, capPort, injPort, daemonPort] = process.argv.slice(2)
const cap = dgram.createSocket('udp4')
const inj = dgram.createSocket('udp4')
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n')
cap.on('message', (m, r) => {
  say({ via: 'capture', from: r.address, port: r.port, hex: m.toString('hex') })
  cap.send(m, Number(daemonPort), addr)
})
inj.on('message', (m, r) => say({ via: 'inject', from: r.address, port: r.port, hex: m.toString('hex') }))
let bound = 0
const ready = () => ++bound === 2 && say({ ready: true })
cap.bind(Number(capPort), addr, ready)
inj.bind(Number(injPort), addr, ready)
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const { to, port, hex } = JSON.parse(line)
  inj.send(Buffer.from(hex, 'hex'), port, to, () => say({ sent: true }))
})
`

export interface Datagram {
  via: 'capture' | 'inject'
  from: string
  port: number
  bytes: Buffer
}

export interface Relay {
  /** Datagrams seen so far: captured on the way to the daemon, or answers to injected ones. */
  seen: Datagram[]
  /** Sends `bytes` from the relay's injection socket (port `injectPort`). */
  inject(to: string, port: number, bytes: Buffer): Promise<void>
  injectPort: number
}

/** Runs `nft -f` with `rules` inside host `i` of the lab. */
export function nft(lab: NetLab, i: number, rules: string): void {
  execFileSync('ip', ['netns', 'exec', lab.ns(i), 'nft', '-f', '-'], { input: rules })
}

/**
 * Relays datagrams arriving at host `i` for `daemonPort` through a process that records them.
 * The relay's own ports are `capturePort` and `injectPort` (inside a namespace the test made).
 */
export async function startRelay(
  t: { teardown(fn: () => unknown): void },
  lab: NetLab,
  i: number,
  dir: string,
  daemonPort: number,
  capturePort = 40001,
  injectPort = 40002,
): Promise<Relay> {
  const file = path.join(dir, 'relay.mjs')
  fs.writeFileSync(file, RELAY_JS)
  const proc = spawn(
    'ip',
    ['netns', 'exec', lab.ns(i), process.execPath, file, lab.addr(i), String(capturePort), String(injectPort), String(daemonPort)],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  )
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
  })
  const seen: Datagram[] = []
  const waiters: (() => void)[] = []
  let ready = false
  let buf = ''
  proc.stdout.setEncoding('utf8').on('data', (s: string) => {
    buf += s
    let n
    while ((n = buf.indexOf('\n')) >= 0) {
      const o = JSON.parse(buf.slice(0, n)) as {
        ready?: boolean
        sent?: boolean
        via?: 'capture' | 'inject'
        from?: string
        port?: number
        hex?: string
      }
      buf = buf.slice(n + 1)
      if (o.ready) ready = true
      else if (o.sent) waiters.shift()?.()
      else seen.push({ via: o.via!, from: o.from!, port: o.port!, bytes: Buffer.from(o.hex!, 'hex') })
    }
  })
  await eventually(() => ready || proc.exitCode !== null, 30_000, 'the relay listening')
  if (!ready) throw new Error('the relay did not start')
  nft(
    lab,
    i,
    `table ip screlay {\n chain pre {\n type nat hook prerouting priority -100; policy accept;\n udp dport ${daemonPort} dnat to ${lab.addr(i)}:${capturePort}\n }\n}\n`,
  )
  return {
    seen,
    injectPort,
    inject: (to, port, bytes) =>
      new Promise<void>((resolve) => {
        waiters.push(resolve)
        proc.stdin.write(`${JSON.stringify({ to, port, hex: bytes.toString('hex') })}\n`)
      }),
  }
}
