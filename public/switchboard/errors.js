// errors.js: SwitchboardError, what the client rejects with and reports in its `error` events.

/** An error from the API (or from reaching it), with what the caller needs to decide. */
export class SwitchboardError extends Error {
  /**
   * @param {string} message
   * @param {{ status?: number, code?: string, retryAfter?: number | null, cause?: unknown }} [details]
   */
  constructor(message, { status = 0, code = 'network_error', retryAfter = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'SwitchboardError';
    /** HTTP status, or 0 when no answer came (network error, not connected). */
    this.status = status;
    /**
     * The API's snake_case `error` code, or `network_error`, `not_connected`, `closed`,
     * `http_error` (a status without a JSON error), `invalid_event` (unreadable stream data).
     */
    this.code = code;
    /** Seconds the server asked to wait (`Retry-After`), or null. */
    this.retryAfter = retryAfter;
  }
}
