/** Logging: a minimal logger interface; by default warnings and errors go to stderr. */

/** Where the SDK logs. `console` fits; so do pino, winston and most other loggers. */
export interface Logger {
  debug(message: string, ...args: unknown[]): void;
  info(message: string, ...args: unknown[]): void;
  warn(message: string, ...args: unknown[]): void;
  error(message: string, ...args: unknown[]): void;
}

/** Log levels, least to most severe; "silent" logs nothing. */
export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

function isLogLevel(value: string): value is LogLevel {
  return Object.prototype.hasOwnProperty.call(LEVELS, value);
}

/**
 * A logger writing `<ISO time> <LEVEL> meshplane: <message>` lines to stderr at `level` and above.
 * `level` defaults to `MESHPLANE_LOG_LEVEL`, else "warn".
 */
export function consoleLogger(level?: LogLevel): Logger {
  const fromEnv = (process.env["MESHPLANE_LOG_LEVEL"] ?? "").toLowerCase();
  const chosen: LogLevel = level ?? (isLogLevel(fromEnv) ? fromEnv : "warn");
  const threshold = LEVELS[chosen];
  const write =
    (name: Exclude<LogLevel, "silent">) =>
    (message: string, ...args: unknown[]): void => {
      if (LEVELS[name] < threshold) {
        return;
      }
      const extra = args.map((a) => (a instanceof Error ? (a.stack ?? a.message) : String(a))).join(" ");
      process.stderr.write(
        `${new Date().toISOString()} ${name.toUpperCase()} meshplane: ${message}${extra ? ` ${extra}` : ""}\n`,
      );
    };
  return { debug: write("debug"), info: write("info"), warn: write("warn"), error: write("error") };
}
