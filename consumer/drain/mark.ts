/**
 * The mark a resync or a repair leaves on the replica (the applied hash's
 * `resyncing` field, JSON) while it owns the replica: no batch is applied
 * while it is there.
 */

/** The replica's mark says which kind of run left it. */
export function markKind(mark: string): 'resync' | 'repair' {
  try {
    return (JSON.parse(mark) as { kind?: string }).kind === 'repair' ? 'repair' : 'resync';
  } catch {
    return 'resync';
  }
}
