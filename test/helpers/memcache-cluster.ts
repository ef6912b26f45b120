/** Clusters of real daemons, each with a memcache front end on its own loopback TCP port, and a small line client. */
import net from 'node:net'
import { startCluster, startNode, waitMembers, type Node } from './cluster.js'
import { freePort } from './daemon.js'

export interface McNode extends Node {
  /** The memcache front end's TCP port on 127.0.0.1. */
  mcPort: number
}

/** `n` daemons started side by side, each with a memcache listener, once every one trusts the others. */
export async function startMcCluster(
  t: { teardown(fn: () => unknown): void },
  n: number,
  args: string[] = [],
): Promise<{ nodes: McNode[]; dir: string; keyFile: string; group: string; port: number }> {
  const probe = await startCluster(t, 0)
  const common = { dir: probe.dir, keyFile: probe.keyFile, group: probe.group, port: probe.port }
  const ports = await Promise.all(Array.from({ length: n }, () => freePort()))
  const nodes = await Promise.all(
    ports.map(async (mcPort, i) =>
      Object.assign(
        await startNode(t, { ...common, name: String.fromCharCode(97 + i), args: [...args, '--memcache-listen', `127.0.0.1:${mcPort}`] }),
        { mcPort },
      ),
    ),
  )
  await waitMembers(nodes, n - 1)
  return { ...common, nodes }
}

/**
 * One memcache text connection: `cmd` sends a command line (and a data block) and resolves the
 * reply's lines up to and including its last (END for retrievals; one line otherwise).
 */
export interface McConn {
  cmd(line: string, data?: Buffer | string): Promise<string[]>
  close(): void
}

export async function mcConnect(t: { teardown(fn: () => unknown): void }, port: number): Promise<McConn> {
  const s = net.connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject))
  t.teardown(() => s.destroy())
  let buf = ''
  const waiting: { multi: boolean; lines: string[]; resolve: (l: string[]) => void }[] = []
  s.on('error', () => {})
  s.on('data', (d) => {
    buf += d.toString('latin1')
    for (let i = buf.indexOf('\r\n'); i >= 0 && waiting.length > 0; i = buf.indexOf('\r\n')) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 2)
      const w = waiting[0]!
      w.lines.push(line)
      if (!w.multi || line === 'END' || line.startsWith('SERVER_ERROR') || line.startsWith('CLIENT_ERROR') || line === 'ERROR') {
        waiting.shift()
        w.resolve(w.lines)
      }
    }
  })
  return {
    cmd(line, data) {
      const multi = /^(get|gets|gat|gats) /.test(line)
      return new Promise((resolve) => {
        waiting.push({ multi, lines: [], resolve })
        s.write(
          data === undefined
            ? `${line}\r\n`
            : Buffer.concat([Buffer.from(`${line}\r\n`, 'latin1'), Buffer.from(data), Buffer.from('\r\n')]),
        )
      })
    },
    close: () => s.destroy(),
  }
}
