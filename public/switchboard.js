// switchboard.js: a browser client for the switchboard HTTP + SSE API (openapi.yaml).
//
// An ES module with no dependencies and no build step, served at `/switchboard.js`:
//
//   import { Switchboard } from '/switchboard.js';
//   const board = await Switchboard.join({ name: 'alice', rooms: ['lobby', 'dev'] });
//   board.addEventListener('message', (e) => console.log(e.detail.from_name, e.detail.message));
//   board.addEventListener('broadcast', (e) => console.log(e.detail.room, e.detail.message));
//   board.addEventListener('presence', () => render(board.rooms));
//   await board.send(someId, 'hello');
//   await board.broadcast('hi, dev', { room: 'dev' });
//   await board.joinRoom('ops');
//
// What it does for the page:
// - registers (POST /helo, with `joinToken` as `Authorization: Bearer` for a server running
//   `--auth jwt`) and reads the session's stream (EventSource on /events/{id});
// - registers in `rooms` (absent: the server's default, `lobby`), joins and leaves rooms later
//   (`joinRoom`, `leaveRoom`), and registers again in the rooms the session was in;
// - keeps `rooms`, a Map of this session's rooms (each with its member count and the roster of
//   the others, or only the count above the server's presence limit), and `presence`, a Map of
//   the others in any of them keyed by id, from `ready` / `joined` / `left` / `new_user` /
//   `user_left` / `room_count` (the rosters in each `ready` replace them, so a resume never
//   leaves a stale entry), and marks a `new_user` whose peer that room's roster already listed
//   as `replayed`: it happened before the stream attached (the mailbox replays it after
//   `ready`), so it is not news;
// - remembers the last event id it read and resumes after it (`?last_event_id=`) whenever it has
//   to open a new EventSource; the browser's own reconnects send `Last-Event-ID` by themselves;
// - reconnects with exponential backoff and full jitter (capped at 10 s by default) when the
//   browser gives up (an EventSource is CLOSED after any non-200 answer, e.g. 503);
// - when the session is gone (404 unknown_session or 401, e.g. after a server restart or TTL
//   expiry) registers again with the same name by itself and dispatches `rejoined`;
// - `send` / `broadcast` wait out `429 Retry-After` a bounded number of times; `send` also
//   tries again after a 503 or a lost connection, with one `Idempotency-Key` for all its tries,
//   so a message whose answer was lost is not delivered twice;
// - `leave` deletes the session with a keep-alive request, also on `pagehide` by default.
//
// Tokens live in memory only, unless `persist: true` keeps the session in sessionStorage so a
// reload resumes it (same id, replay of what was missed). The trade-off: any script running on
// the page's origin can read sessionStorage (in memory the token dies with the page), and a
// duplicated tab copies sessionStorage, so two tabs would hold one session and take its stream
// over from each other. With `persist` the page does not leave on `pagehide` (that would delete
// the session the reload means to resume); the session expires after the server's TTL instead.
//
// The code is in switchboard/, one concept per module: client.js (the Switchboard class: the
// options, methods, events and presence), connection.js (registering, attaching and
// recovering the session), stream.js (the EventSource and the resume point), http.js (the
// other requests), backoff.js, presence.js (the rooms and their rosters), storage.js (`persist`), window.js
// (pagehide, pageshow, online) and errors.js.
//
// Types: JSDoc in those modules (the options in switchboard/types.js), and `switchboard.d.ts`
// beside this file for TypeScript users.

export { Switchboard } from './switchboard/client.js';
export { SwitchboardError } from './switchboard/errors.js';
