import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Backoff } from "../src/backoff";

describe("Backoff", () => {
  it("doubles from the initial delay up to the maximum", () => {
    const backoff = new Backoff(100, 1_000, 0.5, () => 0.5); // random 0.5: no jitter
    assert.deepEqual(
      Array.from({ length: 6 }, () => backoff.next()),
      [100, 200, 400, 800, 1_000, 1_000],
    );
  });

  it("jitters each delay by at most ±jitter", () => {
    const low = new Backoff(100, 5_000, 0.5, () => 0);
    const high = new Backoff(100, 5_000, 0.5, () => 0.999_999);
    assert.equal(low.next(), 50);
    assert.ok(Math.abs(high.next() - 150) < 0.01);
    const real = new Backoff(100, 5_000);
    for (let i = 0; i < 200; i++) {
      const delay = real.next();
      real.reset();
      assert.ok(delay >= 50 && delay <= 150, `delay ${delay} out of range`);
    }
  });

  it("starts over after reset()", () => {
    const backoff = new Backoff(10, 100, 0, Math.random);
    backoff.next();
    backoff.next();
    assert.equal(backoff.next(), 40);
    backoff.reset();
    assert.equal(backoff.next(), 10);
  });

  it("rejects nonsense", () => {
    assert.throws(() => new Backoff(0, 100), RangeError);
    assert.throws(() => new Backoff(200, 100), RangeError);
    assert.throws(() => new Backoff(100, 200, 1), RangeError);
  });
});
