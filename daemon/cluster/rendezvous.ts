/**
 * Rendezvous (highest random weight) hashing: the owners of a key are the R members with the
 * highest score(key, member). A membership change moves only the keys whose top R changed.
 * The hash is a fast non-cryptographic mix (murmur3's finaliser): owner placement needs spread,
 * not secrecy, and a re-placement scan hashes every stored key against every member.
 */

/** 32-bit hash of a string's UTF-16 units (keys are latin1 strings: one unit per byte). */
export function hashString(s: string, seed = 0x9747b28c): number {
  let h = seed ^ s.length
  for (let i = 0; i < s.length; i++) {
    h = Math.imul(h ^ s.charCodeAt(i), 0x5bd1e995)
    h ^= h >>> 13
  }
  return mix(h)
}

function mix(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** A member's seed, from its node id (hex). */
export function memberSeed(id: string): number {
  return hashString(id, 0x1b873593)
}

/**
 * The `r` owners of `key` among `members` (node ids), best first. `seeds` caches memberSeed.
 * Ties (vanishingly rare) fall to the lower id, so every host computes the same list.
 */
export function owners(key: string, members: readonly string[], r: number, seeds?: Map<string, number>): string[] {
  const kh = hashString(key)
  const scored = members.map((id) => {
    let seed = seeds?.get(id)
    if (seed === undefined) {
      seed = memberSeed(id)
      seeds?.set(id, seed)
    }
    return { id, score: mix(kh ^ seed) }
  })
  scored.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1))
  return scored.slice(0, r).map((x) => x.id)
}
