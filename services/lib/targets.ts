/**
 * Identity of an upstream deployment (provider + upstream model) in maps. Either name may hold
 * any character, so the pair is encoded rather than joined with a separator.
 */
export function targetKey(provider: string, model: string): string {
  return JSON.stringify([provider, model]);
}
