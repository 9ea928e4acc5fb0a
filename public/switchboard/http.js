// http.js: the requests to the API besides the stream: JSON in and out (POST /helo, /response,
// /broadcast, PUT and DELETE /session/rooms/{room}), DELETE /session, and how a failed one
// becomes a SwitchboardError.

import { SwitchboardError } from './errors.js';

/**
 * @typedef {import('./types.js').Session} Session
 * @typedef {import('./types.js').JoinToken} JoinToken
 */

/** One server: where it is and the fetch that reaches it. */
export class Api {
  /** @type {typeof globalThis.fetch} */
  #fetch;
  #baseUrl;

  /**
   * @param {typeof globalThis.fetch} fetch
   * @param {string} baseUrl The server's origin and path prefix, without a trailing slash.
   */
  constructor(fetch, baseUrl) {
    this.#fetch = fetch;
    this.#baseUrl = baseUrl;
  }

  /** @param {string} path */
  url(path) {
    return this.#baseUrl + path;
  }

  /**
   * A request as it is, for what is not JSON (the stream probe).
   * @param {string} path
   * @param {RequestInit} init
   */
  fetch(path, init) {
    return this.#fetch(this.url(path), init);
  }

  /**
   * One JSON request. Resolves with the parsed body; rejects with a SwitchboardError.
   * @param {string} method
   * @param {string} path
   * @param {unknown} body Left out when undefined.
   * @param {string} [token] Sent as `Authorization: Bearer`.
   * @param {Record<string, string>} [extra] More headers.
   * @returns {Promise<any>}
   */
  async request(method, path, body, token, extra = {}) {
    /** @type {Record<string, string>} */
    const headers = body === undefined ? { ...extra } : { 'Content-Type': 'application/json', ...extra };
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await this.#fetch(this.url(path), {
        method,
        headers,
        body: JSON.stringify(body),
      });
    } catch (cause) {
      throw new SwitchboardError(`${method} ${path}: the server could not be reached`, { cause });
    }
    const text = await response.text().catch(() => '');
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      throw new SwitchboardError((data && data.message) || `${method} ${path}: ${response.status}`, {
        status: response.status,
        code: (data && data.error) || 'http_error',
        retryAfter: retryAfterSeconds(response.headers.get('Retry-After')),
      });
    }
    return data;
  }

  /**
   * A POST with the session's token that waits out `429 Retry-After` up to `retries` times.
   * The session is asked for again before each try (it may have been replaced meanwhile).
   * With an idempotency `key` (`POST /response`) it also tries again after a 503 or a lost
   * connection: the server delivers every try with the same key at most once, so a request
   * that may have landed is safe to repeat.
   * @param {string} path
   * @param {unknown} body
   * @param {() => Session | null} session
   * @param {number} retries
   * @param {string} [key] Sent as `Idempotency-Key`.
   * @returns {Promise<any>}
   */
  async write(path, body, session, retries, key) {
    const extra = key ? { 'Idempotency-Key': key } : {};
    for (let retried = 0; ; retried += 1) {
      const current = session();
      if (!current) {
        throw new SwitchboardError('not connected: no session yet', { code: 'not_connected' });
      }
      try {
        return await this.request('POST', path, body, current.token, extra);
      } catch (error) {
        const failed = /** @type {SwitchboardError} */ (error);
        // Maybe delivered: safe to repeat with the same key.
        const unsure =
          key !== undefined && (failed.status === 503 || failed.code === 'network_error');
        if ((failed.status !== 429 && !unsure) || retried >= retries) throw error;
        await sleep((failed.retryAfter ?? 1) * 1000);
      }
    }
  }

  /**
   * DELETE /session, as a keep-alive request (so it also goes out while the page unloads).
   * Resolves when the server has answered or could not be reached; never rejects.
   * @param {string} token The session's token.
   * @returns {Promise<void>}
   */
  async deleteSession(token) {
    try {
      await this.#fetch(this.url('/session'), {
        method: 'DELETE',
        keepalive: true,
        headers: { Authorization: `Bearer ${token}` },
      });
    } catch {
      // The session expires after the server's TTL anyway.
    }
  }
}

/**
 * The `joinToken` for one registration (a function is asked again each time); a function that
 * fails is a network error, so registering is retried.
 * @param {JoinToken | undefined} joinToken
 * @returns {Promise<string | undefined>}
 */
export async function currentJoinToken(joinToken) {
  if (typeof joinToken !== 'function') return joinToken;
  try {
    return await joinToken();
  } catch (cause) {
    throw new SwitchboardError('the join token could not be had', { cause });
  }
}

/**
 * `Retry-After` in seconds (delta-seconds or an HTTP date), or null.
 * @param {string | null} value
 * @returns {number | null}
 */
function retryAfterSeconds(value) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1000);
}

/** @param {number} ms */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A fresh `Idempotency-Key`: 128 random bits. (`crypto.randomUUID` needs a secure context.)
 * @returns {string}
 */
export function idempotencyKey() {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
