/** A throwaway certificate and `openssl s_client` runs for TLS tests and the demo. */
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'

export function makeCert(dir: string): { key: Buffer; cert: Buffer } {
  const key = path.join(dir, 'key.pem')
  const cert = path.join(dir, 'cert.pem')
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
    ],
    { stdio: 'ignore' },
  )
  return { key: fs.readFileSync(key), cert: fs.readFileSync(cert) }
}

/**
 * One `openssl s_client` connection to `host:port` that sends an HTTP request and reads the
 * reply (TLS 1.3 tickets arrive after the handshake). Resolves s_client's output.
 */
export function sClientAt(host: string, port: number, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('openssl', ['s_client', '-connect', `${host}:${port}`, '-servername', 'localhost', ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let out = ''
    const timer = setTimeout(() => p.kill('SIGKILL'), 10_000)
    p.stdout.setEncoding('utf8').on('data', (s: string) => {
      out += s
      if (/HTTP\/1\.1 \d{3}/.test(out)) p.stdin.end()
    })
    p.stderr.setEncoding('utf8').on('data', (s: string) => (out += s))
    p.once('error', reject)
    p.once('close', () => {
      clearTimeout(timer)
      resolve(out)
    })
    p.stdin.write('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
  })
}

/** `sClientAt` on 127.0.0.1. */
export function sClient(port: number, args: string[]): Promise<string> {
  return sClientAt('127.0.0.1', port, args)
}

/** "New" or "Reused" and the protocol, from s_client's summary line. */
export function sessionLine(out: string): string {
  return /^(New|Reused), (TLSv[\d.]+)/m.exec(out)?.slice(1, 3).join(' ') ?? `no session line in: ${out.slice(0, 300)}`
}
