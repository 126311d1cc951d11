import type { OpenAIModelList } from "../../lib/wire/openai.js";

/** `GET /v1/models`: the public model names a key may use, in OpenAI's list format. */
export function renderModelList(names: string[], created: number): OpenAIModelList {
  return {
    object: "list",
    data: names.map((id) => renderModel(id, created)),
  };
}

/** `GET /v1/models/{id}`: one model as the list shows it. */
export function renderModel(id: string, created: number): OpenAIModelList["data"][number] {
  return { id, object: "model", created, owned_by: "switchyard" };
}
