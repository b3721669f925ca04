import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { InvalidArgumentError } from "../src/errors";
import { checkJsonDepth, jsonDepthProblem, MAX_JSON_DEPTH } from "../src/limits";
import { encodePayload } from "../src/payload";

// JSON nested deeper than the plane takes (32 levels of objects and arrays) is refused in the publish call itself;
// the plane would answer it with an `error` frame the handler never sees.
describe("JSON nesting, as the plane counts it", () => {
  const tooDeep = "JSON nested more than 32 levels deep";
  const bytes = (text: string): Buffer => Buffer.from(text, "utf8");

  it("tells JSON nested too deep from JSON that only holds many brackets", () => {
    const cases: Array<[string, string | undefined]> = [
      ["[".repeat(32) + "1" + "]".repeat(32), undefined],
      ["[".repeat(33) + "1" + "]".repeat(33), tooDeep],
      ['{"a":'.repeat(33) + "1" + "}".repeat(33), tooDeep],
      ['["' + "[{".repeat(40) + '"]', undefined], // brackets in a string do not nest
      ['["\\"' + "[".repeat(40) + '"]', undefined], // nor after an escaped quote
      ['["\\\\",' + "[".repeat(40) + "]".repeat(41), tooDeep], // a string ending in an escaped backslash ends there
      ["[]".repeat(100), undefined], // many brackets, none deep
    ];
    assert.equal(MAX_JSON_DEPTH, 32);
    for (const [text, expected] of cases) {
      assert.equal(jsonDepthProblem(bytes(text)), expected, text.slice(0, 40));
    }
  });

  it("refuses a JSON payload nested too deep, and leaves bytes alone", () => {
    let value: unknown = 1;
    for (let level = 0; level < 33; level += 1) {
      value = [value];
    }
    assert.throws(
      () => checkJsonDepth(encodePayload(value)),
      (error: unknown) =>
        error instanceof InvalidArgumentError &&
        error.message === `invalid argument: payload: ${tooDeep}` &&
        error.violations[0]?.field === "payload",
    );
    checkJsonDepth(encodePayload(bytes("[".repeat(40))));
    checkJsonDepth(encodePayload((value as unknown[])[0])); // 32 levels: taken
  });
});
