import type { OpenAIModelList } from "../../lib/wire/openai.js";

/** `GET /v1/models`: the public model names a key may use, in OpenAI's list format. */
export function renderModelList(names: string[], created: number): OpenAIModelList {
  return {
    object: "list",
    data: names.map((id) => ({ id, object: "model", created, owned_by: "switchyard" })),
  };
}
