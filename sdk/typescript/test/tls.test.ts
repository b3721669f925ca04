// TLS to the control plane: MeshClient and Agent against in-process fakes (a TaskService answering GetTask, an
// AgentLinkService answering the registration) serving TLS, with and without client certificates. The
// certificates are made here with the openssl CLI, into a temporary directory.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";

import {
  credentials as grpcCredentials,
  type sendUnaryData,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";

import {
  AgentLinkServiceService,
  type ConnectRequest,
  ConnectResponse,
} from "../../../generated/ts/meshplane/v1/agent_link";
import { Task, TaskState } from "../../../generated/ts/meshplane/v1/task";
import {
  type GetTaskRequest,
  GetTaskResponse,
  TaskServiceService,
} from "../../../generated/ts/meshplane/v1/task_service";
import { Agent } from "../src/agent";
import { MeshClient } from "../src/client";
import { CERT_CHECK_INTERVAL_MS, ClientCertFiles, defaultTls, type TlsOptions } from "../src/connection";
import { MeshplaneError, UnavailableError } from "../src/errors";
import type { Logger } from "../src/log";
import { bindLocal } from "./support";

const TLS_ENV = [
  "MESHPLANE_TLS",
  "MESHPLANE_TLS_CA_FILE",
  "MESHPLANE_TLS_CLIENT_CERT_FILE",
  "MESHPLANE_TLS_CLIENT_KEY_FILE",
  "MESHPLANE_TLS_SERVER_NAME",
] as const;

// Hermetic: TLS settings of the environment running the tests would change how every client connects.
for (const name of TLS_ENV) {
  delete process.env[name];
}

/** Sets environment variables for one test; afterEach clears them. */
function setEnv(values: Partial<Record<(typeof TLS_ENV)[number], string>>): void {
  Object.assign(process.env, values);
}

afterEach(() => {
  for (const name of TLS_ENV) {
    delete process.env[name];
  }
});

// ---------------------------------------------------------------- certificates

interface Pki {
  dir: string;
  caFile: string;
  otherCaFile: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A client certificate and key from another CA. */
  strangerCert: string;
  strangerKey: string;
}

function openssl(dir: string, ...args: string[]): void {
  try {
    execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === "ENOENT") {
      throw new Error("the TLS tests need the openssl CLI (not found on PATH)");
    }
    throw new Error(`openssl ${args.join(" ")} failed: ${e.stderr?.toString() ?? e.message}`);
  }
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

function makeCa(dir: string, name: string): void {
  const ca = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"];
  const files = ["-keyout", `${name}.key`, "-out", `${name}.pem`];
  openssl(dir, "req", "-x509", ...EC, ...files, "-days", "1", "-subj", `/CN=${name}`, ...ca);
}

function issue(dir: string, ca: string, name: string, serial: number, extensions: string): void {
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(dir, "req", ...EC, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
  openssl(dir, "x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`,
    "-set_serial", String(serial), "-days", "1", "-out", `${name}.pem`, "-extfile", `${name}.ext`);
}

function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), "meshplane-tls-"));
  makeCa(dir, "ca");
  makeCa(dir, "other-ca");
  const leaf = "basicConstraints=CA:FALSE\n";
  issue(dir, "ca", "server", 2, `${leaf}subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n`);
  issue(dir, "ca", "client", 3, `${leaf}extendedKeyUsage=clientAuth\n`);
  issue(dir, "other-ca", "stranger", 4, `${leaf}extendedKeyUsage=clientAuth\n`);
  const file = (name: string): string => join(dir, name);
  return {
    dir,
    caFile: file("ca.pem"),
    otherCaFile: file("other-ca.pem"),
    serverCert: file("server.pem"),
    serverKey: file("server.key"),
    clientCert: file("client.pem"),
    clientKey: file("client.key"),
    strangerCert: file("stranger.pem"),
    strangerKey: file("stranger.key"),
  };
}

/** The plane's credentials; with `requireClientCert`, it accepts client certificates of `clientCaFile`. */
function serverCredentials(pki: Pki, requireClientCert: boolean, clientCaFile = pki.caFile): ServerCredentials {
  return ServerCredentials.createSsl(
    requireClientCert ? readFileSync(clientCaFile) : null,
    [{ private_key: readFileSync(pki.serverKey), cert_chain: readFileSync(pki.serverCert) }],
    requireClientCert,
  );
}

// ---------------------------------------------------------------- fakes

/** A control plane whose TaskService answers GetTask and whose AgentLinkService registers agents. */
class FakePlane {
  address = "";
  /** Agent names registered so far. */
  readonly registered: string[] = [];
  /** The issuer (CN) of the client certificate of each registration and GetTask ("none" without one). */
  readonly issuers: string[] = [];
  private readonly server = new Server();
  private readonly live = new Set<ServerDuplexStream<ConnectRequest, ConnectResponse>>();

  constructor(private readonly credentials?: ServerCredentials) {}

  /** Serves on a free port of 127.0.0.1, or on `port` (a restart: retried while the old server lets it go). */
  async start(port = 0): Promise<void> {
    const issuer = (call: { getAuthContext(): { sslPeerCertificate?: { issuer?: { CN?: string } } } }): string =>
      call.getAuthContext().sslPeerCertificate?.issuer?.CN ?? "none";
    const getTask = (
      call: ServerUnaryCall<GetTaskRequest, GetTaskResponse>,
      callback: sendUnaryData<GetTaskResponse>,
    ): void => {
      this.issuers.push(issuer(call));
      const task = Task.fromPartial({ id: call.request.taskId, state: TaskState.TASK_STATE_QUEUED });
      callback(null, GetTaskResponse.fromPartial({ task }));
    };
    const connect = (call: ServerDuplexStream<ConnectRequest, ConnectResponse>): void => {
      this.live.add(call);
      call.on("close", () => this.live.delete(call));
      call.on("data", (request: ConnectRequest) => {
        if (request.frame?.$case === "register") {
          this.issuers.push(issuer(call));
          this.registered.push(request.frame.register.agentName);
          call.write(
            ConnectResponse.fromPartial({
              frame: {
                $case: "registered",
                registered: {
                  sessionId: "s-1",
                  heartbeatInterval: { seconds: 1, nanos: 0 },
                  leaseTimeout: { seconds: 5, nanos: 0 },
                  replicaId: "r",
                  maxPayloadBytes: 1 << 20,
                },
              },
            }),
          );
        }
      });
      call.on("end", () => call.end()); // the agent left: end the session, as the plane does
      call.on("error", () => undefined);
    };
    this.server.addService(TaskServiceService, { getTask } as UntypedServiceImplementation);
    this.server.addService(AgentLinkServiceService, { connect } as UntypedServiceImplementation);
    if (port === 0) {
      this.address = await bindLocal(this.server, this.credentials);
      return;
    }
    const credentials = this.credentials ?? ServerCredentials.createInsecure();
    await eventually(`binding port ${port} again`, () =>
      new Promise<boolean>((resolve) => this.server.bindAsync(`127.0.0.1:${port}`, credentials, (error) => resolve(!error))),
    );
    this.address = `127.0.0.1:${port}`;
  }

  get port(): number {
    return Number(this.address.slice(this.address.lastIndexOf(":") + 1));
  }

  /** Ends the agents' streams (status OK); their connections stay open. */
  kick(): void {
    for (const call of this.live) {
      call.end();
    }
    this.live.clear();
  }

  stop(): void {
    this.server.forceShutdown();
  }
}

/** Polls `condition` until it holds; rejects after 5 s. */
async function eventually(what: string, condition: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within 5000 ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A logger keeping its lines ("WARN message", ...). */
function recordingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const record =
    (level: string) =>
    (message: string): void => {
      lines.push(`${level} ${message}`);
    };
  return { logger: { debug: record("DEBUG"), info: record("INFO"), warn: record("WARN"), error: record("ERROR") }, lines };
}

/** Replaces `path` with a copy of `from` by an atomic rename, as cert-manager (a Secret volume) does. */
function replace(path: string, from: string): void {
  writeFileSync(`${path}.new`, readFileSync(from));
  renameSync(`${path}.new`, path);
}

function issuerOf(pem: Buffer): string {
  return new X509Certificate(pem).issuer;
}

/** One GetTask over a fresh client (closed after), bounded so a refused connection cannot hang the test. */
async function getTask(address: string, options: ConstructorParameters<typeof MeshClient>[1] = {}): Promise<void> {
  const client = new MeshClient(address, { timeoutMs: 3_000, ...options });
  try {
    assert.equal((await client.get("t-1")).id, "t-1");
  } finally {
    client.close();
  }
}

/** Rejects as a refused connection: UnavailableError (not a timeout), its message matching `pattern`. */
async function refused(promise: Promise<unknown>, pattern: RegExp = /./): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof UnavailableError, `expected UnavailableError, got ${String(error)}`);
    assert.match(error.message, pattern);
    return true;
  });
}

/** Throws a MeshplaneError whose message contains every one of `parts`. */
function throwsNaming(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof MeshplaneError, `expected MeshplaneError, got ${String(error)}`);
    for (const part of parts) {
      assert.ok(error.message.includes(part), `'${error.message}' does not mention '${part}'`);
    }
    return true;
  });
}

// ---------------------------------------------------------------- tests

describe("TLS", () => {
  const pki = makePki();
  const tlsPlane = new FakePlane(serverCredentials(pki, false));
  const mutualPlane = new FakePlane(serverCredentials(pki, true));
  const plainPlane = new FakePlane();
  before(async () => {
    await Promise.all([tlsPlane.start(), mutualPlane.start(), plainPlane.start()]);
  });
  after(() => {
    tlsPlane.stop();
    mutualPlane.stop();
    plainPlane.stop();
    rmSync(pki.dir, { recursive: true, force: true });
  });

  describe("MeshClient", () => {
    it("verifies the plane with the given CA", async () => {
      await getTask(tlsPlane.address, { tls: { caFile: pki.caFile } });
      await getTask(tlsPlane.address, { tls: { caFile: pki.caFile }, connections: 3 });
      const port = tlsPlane.address.slice(tlsPlane.address.lastIndexOf(":"));
      await getTask(`localhost${port}`, { tls: { caFile: pki.caFile } });
    });

    it("verifies serverName instead of the target's host", async () => {
      await getTask(tlsPlane.address, { tls: { caFile: pki.caFile, serverName: "localhost" } });
      await refused(
        getTask(tlsPlane.address, { tls: { caFile: pki.caFile, serverName: "plane.example.com" } }),
        /plane\.example\.com/,
      );
    });

    it("fails fast in plaintext against a TLS plane", async () => {
      const start = Date.now();
      await refused(getTask(tlsPlane.address));
      await refused(getTask(tlsPlane.address, { tls: false }));
      assert.ok(Date.now() - start < 3_000, `took ${Date.now() - start} ms`);
    });

    it("refuses a plane that another CA signed", async () => {
      await refused(getTask(tlsPlane.address, { tls: { caFile: pki.otherCaFile } }), /certificate/);
    });

    it("tls: true verifies with the system's roots (which do not know the test CA)", async () => {
      await refused(getTask(tlsPlane.address, { tls: true }), /certificate/);
      await refused(getTask(tlsPlane.address, { tls: {} }), /certificate/);
    });

    it("mutual TLS: refused without a client certificate, accepted with one", async () => {
      await refused(getTask(mutualPlane.address, { tls: { caFile: pki.caFile } }));
      const { caFile, clientCert, clientKey, strangerCert, strangerKey } = pki;
      await refused(getTask(mutualPlane.address, { tls: { caFile, certFile: strangerCert, keyFile: strangerKey } }));
      await getTask(mutualPlane.address, { tls: { caFile, certFile: clientCert, keyFile: clientKey } });
    });

    it("explicit credentials still work, but not together with tls", async () => {
      const credentials = grpcCredentials.createSsl(readFileSync(pki.caFile));
      await getTask(tlsPlane.address, { credentials });
      assert.throws(() => new MeshClient(tlsPlane.address, { credentials, tls: true }), TypeError);
    });
  });

  describe("environment", () => {
    it("reads nothing when no variable is set", () => {
      assert.equal(defaultTls(), undefined);
      setEnv({ MESHPLANE_TLS: "false" });
      assert.equal(defaultTls(), undefined);
      setEnv({ MESHPLANE_TLS: "0" });
      assert.equal(defaultTls(), undefined);
    });

    it("MESHPLANE_TLS_CA_FILE: TLS with that CA", async () => {
      setEnv({ MESHPLANE_TLS_CA_FILE: pki.caFile });
      await getTask(tlsPlane.address);
      await refused(getTask(plainPlane.address)); // TLS now, to a plaintext plane
    });

    it("MESHPLANE_TLS_SERVER_NAME: the name verified", async () => {
      // The test certificate names localhost and 127.0.0.1, not plane.example.com.
      setEnv({ MESHPLANE_TLS_CA_FILE: pki.caFile, MESHPLANE_TLS_SERVER_NAME: "plane.example.com" });
      await refused(getTask(tlsPlane.address));
      setEnv({ MESHPLANE_TLS_CA_FILE: pki.caFile, MESHPLANE_TLS_SERVER_NAME: "localhost" });
      await getTask(tlsPlane.address);
    });

    it("MESHPLANE_TLS_CLIENT_CERT_FILE and MESHPLANE_TLS_CLIENT_KEY_FILE: a client certificate", async () => {
      setEnv({
        MESHPLANE_TLS_CA_FILE: pki.caFile,
        MESHPLANE_TLS_CLIENT_CERT_FILE: pki.clientCert,
        MESHPLANE_TLS_CLIENT_KEY_FILE: pki.clientKey,
      });
      await getTask(mutualPlane.address);
    });

    for (const on of ["true", "1", "TRUE"]) {
      it(`MESHPLANE_TLS=${on}: TLS with the system's roots`, async () => {
        setEnv({ MESHPLANE_TLS: on });
        assert.deepEqual(defaultTls(), {
          caFile: undefined,
          certFile: undefined,
          keyFile: undefined,
          serverName: undefined,
        });
        // The handshake happens; the system's roots refuse the test CA.
        await refused(getTask(tlsPlane.address), /certificate/);
        await refused(getTask(plainPlane.address));
      });
    }

    it("MESHPLANE_TLS=false: plaintext", async () => {
      setEnv({ MESHPLANE_TLS: "false" });
      await getTask(plainPlane.address);
    });

    it("the tls option wins", async () => {
      setEnv({ MESHPLANE_TLS_CA_FILE: join(pki.dir, "missing.pem"), MESHPLANE_TLS_CLIENT_CERT_FILE: pki.clientCert });
      await getTask(tlsPlane.address, { tls: { caFile: pki.caFile } }); // the environment is not read
      await getTask(plainPlane.address, { tls: false });
    });
  });

  describe("settings errors", () => {
    const missing = join(pki.dir, "missing.pem");
    const notPem = join(pki.dir, "not.pem");
    writeFileSync(notPem, "hello");

    it("name the option", () => {
      const make = (tls: object) => () => new MeshClient("127.0.0.1:1", { tls });
      throwsNaming(make({ certFile: pki.clientCert }), "tls.certFile is set without tls.keyFile");
      throwsNaming(make({ keyFile: pki.clientKey }), "tls.keyFile is set without tls.certFile");
      throwsNaming(make({ caFile: missing }), "tls.caFile", missing);
      throwsNaming(make({ caFile: notPem }), "tls.caFile", "no PEM certificate");
      throwsNaming(make({ certFile: missing, keyFile: pki.clientKey }), "tls.certFile", missing);
      throwsNaming(make({ certFile: pki.clientCert, keyFile: missing }), "tls.keyFile", missing);
      throwsNaming(make({ certFile: pki.clientCert, keyFile: pki.strangerKey }), "tls.certFile and tls.keyFile");
    });

    it("name the environment variable", () => {
      const make = () => new MeshClient("127.0.0.1:1");
      setEnv({ MESHPLANE_TLS_CLIENT_CERT_FILE: pki.clientCert });
      throwsNaming(make, "MESHPLANE_TLS_CLIENT_CERT_FILE is set without MESHPLANE_TLS_CLIENT_KEY_FILE");
      delete process.env["MESHPLANE_TLS_CLIENT_CERT_FILE"];
      setEnv({ MESHPLANE_TLS_CLIENT_KEY_FILE: pki.clientKey });
      throwsNaming(make, "MESHPLANE_TLS_CLIENT_KEY_FILE is set without MESHPLANE_TLS_CLIENT_CERT_FILE");
      delete process.env["MESHPLANE_TLS_CLIENT_KEY_FILE"];
      setEnv({ MESHPLANE_TLS_CA_FILE: missing });
      throwsNaming(make, "MESHPLANE_TLS_CA_FILE", missing);
    });

    it("reject an agent's run() and its waitConnected()", async () => {
      const agent = new Agent({ name: "tls-agent", logger: "silent", tls: { certFile: pki.clientCert } });
      agent.task("echo", (_ctx, input) => input);
      const connected = agent.waitConnected();
      await assert.rejects(agent.run(mutualPlane.address), /tls\.certFile is set without tls\.keyFile/);
      await assert.rejects(connected, /tls\.certFile is set without tls\.keyFile/);
      assert.equal(agent.status, "new");
    });
  });

  describe("Agent", () => {
    it("registers over mutual TLS (tls given to run())", async () => {
      const agent = new Agent({ name: "tls-agent", logger: "silent", drainTimeoutMs: 1_000 });
      agent.task("echo", (_ctx, input) => input);
      const running = agent.run(mutualPlane.address, {
        tls: { caFile: pki.caFile, certFile: pki.clientCert, keyFile: pki.clientKey },
      });
      try {
        await agent.waitConnected(5_000);
        assert.ok(mutualPlane.registered.includes("tls-agent"));
        assert.equal(agent.sessionId, "s-1");
      } finally {
        await agent.stop();
        await running;
      }
    });

    it("registers with the constructor's tls and the environment's", async () => {
      const fromOptions = new Agent({ name: "tls-options", logger: "silent", tls: { caFile: pki.caFile } });
      fromOptions.task("echo", (_ctx, input) => input);
      setEnv({ MESHPLANE_TLS_CA_FILE: pki.caFile });
      const fromEnv = new Agent({ name: "tls-env", logger: "silent" });
      fromEnv.task("echo", (_ctx, input) => input);
      const runs = [fromOptions.run(tlsPlane.address), fromEnv.run(tlsPlane.address)];
      try {
        await fromOptions.waitConnected(5_000);
        await fromEnv.waitConnected(5_000);
        assert.ok(tlsPlane.registered.includes("tls-options") && tlsPlane.registered.includes("tls-env"));
      } finally {
        await Promise.all([fromOptions.stop(), fromEnv.stop()]);
        await Promise.all(runs);
      }
    });

    it("without a client certificate never registers with a mutual-TLS plane", async () => {
      const reconnect = { initialDelayMs: 10, maxDelayMs: 50 };
      const agent = new Agent({ name: "tls-refused", logger: "silent", reconnect });
      agent.task("echo", (_ctx, input) => input);
      const running = agent.run(mutualPlane.address, { tls: { caFile: pki.caFile } });
      try {
        await assert.rejects(agent.waitConnected(500), /did not connect within 500 ms/);
        assert.ok(!mutualPlane.registered.includes("tls-refused"));
      } finally {
        await agent.terminate();
        await running;
      }
    });
  });
});

describe("renewed client certificates", () => {
  // CA "ca" signs the plane's certificate and the first client pair; CA "other-ca" signs the renewed pair.
  const pki = makePki();
  issue(pki.dir, "other-ca", "renewed", 5, "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
  const renewedCert = join(pki.dir, "renewed.pem");
  const renewedKey = join(pki.dir, "renewed.key");
  // The files the agent or client is given, replaced in place.
  const certFile = join(pki.dir, "tls.crt");
  const keyFile = join(pki.dir, "tls.key");
  const reconnect = { initialDelayMs: 10, maxDelayMs: 50 };
  const planes: FakePlane[] = [];
  /** A plane requiring client certificates of `clientCaFile`, on a free port or on `port`. */
  async function startPlane(clientCaFile: string, port = 0): Promise<FakePlane> {
    const plane = new FakePlane(serverCredentials(pki, true, clientCaFile));
    planes.push(plane);
    await plane.start(port);
    return plane;
  }
  afterEach(() => {
    for (const plane of planes.splice(0)) {
      plane.stop();
    }
  });
  after(() => rmSync(pki.dir, { recursive: true, force: true }));

  it("an agent presents the renewed certificate when it reconnects; a half-written one is not used", async () => {
    replace(certFile, pki.clientCert);
    replace(keyFile, pki.clientKey);
    let plane = await startPlane(pki.caFile);
    setEnv({ MESHPLANE_TLS_CA_FILE: pki.caFile, MESHPLANE_TLS_CLIENT_CERT_FILE: certFile, MESHPLANE_TLS_CLIENT_KEY_FILE: keyFile });
    const { logger, lines } = recordingLogger();
    const agent = new Agent({ name: "renewing", logger, reconnect, drainTimeoutMs: 1_000 });
    agent.task("echo", (_ctx, input) => input);
    const running = agent.run(plane.address);
    try {
      await agent.waitConnected(5_000);
      assert.deepEqual(plane.issuers, ["ca"]);

      // Half-written: the new certificate is there, its key not yet. The agent keeps the old pair (the plane
      // still trusts it) on every reconnect, and warns once.
      replace(certFile, renewedCert);
      const doNotLoad = "files changed but do not load";
      await eventually("the warning about the half-written pair", () => {
        plane.kick();
        return lines.some((line) => line.includes(doNotLoad));
      });
      const registrations = plane.registered.length;
      plane.kick();
      await eventually("a reconnect with the old pair", () => plane.registered.length > registrations);
      assert.deepEqual(new Set(plane.issuers), new Set(["ca"]));

      // The rotation completes; the plane restarts (the agent's connection drops), trusting only the new CA.
      replace(keyFile, renewedKey);
      const port = plane.port;
      plane.stop();
      plane = await startPlane(pki.otherCaFile, port);
      await eventually("a registration with the renewed certificate", () => plane.registered.length > 0);
      assert.deepEqual(plane.issuers, ["other-ca"]);
      assert.equal(lines.filter((line) => line.includes(doNotLoad)).length, 1, lines.join("\n"));
      assert.ok(
        lines.some((line) => line.startsWith("INFO TLS client certificate reloaded") && line.includes("CN=other-ca")),
        lines.join("\n"),
      );
    } finally {
      await agent.stop();
      await running;
    }
  });

  it("a MeshClient's next connection presents the renewed certificate", async () => {
    replace(certFile, pki.clientCert);
    replace(keyFile, pki.clientKey);
    let plane = await startPlane(pki.caFile);
    const client = new MeshClient(plane.address, { tls: { caFile: pki.caFile, certFile, keyFile }, timeoutMs: 2_000 });
    try {
      assert.equal((await client.get("t-1")).id, "t-1");
      assert.deepEqual(plane.issuers, ["ca"]);
      replace(certFile, renewedCert);
      replace(keyFile, renewedKey);
      const port = plane.port;
      plane.stop();
      plane = await startPlane(pki.otherCaFile, port);
      // Calls fail (UnavailableError) until one looks at the files again.
      await eventually("a call with the renewed certificate", () =>
        client.get("t-1").then(
          () => true,
          () => false,
        ),
      );
      assert.equal(plane.issuers.at(-1), "other-ca");
    } finally {
      client.close();
    }
  });

  it("the files are read again at most once a second; the last good pair stays when they do not load", () => {
    replace(certFile, pki.clientCert);
    replace(keyFile, pki.clientKey);
    const names = { caFile: "tls.caFile", certFile: "tls.certFile", keyFile: "tls.keyFile" };
    const { logger, lines } = recordingLogger();
    let now = 0;
    const files = new ClientCertFiles(certFile, keyFile, names, readFileSync(pki.caFile), logger, () => now);
    const later = (): void => {
      now += CERT_CHECK_INTERVAL_MS;
    };
    const warnings = (): string[] => lines.filter((line) => line.startsWith("WARN"));
    assert.equal(issuerOf(files.certificate), "CN=ca");

    replace(certFile, renewedCert); // the certificate is renewed, its key not yet
    assert.equal(files.renewed(), undefined); // within the interval: not read
    for (let i = 0; i < 3; i++) {
      later();
      assert.equal(files.renewed(), undefined);
      assert.equal(issuerOf(files.certificate), "CN=ca");
    }
    assert.equal(warnings().length, 1, lines.join("\n"));
    assert.match(warnings()[0] ?? "", /do not load.*tls\.certFile and tls\.keyFile/);

    replace(keyFile, renewedKey);
    assert.equal(files.renewed(), undefined); // within the interval
    later();
    assert.notEqual(files.renewed(), undefined);
    assert.equal(issuerOf(files.certificate), "CN=other-ca");
    assert.ok(lines.some((line) => line.startsWith("INFO TLS client certificate reloaded")), lines.join("\n"));

    unlinkSync(keyFile); // removed, to be written again
    for (let i = 0; i < 3; i++) {
      later();
      assert.equal(files.renewed(), undefined);
    }
    assert.equal(warnings().length, 2, lines.join("\n"));
    assert.match(warnings()[1] ?? "", /cannot read.*tls\.keyFile/);
    replace(keyFile, renewedKey); // back as it was: nothing to reload, nothing to warn about
    later();
    assert.equal(files.renewed(), undefined);
    assert.equal(issuerOf(files.certificate), "CN=other-ca");
    assert.equal(warnings().length, 2, lines.join("\n"));
  });
});

describe("the reconnect warning's hint", () => {
  const pki = makePki();
  const mutualPlane = new FakePlane(serverCredentials(pki, true));
  before(() => mutualPlane.start());
  after(() => {
    mutualPlane.stop();
    rmSync(pki.dir, { recursive: true, force: true });
  });

  /** Runs an agent against `address` until it has warned twice about the lost link; returns those warnings. */
  async function reconnectWarnings(address: string, tls?: TlsOptions | boolean): Promise<string[]> {
    const { logger, lines } = recordingLogger();
    const agent = new Agent({ name: "hinted", logger, reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    agent.task("echo", (_ctx, input) => input);
    const running = agent.run(address, tls === undefined ? {} : { tls });
    const lost = (): string[] => lines.filter((line) => line.startsWith("WARN") && line.includes(" lost ("));
    try {
      await eventually("two reconnect warnings", () => lost().length >= 2);
    } finally {
      await agent.terminate();
      await running;
    }
    return lost();
  }

  it("without a client certificate: none was shown", async () => {
    const warnings = await reconnectWarnings(mutualPlane.address, { caFile: pki.caFile });
    const hint = "(over TLS, no client certificate was shown: if the plane requires one, set tls.certFile and tls.keyFile)";
    assert.ok(warnings.every((line) => line.endsWith(hint)), warnings.join("\n"));
  });

  it("with a client certificate the plane does not trust: what to check", async () => {
    setEnv({
      MESHPLANE_TLS_CA_FILE: pki.caFile,
      MESHPLANE_TLS_CLIENT_CERT_FILE: pki.strangerCert,
      MESHPLANE_TLS_CLIENT_KEY_FILE: pki.strangerKey,
    });
    const warnings = await reconnectWarnings(mutualPlane.address);
    const hint =
      "(over TLS: if the plane requires client certificates, check MESHPLANE_TLS_CLIENT_CERT_FILE / " +
      "MESHPLANE_TLS_CLIENT_KEY_FILE and that the plane's client CA signed the certificate)";
    assert.ok(warnings.every((line) => line.endsWith(hint)), warnings.join("\n"));
  });

  it("not without TLS, nor when the cause shows", async () => {
    const plaintext = await reconnectWarnings(mutualPlane.address, false); // refused too
    assert.ok(plaintext.every((line) => !line.includes("over TLS")), plaintext.join("\n"));
    const unverified = await reconnectWarnings(mutualPlane.address, { caFile: pki.otherCaFile });
    assert.ok(unverified.every((line) => !line.includes("over TLS") && /certificate/.test(line)), unverified.join("\n"));
    const closed = new FakePlane(serverCredentials(pki, true));
    await closed.start();
    closed.stop(); // nothing listens there now
    const refused = await reconnectWarnings(closed.address, { caFile: pki.caFile });
    assert.ok(refused.every((line) => !line.includes("over TLS") && line.includes("ECONNREFUSED")), refused.join("\n"));
  });
});
