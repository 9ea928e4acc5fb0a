// backoff.js: the delay before each reconnect attempt: exponential, with full jitter.

/**
 * One pending delay at a time. Its ceiling doubles with each attempt, from `initialMs` up to
 * `maxMs`, and the delay itself is uniformly random below it ("full jitter"), so that clients
 * dropped together do not come back together.
 */
export class Backoff {
  #initialMs;
  #maxMs;
  #attempt = 0;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #timer = null;

  /**
   * @param {number} initialMs The first delay's ceiling.
   * @param {number} maxMs The largest ceiling.
   */
  constructor(initialMs, maxMs) {
    this.#initialMs = initialMs;
    this.#maxMs = maxMs;
  }

  /** Whether a delay is running (its callback has yet to run). */
  get waiting() {
    return this.#timer !== null;
  }

  /**
   * Runs `then` after the next delay, in place of any delay still running.
   * @param {() => void} then
   */
  schedule(then) {
    const ceiling = Math.min(this.#maxMs, this.#initialMs * 2 ** this.#attempt);
    this.#attempt += 1;
    this.cancel();
    this.#timer = setTimeout(() => {
      this.#timer = null;
      then();
    }, Math.random() * ceiling);
  }

  /** Drops the running delay, if any: its callback will not run. */
  cancel() {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** Starts over from the first ceiling (the connection works again). */
  reset() {
    this.#attempt = 0;
  }
}
