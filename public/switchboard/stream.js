// stream.js: one session's event stream, an EventSource on /events/{id}: opening it at the
// resume point, reading each event once and in order, and asking the stream URL what became
// of it once the browser has given up.
//
// The resume point is the id of the last event read: a new EventSource resumes after it
// (`?last_event_id=`); the browser's own reconnects send `Last-Event-ID` by themselves.
//
// No secret ever stands in the stream's URL: on the server's own origin the session cookie of
// POST /helo opens it (the browser's own reconnects send it too); on another origin a fresh
// single-use ticket from POST /session/ticket does, asked for before each new EventSource (a
// browser's own reconnect with a spent ticket is refused, and the client opens a new one).

import { SwitchboardError } from './errors.js';

/**
 * @typedef {import('./types.js').Session} Session
 * @typedef {import('./http.js').Api} Api
 *
 * @typedef {object} StreamHandlers
 * @property {(type: string, data: any, eventId: number | null) => void} event An event read
 *   for the first time, its data parsed; `eventId` is its id when it carries one (the resume
 *   point has moved to it).
 * @property {(error: SwitchboardError) => void} error An event whose data is not JSON.
 * @property {(gaveUp: boolean) => void} trouble The connection failed, and the browser either
 *   retries by itself (false) or gave up after an answer that is not a stream (true: the stream
 *   is closed, a new one has to be opened).
 */

/** EventSource.readyState once the browser has given up (an injected one may lack the static). */
const CLOSED = 2;

/** The stream's events. */
const EVENTS = [
  'ready',
  'new_user',
  'user_left',
  'client_response',
  'client_broadcast',
  'server_message',
  'lagged',
  'joined',
  'left',
  'room_count',
  'refresh_required',
  'expired',
];

/** Server events that carry an `id:` (and so move the resume point). */
const EVENTS_WITH_ID = new Set([
  'new_user',
  'client_response',
  'client_broadcast',
  'user_left',
  'server_message',
  'joined',
  'left',
  'room_count',
  'refresh_required',
  'expired',
]);

/** At most one EventSource at a time; events of one closed or replaced are dropped. */
export class Stream {
  /** @type {typeof globalThis.EventSource} */
  #EventSource;
  /** @type {Api} */
  #api;
  /** @type {StreamHandlers} */
  #on;
  /** @type {EventSource | null} */
  #source = null;
  /** @type {AbortController | null} */
  #probe = null;
  /** Bumped by every open and close, so a ticket that arrives late opens nothing. */
  #opening = 0;
  /**
   * The id of the last event read from the stream (the resume point), or null.
   * @type {number | null}
   */
  lastEventId = null;

  /**
   * @param {typeof globalThis.EventSource} EventSource
   * @param {Api} api
   * @param {StreamHandlers} on
   */
  constructor(EventSource, api, on) {
    this.#EventSource = EventSource;
    this.#api = api;
    this.#on = on;
  }

  /** Whether the browser has given up on the open stream (e.g. while the page was cached). */
  get gaveUp() {
    return this.#source !== null && this.#source.readyState === CLOSED;
  }

  /**
   * Opens `session`'s stream after `lastEventId`.
   * @param {Session} session
   */
  open(session) {
    this.#opening += 1;
    if (this.#api.sameOrigin) {
      this.#connect(session, new URLSearchParams());
      return;
    }
    const opening = this.#opening;
    this.#api.request('POST', '/session/ticket', undefined, session.token).then(
      ({ ticket }) => {
        if (opening === this.#opening) this.#connect(session, new URLSearchParams({ ticket }));
      },
      () => {
        // As a stream the server refused: the owner probes what became of the session.
        if (opening === this.#opening) this.#on.trouble(true);
      },
    );
  }

  /**
   * The EventSource itself, with `query` (the ticket, if any) and the resume point.
   * @param {Session} session
   * @param {URLSearchParams} query
   */
  #connect(session, query) {
    if (this.lastEventId !== null) query.set('last_event_id', String(this.lastEventId));
    const search = String(query) ? `?${query}` : '';
    const source = new this.#EventSource(this.#api.url(`/events/${encodeURIComponent(session.id)}${search}`));
    this.#source = source;

    source.addEventListener('error', () => {
      if (this.#source !== source) return;
      if (source.readyState === CLOSED) {
        // The browser gave up: the server answered something other than a stream.
        this.close();
        this.#on.trouble(true);
      } else {
        // The browser retries by itself and sends Last-Event-ID.
        this.#on.trouble(false);
      }
    });

    for (const type of EVENTS) {
      source.addEventListener(type, (event) => {
        if (this.#source !== source) return;
        this.#read(type, /** @type {MessageEvent} */ (event));
      });
    }
  }

  /** Closes the stream, if one is open; its later events are dropped. */
  close() {
    this.#opening += 1;
    if (this.#source) this.#source.close();
    this.#source = null;
  }

  /** Aborts the probe under way, if any (it then answers 0). */
  abortProbe() {
    if (this.#probe) this.#probe.abort();
  }

  /**
   * The status the stream URL answers with now (the EventSource does not say which status
   * made it give up): headers only, the request is aborted as soon as they arrive (a 200
   * attaches and detaches again, which moves nothing: the resume point is passed explicitly).
   * 0 when the server cannot be reached.
   * @param {Session} session
   * @returns {Promise<number>}
   */
  async probe(session) {
    const resume = this.lastEventId === null ? '' : `?last_event_id=${this.lastEventId}`;
    const probe = new AbortController();
    this.#probe = probe;
    try {
      const response = await this.#api.fetch(`/events/${encodeURIComponent(session.id)}${resume}`, {
        headers: { Accept: 'text/event-stream', Authorization: `Bearer ${session.token}` },
        cache: 'no-store',
        signal: probe.signal,
      });
      return response.status;
    } catch {
      return 0;
    } finally {
      probe.abort();
      if (this.#probe === probe) this.#probe = null;
    }
  }

  /**
   * @param {string} type
   * @param {MessageEvent} event
   */
  #read(type, event) {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (cause) {
      this.#on.error(new SwitchboardError(`unreadable ${type} event`, { code: 'invalid_event', cause }));
      return;
    }
    let eventId = null;
    if (EVENTS_WITH_ID.has(type)) {
      eventId = Number(event.lastEventId);
      if (!Number.isSafeInteger(eventId)) {
        eventId = null;
      } else if (this.lastEventId !== null && eventId <= this.lastEventId) {
        return; // Already read: a replay overlapping what this client had.
      } else {
        this.lastEventId = eventId;
      }
    }
    this.#on.event(type, data, eventId);
  }
}
