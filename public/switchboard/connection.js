// connection.js: what keeps one session attached to the server: registering (POST /helo),
// opening its stream and, when the stream fails, recovering it: reopening it at the resume
// point, or registering again under the same name when the session is gone.

import { Backoff } from './backoff.js';
import { SwitchboardError } from './errors.js';
import { currentJoinToken } from './http.js';
import { Stream } from './stream.js';

/**
 * @typedef {import('./types.js').Session} Session
 * @typedef {import('./types.js').RejoinReason} RejoinReason
 * @typedef {import('./types.js').JoinToken} JoinToken
 * @typedef {import('./http.js').Api} Api
 * @typedef {{ previousId: string, reason: RejoinReason }} Rejoin
 *
 * @typedef {object} ConnectionHandlers What the connection tells its client.
 * @property {(state: 'connecting' | 'reconnecting') => void} state It is (re)connecting.
 * @property {(data: any, resumed: boolean) => void} ready The stream's `ready`; `resumed`
 *   when this session had been attached before.
 * @property {(type: string, data: any, eventId: number | null) => void} event Any other event
 *   of the stream, read for the first time; `eventId` when it moved the resume point.
 * @property {(error: SwitchboardError) => void} error A problem it works around (it retries).
 * @property {(error: SwitchboardError) => void} fail A refusal that retrying cannot change.
 * @property {() => void} lost The session is gone (the server no longer knows it).
 * @property {(rejoin: Rejoin | null) => void} registered A new session, and when one was lost,
 *   which and why; its stream opens right after.
 */

/** One session at a time; `stop` makes any work under way drop its result. */
export class Connection {
  /** @type {Api} */
  #api;
  /** @type {Stream} */
  #stream;
  /** @type {Backoff} */
  #backoff;
  /** @type {JoinToken | undefined} */
  #joinToken;
  /** The rooms to register in (asked on every registration). @type {() => string[] | undefined} */
  #rooms;
  /** @type {ConnectionHandlers} */
  #on;

  /** @type {string} */
  #name;
  /** @type {Session | null} */
  #session = null;
  /** Whether a `ready` has come for the current session (the next one is a resume). */
  #attached = false;
  /** Bumped by start/stop so that work started before it drops its result. */
  #generation = 0;
  /**
   * The session lost and why, kept until registering again succeeds (it may take attempts).
   * @type {Rejoin | null}
   */
  #pendingRejoin = null;

  /**
   * @param {{ api: Api, EventSource: typeof globalThis.EventSource, name: string,
   *   joinToken: JoinToken | undefined, rooms: () => string[] | undefined,
   *   backoffInitialMs: number, backoffMaxMs: number }} options `rooms` is asked on every
   *   registration, so a session registered again is in the rooms the lost one was in.
   * @param {ConnectionHandlers} on
   */
  constructor({ api, EventSource, name, joinToken, rooms, backoffInitialMs, backoffMaxMs }, on) {
    this.#api = api;
    this.#name = name;
    this.#joinToken = joinToken;
    this.#rooms = rooms;
    this.#on = on;
    this.#backoff = new Backoff(backoffInitialMs, backoffMaxMs);
    this.#stream = new Stream(EventSource, api, {
      event: (type, data, eventId) => {
        if (type !== 'ready') {
          on.event(type, data, eventId);
          return;
        }
        const resumed = this.#attached;
        this.#attached = true;
        this.#backoff.reset();
        on.ready(data, resumed);
      },
      error: (error) => on.error(error),
      trouble: (gaveUp) => {
        if (gaveUp) {
          // The browser gave up: the server answered something other than a stream.
          on.state('reconnecting');
          this.#schedule();
        } else {
          // The browser retries by itself and sends Last-Event-ID.
          on.state(this.#attached ? 'reconnecting' : 'connecting');
        }
      },
    });
  }

  /** The current session, or null. */
  get session() {
    return this.#session;
  }

  /** The name to register under (the server's spelling once registered). */
  get name() {
    return this.#name;
  }

  /** The id of the last event read from the stream (the resume point), or null. */
  get lastEventId() {
    return this.#stream.lastEventId;
  }

  /**
   * Starts: resumes the current session, or else `stored` (one saved before a reload), or
   * registers a new one, as the session `left` on pagehide (if any) again.
   * @param {{ id: string, token: string, name: string, lastEventId: number | null } | null} stored
   * @param {string | null} left
   */
  start(stored, left) {
    this.#generation += 1;
    if (!this.#session && stored) {
      this.#session = { id: stored.id, token: stored.token, name: stored.name };
      this.#stream.lastEventId = stored.lastEventId;
      this.#name = stored.name;
    }
    if (this.#session) {
      this.#attached = true; // It was attached before: this is a resume.
      this.#stream.open(this.#session);
    } else {
      this.#register(this.#generation, left, left ? 'pagehide' : null);
    }
  }

  /** Stops all activity; the session, if any, is kept for `start` (or `forget`). */
  stop() {
    this.#generation += 1;
    this.#pendingRejoin = null;
    this.#backoff.cancel();
    this.#stream.abortProbe();
    this.#stream.close();
    this.#backoff.reset();
  }

  /** Drops the session (after `stop`): the next `start` registers. */
  forget() {
    this.#session = null;
    this.#stream.lastEventId = null;
    this.#attached = false;
  }

  /** A page restored from the back/forward cache: reopens a stream the browser closed. */
  restore() {
    if (!this.#stream.gaveUp) return;
    this.#stream.close();
    this.#on.state('reconnecting');
    this.#recover();
  }

  /** Back online: recovers now rather than after the rest of a backoff delay. */
  retryNow() {
    if (!this.#backoff.waiting) return;
    this.#backoff.cancel();
    this.#recover();
  }

  /** Waits for the next backoff delay, then recovers. */
  #schedule() {
    this.#backoff.schedule(() => this.#recover());
  }

  /**
   * One recovery step: with no session, register; with one, ask the stream what became of it
   * and reopen, or register again when the session is gone.
   */
  async #recover() {
    const generation = this.#generation;
    if (!this.#session) {
      await this.#register(generation, null, null);
      return;
    }
    const status = await this.#stream.probe(this.#session);
    if (generation !== this.#generation) return;
    const session = /** @type {Session} */ (this.#session);
    if (status === 200) {
      this.#stream.open(session);
    } else if (status === 404 || status === 401) {
      this.#session = null;
      this.#on.lost();
      await this.#register(generation, session.id, status === 404 ? 'unknown_session' : 'unauthorized');
    } else if (status === 400) {
      // The resume point is not one of this stream's ids: take what the mailbox holds.
      this.#stream.lastEventId = null;
      this.#stream.open(session);
    } else {
      this.#on.error(
        new SwitchboardError(`the stream answered ${status || 'nothing'}; retrying`, {
          status,
          code: status ? 'http_error' : 'network_error',
        }),
      );
      this.#schedule();
    }
  }

  /**
   * POST /helo with the name and rooms (and `joinToken`); on success opens the new session's stream, and
   * when a session was lost (`previousId`), says so (`registered`). Failures are retried with
   * backoff (the next step registers again, as there is no session), except refusals that
   * retrying cannot change.
   * @param {number} generation
   * @param {string | null} previousId
   * @param {RejoinReason | null} reason
   */
  async #register(generation, previousId, reason) {
    if (previousId) this.#pendingRejoin = { previousId, reason: reason || 'unknown_session' };
    /** @type {Session} */
    let session;
    try {
      const joinToken = await currentJoinToken(this.#joinToken);
      const rooms = this.#rooms();
      const body = rooms === undefined ? { name: this.#name } : { name: this.#name, rooms };
      session = await this.#api.request('POST', '/helo', body, joinToken);
    } catch (error) {
      if (generation !== this.#generation) return;
      const refused = /** @type {SwitchboardError} */ (error);
      // 4xx other than 429 will not change by retrying (invalid_name, payload_too_large...).
      if (refused.status >= 400 && refused.status < 500 && refused.status !== 429) {
        this.#on.fail(refused);
      } else {
        this.#on.error(refused);
        this.#schedule();
      }
      return;
    }
    if (generation !== this.#generation) {
      // Stopped while registering: do not leave a session behind.
      this.#api.deleteSession(session.token);
      return;
    }
    this.#session = { id: session.id, token: session.token, name: session.name };
    this.#name = session.name;
    this.#stream.lastEventId = null;
    this.#attached = false;
    const rejoin = this.#pendingRejoin;
    this.#pendingRejoin = null;
    this.#on.registered(rejoin);
    this.#stream.open(/** @type {Session} */ (this.#session));
  }
}
