/**
 * Maps API requests onto the store (and, on a local miss, onto the cluster).
 *
 * The GET hit path is: key bytes -> latin1 string -> store.get -> one reply buffer. No logging,
 * no promise, no allocation beyond the key string and the reply.
 */
import {
  Op,
  ReplyFlag,
  ReqFlag,
  Status,
  encodeConsumerKeysBody,
  encodeError,
  encodeReply,
  encodeTicketKeyBody,
  keyProblem as codecKeyProblem,
  type ConsumerKeysBody,
  type Request,
} from '../../protocol/local.js'
import { mayReadConsumer, type TicketConsumer, type TicketRights } from '../config/ticket-consumers.js'
import { StoreError, type SessionStore } from '../store/session-store.js'
import type { ClusterHooks } from '../cluster/hooks.js'
import type { Config } from '../config/config.js'
import { SessionOps, type Done, type WriteOptions } from './session-ops.js'
import { markerProblem, tenantOfStoreKey } from '../../protocol/tenant-keys.js'
import { hasCode } from '../../protocol/errors.js'

const NO_PROPAGATE: WriteOptions = { propagate: false }

/** What a handler needs: its config keys (FIELDS in config/config.ts) and what it calls. */
export interface HandlerDeps extends Pick<Config, 'maxKeyBytes'> {
  store: SessionStore
  /** Admin operations (KEYS, FLUSH) are allowed only on the admin socket. */
  admin: boolean
  stats(): unknown
  cluster?: ClusterHooks | undefined
  /** Which ticket-key consumers this socket's connections may read (mayReadConsumer); default none. */
  ticketRights?: TicketRights
  /** The configured consumers (a name's format is theirs). */
  ticketConsumers?: readonly Pick<TicketConsumer, 'name' | 'format'>[]
  /** Node's ticket key in force ("node" consumer, derived; 48 bytes), if one is known yet. The handler wipes it. */
  ticketKey(): { epoch: number; remainingMs: number; key: Buffer } | undefined
  /** A consumer's derived keys (previous, current, next), if the current secret is known. The handler wipes them. */
  consumerKeys?(format: string, name: string): ConsumerKeysBody | undefined
  /**
   * Whether client keys starting with the tenant marker (protocol/tenant-keys.ts) are refused: on
   * a daemon with tenants, such a key would name another tenant's. Without tenants they are keys.
   */
  refuseMarker?: boolean
}

const NO_RIGHTS: TicketRights = { who: 'socket', consumers: new Set() }

const EMPTY = Buffer.alloc(0)
const json = (v: unknown) => Buffer.from(JSON.stringify(v), 'utf8')

/** An OK reply carrying ticket secrets: the body is wiped once it is copied into the reply. */
function secretReply(op: number, id: number, body: Buffer): Buffer {
  const reply = encodeReply(op, id, Status.OK, body)
  body.fill(0)
  return reply
}

export function createHandler(deps: HandlerDeps): (req: Request) => Buffer | Promise<Buffer> {
  const { store, maxKeyBytes, admin } = deps
  const ops = new SessionOps({ store, cluster: () => deps.cluster })
  const propagate = (flags: number): WriteOptions | undefined => (flags & ReqFlag.NO_PROPAGATE ? NO_PROPAGATE : undefined)
  const found = (op: number, id: number, d: Done<boolean>): Buffer | Promise<Buffer> => {
    const reply = (ok: boolean) => encodeReply(op, id, ok ? Status.OK : Status.NOT_FOUND)
    return d instanceof Promise ? d.then(reply) : reply(d)
  }
  const rights = deps.ticketRights ?? NO_RIGHTS
  const consumers = deps.ticketConsumers ?? []
  // A client key may not start with the tenant marker (protocol/tenant-keys.ts), which would name
  // another tenant's key; the admin socket sees every tenant and names their keys so.
  const keyProblem =
    admin || !deps.refuseMarker ? codecKeyProblem : (key: Buffer, max: number) => codecKeyProblem(key, max) ?? markerProblem(key)

  function remoteGet(id: number, key: string): Promise<Buffer> {
    return deps.cluster!.lookup(key).then(
      (hit) =>
        hit ? encodeReply(Op.GET, id, Status.OK, hit.value, ReplyFlag.REMOTE, hit.ttlMs) : encodeReply(Op.GET, id, Status.NOT_FOUND),
      (err: unknown) => {
        // The peers cannot be asked (the LOOKUP would exceed maxDatagramBytes): the client is told so.
        if (hasCode(err, 'DATAGRAM_TOO_LARGE'))
          return encodeError(
            Op.GET,
            id,
            Status.TOO_LARGE,
            'the key is too long for a peer lookup datagram (maxDatagramBytes); not found locally',
          )
        throw err
      },
    )
  }

  return function handle(req: Request): Buffer | Promise<Buffer> {
    switch (req.op) {
      case Op.GET: {
        const problem = keyProblem(req.key, maxKeyBytes)
        if (problem) return encodeError(Op.GET, req.id, Status.BAD_KEY, problem)
        const key = req.key.toString('latin1')
        const entry = store.get(key)
        if (entry !== undefined) return encodeReply(Op.GET, req.id, Status.OK, entry.value, 0, store.remainingTtl(key))
        if (deps.cluster && !(req.flags & ReqFlag.LOCAL_ONLY)) return remoteGet(req.id, key)
        return encodeReply(Op.GET, req.id, Status.NOT_FOUND)
      }
      case Op.SET: {
        const problem = keyProblem(req.key, maxKeyBytes)
        if (problem) return encodeError(Op.SET, req.id, Status.BAD_KEY, problem)
        try {
          const copied = ops.set(req.key.toString('latin1'), req.value, req.ttlMs, 0, propagate(req.flags))
          return copied ? copied.then(() => encodeReply(Op.SET, req.id, Status.OK)) : encodeReply(Op.SET, req.id, Status.OK)
        } catch (err) {
          if (err instanceof StoreError)
            return encodeError(Op.SET, req.id, err.code === 'TOO_LARGE' ? Status.TOO_LARGE : Status.BAD_TTL, err.message)
          throw err
        }
      }
      case Op.DELETE: {
        const problem = keyProblem(req.key, maxKeyBytes)
        if (problem) return encodeError(Op.DELETE, req.id, Status.BAD_KEY, problem)
        return found(Op.DELETE, req.id, ops.delete(req.key.toString('latin1'), propagate(req.flags)))
      }
      case Op.TOUCH: {
        const problem = keyProblem(req.key, maxKeyBytes)
        if (problem) return encodeError(Op.TOUCH, req.id, Status.BAD_KEY, problem)
        try {
          // Through the one write path: the copies on other hosts get the new expiry too.
          return found(Op.TOUCH, req.id, ops.touch(req.key.toString('latin1'), req.ttlMs, propagate(req.flags)))
        } catch (err) {
          if (err instanceof StoreError) return encodeError(Op.TOUCH, req.id, Status.BAD_TTL, err.message)
          throw err
        }
      }
      case Op.PING:
        return encodeReply(Op.PING, req.id, Status.OK, EMPTY)
      case Op.STATS:
        return encodeReply(Op.STATS, req.id, Status.OK, json(deps.stats()))
      case Op.PEERS:
        return encodeReply(Op.PEERS, req.id, Status.OK, json(deps.cluster ? deps.cluster.peers() : []))
      case Op.KEYS: {
        if (!admin) return encodeError(Op.KEYS, req.id, Status.DENIED, 'listing keys is allowed on the admin socket only')
        const limit = req.limit === 0 ? 1000 : req.limit
        const keys = store.keys(req.prefix.toString('latin1'), limit)
        // Keys are bytes; latin1 round-trips every byte, so clients can recover them exactly.
        // A tenant's key is listed as the store names it (the admin socket reads it so), with its tenant.
        return encodeReply(
          Op.KEYS,
          req.id,
          Status.OK,
          json(
            keys.map((k) => {
              const tenant = tenantOfStoreKey(k)
              return tenant ? { key: k, tenant, ttlMs: store.remainingTtl(k) } : { key: k, ttlMs: store.remainingTtl(k) }
            }),
          ),
        )
      }
      case Op.TICKET_KEY: {
        if (!mayReadConsumer(rights, 'node', 'node', consumers))
          return encodeError(Op.TICKET_KEY, req.id, Status.DENIED, `the ${rights.who} may not read the ticket keys of consumer "node"`)
        const k = deps.ticketKey()
        if (!k) return encodeReply(Op.TICKET_KEY, req.id, Status.NOT_FOUND)
        const body = encodeTicketKeyBody(k)
        k.key.fill(0)
        return secretReply(Op.TICKET_KEY, req.id, body)
      }
      case Op.TICKET_WINDOW:
        // Retired: it returned the raw epoch secrets, from which every consumer's keys derive.
        return encodeError(
          Op.TICKET_WINDOW,
          req.id,
          Status.DENIED,
          "TICKET_WINDOW is retired: epoch secrets never leave the daemon; ask CONSUMER_KEYS for one consumer's keys",
        )
      case Op.CONSUMER_KEYS: {
        if (!mayReadConsumer(rights, req.format, req.consumer, consumers))
          return encodeError(
            Op.CONSUMER_KEYS,
            req.id,
            Status.DENIED,
            `the ${rights.who} may not read the ticket keys of consumer ${JSON.stringify(req.consumer)} (format ${JSON.stringify(req.format)})`,
          )
        const w = deps.consumerKeys?.(req.format, req.consumer)
        if (!w) return encodeReply(Op.CONSUMER_KEYS, req.id, Status.NOT_FOUND)
        const body = encodeConsumerKeysBody(w)
        for (const k of w.keys) for (const b of [k.name, k.aes, k.hmac]) b.fill(0)
        return secretReply(Op.CONSUMER_KEYS, req.id, body)
      }
      case Op.FLUSH: {
        if (!admin) return encodeError(Op.FLUSH, req.id, Status.DENIED, 'flushing is allowed on the admin socket only')
        return encodeReply(Op.FLUSH, req.id, Status.OK, json({ flushed: store.flush() }))
      }
    }
  }
}
