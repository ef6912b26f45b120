/**
 * A small lab of hosts as network namespaces on one bridge, made by the test itself:
 *
 *   <id>-sw: a switch namespace holding bridge br0 (and, when asked, the nftables loss rule)
 *   <id>-hN: host N, eth0 = 10.77.0.N/24 (IPv6 only: fd77::N/64; dual stack: both), a veth whose other end
 *            (sN) is a bridge port
 *
 * Nothing touches the root namespace. Every address lives inside a namespace the lab made, and
 * teardown kills the lab's processes and deletes its namespaces, also when a test fails.
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'

const PREFIX = 'sct'

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

/** Deletes namespaces of earlier labs whose test process is gone (a crashed run). */
function reapStale(): void {
  let list = ''
  try {
    list = ip('netns', 'list')
  } catch {
    return
  }
  for (const line of list.split('\n')) {
    const name = line.split(' ')[0] ?? ''
    const m = new RegExp(`^${PREFIX}(\\d+)x`).exec(name)
    if (!m) continue
    const pid = Number(m[1])
    let alive = true
    try {
      process.kill(pid, 0)
    } catch {
      alive = false
    }
    if (!alive) {
      try {
        ip('netns', 'del', name)
      } catch {
        /* already gone */
      }
    }
  }
}

export class NetLab {
  readonly id: string
  readonly hosts: string[] = []
  readonly switchNs: string
  readonly ipv6: boolean
  /** Every host has an IPv4 and an IPv6 address. */
  dualStack = false
  #closed = false

  private constructor(id: string, ipv6: boolean) {
    this.id = id
    this.switchNs = `${id}-sw`
    this.ipv6 = ipv6
  }

  /** Fails clearly when this machine cannot make namespaces (the tests declare `needs(NETNS)`, which skips them outside CI without root). */
  static create(t: { teardown(fn: () => unknown): void }, n: number, opts: { ipv6Only?: boolean; dualStack?: boolean } = {}): NetLab {
    if (typeof process.getuid === 'function' && process.getuid() !== 0) throw new Error('network namespace tests need root')
    reapStale()
    const lab = new NetLab(`${PREFIX}${process.pid}x${Math.random().toString(36).slice(2, 6)}`, opts.ipv6Only === true)
    lab.dualStack = opts.dualStack === true && !lab.ipv6
    t.teardown(() => lab.destroy())
    try {
      lab.#build(n)
    } catch (err) {
      lab.destroy()
      throw err
    }
    return lab
  }

  #build(n: number): void {
    const sw = this.switchNs
    ip('netns', 'add', sw)
    ip('-n', sw, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0')
    ip('-n', sw, 'link', 'set', 'br0', 'up')
    for (let i = 1; i <= n; i++) {
      const h = `${this.id}-h${i}`
      ip('netns', 'add', h)
      this.hosts.push(h)
      ip('-n', sw, 'link', 'add', `s${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h)
      ip('-n', sw, 'link', 'set', `s${i}`, 'master', 'br0', 'up')
      ip('-n', h, 'link', 'set', 'lo', 'up')
      // nodad: the IPv6 address is usable at once.
      if (this.ipv6 || this.dualStack) ip('-n', h, 'addr', 'add', `${this.addr6(i)}/64`, 'dev', 'eth0', 'nodad')
      if (!this.ipv6) ip('-n', h, 'addr', 'add', `${this.addr4(i)}/24`, 'dev', 'eth0')
      ip('-n', h, 'link', 'set', 'eth0', 'up')
      if (!this.ipv6) ip('-n', h, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0')
    }
  }

  /** Address of host i (1-based): its IPv6 address in an IPv6-only lab, else its IPv4 address. */
  addr(i: number): string {
    return this.ipv6 ? this.addr6(i) : this.addr4(i)
  }

  addr4(i: number): string {
    return `10.77.0.${i}`
  }

  /** Host i's IPv6 address (IPv6-only and dual-stack labs). */
  addr6(i: number): string {
    return `fd77::${i}`
  }

  ns(i: number): string {
    return this.hosts[i - 1]!
  }

  /** The command prefix that runs a program inside host i. */
  exec(i: number): string[] {
    return ['ip', 'netns', 'exec', this.ns(i)]
  }

  /** Drops `percent`% of UDP frames crossing the bridge, in both directions. */
  loss(percent: number): void {
    const rules = `table bridge sclab {\n chain lossy {\n type filter hook forward priority 0; policy accept;\n meta l4proto udp numgen random mod 100 < ${percent} drop\n }\n}\n`
    this.clearLoss()
    const file = `/tmp/${this.id}.nft`
    fs.writeFileSync(file, rules)
    execFileSync('ip', ['netns', 'exec', this.switchNs, 'nft', '-f', file])
    fs.unlinkSync(file)
  }

  clearLoss(): void {
    try {
      execFileSync('ip', ['netns', 'exec', this.switchNs, 'nft', 'delete', 'table', 'bridge', 'sclab'], { stdio: 'ignore' })
    } catch {
      /* no table yet */
    }
  }

  /** Cuts host i off silently (its bridge port goes down); `up` heals it. */
  link(i: number, state: 'up' | 'down'): void {
    ip('-n', this.switchNs, 'link', 'set', `s${i}`, state)
  }

  destroy(): void {
    if (this.#closed) return
    this.#closed = true
    for (const ns of [...this.hosts, this.switchNs]) {
      // Processes still inside would keep nothing alive (the namespace goes with its last
      // process), but kill them so no daemon outlives its test.
      try {
        const pids = ip('netns', 'pids', ns).split('\n').filter(Boolean)
        for (const p of pids) {
          try {
            process.kill(Number(p), 'SIGKILL')
          } catch {
            /* gone */
          }
        }
      } catch {
        /* namespace never made */
      }
      try {
        ip('netns', 'del', ns)
      } catch {
        /* never made, or gone */
      }
    }
  }
}
