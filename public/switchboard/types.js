// types.js: the JSDoc types that the modules of switchboard.js share, and the client's options.
// No code: the modules name these types in comments only (`import('./types.js')`), so no page
// ever loads this file. TypeScript users have the same types in ../switchboard.d.ts.

/**
 * @typedef {{ id: string, name: string }} Peer
 * @typedef {{ name: string, members: number, roster: Map<string, Peer> | null }} Room A room
 *   of this session: its member count (this session included) and the others in it, or a null
 *   roster when the room is above the server's presence limit (only the count is told).
 * @typedef {{ id: string, token: string, name: string }} Session
 * @typedef {'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'} State
 * @typedef {'unknown_session' | 'unauthorized' | 'pagehide'} RejoinReason
 * @typedef {string | (() => string | Promise<string>)} JoinToken
 *
 * @typedef {object} SwitchboardOptions
 * @property {string} name The display name to register with (1 to 64 characters).
 * @property {string[]} [rooms] The rooms to join (default: the server's, `lobby`; `[]`: none,
 *   direct messages only).
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
 * @property {number} [maxSendRetries] Retries for send (429, 503, a lost connection) and broadcast
 *   (429) (default 3).
 */

export {};
