/** gRPC plumbing shared by the agent and the client: channels, TLS, auth metadata, unary calls -> the error tree. */

import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";

import {
  type CallOptions,
  Channel,
  type ChannelCredentials,
  type ChannelOptions,
  type Client,
  type ClientOptions,
  type ClientUnaryCall,
  credentials as grpcCredentials,
  Metadata,
  type ServiceError,
  status as Status,
} from "@grpc/grpc-js";

import { MeshplaneError, type UnavailableError } from "./errors";
import { errorFromStatus, isServiceError } from "./status";

/** Where agents and clients connect when no target is given: `MESHPLANE_TARGET` or this. */
export const DEFAULT_TARGET = "127.0.0.1:50051";

const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** The most connections one {@link Connection} opens. */
export const MAX_CONNECTIONS = 64;

/** `MESHPLANE_TARGET` or `127.0.0.1:50051`. */
export function defaultTarget(): string {
  return process.env["MESHPLANE_TARGET"] || DEFAULT_TARGET;
}

/** `MESHPLANE_TOKEN`, if set. */
export function defaultToken(): string | undefined {
  return process.env["MESHPLANE_TOKEN"] || undefined;
}

/** TLS to the control plane (the `tls` option). Files are PEM; they are read when the connection is made. */
export interface TlsOptions {
  /** Root certificates that verify the control plane's certificate (default: the system's roots). */
  caFile?: string;
  /** A client certificate, for a control plane that requires one (mutual TLS); needs `keyFile`. */
  certFile?: string;
  /** The client certificate's private key; needs `certFile`. */
  keyFile?: string;
  /** The name verified in the control plane's certificate instead of the target's host. */
  serverName?: string;
}

/** Names of the TLS settings in errors: the option's fields or the environment variables they came from. */
interface TlsSettingNames {
  caFile: string;
  certFile: string;
  keyFile: string;
}

const OPTION_NAMES: TlsSettingNames = { caFile: "tls.caFile", certFile: "tls.certFile", keyFile: "tls.keyFile" };
const ENV_NAMES: TlsSettingNames = {
  caFile: "MESHPLANE_TLS_CA_FILE",
  certFile: "MESHPLANE_TLS_CLIENT_CERT_FILE",
  keyFile: "MESHPLANE_TLS_CLIENT_KEY_FILE",
};

/**
 * The TLS settings of the environment, used when no `tls` option is given: `MESHPLANE_TLS_CA_FILE` set → TLS
 * verified with that CA; `MESHPLANE_TLS_CLIENT_CERT_FILE` and `MESHPLANE_TLS_CLIENT_KEY_FILE` → a client certificate
 * (and TLS); `MESHPLANE_TLS` "true" or "1" → TLS with the system's roots. Otherwise undefined: plaintext.
 * `MESHPLANE_TLS_SERVER_NAME` names the host to verify (when TLS is on).
 */
export function defaultTls(): TlsOptions | undefined {
  const env = process.env;
  const caFile = env[ENV_NAMES.caFile] || undefined;
  const certFile = env[ENV_NAMES.certFile] || undefined;
  const keyFile = env[ENV_NAMES.keyFile] || undefined;
  const on = (env["MESHPLANE_TLS"] ?? "").trim().toLowerCase();
  if (caFile === undefined && certFile === undefined && keyFile === undefined && on !== "true" && on !== "1") {
    return undefined;
  }
  const serverName = env["MESHPLANE_TLS_SERVER_NAME"] || undefined; // alone, it does not turn TLS on
  return { caFile, certFile, keyFile, serverName };
}

/** What a channel needs for TLS. */
interface TlsSetup {
  credentials: ChannelCredentials;
  channelOptions: ChannelOptions;
}

function readSetting(path: string, setting: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new MeshplaneError(`TLS ${setting}: cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * The credentials (and channel options) of the `tls` option, else of the environment; undefined means plaintext.
 * Throws a {@link MeshplaneError} naming the setting when a file cannot be read or a certificate comes without
 * its key (or the reverse).
 */
export function tlsSetup(tls: TlsOptions | boolean | undefined): TlsSetup | undefined {
  let names = OPTION_NAMES;
  let settings: TlsOptions | undefined;
  if (tls === undefined) {
    names = ENV_NAMES;
    settings = defaultTls();
  } else if (tls === true) {
    settings = {};
  } else if (tls !== false) {
    settings = tls;
  }
  if (settings === undefined) {
    return undefined;
  }
  const { caFile, certFile, keyFile, serverName } = settings;
  if (certFile && !keyFile) {
    throw new MeshplaneError(
      `TLS ${names.certFile} is set without ${names.keyFile}: a client certificate needs its key`,
    );
  }
  if (keyFile && !certFile) {
    throw new MeshplaneError(
      `TLS ${names.keyFile} is set without ${names.certFile}: a client key needs its certificate`,
    );
  }
  let roots: Buffer | null = null;
  if (caFile) {
    roots = readSetting(caFile, names.caFile);
    const blocks = roots.toString("latin1").match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
    const parsed = blocks.filter((block) => {
      try {
        new X509Certificate(block);
        return true;
      } catch {
        return false;
      }
    });
    if (parsed.length === 0) {
      throw new MeshplaneError(`TLS ${names.caFile}: no PEM certificate in ${caFile}`);
    }
  }
  const key = keyFile ? readSetting(keyFile, names.keyFile) : null;
  const chain = certFile ? readSetting(certFile, names.certFile) : null;
  let credentials: ChannelCredentials;
  try {
    credentials = grpcCredentials.createSsl(roots, key, chain);
  } catch (error) {
    const what = key ? `${names.certFile} and ${names.keyFile} (${certFile}, ${keyFile})` : names.caFile;
    throw new MeshplaneError(`TLS ${what}: ${(error as Error).message}`, { cause: error });
  }
  const channelOptions: ChannelOptions = serverName
    ? { "grpc.ssl_target_name_override": serverName, "grpc.default_authority": serverName }
    : {};
  return { credentials, channelOptions };
}

/** How to reach the control plane. */
export interface ConnectionOptions {
  /** Bearer token sent as `authorization: Bearer <token>` on every call (default: `MESHPLANE_TOKEN`). */
  token?: string;
  /**
   * TLS to the control plane: `true` verifies it with the system's roots; an object says which CA, client
   * certificate and server name; `false` is plaintext. Default: the `MESHPLANE_TLS*` environment variables
   * ({@link defaultTls}), else plaintext.
   */
  tls?: TlsOptions | boolean;
  /** Channel credentials (default: from `tls`, else insecure, i.e. plaintext HTTP/2); not together with `tls`. */
  credentials?: ChannelCredentials;
  /** Extra grpc-js channel options; they override the SDK's. */
  channelOptions?: ChannelOptions;
}

/** What the agent and the client add to {@link ConnectionOptions}. */
export interface ChannelSetup {
  /** Keepalive pings, for a long-lived stream (the agent's link). */
  keepalive?: boolean;
  /** How many connections calls take in turn (1 to {@link MAX_CONNECTIONS}; default 1). */
  connections?: number;
}

type ClientConstructor<T extends Client> = new (
  address: string,
  credentials: ChannelCredentials,
  options?: Partial<ClientOptions>,
) => T;

/** The last (fullest) overload of a generated unary method. */
export type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/**
 * Channels to the control plane, shared by every service client made from them. With `connections` > 1,
 * service clients take the channels in turn, each on its own TCP connection.
 */
export class Connection {
  readonly target: string;
  private readonly channels: Channel[];
  private readonly token: string | undefined;
  private readonly credentials: ChannelCredentials;
  private readonly clients = new Map<unknown, Client[]>();
  private next = 0;
  private closed = false;

  constructor(target: string, options: ConnectionOptions & ChannelSetup = {}) {
    const size = options.connections ?? 1;
    if (!Number.isInteger(size) || size < 1 || size > MAX_CONNECTIONS) {
      throw new RangeError(`connections must be between 1 and ${MAX_CONNECTIONS}, got ${size}`);
    }
    this.target = target;
    this.token = options.token;
    let tls: TlsSetup | undefined;
    if (options.credentials !== undefined) {
      if (options.tls !== undefined) {
        throw new TypeError("give the tls option or credentials, not both");
      }
    } else {
      tls = tlsSetup(options.tls);
    }
    this.credentials = options.credentials ?? tls?.credentials ?? grpcCredentials.createInsecure();
    const channelOptions: ChannelOptions = {
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      // Come back quickly after a control plane restart (grpc-js would otherwise back off up to 120 s);
      // the agent's own reconnect loop adds jittered backoff on top.
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 5_000,
      ...(options.keepalive
        ? {
            // Notices a vanished control plane (no RST) within ~15 s; not more often than the plane
            // allows (one ping per 5 s without data), or it closes the connection.
            "grpc.keepalive_time_ms": 10_000,
            "grpc.keepalive_timeout_ms": 5_000,
            "grpc.keepalive_permit_without_calls": 1,
          }
        : {}),
      // Channels with equal options to one target share one subchannel (one TCP connection) through
      // grpc-js's global pool; several connections need channels of their own.
      ...(size > 1 ? { "grpc.use_local_subchannel_pool": 1 } : {}),
      ...tls?.channelOptions,
      ...options.channelOptions,
    };
    this.channels = Array.from({ length: size }, () => new Channel(target, this.credentials, channelOptions));
  }

  /** Call metadata: the bearer token, when there is one. */
  metadata(): Metadata {
    const metadata = new Metadata();
    if (this.token) {
      metadata.set("authorization", `Bearer ${this.token}`);
    }
    return metadata;
  }

  /** A generated service client on the next channel in turn (for one call or stream). */
  client<T extends Client>(constructor: ClientConstructor<T>): T {
    const index = this.next;
    this.next = (index + 1) % this.channels.length;
    let clients = this.clients.get(constructor) as T[] | undefined;
    if (clients === undefined) {
      clients = [];
      this.clients.set(constructor, clients);
    }
    let client = clients[index];
    if (client === undefined) {
      client = new constructor(this.target, this.credentials, { channelOverride: this.channels[index] });
      clients[index] = client;
    }
    return client;
  }

  /** A unary call; a failure rejects with the matching {@link RpcError} (UnavailableError once closed). */
  unary<Req, Res>(method: UnaryMethod<Req, Res>, request: Req, timeoutMs?: number): Promise<Res> {
    if (this.closed) {
      return Promise.reject(this.closedError());
    }
    const options: Partial<CallOptions> = timeoutMs === undefined ? {} : { deadline: Date.now() + timeoutMs };
    return new Promise<Res>((resolve, reject) => {
      method(request, this.metadata(), options, (error, response) => {
        if (error) {
          reject(this.error(error));
        } else {
          resolve(response);
        }
      });
    });
  }

  /** The SDK error for whatever a call failed with. */
  error(error: unknown): Error {
    if (isServiceError(error)) {
      return errorFromStatus(error, this.target);
    }
    return error instanceof Error ? error : new Error(String(error));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Throws {@link closedError} if the connection is closed (before a stream is opened on it). */
  throwIfClosed(): void {
    if (this.closed) {
      throw this.closedError();
    }
  }

  /** What a call or stream refused, or a wait given up, because the connection is closed rejects with. */
  closedError(): UnavailableError {
    return errorFromStatus({ code: Status.UNAVAILABLE, details: "the client is closed" }, this.target) as UnavailableError;
  }

  /** Closes the channels (idempotent); calls in progress fail. */
  close(): void {
    if (this.closed) {
      return;
    }
    this.closed = true;
    this.clients.clear();
    for (const channel of this.channels) {
      channel.close();
    }
  }
}
