// Types for switchboard.js, the browser client of the switchboard HTTP + SSE API.
// The payloads follow openapi.yaml; fields this client adds are camelCase (`eventId`).

/** A session id (a UUID). */
export type SessionId = string;

/** Another client: `new_user`, `user_left`, and each entry of a `ready` roster. */
export interface Peer {
  id: SessionId;
  name: string;
}

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
  /** The server's origin (and path prefix); '' (default) for the page's own origin. A different
   * origin must be allowed by the server's `--cors-origin`. */
  baseUrl?: string;
  /** Sent on `POST /helo` as `Authorization: Bearer <joinToken>`; required by a server running
   * `--auth jwt` (its token's `name` claim then names the session). A function that throws or
   * rejects counts as a network error: registering is retried with backoff. */
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
  clients: Peer[];
  /** True when this session had been attached before (a resume, not a new session). */
  resumed: boolean;
}

export interface PresenceDetail {
  /** The same live Map as `Switchboard.presence`. */
  presence: ReadonlyMap<SessionId, Peer>;
}

export interface PeerDetail extends Peer {
  /** The event's id in this session's stream. */
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

/** A message to everyone (`client_broadcast`). */
export interface BroadcastDetail<M = unknown> {
  from: SessionId;
  from_name: string;
  message: M;
  eventId: number | null;
}

/** A message from the app's backend, through the server API (`server_message`). */
export interface ServerMessageDetail<M = unknown> {
  /** Whether it was addressed to this session, to its user, or to everyone. */
  to: 'session' | 'user' | 'everyone';
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
  message: CustomEvent<MessageDetail>;
  broadcast: CustomEvent<BroadcastDetail>;
  server_message: CustomEvent<ServerMessageDetail>;
  lagged: CustomEvent<LaggedDetail>;
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
  /** The API's `error` code (e.g. `mailbox_full`, `unknown_recipient`), or `network_error`,
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
  /** The others online, keyed by id; kept in sync from the stream. */
  readonly presence: ReadonlyMap<SessionId, Peer>;
  /** The id of the last event read (the resume point), or null. */
  readonly lastEventId: number | null;

  /** Registers (or resumes a persisted session) and opens the stream; resolves on `ready`. */
  connect(): Promise<Switchboard>;
  /** Deletes the session (keep-alive request) and stops. Never rejects. */
  leave(): Promise<void>;
  /** Stops without deleting the session (it expires after the server's TTL). */
  close(): void;
  /** A direct message into one recipient's stream; resolves with its id there. */
  send<M = unknown>(recipient: SessionId, message: M): Promise<{ event_id: number }>;
  /** A message to every other session; resolves with how many got it. */
  broadcast<M = unknown>(message: M): Promise<{ recipients: number }>;

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
