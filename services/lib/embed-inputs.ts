// An embeddings request's inputs are texts (`inputs`) or token id lists (`token_inputs`), never
// both; the ingress, the router and the connectors each need to count them.

import type { EmbedParams } from "../../gen/switchyard/chat/v1/chat_pb.js";

/** How many inputs the request has (one vector comes back for each), texts or token lists. */
export function embedInputCount(params: EmbedParams): number {
  return params.tokenInputs.length > 0 ? params.tokenInputs.length : params.inputs.length;
}

/** The token ids a token-array request sends: exactly the tokens the upstream embeds. */
export function tokenInputCount(params: EmbedParams): number {
  let tokens = 0;
  for (const list of params.tokenInputs) tokens += list.ids.length;
  return tokens;
}
