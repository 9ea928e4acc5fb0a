// Types for switchboard.js, the browser client of the switchboard HTTP + SSE API.
// The payloads follow openapi.yaml; fields this client adds are camelCase (`eventId`).

/** A session id (a UUID). */
export type SessionId = string;

/** Another client: `new_user`, `user_left`, and each entry of a `ready` roster. */
export interface Peer {
  id: SessionId;
  name: string;
}

/** A room name: 1 to 64 characters of `A-Z a-z 0-9 _ . : @ -`, case-sensitive, starting with a
 * letter or a digit. `lobby` is the default room. */
export type RoomName = string;

/** One of this session's rooms, as `Switchboard.rooms` keeps it. */
export interface Room {
  name: RoomName;
  /** Its members, this session included. */
  members: number;
  /** The others in it, keyed by id; null in a room above the server's `--room-presence-limit`
   * (or with presence off), where only the count is told (`room_count`). */
  roster: ReadonlyMap<SessionId, Peer> | null;
}

/** A room's roster as the stream carries it in `ready`: the others, or only the count. */
export type RosterOrCount = Peer[] | { members: number };

/** `idle` before `connect`, `connecting` until the first `ready`, `open` while the stream
 * reads, `reconnecting` while it is being restored, `closed` after `leave`/`close` or a fatal
 * error. */
export type SwitchboardState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/** A credential for `POST /helo` (sent as `Authorization: Bearer`), e.g. a JWT minted by the
 * app's backend for a server running `--auth jwt`. A function is called again on every
 * registration (also when the client registers again by itself), so it can fetch a fresh one. */
export type JoinToken = string | (() => string | Promise<string>);

/** Why a new session replaced the old one. */
export type RejoinReason = 'unknown_session' | 'unauthorized' | 'pagehide';

export interface SwitchboardOptions {
  /** The display name to register with: 1 to 64 characters, no control characters. */
  name: string;
  /** The rooms to register in. Default: the server's, `["lobby"]`; `[]`: none (direct messages
   * only). A session registered again by the client is put in the rooms the lost one was in. */
  rooms?: RoomName[];
  /** The server's origin (and path prefix); '' (default) for the page's own origin. A different
   * origin must be allowed by the server's `--cors-origin`. */
  baseUrl?: string;
  /** Sent on `POST /helo` as `Authorization: Bearer <joinToken>`; required by a server running
   * `--auth jwt` (its token's `name` claim then names the session). A function that throws or
   * rejects counts as a network error: registering is retried with backoff. A function is
   * also asked for a new token on `refresh_required`, which the client then sends to
   * `POST /session/refresh` by itself, so the session outlives the first token's `exp`. */
  joinToken?: JoinToken;
  /** The fetch to use (default: the global one). */
  fetch?: typeof globalThis.fetch;
  /** The EventSource constructor to use (default: the global one). */
  EventSource?: typeof globalThis.EventSource;
  /** Keep the session (id, token, name, resume point) in sessionStorage so that a reload resumes
   * it. Off by default: any script on the origin can read sessionStorage, and a duplicated tab
   * copies it (two tabs would then take one session's stream from each other). */
  persist?: boolean;
  /** Where `persist` keeps the session (default: sessionStorage). */
  storage?: Storage | null;
  /** Leave (DELETE /session, keep-alive) on `pagehide`. Default: true, false with `persist`. */
  autoLeaveOnPagehide?: boolean;
  /** Ceiling of the first reconnect delay in ms; it doubles per attempt (default 500). */
  backoffInitialMs?: number;
  /** Largest reconnect delay ceiling in ms (default 10000). Delays are uniformly random
   * below the ceiling ("full jitter"). */
  backoffMaxMs?: number;
  /** How many times `send`/`broadcast` wait out a 429 `Retry-After` before rejecting, and
   * `send` tries again after a 503 or a lost connection (one `Idempotency-Key` for all its
   * tries, so it is delivered once) (default 3). */
  maxSendRetries?: number;
}

export interface StateDetail {
  state: SwitchboardState;
  previous: SwitchboardState;
}

/** The `ready` event: this session and the roster of the others, first on every attach. */
export interface ReadyDetail {
  id: SessionId;
  name: string;
  /** The others in this session's rooms, each once. */
  clients: Peer[];
  /** Each room of this session with its roster (or count). */
  rooms: Record<RoomName, RosterOrCount>;
  /** True when this session had been attached before (a resume, not a new session). */
  resumed: boolean;
}

/** After anything that changed who is where. */
export interface PresenceDetail {
  /** The same live Map as `Switchboard.presence`. */
  presence: ReadonlyMap<SessionId, Peer>;
  /** The same live Map as `Switchboard.rooms`. */
  rooms: ReadonlyMap<RoomName, Room>;
}

export interface PeerDetail extends Peer {
  /** The room the peer joined or left (a peer leaving the hub is told once per shared room). */
  room: RoomName;
  /** The event's id in this session's stream. */
  eventId: number | null;
}

/** `joined`: this session is now in a room (`joinRoom`, or the app's backend put it there). */
export interface JoinedDetail {
  room: RoomName;
  /** Its members, this session included. */
  members: number;
  /** The others in it; null above the presence limit. */
  clients: Peer[] | null;
  eventId: number | null;
}

/** `left`: this session is no longer in a room (`leaveRoom`, or the app's backend). */
export interface LeftDetail {
  room: RoomName;
  eventId: number | null;
}

/** `room_count`: a room above the presence limit has this many members now. */
export interface RoomCountDetail {
  room: RoomName;
  members: number;
  eventId: number | null;
}

/** `refresh_required`: this session ends in `expires_in` seconds unless refreshed. */
export interface RefreshRequiredDetail {
  expires_in: number;
  eventId: number | null;
}

/** `refreshed`: this session now ends at `expires_at` (seconds since the epoch). */
export interface RefreshedDetail {
  expires_at: number;
  expires_in: number;
}

/** `expired`: this session ended (its join token's `exp`, `--max-session-age`, or the app's
 * backend); its stream ends, and the client registers again if it can. */
export interface ExpiredDetail {
  reason: 'join_token' | 'max_session_age' | 'server';
  eventId: number | null;
}

/** `new_user`: another client said hello. */
export interface NewUserDetail extends PeerDetail {
  /** True when this attach's `ready` roster already listed the peer: it joined before the
   * stream attached, and the mailbox is replaying its `new_user` (after a resume, or when it
   * joined between this client's `POST /helo` and its first attach). Not news. */
  replayed: boolean;
}

/** A direct message to this session (`client_response`). */
export interface MessageDetail<M = unknown> {
  from: SessionId;
  from_name: string;
  recipient: SessionId;
  /** Any JSON value, as the sender sent it. */
  message: M;
  eventId: number | null;
}

/** A message to every member of a room (`client_broadcast`). */
export interface BroadcastDetail<M = unknown> {
  from: SessionId;
  from_name: string;
  /** The room it was sent to. */
  room: RoomName;
  message: M;
  eventId: number | null;
}

/** A message from the app's backend, through the server API (`server_message`). */
export interface ServerMessageDetail<M = unknown> {
  /** Whether it was addressed to this session, to its user, to a room's members, or to
   * everyone. */
  to: 'session' | 'user' | 'room' | 'everyone';
  /** The room, when `to` is `room`. */
  room?: RoomName;
  /** Any JSON value, as the backend sent it. */
  message: M;
  eventId: number | null;
}

export interface LaggedDetail {
  /** Events evicted from this session's mailbox before they were read. */
  missed: number;
}

/** The old session was gone, and the client registered again with the same name. */
export interface RejoinedDetail {
  previousId: SessionId;
  id: SessionId;
  name: string;
  reason: RejoinReason;
}

export interface ErrorDetail {
  error: SwitchboardError;
  /** False: the client keeps trying by itself. True: it stopped (state `closed`). */
  fatal: boolean;
}

/** Event name → event type, for `addEventListener`. */
export interface SwitchboardEventMap {
  state: CustomEvent<StateDetail>;
  ready: CustomEvent<ReadyDetail>;
  presence: CustomEvent<PresenceDetail>;
  new_user: CustomEvent<NewUserDetail>;
  user_left: CustomEvent<PeerDetail>;
  joined: CustomEvent<JoinedDetail>;
  left: CustomEvent<LeftDetail>;
  room_count: CustomEvent<RoomCountDetail>;
  message: CustomEvent<MessageDetail>;
  broadcast: CustomEvent<BroadcastDetail>;
  server_message: CustomEvent<ServerMessageDetail>;
  lagged: CustomEvent<LaggedDetail>;
  refresh_required: CustomEvent<RefreshRequiredDetail>;
  refreshed: CustomEvent<RefreshedDetail>;
  expired: CustomEvent<ExpiredDetail>;
  rejoined: CustomEvent<RejoinedDetail>;
  error: CustomEvent<ErrorDetail>;
}

/** An error from the API or from reaching it. */
export class SwitchboardError extends Error {
  constructor(
    message: string,
    details?: { status?: number; code?: string; retryAfter?: number | null; cause?: unknown },
  );
  /** HTTP status, or 0 when no answer came. */
  status: number;
  /** The API's `error` code (e.g. `mailbox_full`, `unknown_recipient`, `room_forbidden`,
   * `not_a_member`), or `network_error`,
   * `not_connected`, `closed`, `http_error`, `invalid_event`. */
  code: string;
  /** Seconds the server asked to wait (`Retry-After`), or null. */
  retryAfter: number | null;
}

export class Switchboard extends EventTarget {
  constructor(options: SwitchboardOptions);

  /** Creates a client and resolves once its first `ready` has arrived. */
  static join(options: SwitchboardOptions): Promise<Switchboard>;

  /** The current session id, or null while there is none. */
  readonly id: SessionId | null;
  /** The registered name (the server's spelling once registered). */
  readonly name: string;
  readonly state: SwitchboardState;
  /** The others online in any of this session's rooms, keyed by id; kept from the stream. */
  readonly presence: ReadonlyMap<SessionId, Peer>;
  /** This session's rooms, keyed by name, each with its count and roster (or null above the
   * presence limit); kept from the stream (`ready`, `joined`, `left`, `new_user`, `user_left`,
   * `room_count`). */
  readonly rooms: ReadonlyMap<RoomName, Room>;
  /** The id of the last event read (the resume point), or null. */
  readonly lastEventId: number | null;

  /** Registers (or resumes a persisted session) and opens the stream; resolves on `ready`. */
  connect(): Promise<Switchboard>;
  /** Deletes the session (keep-alive request) and stops. Never rejects. */
  leave(): Promise<void>;
  /** Stops without deleting the session (it expires after the server's TTL). */
  close(): void;
  /** Moves the session's end with a new token from `joinToken` (`POST /session/refresh`);
   * done by itself on `refresh_required` when `joinToken` is a function. */
  refresh(): Promise<{ expires_at: number; expires_in: number }>;
  /** A direct message into one recipient's stream; resolves with its id there. */
  send<M = unknown>(recipient: SessionId, message: M): Promise<{ event_id: number }>;
  /** A message to every other member of `room` (default: `lobby`; this session must be in
   * it, else 403 `not_a_member`); resolves with how many got it. */
  broadcast<M = unknown>(message: M, options?: { room?: RoomName }): Promise<{ recipients: number }>;
  /** Joins a room (`PUT /session/rooms/{room}`); resolves with its member count, this session
   * included. `rooms` has it once `joined` arrives on the stream. */
  joinRoom(room: RoomName): Promise<{ room: RoomName; members: number }>;
  /** Leaves a room (`DELETE /session/rooms/{room}`); `rooms` drops it once `left` arrives. */
  leaveRoom(room: RoomName): Promise<void>;

  addEventListener<K extends keyof SwitchboardEventMap>(
    type: K,
    listener: (this: Switchboard, event: SwitchboardEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof SwitchboardEventMap>(
    type: K,
    listener: (this: Switchboard, event: SwitchboardEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}
