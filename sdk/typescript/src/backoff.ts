/** Jittered exponential backoff for reconnects. */

/** Delays doubling from `initialMs` to `maxMs`, each randomised by ±`jitter` (a fraction). */
export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly jitter: number;
  private nextMs: number;
  private readonly random: () => number;

  constructor(initialMs = 100, maxMs = 5_000, jitter = 0.5, random: () => number = Math.random) {
    if (!(initialMs > 0) || !(maxMs >= initialMs)) {
      throw new RangeError("backoff needs 0 < initialMs <= maxMs");
    }
    if (!(jitter >= 0 && jitter < 1)) {
      throw new RangeError("backoff jitter must be within [0, 1)");
    }
    this.initialMs = initialMs;
    this.maxMs = maxMs;
    this.jitter = jitter;
    this.nextMs = initialMs;
    this.random = random;
  }

  /** The delay before the next attempt; each call doubles the following one (up to the maximum). */
  next(): number {
    const base = this.nextMs;
    this.nextMs = Math.min(this.maxMs, this.nextMs * 2);
    return base * (1 - this.jitter + 2 * this.jitter * this.random());
  }

  /** Back to the initial delay (after a connection that worked). */
  reset(): void {
    this.nextMs = this.initialMs;
  }
}
