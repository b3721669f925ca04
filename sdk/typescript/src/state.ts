/** Key/value state in one namespace, with versions (compare-and-set) and TTLs, via StateService. */

import type { Connection } from "./connection";
import { durationFromMs, stateEntry } from "./convert";
import { NotFoundError } from "./errors";
import { encodePayload } from "./payload";
import { StateServiceClient } from "./proto";
import type { Page, StateEntry } from "./types";

/** Options of {@link StateStore.put}. */
export interface PutOptions {
  /** Expire this many milliseconds after the write (default: never). */
  ttlMs?: number;
  /**
   * Compare-and-set: write only if the stored version is this one (0 = the key must not exist);
   * otherwise the put rejects with {@link VersionConflictError} and changes nothing.
   */
  expectedVersion?: number;
  /** Content type of the value (default: application/json; application/octet-stream for bytes). */
  contentType?: string;
}

/** Options of {@link StateStore.delete}. */
export interface DeleteOptions {
  /** Delete only if the stored version is this one (else {@link VersionConflictError}). */
  expectedVersion?: number;
}

/** Options of {@link StateStore.list}. */
export interface ListOptions {
  prefix?: string;
  pageSize?: number;
  pageToken?: string;
}

/**
 * The state entries of one namespace. For an agent's handlers (`ctx.state`) the namespace is the
 * agent's name. Values are JSON (or bytes); every write increments the entry's version.
 */
export class StateStore {
  /** The namespace this store reads and writes. */
  readonly namespace: string;
  private readonly connection: Connection;
  private readonly timeoutMs: number | undefined;

  /** @internal Made by the SDK: `ctx.state` in handlers, `client.state(namespace)` for clients. */
  constructor(connection: Connection, namespace: string, timeoutMs?: number) {
    this.connection = connection;
    this.namespace = namespace;
    this.timeoutMs = timeoutMs;
  }

  private get stub(): StateServiceClient {
    return this.connection.client(StateServiceClient);
  }

  /** The entry, or undefined when it is absent (or expired). */
  async get<T = unknown>(key: string): Promise<StateEntry<T> | undefined> {
    const stub = this.stub;
    try {
      const response = await this.connection.unary(
        stub.getState.bind(stub),
        { namespace: this.namespace, key },
        this.timeoutMs,
      );
      return stateEntry<T>(response.entry);
    } catch (error) {
      if (error instanceof NotFoundError) {
        return undefined;
      }
      throw error;
    }
  }

  /** Creates or replaces the entry; resolves to it as stored (with its new version). */
  async put<T = unknown>(key: string, value: T, options: PutOptions = {}): Promise<StateEntry<T>> {
    const stub = this.stub;
    const response = await this.connection.unary(
      stub.putState.bind(stub),
      {
        namespace: this.namespace,
        key,
        value: encodePayload(value, options.contentType),
        ttl: options.ttlMs === undefined ? undefined : durationFromMs(options.ttlMs),
        expectedVersion: options.expectedVersion,
      },
      this.timeoutMs,
    );
    return stateEntry<T>(response.entry);
  }

  /** Deletes the entry; false if there was none. A version mismatch rejects with {@link VersionConflictError}. */
  async delete(key: string, options: DeleteOptions = {}): Promise<boolean> {
    const stub = this.stub;
    try {
      await this.connection.unary(
        stub.deleteState.bind(stub),
        { namespace: this.namespace, key, expectedVersion: options.expectedVersion },
        this.timeoutMs,
      );
      return true;
    } catch (error) {
      if (error instanceof NotFoundError) {
        return false;
      }
      throw error;
    }
  }

  /** One page of the namespace's live entries, by key. */
  async list(options: ListOptions = {}): Promise<Page<StateEntry>> {
    const stub = this.stub;
    const response = await this.connection.unary(
      stub.listStates.bind(stub),
      {
        namespace: this.namespace,
        keyPrefix: options.prefix ?? "",
        pageSize: options.pageSize ?? 0,
        pageToken: options.pageToken ?? "",
      },
      this.timeoutMs,
    );
    return { items: response.entries.map((e) => stateEntry(e)), nextPageToken: response.nextPageToken };
  }
}
