/**
 * What waits to be written on the agent link. Whatever queued up before the writer runs goes out
 * together: per-frame cost dominates the link's throughput, so task updates and results are
 * coalesced into multi-entry frames.
 */

import { type ConnectRequest, type TaskResult, type TaskUpdate, TaskUpdateKind } from "./proto";

/** `(task_id, attempt)` as a map key. */
export type RefKey = string;

export function refKey(taskId: string, attempt: number): RefKey {
  return `${attempt}:${taskId}`;
}

export function parseRefKey(key: RefKey): { taskId: string; attempt: number } {
  const colon = key.indexOf(":");
  return { taskId: key.slice(colon + 1), attempt: Number(key.slice(0, colon)) };
}

export const MAX_ENTRIES_PER_FRAME = 256;
export const MAX_BYTES_PER_FRAME = 4 * 1024 * 1024;
const ENTRY_OVERHEAD = 64;

/** Control frames (heartbeat, publish, draining, ...) in order, then updates, then results. */
export class Outbox {
  private control: ConnectRequest[] = [];
  private started: RefKey[] = [];
  private updates: TaskUpdate[] = [];
  private results = new Map<RefKey, TaskResult>();
  private listener: (() => void) | undefined;

  /** Called whenever something is queued (the session's writer schedules a flush). */
  setListener(listener: (() => void) | undefined): void {
    this.listener = listener;
    if (listener !== undefined && this.pending) {
      listener();
    }
  }

  get pending(): boolean {
    return this.control.length > 0 || this.started.length > 0 || this.updates.length > 0 || this.results.size > 0;
  }

  private notify(): void {
    this.listener?.();
  }

  /** A frame sent as it is, in order with the other control frames. */
  pushControl(frame: ConnectRequest): void {
    this.control.push(frame);
    this.notify();
  }

  /** A STARTED update (built only if the attempt has not finished by the next flush). */
  pushStarted(taskId: string, attempt: number): void {
    this.started.push(refKey(taskId, attempt));
    this.notify();
  }

  pushUpdate(update: TaskUpdate): void {
    this.updates.push(update);
    this.notify();
  }

  pushResult(result: TaskResult): void {
    this.results.set(refKey(result.taskId, result.attempt), result);
    this.notify();
  }

  discardResult(key: RefKey): void {
    this.results.delete(key);
  }

  /** Forget queued updates and results (a new session re-queues what it still needs). */
  clearTaskMessages(): void {
    this.started = [];
    this.updates = [];
    this.results.clear();
  }

  /** Forget everything queued. */
  clear(): void {
    this.control = [];
    this.clearTaskMessages();
  }

  /** Everything queued, as frames; the outbox is empty afterwards. */
  take(): ConnectRequest[] {
    const frames = this.control;
    this.control = [];
    const started = this.started;
    this.started = [];
    const results = this.results;
    this.results = new Map();
    // The plane takes a result (or progress) as "started" too: skipping STARTED for attempts that
    // already finished halves the entries a fast handler costs.
    const updates: TaskUpdate[] = [];
    for (const key of started) {
      if (!results.has(key)) {
        const { taskId, attempt } = parseRefKey(key);
        updates.push({ taskId, attempt, kind: TaskUpdateKind.TASK_UPDATE_KIND_STARTED, progress: 0, message: "" });
      }
    }
    updates.push(...this.updates);
    this.updates = [];
    for (let start = 0; start < updates.length; start += MAX_ENTRIES_PER_FRAME) {
      frames.push({
        frame: { $case: "taskUpdates", taskUpdates: { updates: updates.slice(start, start + MAX_ENTRIES_PER_FRAME) } },
      });
    }
    frames.push(...resultFrames([...results.values()]));
    return frames;
  }
}

function entrySize(result: TaskResult): number {
  const outcome = result.outcome;
  if (outcome?.$case === "output" && outcome.output.kind?.$case === "data") {
    return ENTRY_OVERHEAD + outcome.output.kind.data.length;
  }
  return ENTRY_OVERHEAD;
}

/** Results in frames of at most MAX_ENTRIES_PER_FRAME entries and about MAX_BYTES_PER_FRAME bytes. */
export function resultFrames(results: TaskResult[]): ConnectRequest[] {
  const frames: ConnectRequest[] = [];
  let chunk: TaskResult[] = [];
  let size = 0;
  for (const result of results) {
    const entry = entrySize(result);
    if (chunk.length > 0 && (chunk.length >= MAX_ENTRIES_PER_FRAME || size + entry > MAX_BYTES_PER_FRAME)) {
      frames.push({ frame: { $case: "taskResults", taskResults: { results: chunk } } });
      chunk = [];
      size = 0;
    }
    chunk.push(result);
    size += entry;
  }
  if (chunk.length > 0) {
    frames.push({ frame: { $case: "taskResults", taskResults: { results: chunk } } });
  }
  return frames;
}
