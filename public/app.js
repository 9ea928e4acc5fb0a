// switchboard web client: the reference page, built on the `switchboard.js` module.
//
// It opens on a name field holding a random name (or `?name=`) and joins when the
// person presses Join; `?join=1` joins at once (scripts, tests). With a server
// running `--auth jwt`, the page joins with the token its host page gives it:
// `window.SWITCHBOARD_TOKEN` or `#token=` in the URL (see page/session.js).
//
// Rooms: the sidebar lists one conversation per room and one for direct messages,
// each with its unread count; the roster beside the conversation is the room's.
// `?rooms=lobby,dev` prepares the rooms to join (the server's default, `lobby`,
// otherwise); typing a room's name joins it, before joining or live. "Everyone" in
// the send form means everyone in the room in view (or the last one viewed).
//
// The module keeps the session alive: the stream resumes after a network blip or
// a server restart that kept its state, and when the session is gone (a restart
// without state, an expired TTL) it joins again under the same name by itself;
// the log says so. A `new_user` in `lobby` that arrives live is answered with a
// direct "hello there <name>", at most AUTO_REPLIES_PER_SECOND of them; replayed
// ones are not news and get none. The form sends to one person or to everyone, and
// closing the tab leaves so the others hear it at once.
//
// Everything another user controls (names, messages) is written with textContent,
// never parsed as HTML, and every name sits in a <bdi> (page/dom.js). The
// conversations are page/conversations.js; the roster, page/people.js.
import { Switchboard } from './switchboard.js';
import { Conversations, DIRECT, roomKey } from './page/conversations.js';
import { messageText, plural } from './page/dom.js';
import { People } from './page/people.js';
import { PerSecond, hostToken } from './page/session.js';

{
  /** The room the automatic greeting is said in. */
  const GREETING_ROOM = 'lobby';
  /** What a room name is (as the server checks it); the page says so before asking. */
  const ROOM_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$/;
  /** Greetings sent in any one second at most; a burst of newcomers gets no more. */
  const AUTO_REPLIES_PER_SECOND = 3;

  const $ = (selector) => document.querySelector(selector);
  const ui = {
    status: $('#status'),
    statusText: $('#status-text'),
    meName: $('#me-name'),
    meId: $('#me-id'),
    leave: $('#leave'),
    joinForm: $('#join-form'),
    nameLabel: $('label[for="name-input"]'),
    nameInput: $('#name-input'),
    joinHint: $('#join-hint'),
    roomForm: $('#room-form'),
    roomInput: $('#room-input'),
    roomError: $('#room-error'),
    sendForm: $('#send-form'),
    recipient: $('#recipient'),
    message: $('#message'),
    send: $('#send'),
    sendError: $('#send-error'),
    joinError: $('#join-error'),
    offline: $('#offline'),
  };

  /** The client while this page takes part; null after leaving on purpose. */
  let board = null;
  /** The rooms to join (`?rooms=`, or as the person changed them); null: the server's. */
  let prepared = null;
  /** A room this page asked to join: shown once its `joined` arrives. */
  let requestedRoom = null;
  /** The greetings sent in the last second. */
  const greetings = new PerSecond(AUTO_REPLIES_PER_SECOND);

  const people = new People({
    people: $('#people'),
    count: $('#people-count'),
    title: $('#people-title'),
    empty: $('#people-empty'),
    more: $('#people-more'),
    recipient: ui.recipient,
    message: ui.message,
  });
  const conversations = new Conversations(
    { list: $('#conversations'), logs: $('#logs'), heading: $('#log-heading'), empty: $('#log-empty') },
    { view: () => showPeople(), leave: (room) => leaveRoom(room) },
  );
  const log = (entry, key) => conversations.log(key, entry);

  // ---------------------------------------------------------------- helpers

  function randomName() {
    const bytes = new Uint8Array(3);
    crypto.getRandomValues(bytes);
    return 'new-user-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function nameOf(id, fallback) {
    const person = board && board.presence.get(id);
    if (person) return person.name;
    return fallback || id.slice(0, 8);
  }

  // ----------------------------------------------------------------- status

  const STATUS_TEXT = { idle: 'not joined' };

  /** One of idle (not joined yet), connecting, live, reconnecting, closed. */
  function setStatus(state) {
    ui.status.dataset.state = state;
    ui.statusText.textContent = STATUS_TEXT[state] || state;
    ui.send.disabled = state !== 'live';
    const out = state === 'idle' || state === 'closed';
    ui.leave.hidden = out;
    ui.leave.disabled = !board;
    ui.joinForm.hidden = !out;
    document.body.dataset.state = state;
    ui.offline.hidden = state !== 'reconnecting';
  }

  // ----------------------------------------------------------------- rooms

  /**
   * The rooms a live session is in come from the module; a page that has not joined (or left)
   * shows the prepared ones; one (re)connecting keeps its list and their logs as they are.
   */
  function syncRooms() {
    if (board && board.state === 'open') {
      // In the order the list has them (the order asked for), rooms joined since at the end.
      const listed = conversations.rooms.filter((room) => board.rooms.has(room));
      const rooms = [...new Set([...listed, ...board.rooms.keys()])];
      const counts = new Map([...board.rooms.values()].map((room) => [room.name, room.members]));
      conversations.setRooms(rooms, counts);
    } else if (!board) {
      conversations.setRooms(prepared || ['lobby']);
    }
    showPeople();
  }

  /** The roster beside the conversation in view: the room's, or everyone's for direct messages. */
  function showPeople() {
    const live = board && board.state === 'open';
    const room = conversations.room;
    if (conversations.view === DIRECT || !live) {
      const everyone = live ? board.presence.values() : [];
      people.show({ inRoom: null, people: everyone, members: null, room });
      return;
    }
    const inView = board.rooms.get(room);
    people.show({
      inRoom: room,
      people: inView ? inView.roster && inView.roster.values() : [],
      members: inView ? inView.members : null,
      room,
    });
  }

  function roomFailed(error) {
    ui.roomError.textContent = error;
    ui.roomError.hidden = false;
  }

  ui.roomForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const room = ui.roomInput.value.trim();
    ui.roomError.hidden = true;
    if (!ROOM_NAME.test(room)) {
      roomFailed('A room name is 1 to 64 of A-Z a-z 0-9 _ . : @ -, starting with a letter or a digit.');
      return;
    }
    ui.roomInput.value = '';
    if (board && board.state === 'open') {
      if (board.rooms.has(room)) {
        conversations.select(roomKey(room));
        return;
      }
      requestedRoom = room;
      board.joinRoom(room).catch((error) => roomFailed(`Could not join ${room}: ${explain(error)}`));
    } else {
      // Not joined yet (or left): the room is joined with the others on Join.
      const rooms = prepared || ['lobby'];
      prepared = rooms.includes(room) ? rooms : [...rooms, room];
      syncRooms();
      conversations.select(roomKey(room));
    }
  });

  function leaveRoom(room) {
    ui.roomError.hidden = true;
    if (board && board.state === 'open') {
      board.leaveRoom(room).catch((error) => roomFailed(`Could not leave ${room}: ${explain(error)}`));
    } else {
      prepared = (prepared || ['lobby']).filter((each) => each !== room);
      syncRooms();
    }
  }

  // --------------------------------------------------------------- sending

  /** What went wrong, for a person: the API's own words only where they say what to change. */
  function explain(error) {
    switch (error.code) {
      case 'network_error':
      case 'not_connected':
      case 'closed':
        return 'the server cannot be reached right now.';
      case 'rate_limited':
      case 'mailbox_full':
        return `too many at once; try again in ${error.retryAfter || 1} s.`;
      case 'unknown_session':
        return 'they are no longer here.';
      case 'room_forbidden':
        return 'this server does not let you in that room.';
      case 'not_a_member':
        return 'you are not in that room.';
      case 'unauthorized':
        return joinToken ? 'the sign-in token was refused; open this page from your app again.' : NEEDS_TOKEN;
      default:
        return error.status >= 500 ? 'the server could not take it; try again.' : error.message;
    }
  }

  const NEEDS_TOKEN = 'this server needs a sign-in token: open this page from your app, which signs you in.';

  /** A send's error goes beside the message field; the next send clears it. */
  function sendFailed(to, error) {
    ui.sendError.textContent = `Not sent to ${to}: ${explain(error)}`;
    ui.sendError.hidden = false;
  }

  function sendWorked() {
    ui.sendError.hidden = true;
  }

  async function sendDirect(recipient, message, tag, knownName) {
    // A newcomer's name comes with its `new_user`, before the roster has it.
    const name = knownName || nameOf(recipient);
    try {
      const reply = await board.send(recipient, message);
      const sent = {
        kind: 'sent_response',
        direction: 'out',
        prefix: 'to ',
        who: name,
        whoId: recipient,
        text: messageText(message),
        tag,
        eventId: reply.event_id,
      };
      log(sent, DIRECT);
      // What the person typed to someone is shown where it went; a greeting moves nothing.
      if (!tag) {
        sendWorked();
        conversations.select(DIRECT);
      }
    } catch (error) {
      // The automatic greeting has no field: its failure is a line of the conversation.
      if (tag) log({ kind: 'error', prefix: 'to ', who: name, whoId: recipient, text: explain(error) }, DIRECT);
      else sendFailed(name, error);
    }
  }

  async function sendBroadcast(message, room) {
    try {
      const reply = await board.broadcast(message, { room });
      const entry = {
        kind: 'sent_broadcast',
        direction: 'out',
        prefix: `to everyone in ${room}`,
        text: messageText(message),
        tag: plural(reply.recipients, 'recipient'),
      };
      log(entry, roomKey(room));
      sendWorked();
    } catch (error) {
      sendFailed(`everyone in ${room}`, error);
    }
  }

  ui.sendForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const message = ui.message.value.trim();
    if (!message || !board) return;
    const recipient = ui.recipient.value;
    ui.message.value = '';
    if (recipient) sendDirect(recipient, message);
    else if (conversations.room !== null) sendBroadcast(message, conversations.room);
  });

  // ----------------------------------------------------------------- events

  /** What the module dispatches, and what the page does with each. */
  const handlers = {
    // Every (re)attach carries the whole roster; the `presence` event renders it.
    ready({ resumed }) {
      if (resumed) log({ kind: 'system', text: 'reconnected' });
    },

    // Anything that changed who is where: the room list and the roster follow.
    presence() {
      syncRooms();
    },

    new_user({ id, name, room, replayed }) {
      const entry = { kind: 'new_user', direction: 'in', who: name, whoId: id, tag: replayed ? 'replayed' : '' };
      log(entry, room && roomKey(room));
      // The seed's scenario: greet every newcomer to the lobby directly (once, though a
      // newcomer sharing two rooms is told of twice). Only live ones: a replayed `new_user`
      // joined before this stream attached (it is in the roster already), and greeting it
      // again after each reconnect would be noise.
      if (replayed || (room !== undefined && room !== GREETING_ROOM)) return;
      if (greetings.allow()) {
        sendDirect(id, `hello there ${name}`, 'auto-reply', name);
      } else {
        const text = ['no auto-reply to ', { name }, `: more than ${AUTO_REPLIES_PER_SECOND} newcomers a second`];
        log({ kind: 'system', whoId: id, text }, DIRECT);
      }
    },

    message(data) {
      const entry = {
        kind: 'client_response',
        direction: 'in',
        prefix: 'from ',
        who: data.from_name,
        whoId: data.from,
        text: messageText(data.message),
      };
      log(entry, DIRECT);
    },

    broadcast(data) {
      const entry = {
        kind: 'client_broadcast',
        direction: 'in',
        prefix: 'from ',
        who: data.from_name,
        whoId: data.from,
        text: messageText(data.message),
      };
      log(entry, data.room && roomKey(data.room));
    },

    // A message from the app's backend (the server API): to a room's members in that room,
    // to this session or its user with the direct messages.
    server_message(data) {
      const entry = { kind: 'server_message', direction: 'in', text: messageText(data.message) };
      log(entry, data.room ? roomKey(data.room) : DIRECT);
    },

    user_left({ id, name, room }) {
      log({ kind: 'user_left', direction: 'in', who: name, whoId: id }, room && roomKey(room));
    },

    // This session is in a new room (it asked, or the app's backend put it there).
    joined({ room, members }) {
      syncRooms();
      log({ kind: 'joined', text: `you joined ${room}: ${plural(members, 'member')}, you included` }, roomKey(room));
      if (room === requestedRoom) {
        requestedRoom = null;
        conversations.select(roomKey(room));
      }
    },

    left({ room }) {
      syncRooms();
      log({ kind: 'left', text: `you left ${room}` });
    },

    lagged({ missed }) {
      log({
        kind: 'lagged',
        text: `${missed} ${missed === 1 ? 'event was' : 'events were'} dropped while this page was away`,
      });
    },

    // The session's join token runs out soon; a `SWITCHBOARD_TOKEN` function refreshes it.
    refresh_required({ expires_in }) {
      log({ kind: 'system', text: `the session ends in ${plural(expires_in, 'second')} unless refreshed` });
    },

    refreshed({ expires_in }) {
      log({ kind: 'system', text: `the session was refreshed: it now ends in ${plural(expires_in, 'second')}` });
    },

    expired({ reason }) {
      const why = { join_token: 'its sign-in ran out', max_session_age: 'it reached its age limit' }[reason] || 'the app ended it';
      log({ kind: 'system', text: `the session expired (${why})` });
    },

    // The old session was gone (server restarted without its state, TTL expired).
    rejoined({ id, name }) {
      showMe(name, id);
      log({ kind: 'system', text: ['the session was lost; joined again as ', { name }] });
    },

    state({ state }) {
      const shown = { idle: 'connecting', open: 'live' }[state] || state;
      if (shown !== 'closed' || !board) setStatus(shown);
      if (state === 'open') showMe(board.name, board.id);
    },

    // The module stopped for good (a refused hello, e.g. an invalid name or token): show the
    // join form again.
    error({ error, fatal }) {
      if (!fatal) return;
      board = null;
      // Joining again asks for the rooms listed (a refused one can be left with ×).
      prepared = conversations.rooms;
      syncRooms();
      joinFailed(error);
    },
  };

  // -------------------------------------------------------------- lifecycle

  function showMe(name, id) {
    ui.meName.textContent = name;
    ui.meId.textContent = id;
    ui.nameInput.value = name;
  }

  const joinToken = hostToken();

  async function join(name) {
    const client = new Switchboard(prepared ? { name, joinToken, rooms: prepared } : { name, joinToken });
    board = client;
    for (const [type, handle] of Object.entries(handlers)) {
      client.addEventListener(type, (event) => {
        if (board === client) handle(event.detail);
      });
    }
    setStatus('connecting');
    ui.joinError.hidden = true;
    showMe(name, 'not connected');
    ui.nameInput.removeAttribute('aria-invalid');
    try {
      await client.connect();
    } catch (error) {
      if (board !== client) return;
      board = null;
      joinFailed(error);
    }
  }

  /**
   * A refused or failed hello: the reason beside the name field, a short line in the
   * conversation. A server that admits only signed-in users (`--auth jwt`) and got no token
   * says so instead of offering a name it would refuse again.
   */
  function joinFailed(error) {
    setStatus('closed');
    ui.joinError.textContent = `Could not join: ${explain(error)}`;
    ui.joinError.hidden = false;
    showNameError(error);
    log({ kind: 'error', text: 'could not join (see the form)' });
    if (error.code === 'unauthorized' && !joinToken) {
      document.body.dataset.needsToken = 'true';
      ui.nameLabel.hidden = true;
      ui.nameInput.hidden = true;
      ui.joinHint.textContent = 'Sign in through your app to take part.';
    }
  }

  /** A refused name (400 `invalid_name`): the server's reason, under the name field. */
  function showNameError(error) {
    if (error.code !== 'invalid_name') return;
    ui.joinHint.textContent = error.message;
    ui.nameInput.setAttribute('aria-invalid', 'true');
  }

  ui.joinForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const name = ui.nameInput.value.trim();
    if (name) join(name);
  });

  /** Leave on purpose: delete the session so the others hear `user_left` at once. */
  ui.leave.addEventListener('click', () => {
    const client = board;
    board = null;
    // Joining again goes back into the rooms this page was in.
    if (client) prepared = conversations.rooms;
    if (client) client.leave();
    syncRooms();
    setStatus('closed');
    ui.joinHint.textContent = 'You left. Joining says hello again with a new id.';
    log({ kind: 'system', text: 'you left' });
  });

  // Nothing happens until the person presses Join, unless `?join=1` asks for it.
  const params = new URLSearchParams(location.search);
  const requested = (params.get('name') || '').trim();
  if (params.has('rooms')) {
    prepared = [...new Set(params.get('rooms').split(',').map((room) => room.trim()).filter(Boolean))];
  }
  syncRooms();
  ui.nameInput.value = requested || randomName();
  if (joinToken) {
    // The server names the session after the token's `name` claim: nothing to type.
    ui.nameLabel.hidden = true;
    ui.nameInput.hidden = true;
    ui.joinHint.textContent = 'Your host page signed you in; your name comes from it.';
  }
  setStatus('idle');
  if (params.get('join') === '1') join(ui.nameInput.value.trim());
}
