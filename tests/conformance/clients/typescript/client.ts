// The TypeScript SDK's mixed-language conformance client: the command line fixed by
// tests/conformance/CONTRACT.md ("Mixed-language clients"), built with the SDK's public client API
// only (MeshClient: submit, submitMany, resubmit, wait, listTasksPage, listAgents, listInstances, listChannels,
// listAuditEntries, publish, subscribe).
//
//   node dist/client.js --target HOST:PORT [--token TOKEN] submit --capability C --input JSON
//       [--count N] [--batch] [--correlation-id X] [--label-selector K=V[,K=V...]] [--timeout SECONDS]
//   node dist/client.js --target HOST:PORT [--token TOKEN] resubmit --task-id ID [--timeout SECONDS]
//   node dist/client.js --target HOST:PORT [--token TOKEN] list-tasks [--capability C] [--state S]
//       [--correlation-id X] [--page-size N]
//   node dist/client.js --target HOST:PORT [--token TOKEN] list-agents [--capability C]
//   node dist/client.js --target HOST:PORT [--token TOKEN] list-instances [--agent NAME]
//   node dist/client.js --target HOST:PORT [--token TOKEN] list-channels
//   node dist/client.js --target HOST:PORT [--token TOKEN] list-audit --resource R [--action A] [--limit N]
//   node dist/client.js --target HOST:PORT [--token TOKEN] publish --channel C --data JSON
//   node dist/client.js --target HOST:PORT [--token TOKEN] subscribe --channel C --count N [--timeout SECONDS]
//
// submit prints one JSON line per task, in submission order (--batch: the N tasks in one submitMany call);
// resubmit one line for the new task (with "resubmitted_from"); the list commands one line per task, agent,
// instance, channel or audit entry, in the server's order, following pages; publish prints {"published": C}; subscribe prints
// {"subscribed": C} once the subscription is live, then {"channel": C, "data": ..., "publisher": P} per message
// as it arrives, until N messages (then closes the subscription).
// Exit status: 0 success, 1 a task did not succeed, a call failed or the timeout passed, 2 bad usage.

import { parseArgs } from "node:util";

import { MeshClient, type SubmitOptions, TaskFailedError, type TaskState } from "@meshplane/sdk";

const USAGE = `usage: client.js --target HOST:PORT [--token TOKEN] COMMAND ...
  submit --capability C --input JSON [--count N] [--batch] [--correlation-id X]
         [--label-selector K=V[,K=V...]] [--timeout SECONDS]
  resubmit --task-id ID [--timeout SECONDS]
  list-tasks [--capability C] [--state S] [--correlation-id X] [--page-size N]
  list-agents [--capability C]
  list-instances [--agent NAME]
  list-channels
  list-audit --resource R [--action A] [--limit N]
  publish --channel C --data JSON
  subscribe --channel C --count N [--timeout SECONDS]`;

/** The task states a --state filter may name (any case). */
const STATES: readonly TaskState[] = [
  "QUEUED",
  "ASSIGNED",
  "RUNNING",
  "SUCCEEDED",
  "FAILED",
  "CANCELLED",
  "TIMED_OUT",
  "DEAD_LETTER",
];

class UsageError extends Error {}

type Line = Record<string, unknown>;

function json(text: string | undefined, what: string): unknown {
  if (text === undefined) {
    throw new UsageError(`${what} is required`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new UsageError(`${what} is not JSON: ${String(error)}`);
  }
}

function selector(text: string | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const pair of (text ?? "").split(",").filter((p) => p !== "")) {
    const at = pair.indexOf("=");
    if (at <= 0) {
      throw new UsageError(`bad --label-selector ${JSON.stringify(text)}: want K=V[,K=V...]`);
    }
    labels[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return labels;
}

function taskState(text: string | undefined): TaskState | undefined {
  if (text === undefined) {
    return undefined;
  }
  const state = STATES.find((s) => s === text.toUpperCase());
  if (state === undefined) {
    throw new UsageError(`unknown --state ${JSON.stringify(text)}: want one of ${STATES.join(", ")}`);
  }
  return state;
}

function print(line: Line): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

/** Splits argv into the global options (before the command), the command and its options. */
function split(argv: string[]): { global: string[]; command: string; rest: string[] } {
  let i = 0;
  while (i < argv.length && argv[i]!.startsWith("--")) {
    i += argv[i]!.includes("=") ? 1 : 2;
  }
  if (i >= argv.length) {
    throw new UsageError("no command");
  }
  return { global: argv.slice(0, i), command: argv[i]!, rest: argv.slice(i + 1) };
}

async function waitLine(client: MeshClient, taskId: string, deadline: number): Promise<Line> {
  try {
    const task = await client.wait(taskId, { timeoutMs: Math.max(0, deadline - Date.now()) });
    return { task_id: taskId, state: task.state, output: task.output };
  } catch (error) {
    if (!(error instanceof TaskFailedError)) {
      throw error;
    }
    const line: Line = { task_id: taskId, state: error.task.state };
    if (error.task.error !== undefined) {
      line.error = { code: error.task.error.code, message: error.task.error.message };
    }
    return line;
  }
}

async function submit(client: MeshClient, argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      capability: { type: "string" },
      input: { type: "string" },
      count: { type: "string", default: "1" },
      batch: { type: "boolean", default: false },
      "correlation-id": { type: "string", default: "" },
      "label-selector": { type: "string" },
      timeout: { type: "string", default: "30" },
    },
    strict: true,
  });
  const capability = values.capability;
  const input = json(values.input, "--input");
  const count = Number(values.count);
  const timeout = Number(values.timeout);
  const labelSelector = selector(values["label-selector"]);
  if (!capability || !Number.isInteger(count) || count < 1 || !(timeout > 0)) {
    throw new UsageError("submit needs --capability, --input, a --count >= 1 and a --timeout > 0");
  }
  const options: SubmitOptions = { labelSelector, correlationId: values["correlation-id"] };
  const deadline = Date.now() + timeout * 1000;
  const ids: string[] = [];
  if (values.batch) {
    const tasks = await client.submitMany(Array.from({ length: count }, () => ({ capability, input, options })));
    ids.push(...tasks.map((task) => task.id));
  } else {
    for (let i = 0; i < count; i++) {
      ids.push((await client.submit(capability, input, options)).id);
    }
  }
  const lines = await Promise.all(ids.map((id) => waitLine(client, id, deadline)));
  for (const line of lines) {
    print(line);
  }
  return lines.every((line) => line.state === "SUCCEEDED") ? 0 : 1;
}

async function resubmit(client: MeshClient, argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { "task-id": { type: "string" }, timeout: { type: "string", default: "30" } },
    strict: true,
  });
  const taskId = values["task-id"];
  const timeout = Number(values.timeout);
  if (!taskId || !(timeout > 0)) {
    throw new UsageError("resubmit needs --task-id and a --timeout > 0");
  }
  const deadline = Date.now() + timeout * 1000;
  const task = await client.resubmit(taskId);
  const line = await waitLine(client, task.id, deadline);
  line.resubmitted_from = task.resubmittedFrom;
  print(line);
  return line.state === "SUCCEEDED" ? 0 : 1;
}

async function listTasks(client: MeshClient, argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      capability: { type: "string", default: "" },
      state: { type: "string" },
      "correlation-id": { type: "string", default: "" },
      "page-size": { type: "string" },
    },
    strict: true,
  });
  const filter = {
    capability: values.capability,
    state: taskState(values.state),
    correlationId: values["correlation-id"],
  };
  const pageSize = values["page-size"] === undefined ? undefined : Number(values["page-size"]);
  if (pageSize !== undefined && !(Number.isInteger(pageSize) && pageSize >= 1)) {
    throw new UsageError("list-tasks needs a --page-size >= 1 when given");
  }
  let pageToken = "";
  do {
    const page = await client.listTasksPage(filter, { pageSize, pageToken });
    for (const task of page.items) {
      print({ task_id: task.id, state: task.state, capability: task.capability, correlation_id: task.correlationId });
    }
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return 0;
}

async function listAgents(client: MeshClient, argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { capability: { type: "string", default: "" } }, strict: true });
  for (const agent of await client.listAgents({ capability: values.capability })) {
    print({
      name: agent.name,
      status: agent.status,
      connected_instances: agent.connectedInstances,
      capabilities: agent.capabilities.map((capability) => capability.name),
    });
  }
  return 0;
}

async function listInstances(client: MeshClient, argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { agent: { type: "string", default: "-" } }, strict: true });
  if (!values.agent) {
    throw new UsageError("list-instances needs a non-empty --agent (default: every agent)");
  }
  for (const instance of await client.listInstances(values.agent)) {
    print({
      instance_id: instance.instanceId,
      agent_name: instance.agentName,
      status: instance.status,
      labels: instance.labels,
    });
  }
  return 0;
}

async function listChannels(client: MeshClient, argv: string[]): Promise<number> {
  parseArgs({ args: argv, options: {}, strict: true });
  for (const channel of await client.listChannels()) {
    const { createTime, lastUseTime } = channel;
    // Whether both times are set, the first use no later than the last (not the times, which differ per run).
    const hasTimes = createTime !== undefined && lastUseTime !== undefined && createTime <= lastUseTime;
    print({ name: channel.name, has_times: hasTimes });
  }
  return 0;
}

async function listAudit(client: MeshClient, argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      resource: { type: "string" },
      action: { type: "string", default: "" },
      limit: { type: "string", default: "50" },
    },
    strict: true,
  });
  const resource = values.resource;
  const limit = Number(values.limit);
  if (!resource || !Number.isInteger(limit) || limit < 1) {
    throw new UsageError("list-audit needs --resource and a --limit >= 1 when given");
  }
  for (const entry of await client.listAuditEntries({ resource, action: values.action }, { limit })) {
    // Details' numbers are JS numbers: JSON.stringify prints a whole one as 2, as Go and Python do.
    print({ actor: entry.actor, action: entry.action, resource: entry.resource, details: entry.details });
  }
  return 0;
}

async function publish(client: MeshClient, argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { channel: { type: "string" }, data: { type: "string" } },
    strict: true,
  });
  const channel = values.channel;
  const data = json(values.data, "--data");
  if (!channel) {
    throw new UsageError("publish needs --channel and --data");
  }
  await client.publish(channel, data);
  print({ published: channel });
  return 0;
}

async function subscribe(client: MeshClient, argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { channel: { type: "string" }, count: { type: "string" }, timeout: { type: "string", default: "30" } },
    strict: true,
  });
  const channel = values.channel;
  const count = Number(values.count);
  const timeout = Number(values.timeout);
  if (!channel || !Number.isInteger(count) || count < 1 || !(timeout > 0)) {
    throw new UsageError("subscribe needs --channel, a --count >= 1 and a --timeout > 0");
  }
  // A timer of our own (AbortSignal.timeout's does not keep the process alive).
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new Error(`fewer than ${count} messages on ${channel} within ${timeout} s`)),
    timeout * 1000,
  );
  try {
    const subscription = await client.subscribe(channel, { signal: controller.signal });
    print({ subscribed: channel }); // subscribe resolved once the subscription was live
    let received = 0;
    for await (const message of subscription) {
      print({ channel: message.channel, data: message.data, publisher: message.publisher });
      if (++received === count) {
        break; // closes the subscription
      }
    }
    if (received < count) {
      throw new Error(`the subscription to ${channel} ended after ${received} of ${count} messages`);
    }
    return 0;
  } finally {
    clearTimeout(timer);
  }
}

async function main(argv: string[]): Promise<number> {
  let client: MeshClient | undefined;
  try {
    const { global, command, rest } = split(argv);
    const { values } = parseArgs({
      args: global,
      options: { target: { type: "string" }, token: { type: "string" } },
      strict: true,
    });
    if (!values.target) {
      throw new UsageError("--target is required");
    }
    const commands: Record<string, (client: MeshClient, argv: string[]) => Promise<number>> = {
      submit,
      resubmit,
      "list-tasks": listTasks,
      "list-agents": listAgents,
      "list-instances": listInstances,
      "list-channels": listChannels,
      "list-audit": listAudit,
      publish,
      subscribe,
    };
    const run = Object.hasOwn(commands, command) ? commands[command] : undefined;
    if (run === undefined) {
      throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
    client = new MeshClient(values.target, { token: values.token });
    return await run(client, rest);
  } catch (error) {
    const code = error instanceof Error ? (error as { code?: unknown }).code : undefined;
    const usage = error instanceof UsageError || (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS"));
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n${usage ? `${USAGE}\n` : ""}`);
    return usage ? 2 : 1;
  } finally {
    client?.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.stdout.write("", () => process.exit(code)),
  (error: unknown) => {
    process.stderr.write(`client failed: ${String(error)}\n`);
    process.exit(1);
  },
);
