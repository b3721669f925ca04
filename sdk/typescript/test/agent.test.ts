import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";

import * as sdk from "../src/index";
import { Agent, checkChannelName, defaultInstanceId } from "../src/agent";
import { SDK_VERSION } from "../src/version";

// The compiled test runs from build/sdk/typescript/test; the package root is three levels up.
const PACKAGE_ROOT = join(__dirname, "..", "..", "..", "..");

describe("Agent", () => {
  it("has defaults and a stable generated instance id", () => {
    const agent = new Agent({ name: "greeter", logger: "silent" });
    assert.equal(agent.version, "0.0.0");
    assert.equal(agent.maxConcurrency, 16);
    assert.equal(agent.weight, 1);
    assert.equal(agent.status, "new");
    assert.match(agent.instanceId, /^greeter-[A-Za-z0-9._-]+-\d+-[0-9a-f]{8}$/);
    assert.equal(agent.instanceId, agent.instanceId);
    assert.notEqual(new Agent({ name: "greeter", logger: "silent" }).instanceId, agent.instanceId);
    assert.ok(defaultInstanceId("x".repeat(128)).length <= 128);
  });

  it("uses the given identity verbatim", () => {
    const agent = new Agent({
      name: "a.b-c_1",
      instanceId: "inst-7",
      version: "2.0.0",
      maxConcurrency: 3,
      labels: { lang: "typescript" },
      logger: "silent",
    });
    assert.deepEqual(
      [agent.name, agent.instanceId, agent.version, agent.maxConcurrency, agent.labels],
      ["a.b-c_1", "inst-7", "2.0.0", 3, { lang: "typescript" }],
    );
  });

  it("rejects invalid names, instance ids and limits", () => {
    for (const name of ["", "-lead", "has space", "x".repeat(129), "ünïcode"]) {
      assert.throws(() => new Agent({ name }), RangeError, name);
    }
    assert.throws(() => new Agent({ name: "ok", instanceId: "bad id" }), RangeError);
    for (const maxConcurrency of [0, -1, 10_001, 1.5]) {
      assert.throws(() => new Agent({ name: "ok", maxConcurrency }), RangeError, String(maxConcurrency));
    }
    assert.throws(() => new Agent({ name: "ok", weight: -1 }), RangeError);
  });

  it("registers capabilities and channels once each", () => {
    const agent = new Agent({ name: "ok", logger: "silent" })
      .task("a.one", (_ctx, input: { n: number }) => input.n + 1)
      .task("a.two", async () => ({}), { inputSchema: { type: "object" }, validate: (x) => x as object })
      .onChannel("news.daily", () => undefined);
    assert.deepEqual(agent.capabilities, ["a.one", "a.two"]);
    assert.deepEqual(agent.channels, ["news.daily"]);
    assert.throws(() => agent.task("a.one", () => 1), /already has a handler/);
    assert.throws(() => agent.task("bad name", () => 1), RangeError);
    assert.throws(() => agent.onChannel("news.daily", () => undefined), /already has a handler/);
    agent.offChannel("news.daily");
    assert.deepEqual(agent.channels, []);
  });

  it("checks channel names", () => {
    for (const ok of ["a", "conf.broadcast", "a_b-c.d", "x".repeat(200)]) {
      assert.doesNotThrow(() => checkChannelName(ok), ok);
    }
    for (const bad of ["", ".a", "a.", "a..b", "a b", "x".repeat(201), "a/b"]) {
      assert.throws(() => checkChannelName(bad), RangeError, bad);
    }
  });

  it("refuses to run without handlers, and stop() before run() is a no-op", async () => {
    const agent = new Agent({ name: "empty", logger: "silent" });
    await assert.rejects(agent.run("127.0.0.1:1"), /no task or channel handlers/);
    await agent.stop();
    await agent.terminate();
  });

  it("stopOnSignals() installs and removes its handlers", () => {
    const agent = new Agent({ name: "sig", logger: "silent" });
    const before = process.listenerCount("SIGTERM");
    const remove = agent.stopOnSignals(["SIGTERM"]);
    assert.equal(process.listenerCount("SIGTERM"), before + 1);
    remove();
    assert.equal(process.listenerCount("SIGTERM"), before);
  });
});

describe("package", () => {
  it("reports the version of package.json", () => {
    const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, "package.json"), "utf8")) as { version: string };
    assert.equal(SDK_VERSION, pkg.version);
  });

  it("exports exactly the public API", () => {
    assert.deepEqual(Object.keys(sdk).sort(), [
      "Agent",
      "AlreadyExistsError",
      "CancelledError",
      "ChannelContext",
      "DEFAULT_TARGET",
      "DeadlineExceededError",
      "FailedPreconditionError",
      "InstanceIdTakenError",
      "InvalidArgumentError",
      "MeshClient",
      "MeshplaneError",
      "NonRetryableError",
      "NotFoundError",
      "NotSerializableError",
      "PermissionDeniedError",
      "RegistrationRejectedError",
      "ResourceExhaustedError",
      "RpcError",
      "SDK_VERSION",
      "StateStore",
      "TaskCancelledError",
      "TaskContext",
      "TaskDeadLetteredError",
      "TaskError",
      "TaskFailedError",
      "TaskTimedOutError",
      "TimeoutError",
      "UnauthenticatedError",
      "UnavailableError",
      "ValidationError",
      "VersionConflictError",
      "consoleLogger",
      "isTerminal",
    ]);
  });
});
