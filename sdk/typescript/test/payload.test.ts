import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { NotSerializableError } from "../src/errors";
import {
  BINARY_CONTENT_TYPE,
  decodePayload,
  encodePayload,
  InvalidJsonError,
  isJsonContentType,
  JSON_CONTENT_TYPE,
  payloadSize,
} from "../src/payload";
import type { Payload } from "../src/proto";

function dataOf(payload: Payload): Buffer {
  assert.equal(payload.kind?.$case, "data");
  return payload.kind.$case === "data" ? payload.kind.data : Buffer.alloc(0);
}

describe("encodePayload", () => {
  it("sends JSON as UTF-8 bytes with application/json", () => {
    const payload = encodePayload({ text: "héllo ✓", n: [1, 2.5, null, true] });
    assert.equal(payload.contentType, JSON_CONTENT_TYPE);
    assert.equal(dataOf(payload).toString("utf8"), '{"text":"héllo ✓","n":[1,2.5,null,true]}');
  });

  it("sends undefined as null, and keeps an explicit content type", () => {
    assert.equal(dataOf(encodePayload(undefined)).toString(), "null");
    assert.equal(encodePayload({}, "application/vnd.x+json").contentType, "application/vnd.x+json");
  });

  it("sends bytes as they are", () => {
    const bytes = new Uint8Array([0, 1, 2, 255]);
    const payload = encodePayload(bytes);
    assert.equal(payload.contentType, BINARY_CONTENT_TYPE);
    assert.deepEqual([...dataOf(payload)], [0, 1, 2, 255]);
    assert.equal(encodePayload(Buffer.from("x"), "text/plain").contentType, "text/plain");
  });

  it("refuses NaN and Infinity rather than sending null in their place", () => {
    for (const bad of [Number.NaN, { a: Number.POSITIVE_INFINITY }, [1, Number.NEGATIVE_INFINITY], { n: { x: Number.NaN } }]) {
      assert.throws(() => encodePayload(bad), (error: unknown) => {
        assert.ok(error instanceof NotSerializableError);
        assert.match(error.message, /^NaN and Infinity are not JSON numbers: got (NaN|-?Infinity)/);
        return true;
      });
    }
    assert.throws(() => encodePayload({ a: Number.NaN }), /at key "a"/);
    assert.equal(dataOf(encodePayload({ ok: 1e308, zero: -0 })).toString(), '{"ok":1e+308,"zero":0}');
  });

  it("refuses values JSON cannot carry", () => {
    assert.throws(() => encodePayload({ big: 1n }), NotSerializableError);
    const cycle: Record<string, unknown> = {};
    cycle["self"] = cycle;
    assert.throws(() => encodePayload(cycle), NotSerializableError);
  });
});

describe("decodePayload", () => {
  it("accepts JSON as bytes and as a google.protobuf.Value", () => {
    const asBytes: Payload = {
      kind: { $case: "data", data: Buffer.from('{"a":[1,{"b":null}]}') },
      contentType: "application/json; charset=utf-8",
    };
    const asValue: Payload = { kind: { $case: "json", json: { a: [1, { b: null }] } }, contentType: "" };
    assert.deepEqual(decodePayload(asBytes), { a: [1, { b: null }] });
    assert.deepEqual(decodePayload(asValue), { a: [1, { b: null }] });
  });

  it("treats an empty content type and *+json as JSON, anything else as bytes", () => {
    assert.deepEqual(decodePayload({ kind: { $case: "data", data: Buffer.from("[1]") }, contentType: "" }), [1]);
    assert.equal(
      decodePayload({ kind: { $case: "data", data: Buffer.from('"x"') }, contentType: "application/ld+json" }),
      "x",
    );
    const raw = decodePayload({ kind: { $case: "data", data: Buffer.from([7, 8]) }, contentType: "image/png" });
    assert.ok(raw instanceof Uint8Array);
    assert.deepEqual([...raw], [7, 8]);
  });

  it("gives null for an absent or empty payload", () => {
    assert.equal(decodePayload(undefined), null);
    assert.equal(decodePayload({ kind: undefined, contentType: "" }), null);
    assert.equal(decodePayload({ kind: { $case: "data", data: Buffer.alloc(0) }, contentType: JSON_CONTENT_TYPE }), null);
  });

  it("reports bad JSON", () => {
    const bad: Payload = { kind: { $case: "data", data: Buffer.from("{nope") }, contentType: JSON_CONTENT_TYPE };
    assert.throws(() => decodePayload(bad), InvalidJsonError);
  });

  it("round-trips what it encodes", () => {
    for (const value of [0, -1.25, "", "✓", [], {}, { nested: { list: [1, "2", false, null] } }, null]) {
      assert.deepEqual(decodePayload(encodePayload(value)), value);
    }
  });
});

describe("helpers", () => {
  it("recognises JSON content types", () => {
    for (const type of ["", "application/json", "Application/JSON; charset=utf-8", "application/problem+json"]) {
      assert.ok(isJsonContentType(type), type);
    }
    for (const type of ["text/plain", "application/octet-stream", "application/jsonx"]) {
      assert.ok(!isJsonContentType(type), type);
    }
  });

  it("measures payloads", () => {
    assert.equal(payloadSize(encodePayload({ a: 1 })), 7);
    assert.equal(payloadSize({ kind: { $case: "json", json: [1, 2] }, contentType: "" }), 5);
    assert.equal(payloadSize(undefined), 0);
  });
});
