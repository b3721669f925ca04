// What the tests against in-process fake control planes (grpc-js servers) share: a bounded wait, binding a fake
// to a free local port, the suite's start/stop around one client, and server-streaming calls arriving at a fake
// that the tests take one by one and drive by hand. Not a test file itself (no `.test` in its name).
import { after, before } from "node:test";

import { Server, ServerCredentials, type ServerWritableStream } from "@grpc/grpc-js";

const WAIT_MS = 5_000;

/** Rejects if `promise` does not settle within WAIT_MS. */
export async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${WAIT_MS} ms`)), WAIT_MS);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Binds `server` (its services added) to a free port of 127.0.0.1 (insecure by default); resolves to its address. */
export async function bindLocal(
  server: Server,
  credentials: ServerCredentials = ServerCredentials.createInsecure(),
): Promise<string> {
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync("127.0.0.1:0", credentials, (error, bound) =>
      error ? reject(error) : resolve(bound),
    );
  });
  return `127.0.0.1:${port}`;
}

/** A fake control plane as a suite uses it. */
export interface Fake {
  readonly address: string;
  start(): Promise<void>;
  stop(): void;
}

/**
 * Starts `fake` before the suite and hands its address to `connect` (which makes the suite's client); after the
 * suite, closes that client, then stops the fake. Call it inside the `describe`.
 */
export function serve(fake: Fake, connect: (address: string) => { close(): void }): void {
  let client: { close(): void } | undefined;
  before(async () => {
    await fake.start();
    client = connect(fake.address);
  });
  after(() => {
    client?.close();
    fake.stop();
  });
}

/** One server-streaming call as the fake server sees it; the test says what it sends. It stays open until told. */
export class StreamCall<Req, Res> {
  readonly request: Req;
  /** Resolves when the client cancels the call. */
  readonly cancelled: Promise<void>;
  protected readonly stream: ServerWritableStream<Req, Res>;

  constructor(stream: ServerWritableStream<Req, Res>) {
    this.stream = stream;
    this.request = stream.request;
    this.cancelled = new Promise((resolve) => stream.once("cancelled", () => resolve()));
  }

  get isCancelled(): boolean {
    return this.stream.cancelled;
  }

  fail(code: number, details: string): void {
    this.stream.emit("error", { code, details });
  }

  end(): void {
    this.stream.end();
  }
}

/**
 * A fake server whose server-streaming calls queue up until the test takes them, in order, with next(). A subclass
 * adds its services in addServices(), its streaming handler handing each call to arrive().
 */
export abstract class StreamingFake<Call extends { readonly isCancelled: boolean; end(): void }> implements Fake {
  /** Every streaming call so far. */
  readonly calls: Call[] = [];
  address = "";
  private readonly server = new Server();
  private readonly arrived: Call[] = [];
  private readonly waiting: ((call: Call) => void)[] = [];

  /** The calls, as a timeout names them ("a WatchTask call"). */
  protected abstract readonly what: string;

  /** Adds the fake's services to `server`. */
  protected abstract addServices(server: Server): void;

  async start(): Promise<void> {
    this.addServices(this.server);
    this.address = await bindLocal(this.server);
  }

  /** Takes a call that has just arrived: to the test waiting in next(), or queued for the next one. */
  protected arrive(call: Call): void {
    this.calls.push(call);
    const waiter = this.waiting.shift();
    if (waiter) {
      waiter(call);
    } else {
      this.arrived.push(call);
    }
  }

  /** The next call to arrive (rejects if none does within WAIT_MS). */
  next(): Promise<Call> {
    const call = this.arrived.shift();
    return within(call ? Promise.resolve(call) : new Promise<Call>((resolve) => this.waiting.push(resolve)), this.what);
  }

  /** Ends every call still open and forgets them all (between tests). */
  reset(): void {
    for (const call of this.calls) {
      if (!call.isCancelled) {
        call.end();
      }
    }
    this.calls.length = 0;
    this.arrived.length = 0;
    this.waiting.length = 0;
  }

  stop(): void {
    this.server.forceShutdown();
  }
}
