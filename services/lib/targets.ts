/** Identity of an upstream deployment (provider + upstream model) in maps and metric labels. */
export function targetKey(provider: string, model: string): string {
  return `${provider}/${model}`;
}
