/** Payloads on the wire: JSON as UTF-8 bytes with `application/json`; bytes as they are. */

import { MeshplaneError, NotSerializableError } from "./errors";
import type { Payload } from "./proto";

export const JSON_CONTENT_TYPE = "application/json";
export const BINARY_CONTENT_TYPE = "application/octet-stream";

/** A payload whose JSON could not be parsed. */
export class InvalidJsonError extends MeshplaneError {}

/** True for JSON content types: empty, `application/json` (with parameters) or `*+json`. */
export function isJsonContentType(contentType: string): boolean {
  const base = contentType.split(";", 1)[0]?.trim().toLowerCase() ?? "";
  return base === "" || base === JSON_CONTENT_TYPE || base.endsWith("+json");
}

/** A value as a Payload: a Uint8Array (or Buffer) travels as bytes, anything else as JSON bytes. */
export function encodePayload(value: unknown, contentType?: string): Payload {
  if (value instanceof Uint8Array) {
    return {
      kind: { $case: "data", data: Buffer.from(value.buffer, value.byteOffset, value.byteLength) },
      contentType: contentType || BINARY_CONTENT_TYPE,
    };
  }
  let text: string | undefined;
  try {
    text = JSON.stringify(value, refuseNonFinite);
  } catch (error) {
    if (error instanceof NotSerializableError) {
      throw error;
    }
    const what = error instanceof Error ? error.message : String(error);
    throw new NotSerializableError(`cannot encode the value as JSON: ${what}`, { cause: error });
  }
  // JSON.stringify(undefined) (and of a function or symbol) yields undefined: send null.
  return { kind: { $case: "data", data: Buffer.from(text ?? "null", "utf8") }, contentType: contentType || JSON_CONTENT_TYPE };
}

/**
 * JSON.stringify would write NaN and ±Infinity as `null`, changing the data in silence: refuse them, as the
 * other SDKs and the plane do.
 */
function refuseNonFinite(key: string, value: unknown): unknown {
  if (typeof value === "number" && !Number.isFinite(value)) {
    const where = key === "" ? "" : ` (at key ${JSON.stringify(key)})`;
    throw new NotSerializableError(`NaN and Infinity are not JSON numbers: got ${value}${where}`);
  }
  return value;
}

/**
 * A Payload as a value: JSON (bytes or `google.protobuf.Value`) decoded, other content types as a
 * Uint8Array (a Buffer). An absent payload is `null`.
 */
export function decodePayload(payload: Payload | undefined): unknown {
  const kind = payload?.kind;
  if (payload === undefined || kind === undefined) {
    return null;
  }
  if (kind.$case === "json") {
    return kind.json ?? null;
  }
  if (!isJsonContentType(payload.contentType)) {
    return kind.data;
  }
  if (kind.data.length === 0) {
    return null;
  }
  try {
    return JSON.parse(kind.data.toString("utf8")) as unknown;
  } catch (error) {
    const what = error instanceof Error ? error.message : String(error);
    throw new InvalidJsonError(`payload is not valid JSON: ${what}`, { cause: error });
  }
}

/** Size in bytes of a payload's body (for JSON values, of their JSON text). */
export function payloadSize(payload: Payload | undefined): number {
  const kind = payload?.kind;
  if (kind === undefined) {
    return 0;
  }
  return kind.$case === "data" ? kind.data.length : Buffer.byteLength(JSON.stringify(kind.json) ?? "", "utf8");
}
