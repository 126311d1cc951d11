import { describe, expect, it } from "vitest";
import { renderModelList } from "./models.js";

describe("renderModelList", () => {
  it("lists the model names as OpenAI models owned by switchyard", () => {
    expect(renderModelList(["gpt-4o", "claude"], 1700000000)).toEqual({
      object: "list",
      data: [
        { id: "gpt-4o", object: "model", created: 1700000000, owned_by: "switchyard" },
        { id: "claude", object: "model", created: 1700000000, owned_by: "switchyard" },
      ],
    });
  });
});
