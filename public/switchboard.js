// switchboard.js: a browser client for the switchboard HTTP + SSE API (openapi.yaml).
//
// An ES module with no dependencies and no build step, served at `/switchboard.js`:
//
//   import { Switchboard } from '/switchboard.js';
//   const board = await Switchboard.join({ name: 'alice' });
//   board.addEventListener('message', (e) => console.log(e.detail.from_name, e.detail.message));
//   board.addEventListener('presence', () => render(board.presence));
//   await board.send(someId, 'hello');
//
// What it does for the page:
// - registers (POST /helo, with `joinToken` as `Authorization: Bearer` for a server running
//   `--auth jwt`) and reads the session's stream (EventSource on /events/{id});
// - keeps `presence`, a Map of the others keyed by id, from `ready` / `new_user` / `user_left`
//   (the roster in each `ready` replaces it, so a resume never leaves a stale entry), and marks a
//   `new_user` whose peer that roster already listed as `replayed`: it happened before the stream
//   attached (the mailbox replays it after `ready`), so it is not news;
// - remembers the last event id it read and resumes after it (`?last_event_id=`) whenever it has
//   to open a new EventSource; the browser's own reconnects send `Last-Event-ID` by themselves;
// - reconnects with exponential backoff and full jitter (capped at 10 s by default) when the
//   browser gives up (an EventSource is CLOSED after any non-200 answer, e.g. 503);
// - when the session is gone (404 unknown_session or 401, e.g. after a server restart or TTL
//   expiry) registers again with the same name by itself and dispatches `rejoined`;
// - `send` / `broadcast` wait out `429 Retry-After` a bounded number of times;
// - `leave` deletes the session with a keep-alive request, also on `pagehide` by default.
//
// Tokens live in memory only, unless `persist: true` keeps the session in sessionStorage so a
// reload resumes it (same id, replay of what was missed). The trade-off: any script running on
// the page's origin can read sessionStorage (in memory the token dies with the page), and a
// duplicated tab copies sessionStorage, so two tabs would hold one session and take its stream
// over from each other. With `persist` the page does not leave on `pagehide` (that would delete
// the session the reload means to resume); the session expires after the server's TTL instead.
//
// Types: JSDoc here, and `switchboard.d.ts` beside this file for TypeScript users.

/**
 * @typedef {{ id: string, name: string }} Peer
 * @typedef {{ id: string, token: string, name: string }} Session
 * @typedef {'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'} State
 * @typedef {'unknown_session' | 'unauthorized' | 'pagehide'} RejoinReason
 * @typedef {string | (() => string | Promise<string>)} JoinToken
 *
 * @typedef {object} SwitchboardOptions
 * @property {string} name The display name to register with (1 to 64 characters).
 * @property {string} [baseUrl] The server's origin (and path prefix), '' for this page's.
 * @property {JoinToken} [joinToken] Sent on POST /helo as `Authorization: Bearer` (a server
 *   running `--auth jwt` requires it); a function is asked again on every registration.
 * @property {typeof globalThis.fetch} [fetch] The fetch to use (tests, instrumentation).
 * @property {typeof globalThis.EventSource} [EventSource] The EventSource to use.
 * @property {boolean} [persist] Keep the session in sessionStorage so a reload resumes it.
 * @property {Storage | null} [storage] Where `persist` keeps it (default sessionStorage).
 * @property {boolean} [autoLeaveOnPagehide] Leave on `pagehide` (default: true unless persist).
 * @property {number} [backoffInitialMs] The first reconnect delay's ceiling (default 500).
 * @property {number} [backoffMaxMs] The largest reconnect delay (default 10000).
 * @property {number} [maxSendRetries] 429 retries for send/broadcast (default 3).
 */

/** EventSource.readyState once the browser has given up (an injected one may lack the static). */
const CLOSED = 2;

/** Server events that carry an `id:` (and so move the resume point). */
const EVENTS_WITH_ID = new Set(['new_user', 'client_response', 'client_broadcast', 'user_left', 'server_message']);

/**
 * The stream's event names and the name each is dispatched under here.
 * @type {Record<string, string>}
 */
const DISPATCH = {
  ready: 'ready',
  new_user: 'new_user',
  user_left: 'user_left',
  client_response: 'message',
  client_broadcast: 'broadcast',
  server_message: 'server_message',
  lagged: 'lagged',
};

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

/**
 * A client of one switchboard server: one session at a time, kept alive by itself.
 *
 * Events (all `CustomEvent`s; types in switchboard.d.ts):
 * `state` {state, previous}, `ready` {id, name, clients, resumed}, `presence` {presence},
 * `new_user` {id, name, eventId, replayed}, `user_left` {id, name, eventId}, `message` (a
 * direct message, the `client_response` payload plus eventId), `broadcast` (`client_broadcast`
 * plus eventId), `server_message` {to, message, eventId} (from the app's backend), `lagged` {missed}, `rejoined` {previousId, id, name, reason},
 * `error` {error, fatal}.
 */
export class Switchboard extends EventTarget {
  /**
   * @type {{ baseUrl: string, autoLeaveOnPagehide: boolean, backoffInitialMs: number,
   *   backoffMaxMs: number, maxSendRetries: number }}
   */
  #options;
  /** @type {typeof globalThis.fetch} */
  #fetch;
  /** @type {typeof globalThis.EventSource} */
  #EventSource;
  /** @type {JoinToken | undefined} */
  #joinToken;
  /** @type {Storage | null} */
  #storage = null;
  #storageKey = '';

  /** @type {string} */
  #name;
  /** @type {Session | null} */
  #session = null;
  /** @type {number | null} */
  #lastEventId = null;
  /** Whether a `ready` has come for the current session (the next one is a resume). */
  #attached = false;
  /** @type {Map<string, Peer>} */
  #presence = new Map();
  /** @type {State} */
  #state = 'idle';

  /** @type {EventSource | null} */
  #source = null;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #timer = null;
  /** @type {AbortController | null} */
  #probe = null;
  #attempt = 0;
  /** Bumped by leave/close so that work started before it drops its result. */
  #generation = 0;

  /** @type {{ resolve: (board: Switchboard) => void, reject: (error: Error) => void }[]} */
  #waiters = [];
  /** The session `pagehide` left, so that a page restored from the bfcache says it rejoined. */
  #leftOnPagehide = /** @type {string | null} */ (null);
  /** @type {(() => void) | null} */
  #removeWindowListeners = null;
  /**
   * The session lost and why, kept until registering again succeeds (it may take attempts).
   * @type {{ previousId: string, reason: RejoinReason } | null}
   */
  #pendingRejoin = null;

  /**
   * @param {SwitchboardOptions} options
   */
  constructor(options) {
    super();
    const {
      name,
      baseUrl = '',
      joinToken,
      fetch = globalThis.fetch.bind(globalThis),
      EventSource = globalThis.EventSource,
      persist = false,
      storage = persist ? globalThis.sessionStorage : null,
      autoLeaveOnPagehide = !persist,
      backoffInitialMs = 500,
      backoffMaxMs = 10_000,
      maxSendRetries = 3,
    } = options || {};
    if (typeof name !== 'string' || name.trim() === '') {
      throw new TypeError('Switchboard: `name` must be a non-empty string');
    }
    this.#name = name;
    this.#options = {
      baseUrl: String(baseUrl).replace(/\/+$/, ''),
      autoLeaveOnPagehide,
      backoffInitialMs,
      backoffMaxMs,
      maxSendRetries,
    };
    this.#fetch = fetch;
    this.#EventSource = EventSource;
    this.#joinToken = joinToken;
    if (persist && storage) {
      this.#storage = storage;
      this.#storageKey = `switchboard:${this.#options.baseUrl || globalThis.location?.origin || ''}`;
    }
  }

  /**
   * Creates a client and connects it: resolves once the first `ready` has arrived.
   * @param {SwitchboardOptions} options
   * @returns {Promise<Switchboard>}
   */
  static async join(options) {
    return new Switchboard(options).connect();
  }

  // ------------------------------------------------------------------ state

  /** The session id, or null while there is none. */
  get id() {
    return this.#session ? this.#session.id : null;
  }

  /** The name this client registers under (the server's spelling once registered). */
  get name() {
    return this.#name;
  }

  /** `idle`, `connecting`, `open`, `reconnecting` or `closed`. */
  get state() {
    return this.#state;
  }

  /** The others online, keyed by id. Live: read it, do not change it. */
  get presence() {
    return this.#presence;
  }

  /** The id of the last event read from the stream (the resume point), or null. */
  get lastEventId() {
    return this.#lastEventId;
  }

  // -------------------------------------------------------------- lifecycle

  /**
   * Opens the stream: resumes the session that `close` kept (or that `persist` saved before a
   * reload), or registers a new one. Resolves with this client once the first `ready` has
   * arrived; rejects when registering is refused for good (e.g. 400 invalid_name) or when
   * `leave`/`close` runs first. Network errors and 5xx are retried.
   * @returns {Promise<Switchboard>}
   */
  connect() {
    const waiting = new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
    if (this.#state === 'open') {
      this.#settle(null);
    } else if (this.#state === 'idle' || this.#state === 'closed') {
      this.#generation += 1;
      const left = this.#leftOnPagehide;
      this.#leftOnPagehide = null;
      this.#listenToWindow();
      this.#setState('connecting');
      const stored = this.#session ? null : this.#readStorage();
      if (stored) {
        this.#session = { id: stored.id, token: stored.token, name: stored.name };
        this.#lastEventId = stored.lastEventId;
        this.#name = stored.name;
      }
      if (this.#session) {
        this.#attached = true; // It was attached before: this is a resume.
        this.#openStream();
      } else {
        this.#register(this.#generation, left, left ? 'pagehide' : null);
      }
    }
    return waiting;
  }

  /**
   * Leaves: deletes the session (a keep-alive request, so it also works while the page
   * unloads), closes the stream and clears presence. Resolves when the server has answered or
   * could not be reached; never rejects.
   * @returns {Promise<void>}
   */
  async leave() {
    const session = this.#session;
    if (!this.#leftOnPagehide) this.#stopListeningToWindow();
    this.#shutdown(new SwitchboardError('left', { code: 'closed' }));
    this.#forget();
    this.#clearStorage();
    if (!session) return;
    try {
      await this.#fetch(this.#url('/session'), {
        method: 'DELETE',
        keepalive: true,
        headers: { Authorization: `Bearer ${session.token}` },
      });
    } catch {
      // The session expires after the server's TTL anyway.
    }
  }

  /**
   * Stops without deleting the session: the stream closes and the server keeps the session for
   * its TTL. `connect` within it resumes the same session (with `persist`, so does a reloaded
   * page); after it, `connect` registers again and dispatches `rejoined`.
   */
  close() {
    this.#writeStorage();
    this.#stopListeningToWindow();
    this.#shutdown(new SwitchboardError('closed', { code: 'closed' }));
  }

  // ----------------------------------------------------------------- writes

  /**
   * Sends a direct message (any JSON value) into one recipient's stream. Waits out 429
   * mailbox_full up to `maxSendRetries` times. Resolves with `{event_id}`, the id the event got
   * in the recipient's stream.
   * @param {string} recipient
   * @param {unknown} message
   * @returns {Promise<{ event_id: number }>}
   */
  send(recipient, message) {
    return this.#write('/response', { recipient, message });
  }

  /**
   * Sends a message (any JSON value) to every other session. Resolves with `{recipients}`.
   * @param {unknown} message
   * @returns {Promise<{ recipients: number }>}
   */
  broadcast(message) {
    return this.#write('/broadcast', { message });
  }

  /**
   * @param {string} path
   * @param {unknown} body
   */
  async #write(path, body) {
    for (let retries = 0; ; retries += 1) {
      const session = this.#session;
      if (!session) {
        throw new SwitchboardError('not connected: no session yet', { code: 'not_connected' });
      }
      try {
        return await this.#request('POST', path, body, session.token);
      } catch (error) {
        const wait = /** @type {SwitchboardError} */ (error);
        if (wait.status !== 429 || retries >= this.#options.maxSendRetries) throw error;
        await sleep((wait.retryAfter ?? 1) * 1000);
      }
    }
  }

  /**
   * One JSON request. Resolves with the parsed body; rejects with a SwitchboardError.
   * @param {string} method
   * @param {string} path
   * @param {unknown} body
   * @param {string} [token]
   * @returns {Promise<any>}
   */
  async #request(method, path, body, token) {
    /** @type {Record<string, string>} */
    const headers = { 'Content-Type': 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await this.#fetch(this.#url(path), {
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

  // ----------------------------------------------------------------- stream

  #openStream() {
    const session = /** @type {Session} */ (this.#session);
    const query = new URLSearchParams({ token: session.token });
    if (this.#lastEventId !== null) query.set('last_event_id', String(this.#lastEventId));
    const source = new this.#EventSource(
      this.#url(`/events/${encodeURIComponent(session.id)}?${query}`),
    );
    this.#source = source;

    source.addEventListener('error', () => {
      if (this.#source !== source) return;
      if (source.readyState === CLOSED) {
        // The browser gave up: the server answered something other than a stream.
        this.#dropStream();
        this.#setState('reconnecting');
        this.#schedule();
      } else {
        // The browser retries by itself and sends Last-Event-ID.
        this.#setState(this.#attached ? 'reconnecting' : 'connecting');
      }
    });

    for (const type of Object.keys(DISPATCH)) {
      source.addEventListener(type, (event) => {
        if (this.#source !== source) return;
        this.#onEvent(type, /** @type {MessageEvent} */ (event));
      });
    }
  }

  /**
   * @param {string} type
   * @param {MessageEvent} event
   */
  #onEvent(type, event) {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (cause) {
      this.#error(new SwitchboardError(`unreadable ${type} event`, { code: 'invalid_event', cause }));
      return;
    }
    let eventId = null;
    if (EVENTS_WITH_ID.has(type)) {
      eventId = Number(event.lastEventId);
      if (!Number.isSafeInteger(eventId)) {
        eventId = null;
      } else if (this.#lastEventId !== null && eventId <= this.#lastEventId) {
        return; // Already read: a replay overlapping what this client had.
      } else {
        this.#lastEventId = eventId;
        if (this.#storage) this.#writeStorage();
      }
    }
    const me = /** @type {Session} */ (this.#session);

    switch (type) {
      case 'ready': {
        const resumed = this.#attached;
        this.#attached = true;
        this.#attempt = 0;
        this.#presence.clear();
        for (const peer of data.clients || []) {
          if (peer.id !== me.id) this.#presence.set(peer.id, { id: peer.id, name: peer.name });
        }
        this.#setState('open');
        this.#emit('ready', { id: data.id, name: data.name, clients: data.clients || [], resumed });
        this.#emit('presence', { presence: this.#presence });
        this.#settle(null);
        return;
      }
      case 'new_user': {
        if (data.id === me.id) return;
        // Listed already: this attach's `ready` roster had the peer, so the peer joined before
        // the stream attached and this is the mailbox replaying it.
        const replayed = this.#presence.has(data.id);
        this.#presence.set(data.id, { id: data.id, name: data.name });
        this.#emit('new_user', { id: data.id, name: data.name, eventId, replayed });
        this.#emit('presence', { presence: this.#presence });
        return;
      }
      case 'user_left':
        this.#presence.delete(data.id);
        this.#emit('user_left', { id: data.id, name: data.name, eventId });
        this.#emit('presence', { presence: this.#presence });
        return;
      case 'lagged':
        this.#emit('lagged', { missed: data.missed });
        return;
      default:
        this.#emit(/** @type {'message' | 'broadcast' | 'server_message'} */ (DISPATCH[type]), { ...data, eventId });
    }
  }

  // -------------------------------------------------------------- recovery

  /** Waits for the next backoff delay (full jitter), then recovers. */
  #schedule() {
    const { backoffInitialMs, backoffMaxMs } = this.#options;
    const ceiling = Math.min(backoffMaxMs, backoffInitialMs * 2 ** this.#attempt);
    this.#attempt += 1;
    this.#clearTimer();
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#recover();
    }, Math.random() * ceiling);
  }

  /**
   * One recovery step: with no session, register; with one, ask the stream what became of it
   * (the EventSource does not say which status made it give up) and reopen, or register again
   * when the session is gone.
   */
  async #recover() {
    const generation = this.#generation;
    const stale = () => generation !== this.#generation;
    if (!this.#session) {
      await this.#register(generation, null, null);
      return;
    }
    const status = await this.#probeStream();
    if (stale()) return;
    if (status === 200) {
      this.#openStream();
    } else if (status === 404 || status === 401) {
      const lost = this.#session.id;
      this.#session = null;
      this.#clearStorage();
      await this.#register(generation, lost, status === 404 ? 'unknown_session' : 'unauthorized');
    } else if (status === 400) {
      // The resume point is not one of this stream's ids: take what the mailbox holds.
      this.#lastEventId = null;
      this.#openStream();
    } else {
      this.#error(
        new SwitchboardError(`the stream answered ${status || 'nothing'}; retrying`, {
          status,
          code: status ? 'http_error' : 'network_error',
        }),
      );
      this.#schedule();
    }
  }

  /**
   * The status the stream URL answers with now: headers only, the request is aborted as soon as
   * they arrive (a 200 attaches and detaches again, which moves nothing: the resume point is
   * passed explicitly). 0 when the server cannot be reached.
   * @returns {Promise<number>}
   */
  async #probeStream() {
    const session = /** @type {Session} */ (this.#session);
    const resume = this.#lastEventId === null ? '' : `?last_event_id=${this.#lastEventId}`;
    const probe = new AbortController();
    this.#probe = probe;
    try {
      const response = await this.#fetch(
        this.#url(`/events/${encodeURIComponent(session.id)}${resume}`),
        {
          headers: { Accept: 'text/event-stream', Authorization: `Bearer ${session.token}` },
          cache: 'no-store',
          signal: probe.signal,
        },
      );
      return response.status;
    } catch {
      return 0;
    } finally {
      probe.abort();
      if (this.#probe === probe) this.#probe = null;
    }
  }

  /**
   * POST /helo with this client's name (and `joinToken`); on success opens the new session's stream, and when a
   * session was lost (`previousId`), dispatches `rejoined`. Failures are retried with backoff
   * (the next step registers again, as there is no session), except refusals that retrying
   * cannot change.
   * @param {number} generation
   * @param {string | null} previousId
   * @param {RejoinReason | null} reason
   */
  async #register(generation, previousId, reason) {
    if (previousId) this.#pendingRejoin = { previousId, reason: reason || 'unknown_session' };
    /** @type {Session} */
    let session;
    try {
      const joinToken = await this.#currentJoinToken();
      session = await this.#request('POST', '/helo', { name: this.#name }, joinToken);
    } catch (error) {
      if (generation !== this.#generation) return;
      const refused = /** @type {SwitchboardError} */ (error);
      // 4xx other than 429 will not change by retrying (invalid_name, payload_too_large...).
      if (refused.status >= 400 && refused.status < 500 && refused.status !== 429) {
        this.#fail(refused);
      } else {
        this.#error(refused);
        this.#schedule();
      }
      return;
    }
    if (generation !== this.#generation) {
      // Left while registering: do not leave a session behind.
      this.#fetch(this.#url('/session'), {
        method: 'DELETE',
        keepalive: true,
        headers: { Authorization: `Bearer ${session.token}` },
      }).catch(() => {});
      return;
    }
    this.#session = { id: session.id, token: session.token, name: session.name };
    this.#name = session.name;
    this.#lastEventId = null;
    this.#attached = false;
    this.#presence.clear();
    this.#writeStorage();
    const rejoin = this.#pendingRejoin;
    this.#pendingRejoin = null;
    if (rejoin) {
      this.#emit('rejoined', { ...rejoin, id: session.id, name: session.name });
      this.#emit('presence', { presence: this.#presence });
    }
    this.#openStream();
  }

  // ---------------------------------------------------------------- helpers

  /**
   * The `joinToken` for this registration; a function that fails is a network error (retried).
   * @returns {Promise<string | undefined>}
   */
  async #currentJoinToken() {
    if (typeof this.#joinToken !== 'function') return this.#joinToken;
    try {
      return await this.#joinToken();
    } catch (cause) {
      throw new SwitchboardError('the join token could not be had', { cause });
    }
  }

  /** @param {string} path */
  #url(path) {
    return this.#options.baseUrl + path;
  }

  /** @param {State} state */
  #setState(state) {
    if (state === this.#state) return;
    const previous = this.#state;
    this.#state = state;
    this.#emit('state', { state, previous });
  }

  /**
   * @param {string} type
   * @param {unknown} detail
   */
  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /**
   * A problem that the client works around by itself (it keeps trying).
   * @param {SwitchboardError} error
   */
  #error(error) {
    this.#emit('error', { error, fatal: false });
  }

  /**
   * A problem that ends the client: it stops, and `connect` can be called again.
   * @param {SwitchboardError} error
   */
  #fail(error) {
    this.#shutdown(error);
    this.#forget();
    this.#emit('error', { error, fatal: true });
  }

  /**
   * Resolves (null) or rejects every pending `connect`.
   * @param {Error | null} error
   */
  #settle(error) {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const { resolve, reject } of waiters) {
      if (error) reject(error);
      else resolve(this);
    }
  }

  /**
   * Stops all activity (the session, if any, is kept for `connect` or `#forget`).
   * @param {Error} reason
   */
  #shutdown(reason) {
    this.#generation += 1;
    this.#pendingRejoin = null;
    this.#clearTimer();
    if (this.#probe) this.#probe.abort();
    this.#dropStream();
    this.#attempt = 0;
    if (this.#presence.size > 0) {
      this.#presence.clear();
      this.#emit('presence', { presence: this.#presence });
    }
    this.#setState('closed');
    this.#settle(reason);
  }

  #forget() {
    this.#session = null;
    this.#lastEventId = null;
    this.#attached = false;
  }

  #dropStream() {
    if (this.#source) this.#source.close();
    this.#source = null;
  }

  #clearTimer() {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #listenToWindow() {
    if (this.#removeWindowListeners || typeof globalThis.addEventListener !== 'function') return;
    const onPagehide = () => {
      if (this.#options.autoLeaveOnPagehide) {
        if (this.#session) {
          this.#leftOnPagehide = this.#session.id;
          this.leave();
        }
      } else {
        this.#writeStorage();
      }
    };
    // A page restored from the back/forward cache: after leaving on pagehide, register again;
    // otherwise reopen a stream the browser closed while the page was cached.
    const onPageshow = (/** @type {PageTransitionEvent} */ event) => {
      if (!event.persisted) return;
      if (this.#leftOnPagehide && this.#state === 'closed') {
        this.connect().catch(() => {});
      } else if (this.#source && this.#source.readyState === CLOSED) {
        this.#dropStream();
        this.#setState('reconnecting');
        this.#recover();
      }
    };
    // Back online: do not wait out the rest of a backoff delay.
    const onOnline = () => {
      if (this.#timer !== null) {
        this.#clearTimer();
        this.#recover();
      }
    };
    globalThis.addEventListener('pagehide', onPagehide);
    globalThis.addEventListener('pageshow', onPageshow);
    globalThis.addEventListener('online', onOnline);
    this.#removeWindowListeners = () => {
      globalThis.removeEventListener('pagehide', onPagehide);
      globalThis.removeEventListener('pageshow', onPageshow);
      globalThis.removeEventListener('online', onOnline);
    };
  }

  #stopListeningToWindow() {
    if (this.#removeWindowListeners) this.#removeWindowListeners();
    this.#removeWindowListeners = null;
  }

  /** @returns {{ id: string, token: string, name: string, lastEventId: number | null } | null} */
  #readStorage() {
    if (!this.#storage) return null;
    try {
      const saved = JSON.parse(this.#storage.getItem(this.#storageKey) || 'null');
      if (saved && typeof saved.id === 'string' && typeof saved.token === 'string') {
        return {
          id: saved.id,
          token: saved.token,
          name: typeof saved.name === 'string' ? saved.name : this.#name,
          lastEventId: Number.isSafeInteger(saved.lastEventId) ? saved.lastEventId : null,
        };
      }
    } catch {
      // Unreadable or unavailable storage: start a new session.
    }
    return null;
  }

  #writeStorage() {
    if (!this.#storage || !this.#session) return;
    const { id, token, name } = this.#session;
    try {
      this.#storage.setItem(
        this.#storageKey,
        JSON.stringify({ id, token, name, lastEventId: this.#lastEventId }),
      );
    } catch {
      // Storage full or refused: the session still works, it just will not survive a reload.
    }
  }

  #clearStorage() {
    if (!this.#storage) return;
    try {
      this.#storage.removeItem(this.#storageKey);
    } catch {
      // Nothing to undo.
    }
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
