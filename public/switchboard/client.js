// client.js: the Switchboard class, what a page holds: the options, the public methods, the
// events it dispatches and the roster it keeps. connection.js keeps the session attached.

import { Connection } from './connection.js';
import { SwitchboardError } from './errors.js';
import { Api, currentJoinToken, idempotencyKey } from './http.js';
import { Presence } from './presence.js';
import { SessionStore } from './storage.js';
import { watchWindow } from './window.js';

/**
 * @typedef {import('./types.js').Peer} Peer
 * @typedef {import('./types.js').Room} Room
 * @typedef {import('./types.js').Session} Session
 * @typedef {import('./types.js').State} State
 * @typedef {import('./types.js').SwitchboardOptions} SwitchboardOptions
 */

/**
 * The stream's messages and the name each is dispatched under here.
 * @type {Record<string, 'message' | 'broadcast' | 'server_message'>}
 */
const MESSAGES = {
  client_response: 'message',
  client_broadcast: 'broadcast',
  server_message: 'server_message',
};

/**
 * A client of one switchboard server: one session at a time, kept alive by itself.
 *
 * Events (all `CustomEvent`s; types in switchboard.d.ts):
 * `state` {state, previous}, `ready` {id, name, clients, rooms, resumed}, `presence`
 * {presence, rooms} (after anything that changed either), `new_user` {id, name, room,
 * eventId, replayed}, `user_left` {id, name, room, eventId}, `joined` {room, members, clients,
 * eventId}, `left` {room, eventId}, `room_count` {room, members, eventId}, `message` (a direct
 * message, the `client_response` payload plus eventId), `broadcast` (`client_broadcast`, with
 * its room, plus eventId), `server_message` {to, room, message, eventId} (from the app's
 * backend), `lagged` {missed}, `refresh_required` {expires_in, eventId} (the session ends
 * soon: with a `joinToken` function the client refreshes by itself), `refreshed` {expires_at,
 * expires_in}, `expired` {reason, eventId} (the session ended; the client then registers
 * again if its `joinToken` still gives a valid token), `rejoined` {previousId, id, name,
 * reason}, `error` {error, fatal}.
 */
export class Switchboard extends EventTarget {
  /** @type {{ autoLeaveOnPagehide: boolean, maxSendRetries: number }} */
  #options;
  /** @type {Api} */
  #api;
  /** @type {Connection} */
  #link;
  /** @type {SessionStore | null} */
  #store = null;
  /** The others and this session's rooms, as the stream tells them. */
  #presence = new Presence();
  /**
   * The rooms to register in: the `rooms` option until a `ready` says which the session is in,
   * then those, kept from `joined` and `left`; undefined leaves it to the server (`lobby`).
   * @type {string[] | undefined}
   */
  #wantedRooms;
  /** @type {State} */
  #state = 'idle';
  /** @type {{ resolve: (board: Switchboard) => void, reject: (error: Error) => void }[]} */
  #waiters = [];
  /** The session `pagehide` left, so that a page restored from the bfcache says it rejoined. */
  #leftOnPagehide = /** @type {string | null} */ (null);
  /** @type {(() => void) | null} */
  #removeWindowListeners = null;
  /** @type {import('./types.js').JoinToken | undefined} */
  #joinToken;

  /**
   * @param {SwitchboardOptions} options
   */
  constructor(options) {
    super();
    const {
      name,
      rooms,
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
    if (rooms !== undefined && !(Array.isArray(rooms) && rooms.every((room) => typeof room === 'string'))) {
      throw new TypeError('Switchboard: `rooms` must be an array of room names');
    }
    this.#wantedRooms = rooms === undefined ? undefined : [...rooms];
    this.#joinToken = joinToken;
    const base = String(baseUrl).replace(/\/+$/, '');
    this.#options = { autoLeaveOnPagehide, maxSendRetries };
    this.#api = new Api(fetch, base);
    const api = this.#api;
    const wanted = () => this.#wantedRooms;
    const link = { api, EventSource, name, joinToken, rooms: wanted, backoffInitialMs, backoffMaxMs };
    this.#link = new Connection(link, {
      state: (state) => this.#setState(state),
      ready: (data, resumed) => this.#onReady(data, resumed),
      event: (type, data, eventId) => this.#onEvent(type, data, eventId),
      error: (error) => this.#emit('error', { error, fatal: false }),
      fail: (error) => {
        this.#shutdown(error);
        this.#link.forget();
        this.#emit('error', { error, fatal: true });
      },
      lost: () => this.#store?.clear(),
      registered: (rejoin) => {
        this.#presence.clear();
        this.#save();
        if (!rejoin) return;
        const { id, name } = /** @type {Session} */ (this.#link.session);
        this.#emit('rejoined', { ...rejoin, id, name });
        this.#emitPresence();
      },
    });
    if (persist && storage) {
      this.#store = new SessionStore(storage, `switchboard:${base || globalThis.location?.origin || ''}`);
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
    const session = this.#link.session;
    return session ? session.id : null;
  }

  /** The name this client registers under (the server's spelling once registered). */
  get name() {
    return this.#link.name;
  }

  /** `idle`, `connecting`, `open`, `reconnecting` or `closed`. */
  get state() {
    return this.#state;
  }

  /** The others online (in any of this session's rooms), keyed by id. Live: read it, do not
   * change it. */
  get presence() {
    return this.#presence.others;
  }

  /**
   * This session's rooms, keyed by name: each with its member count (this session included)
   * and its roster of the others (null in a room above the server's presence limit, which
   * tells only the count). Live: read it, do not change it.
   * @returns {ReadonlyMap<string, Room>}
   */
  get rooms() {
    return this.#presence.rooms;
  }

  /** The id of the last event read from the stream (the resume point), or null. */
  get lastEventId() {
    return this.#link.lastEventId;
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
      const left = this.#leftOnPagehide;
      this.#leftOnPagehide = null;
      this.#listenToWindow();
      this.#setState('connecting');
      const stored = this.#link.session || !this.#store ? null : this.#store.read(this.#link.name);
      this.#link.start(stored, left);
    }
    return waiting;
  }

  /**
   * Moves this session's end with a new join token from the `joinToken` option
   * (`POST /session/refresh`); done by itself on `refresh_required` when `joinToken` is a
   * function. Resolves with `{expires_at, expires_in}` and dispatches `refreshed`.
   * @returns {Promise<{ expires_at: number, expires_in: number }>}
   */
  async refresh() {
    const session = this.#link.session;
    if (!session) throw new SwitchboardError('not connected: no session yet', { code: 'not_connected' });
    const joinToken = await currentJoinToken(this.#joinToken);
    const body = { join_token: joinToken || '' };
    const refreshed = await this.#api.request('POST', '/session/refresh', body, session.token);
    this.#emit('refreshed', refreshed);
    return refreshed;
  }

  /**
   * Leaves: deletes the session (a keep-alive request, so it also works while the page
   * unloads), closes the stream and clears presence. Resolves when the server has answered or
   * could not be reached; never rejects.
   * @returns {Promise<void>}
   */
  async leave() {
    const session = this.#link.session;
    if (!this.#leftOnPagehide) this.#stopListeningToWindow();
    this.#shutdown(new SwitchboardError('left', { code: 'closed' }));
    this.#link.forget();
    this.#store?.clear();
    if (session) await this.#api.deleteSession(session.token);
  }

  /**
   * Stops without deleting the session: the stream closes and the server keeps the session for
   * its TTL. `connect` within it resumes the same session (with `persist`, so does a reloaded
   * page); after it, `connect` registers again and dispatches `rejoined`.
   */
  close() {
    this.#save();
    this.#stopListeningToWindow();
    this.#shutdown(new SwitchboardError('closed', { code: 'closed' }));
  }

  // ----------------------------------------------------------------- writes

  /**
   * Sends a direct message (any JSON value) into one recipient's stream. Waits out 429
   * mailbox_full, and tries again after a 503 or a lost connection, up to `maxSendRetries`
   * times: every try carries the same `Idempotency-Key`, so the message is delivered once.
   * Resolves with `{event_id}`, the id the event got in the recipient's stream.
   * @param {string} recipient
   * @param {unknown} message
   * @returns {Promise<{ event_id: number }>}
   */
  send(recipient, message) {
    return this.#write('/response', { recipient, message }, idempotencyKey());
  }

  /**
   * Sends a message (any JSON value) to every other member of a room (`room`; the server's
   * default, `lobby`, when left out); the session must be in it (403 not_a_member). Waits out
   * 429 like `send`. Resolves with `{recipients}`.
   * @param {unknown} message
   * @param {{ room?: string }} [options]
   * @returns {Promise<{ recipients: number }>}
   */
  broadcast(message, { room } = {}) {
    return this.#write('/broadcast', room === undefined ? { message } : { message, room });
  }

  /**
   * Joins a room (`PUT /session/rooms/{room}`). Resolves with `{room, members}` (members
   * counting this session); `rooms` has it once the stream's `joined` arrives (a `joined`
   * event, then `presence`). Joining a room the session is in changes nothing. Rejects with
   * a SwitchboardError: `invalid_room`, `room_forbidden`, `session_room_limit`, `room_limit`,
   * `not_connected`.
   * @param {string} room
   * @returns {Promise<{ room: string, members: number }>}
   */
  joinRoom(room) {
    return this.#roomRequest('PUT', room);
  }

  /**
   * Leaves a room (`DELETE /session/rooms/{room}`); `rooms` drops it once the stream's `left`
   * arrives. Rejects with a SwitchboardError (`not_a_member`, `not_connected`...).
   * @param {string} room
   * @returns {Promise<void>}
   */
  async leaveRoom(room) {
    await this.#roomRequest('DELETE', room);
  }

  /**
   * @param {'PUT' | 'DELETE'} method
   * @param {string} room
   */
  #roomRequest(method, room) {
    const session = this.#link.session;
    if (!session) {
      const error = new SwitchboardError('not connected: no session yet', { code: 'not_connected' });
      return Promise.reject(error);
    }
    return this.#api.request(method, `/session/rooms/${encodeURIComponent(room)}`, undefined, session.token);
  }

  /**
   * @param {string} path
   * @param {unknown} body
   * @param {string} [key] The request's `Idempotency-Key`.
   */
  #write(path, body, key) {
    const session = () => this.#link.session;
    return this.#api.write(path, body, session, this.#options.maxSendRetries, key);
  }

  // ----------------------------------------------------------------- events

  /**
   * The stream's `ready`: the roster of this attach replaces presence.
   * @param {any} data
   * @param {boolean} resumed
   */
  #onReady(data, resumed) {
    const me = /** @type {Session} */ (this.#link.session);
    this.#presence.reset(data, me.id);
    if (data.rooms) this.#wantedRooms = Object.keys(data.rooms);
    this.#setState('open');
    const rooms = data.rooms || {};
    this.#emit('ready', { id: data.id, name: data.name, clients: data.clients || [], rooms, resumed });
    this.#emitPresence();
    this.#settle(null);
  }

  /**
   * Any other event of the stream, read for the first time.
   * @param {string} type
   * @param {any} data
   * @param {number | null} eventId Its id, when it has one (the resume point moved to it).
   */
  #onEvent(type, data, eventId) {
    if (eventId !== null) this.#save();
    const me = /** @type {Session} */ (this.#link.session);
    switch (type) {
      case 'new_user': {
        if (data.id === me.id) return;
        const replayed = this.#presence.arrive(data, data.room);
        this.#emit('new_user', { id: data.id, name: data.name, room: data.room, eventId, replayed });
        this.#emitPresence();
        return;
      }
      case 'user_left':
        this.#presence.depart(data.id, data.room);
        this.#emit('user_left', { id: data.id, name: data.name, room: data.room, eventId });
        this.#emitPresence();
        return;
      case 'joined': {
        this.#presence.join(data.room, data.clients, data.members, me.id);
        this.#wantRoom(data.room, true);
        const clients = data.clients || null;
        this.#emit('joined', { room: data.room, members: data.members, clients, eventId });
        this.#emitPresence();
        return;
      }
      case 'left':
        this.#presence.leave(data.room);
        this.#wantRoom(data.room, false);
        this.#emit('left', { room: data.room, eventId });
        this.#emitPresence();
        return;
      case 'room_count':
        this.#presence.count(data.room, data.members);
        this.#emit('room_count', { room: data.room, members: data.members, eventId });
        this.#emitPresence();
        return;
      case 'lagged':
        this.#emit('lagged', { missed: data.missed });
        return;
      case 'refresh_required':
        this.#emit('refresh_required', { expires_in: data.expires_in, eventId });
        if (typeof this.#joinToken === 'function') {
          this.refresh().catch((error) => this.#emit('error', { error, fatal: false }));
        }
        return;
      case 'expired':
        this.#emit('expired', { reason: data.reason, eventId });
        return;
      default:
        this.#emit(MESSAGES[type], { ...data, eventId });
    }
  }

  /**
   * Keeps the rooms a registration asks for in step with the session's.
   * @param {string} room
   * @param {boolean} wanted
   */
  #wantRoom(room, wanted) {
    const rooms = (this.#wantedRooms || []).filter((each) => each !== room);
    if (wanted) rooms.push(room);
    this.#wantedRooms = rooms;
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

  #emitPresence() {
    this.#emit('presence', { presence: this.#presence.others, rooms: this.#presence.rooms });
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
   * Stops all activity (the session, if any, is kept for `connect` or `leave`).
   * @param {Error} reason
   */
  #shutdown(reason) {
    this.#link.stop();
    this.#setState('closed');
    if (this.#presence.others.size > 0 || this.#presence.rooms.size > 0) {
      this.#presence.clear();
      this.#emitPresence();
    }
    this.#settle(reason);
  }

  /** With `persist`, saves the session and its resume point. */
  #save() {
    const session = this.#link.session;
    if (this.#store && session) this.#store.write(session, this.#link.lastEventId);
  }

  // ------------------------------------------------------------------ window

  #listenToWindow() {
    if (this.#removeWindowListeners) return;
    this.#removeWindowListeners = watchWindow({
      pagehide: () => {
        const session = this.#link.session;
        if (!this.#options.autoLeaveOnPagehide) {
          this.#save();
        } else if (session) {
          this.#leftOnPagehide = session.id;
          this.leave();
        }
      },
      // Restored from the back/forward cache: after leaving on pagehide, register again;
      // otherwise reopen a stream the browser closed while the page was cached.
      restored: () => {
        if (this.#leftOnPagehide && this.#state === 'closed') {
          this.connect().catch(() => {});
        } else {
          this.#link.restore();
        }
      },
      // Back online: do not wait out the rest of a backoff delay.
      online: () => this.#link.retryNow(),
    });
  }

  #stopListeningToWindow() {
    if (this.#removeWindowListeners) this.#removeWindowListeners();
    this.#removeWindowListeners = null;
  }
}
