/**
 * The numbered tables of both wires (ops, statuses, message types) are plain `as const` objects,
 * NAME: number, append only. This turns one into its names, for logs and error messages.
 */

/** A function naming each number of `table`; a number not in it reads `kind(n)`. */
export function namer(table: Readonly<Record<string, number>>, kind: string): (n: number) => string {
  const names = new Map<number, string>(Object.entries(table).map(([k, v]) => [v, k]))
  return (n) => names.get(n) ?? `${kind}(${n})`
}
