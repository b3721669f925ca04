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
  connectivityState,
  credentials as grpcCredentials,
  Metadata,
  type ServiceError,
  status as Status,
} from "@grpc/grpc-js";

import { MeshplaneError, UnavailableError } from "./errors";
import { consoleLogger, type Logger } from "./log";
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

/**
 * TLS to the control plane (the `tls` option). Files are PEM; they are read when the connection is made. The
 * client certificate and key are read again when they change (see {@link ConnectionOptions.tls}); the CA file is
 * read once.
 */
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
  /** Where the settings came from (for messages). */
  names: TlsSettingNames;
  /** The client certificate's files, read again when they change; undefined without a client certificate. */
  certFiles: ClientCertFiles | undefined;
}

/** How often, at most, the client certificate files are read again (on a new call or stream, after it passed). */
export const CERT_CHECK_INTERVAL_MS = 1_000;

/**
 * The client certificate of the `tls` option (or of the environment), read from its PEM files and read again when
 * they change (cert-manager renews them in place), so that new connections present the pair currently in the files.
 *
 * It compares the files' content (not their modification time), at most once per {@link CERT_CHECK_INTERVAL_MS}.
 * New files that cannot be read or do not load (say the certificate was replaced and its key not yet) leave the
 * last good pair in use; that is logged once per change of the files, not once per look.
 */
export class ClientCertFiles {
  private current: ChannelCredentials;
  private currentCert: Buffer;
  private certPem: Buffer; // the content last tried, good or not
  private keyPem: Buffer;
  private readFailure = ""; // the last failure to read the files, already logged
  private nextCheck: number;

  /** Reads the pair once; throws a {@link MeshplaneError} naming the setting at fault. */
  constructor(
    private readonly certFile: string,
    private readonly keyFile: string,
    private readonly names: TlsSettingNames,
    private readonly roots: Buffer | null,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.keyPem = readSetting(keyFile, names.keyFile);
    this.certPem = readSetting(certFile, names.certFile);
    this.current = this.load(this.certPem, this.keyPem);
    this.currentCert = this.certPem;
    this.nextCheck = now() + CERT_CHECK_INTERVAL_MS;
  }

  /** The credentials of the pair in use. */
  get credentials(): ChannelCredentials {
    return this.current;
  }

  /** The PEM certificate (chain) in use. */
  get certificate(): Buffer {
    return this.currentCert;
  }

  /**
   * New credentials when the files changed and load; undefined otherwise, or when they were looked at less than
   * {@link CERT_CHECK_INTERVAL_MS} ago.
   */
  renewed(): ChannelCredentials | undefined {
    const now = this.now();
    if (now < this.nextCheck) {
      return undefined;
    }
    this.nextCheck = now + CERT_CHECK_INTERVAL_MS;
    let keyPem: Buffer;
    let certPem: Buffer;
    try {
      keyPem = readSetting(this.keyFile, this.names.keyFile);
      certPem = readSetting(this.certFile, this.names.certFile);
    } catch (error) {
      const message = (error as Error).message;
      if (message !== this.readFailure) {
        this.readFailure = message;
        this.logger.warn(
          `cannot read the TLS client certificate files again; still presenting the previous certificate: ${message}`,
        );
      }
      return undefined;
    }
    this.readFailure = "";
    if (certPem.equals(this.certPem) && keyPem.equals(this.keyPem)) {
      return undefined;
    }
    this.certPem = certPem;
    this.keyPem = keyPem;
    let credentials: ChannelCredentials;
    try {
      credentials = this.load(certPem, keyPem);
    } catch (error) {
      this.logger.warn(
        "the TLS client certificate files changed but do not load; still presenting the previous certificate: " +
          (error as Error).message,
      );
      return undefined;
    }
    this.current = credentials;
    this.currentCert = certPem;
    this.logger.info(
      `TLS client certificate reloaded from ${this.certFile}${describeCertificate(certPem)}; new connections present it`,
    );
    return credentials;
  }

  private load(certPem: Buffer, keyPem: Buffer): ChannelCredentials {
    try {
      return grpcCredentials.createSsl(this.roots, keyPem, certPem);
    } catch (error) {
      const { certFile, keyFile } = this.names;
      throw new MeshplaneError(
        `TLS ${certFile} and ${keyFile} (${this.certFile}, ${this.keyFile}): ${(error as Error).message}`,
        { cause: error },
      );
    }
  }
}

/** " (subject ...; issuer ...; valid to ...)" of a PEM certificate, "" if it does not parse. */
function describeCertificate(pem: Buffer): string {
  try {
    const cert = new X509Certificate(pem);
    const line = (name: string): string => name.replace(/\n/g, ", ");
    return ` (subject ${line(cert.subject)}; issuer ${line(cert.issuer)}; valid to ${cert.validTo})`;
  } catch {
    return "";
  }
}

// What a refused TLS handshake looks like from the client: a TLS alert from the plane, or the connection closed or
// reset during (TLS 1.3: right after) the handshake. Not: a refused TCP connection, an unknown host, or a plane
// certificate that this side did not accept (the message then says so).
const REFUSED_HANDSHAKE = new RegExp(
  [
    "\\balert\\b", // e.g. "tlsv13 alert certificate required", "alert unknown ca"
    "handshake",
    "Failed to connect",
    "ECONNRESET",
    "EPIPE",
    "socket hang up",
    "socket disconnected",
    "secure TLS connection",
    "Connection dropped",
    "Connection closed",
  ].join("|"),
  "i",
);
const CAUSE_SHOWN = new RegExp(
  [
    "ECONNREFUSED",
    "ENOTFOUND",
    "EAI_AGAIN",
    "self[- ]signed",
    "unable to (get|verify)",
    "certificate has expired",
    "not yet valid",
    "does not match certificate",
    "altnames",
  ].join("|"),
  "i",
);

/**
 * What to check when a connection attempt over the SDK's TLS settings failed as a refused handshake does (the plane
 * requires a client certificate and none or an untrusted one was shown); undefined otherwise.
 */
function tlsHint(setup: TlsSetup, error: Error): string | undefined {
  const { message } = error;
  if (!(error instanceof UnavailableError) || !REFUSED_HANDSHAKE.test(message) || CAUSE_SHOWN.test(message)) {
    return undefined;
  }
  const { certFile, keyFile } = setup.names;
  if (setup.certFiles === undefined) {
    return `over TLS, no client certificate was shown: if the plane requires one, set ${certFile} and ${keyFile}`;
  }
  return (
    `over TLS: if the plane requires client certificates, check ${certFile} / ${keyFile} ` +
    "and that the plane's client CA signed the certificate"
  );
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
 * its key (or the reverse). `logger` takes the messages of the client certificate's renewal.
 */
export function tlsSetup(tls: TlsOptions | boolean | undefined, logger: Logger): TlsSetup | undefined {
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
  let certFiles: ClientCertFiles | undefined;
  let credentials: ChannelCredentials;
  if (certFile && keyFile) {
    certFiles = new ClientCertFiles(certFile, keyFile, names, roots, logger);
    credentials = certFiles.credentials;
  } else {
    try {
      credentials = grpcCredentials.createSsl(roots);
    } catch (error) {
      throw new MeshplaneError(`TLS ${names.caFile}: ${(error as Error).message}`, { cause: error });
    }
  }
  const channelOptions: ChannelOptions = serverName
    ? { "grpc.ssl_target_name_override": serverName, "grpc.default_authority": serverName }
    : {};
  return { credentials, channelOptions, names, certFiles };
}

/** How to reach the control plane. */
export interface ConnectionOptions {
  /** Bearer token sent as `authorization: Bearer <token>` on every call (default: `MESHPLANE_TOKEN`). */
  token?: string;
  /**
   * TLS to the control plane: `true` verifies it with the system's roots; an object says which CA, client
   * certificate and server name; `false` is plaintext. Default: the `MESHPLANE_TLS*` environment variables
   * ({@link defaultTls}), else plaintext.
   *
   * A client certificate renews without a restart: when the content of its files changed (looked at, at most
   * once a second, on a new call, stream or reconnect), the next ones go over a new connection that presents the
   * new pair; calls and streams already under way finish on the old one. New files that do not load (a key that
   * does not match the certificate mid-rotation, a missing file) leave the last good pair in use, with one warning
   * per change. The CA file is read once.
   */
  tls?: TlsOptions | boolean;
  /**
   * Channel credentials (default: from `tls`, else insecure, i.e. plaintext HTTP/2); not together with `tls`.
   * Used as given: a client certificate in them is never renewed.
   */
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
  /**
   * Set by the agent's link and by MeshClient. Of a target naming several addresses (`ipv4:host:port,host:port`,
   * a DNS name with several addresses), each call or stream goes to the next ready one (gRPC's round_robin policy)
   * rather than all to the first that accepted a connection (pick_first); and the channels' connections are their
   * own (never shared with another channel to the target), so that {@link Connection.reconnect} really opens new
   * ones. One address works as before.
   */
  roundRobin?: boolean;
  /** Where the renewal of the client certificate logs (default: the stderr logger, see {@link consoleLogger}). */
  logger?: Logger;
}

const ROUND_ROBIN = JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] });

// A replaced channel is closed once no call waits on it for a connection, or after this long.
const RETIRE_WAIT_MS = 20_000;
const RETIRE_POLL_MS = 50;

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
  private channels: Channel[];
  private readonly token: string | undefined;
  private credentials: ChannelCredentials;
  private readonly channelOptions: ChannelOptions;
  private readonly tls: TlsSetup | undefined;
  private readonly clients = new Map<unknown, Client[]>();
  private readonly retiring = new Set<Channel>();
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
      tls = tlsSetup(options.tls, options.logger ?? consoleLogger());
    }
    this.tls = tls;
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
      // grpc-js's global pool; several connections need channels of their own, and so does reconnect().
      ...(size > 1 || options.roundRobin ? { "grpc.use_local_subchannel_pool": 1 } : {}),
      ...(options.roundRobin ? { "grpc.service_config": ROUND_ROBIN } : {}),
      ...tls?.channelOptions,
      ...options.channelOptions,
    };
    this.channelOptions = channelOptions;
    this.channels = Array.from({ length: size }, () => new Channel(target, this.credentials, channelOptions));
  }

  /**
   * A hint for a log line, when `error` (of a connection attempt) looks like the plane refusing the TLS handshake,
   * e.g. for a missing or untrusted client certificate; undefined otherwise, or without the SDK's TLS settings.
   */
  tlsHint(error: Error): string | undefined {
    return this.tls === undefined ? undefined : tlsHint(this.tls, error);
  }

  /**
   * If the client certificate's files changed (and load), new channels with the new pair replace the current ones
   * for what comes next; the old ones close once the calls waiting on them have started.
   */
  private renewCredentials(): void {
    const credentials = this.closed ? undefined : this.tls?.certFiles?.renewed();
    if (credentials === undefined) {
      return;
    }
    const old = this.channels;
    this.credentials = credentials;
    this.channels = old.map(() => new Channel(this.target, credentials, this.channelOptions));
    this.clients.clear();
    for (const channel of old) {
      this.retire(channel, Date.now() + RETIRE_WAIT_MS);
    }
  }

  /**
   * Replaces the channels by new ones, which start connecting now (new TCP connections: behind a load balancer,
   * possibly to another replica; a DNS name is resolved again). Calls under way finish on the old ones, which close
   * once no call waits on them for a connection.
   */
  reconnect(): void {
    if (this.closed) {
      return;
    }
    const old = this.channels;
    this.channels = old.map(() => new Channel(this.target, this.credentials, this.channelOptions));
    this.clients.clear();
    for (const channel of old) {
      this.retire(channel, Date.now() + RETIRE_WAIT_MS);
    }
    for (const channel of this.channels) {
      channel.getConnectivityState(true);
    }
  }

  /** Closes `channel` once no call waits on it for a connection (calls under way finish on it), or at `deadline`. */
  private retire(channel: Channel, deadline: number): void {
    this.retiring.add(channel);
    if (channel.getConnectivityState(false) === connectivityState.CONNECTING && Date.now() < deadline) {
      setTimeout(() => {
        if (this.retiring.has(channel)) {
          this.retire(channel, deadline);
        }
      }, RETIRE_POLL_MS).unref();
      return;
    }
    this.retiring.delete(channel);
    channel.close();
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
    this.renewCredentials();
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
    for (const channel of [...this.channels, ...this.retiring]) {
      channel.close();
    }
    this.retiring.clear();
  }
}
