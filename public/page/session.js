// session.js: what the page joins with and how often it speaks by itself: the join token its
// host page gives it, and the limit on automatic greetings.

/**
 * The join token the host page gives this page, for a server running `--auth jwt`:
 * `window.SWITCHBOARD_TOKEN` (a string, or a function returning one or a promise of one,
 * asked again whenever the page joins and on `refresh_required`, so the session outlives a
 * token) set by a script before this module runs, or else
 * `#token=` in the URL (the fragment never reaches a server or a Referer). The fragment is
 * removed from the address bar once read, so the token is not bookmarked or shared with
 * the link. Undefined when there is none (a server running `--auth open` needs none).
 */
export function hostToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const inUrl = fragment.get('token');
  if (inUrl !== null) {
    fragment.delete('token');
    const rest = fragment.toString();
    history.replaceState(history.state, '', location.pathname + location.search + (rest ? '#' + rest : ''));
  }
  return globalThis.SWITCHBOARD_TOKEN || inUrl || undefined;
}

/** A limit of `max` things in any one second (a burst of newcomers gets no more greetings). */
export class PerSecond {
  /** When the ones of the last second happened. @type {number[]} */
  #recent = [];
  #max;

  /** @param {number} max */
  constructor(max) {
    this.#max = max;
  }

  /** Whether one more fits in the last second; if so, it counts from now. */
  allow() {
    const now = performance.now();
    while (this.#recent.length > 0 && now - this.#recent[0] >= 1000) this.#recent.shift();
    if (this.#recent.length >= this.#max) return false;
    this.#recent.push(now);
    return true;
  }
}
