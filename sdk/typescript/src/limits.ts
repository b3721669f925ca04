/**
 * What the control plane refuses of an agent, checked before anything is sent (docs/agent-link.md §3, §7).
 *
 * A publish goes out on the agent's stream, where the plane can only answer a refusal with an `error` frame, long
 * after `publish` returned; and an output larger than the plane's gRPC message limit breaks the stream instead of
 * failing the task. So the SDK applies the plane's own rules first (controlplane/validation.py, the channel service,
 * the agent link servicer) and the handler learns at once. Keep these in step with the plane's.
 */

import { status as Status } from "@grpc/grpc-js";

import { type FieldViolation, InvalidArgumentError, ResourceExhaustedError } from "./errors";
import { isJsonContentType, payloadSize } from "./payload";
import type { Payload } from "./proto";

const MAX_CHANNEL_LENGTH = 200;
/** Dot-separated segments of [A-Za-z0-9_-]: no leading, trailing or double dot. */
const CHANNEL_RE = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
const MAX_HEADERS = 64;
const MAX_HEADER_KEY_LENGTH = 256;
const MAX_HEADER_VALUE_LENGTH = 4096;
/** How deep objects and arrays may nest within each other in a JSON payload. */
export const MAX_JSON_DEPTH = 32;

/** The task error code of an output over the plane's max_payload_bytes. */
export const OUTPUT_TOO_LARGE = "output_too_large";

/** Why the plane would refuse `name` as a channel name, or undefined when it takes it. */
export function channelNameProblem(name: string): string | undefined {
  if (name.length <= MAX_CHANNEL_LENGTH && CHANNEL_RE.test(name)) {
    return undefined;
  }
  return (
    `channel must be 1-${MAX_CHANNEL_LENGTH} characters of [A-Za-z0-9_.-], without leading/trailing or double ` +
    `dots (got '${name}')`
  );
}

/** Characters as the plane counts them (code points), not UTF-16 units: "😀" is one. */
function characters(text: string, atMost: number): number {
  if (text.length <= atMost) {
    return text.length; // no more code points than units: nothing to count
  }
  let count = 0;
  for (const _ of text) {
    count += 1;
  }
  return count;
}

function headerViolations(headers: Readonly<Record<string, string>>): FieldViolation[] {
  const violations: FieldViolation[] = [];
  const entries = Object.entries(headers);
  if (entries.length > MAX_HEADERS) {
    violations.push({ field: "headers", description: `at most ${MAX_HEADERS} entries (got ${entries.length})` });
  }
  for (const [key, value] of entries) {
    const field = `headers['${key}']`;
    if (key === "" || characters(key, MAX_HEADER_KEY_LENGTH) > MAX_HEADER_KEY_LENGTH) {
      violations.push({ field, description: `keys must be 1-${MAX_HEADER_KEY_LENGTH} characters` });
    }
    if (characters(value, MAX_HEADER_VALUE_LENGTH) > MAX_HEADER_VALUE_LENGTH) {
      violations.push({ field, description: `values must be at most ${MAX_HEADER_VALUE_LENGTH} characters` });
    }
  }
  return violations;
}

/** Throws an {@link InvalidArgumentError} (naming every offending field) for a channel or headers the plane refuses. */
export function checkPublish(channel: string, headers: Readonly<Record<string, string>>): void {
  const violations = headerViolations(headers);
  const problem = channelNameProblem(channel);
  if (problem !== undefined) {
    violations.unshift({ field: "channel", description: problem });
  }
  if (violations.length > 0) {
    const described = violations.map((v) => `${v.field}: ${v.description}`).join("; ");
    throw new InvalidArgumentError(`invalid argument: ${described}`, {
      code: "INVALID_ARGUMENT",
      grpcCode: Status.INVALID_ARGUMENT,
      violations,
    });
  }
}

/**
 * The plane's words for a `what` of `size` bytes over `limit` (its max_payload_bytes), or undefined when it fits.
 * A limit of 0 is one the plane did not announce (an older plane): nothing is checked then.
 */
export function tooLarge(what: string, size: number, limit: number): string | undefined {
  if (limit <= 0 || size <= limit) {
    return undefined;
  }
  return `${what} is ${size} bytes; the limit is ${limit} bytes (max_payload_bytes)`;
}

/** Throws a {@link ResourceExhaustedError} for a published payload over `limit`, as the plane would. */
export function checkPayloadSize(payload: Payload, limit: number): void {
  const problem = tooLarge("payload", payloadSize(payload), limit);
  if (problem !== undefined) {
    throw new ResourceExhaustedError(problem, { code: "RESOURCE_EXHAUSTED", grpcCode: Status.RESOURCE_EXHAUSTED });
  }
}

/**
 * The plane's words for JSON text that nests objects and arrays more than {@link MAX_JSON_DEPTH} levels deep, or
 * undefined. Brackets inside strings do not count (a multi-byte UTF-8 character never holds an ASCII byte).
 */
export function jsonDepthProblem(data: Uint8Array): string | undefined {
  let depth = 0;
  let inString = false;
  let escaped = false;
  for (const byte of data) {
    if (inString) {
      if (escaped) {
        escaped = false;
      } else if (byte === 0x5c) {
        escaped = true; // backslash
      } else if (byte === 0x22) {
        inString = false;
      }
    } else if (byte === 0x22) {
      inString = true;
    } else if (byte === 0x5b || byte === 0x7b) {
      depth += 1; // [ or {
      if (depth > MAX_JSON_DEPTH) {
        return `JSON nested more than ${MAX_JSON_DEPTH} levels deep`;
      }
    } else if (byte === 0x5d || byte === 0x7d) {
      depth -= 1; // ] or }
    }
  }
  return undefined;
}

/** Throws an {@link InvalidArgumentError} for a published JSON payload nesting deeper than the plane takes. */
export function checkJsonDepth(payload: Payload): void {
  const kind = payload.kind;
  if (kind?.$case !== "data" || !isJsonContentType(payload.contentType)) {
    return;
  }
  const problem = jsonDepthProblem(kind.data);
  if (problem !== undefined) {
    throw new InvalidArgumentError(`invalid argument: payload: ${problem}`, {
      code: "INVALID_ARGUMENT",
      grpcCode: Status.INVALID_ARGUMENT,
      violations: [{ field: "payload", description: problem }],
    });
  }
}
