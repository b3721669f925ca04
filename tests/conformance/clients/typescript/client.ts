// The TypeScript SDK's mixed-language conformance client: the command line fixed by
// tests/conformance/CONTRACT.md ("Mixed-language clients"), built with the SDK's public client API
// only (MeshClient: submit, resubmit, wait, publish).
//
//   node dist/client.js --target HOST:PORT [--token TOKEN] submit --capability C --input JSON
//       [--count N] [--label-selector K=V[,K=V...]] [--timeout SECONDS]
//   node dist/client.js --target HOST:PORT [--token TOKEN] resubmit --task-id ID [--timeout SECONDS]
//   node dist/client.js --target HOST:PORT [--token TOKEN] publish --channel C --data JSON
//
// submit prints one JSON line per task, in submission order; resubmit one line for the new task (with
// "resubmitted_from"); publish prints {"published": C}.
// Exit status: 0 success, 1 a task did not succeed or a call failed, 2 bad usage.

import { parseArgs } from "node:util";

import { MeshClient, TaskFailedError } from "@meshplane/sdk";

const USAGE = `usage: client.js --target HOST:PORT [--token TOKEN] COMMAND ...
  submit --capability C --input JSON [--count N] [--label-selector K=V[,K=V...]] [--timeout SECONDS]
  resubmit --task-id ID [--timeout SECONDS]
  publish --channel C --data JSON`;

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
  const deadline = Date.now() + timeout * 1000;
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    ids.push((await client.submit(capability, input, { labelSelector })).id);
  }
  const lines = await Promise.all(ids.map((id) => waitLine(client, id, deadline)));
  for (const line of lines) {
    process.stdout.write(`${JSON.stringify(line)}\n`);
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
  process.stdout.write(`${JSON.stringify(line)}\n`);
  return line.state === "SUCCEEDED" ? 0 : 1;
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
  process.stdout.write(`${JSON.stringify({ published: channel })}\n`);
  return 0;
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
      publish,
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
