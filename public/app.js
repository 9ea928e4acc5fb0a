// switchboard web client: the reference page, built on the `switchboard.js` module.
//
// It opens on a name field holding a random name (or `?name=`) and joins when the
// person presses Join; `?join=1` joins at once (scripts, tests). With a server
// running `--auth jwt`, the page joins with the token its host page gives it:
// `window.SWITCHBOARD_TOKEN` or `#token=` in the URL (see hostToken below).
//
// The module keeps the session alive: the stream resumes after a network blip or
// a server restart that kept its state, and when the session is gone (a restart
// without state, an expired TTL) it joins again under the same name by itself;
// the log says so. A `new_user` that arrives live is answered with a direct
// "hello there <name>", at most AUTO_REPLIES_PER_SECOND of them; replayed ones
// are not news and get none. The form sends to one person or to everyone, and
// closing the tab leaves so the others hear it at once.
//
// Everything another user controls (names, messages) is written with textContent,
// never parsed as HTML, and every name sits in a <bdi>, so a right-to-left name
// cannot reorder the text around it.
import { Switchboard } from './switchboard.js';

{
  const MAX_LOG_ENTRIES = 500;
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
    people: $('#people'),
    peopleCount: $('#people-count'),
    peopleEmpty: $('#people-empty'),
    log: $('#log'),
    logEmpty: $('#log-empty'),
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
  /** Everyone else online, keyed by id: presence is a set, never a list. */
  const people = new Map();

  // ---------------------------------------------------------------- helpers

  function randomName() {
    const bytes = new Uint8Array(3);
    crypto.getRandomValues(bytes);
    return 'new-user-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /** A name someone chose, isolated so that its direction cannot spill into the text around it. */
  function nameNode(name) {
    return el('bdi', 'name', name);
  }

  /**
   * Text with names in it: parts are strings or `{ name }`, each name in its own <bdi>.
   * @returns {Node[]}
   */
  function withNames(parts) {
    return parts.map((part) => (typeof part === 'string' ? document.createTextNode(part) : nameNode(part.name)));
  }

  /** A name inside plain text that cannot hold elements (a tooltip): Unicode's own isolates. */
  function isolated(name) {
    return '\u2068' + name + '\u2069';
  }

  /** A message can be any JSON value; strings are shown as they are. */
  function messageText(message) {
    return typeof message === 'string' ? message : JSON.stringify(message);
  }

  function nameOf(id, fallback) {
    const person = people.get(id);
    if (person) return person.name;
    return fallback || id.slice(0, 8);
  }

  /** A stable hue per id, so a person keeps the same colour in every tab. */
  function hueOf(id) {
    let hash = 0;
    for (const ch of id) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
    return hash % 360;
  }

  function avatar(person) {
    const node = el('span', 'avatar', (person.name.trim()[0] || '?').toUpperCase());
    node.style.setProperty('--hue', hueOf(person.id));
    node.setAttribute('aria-hidden', 'true');
    return node;
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

  // ---------------------------------------------------------------- people

  /** On a phone the people list is one scrolling row: say so when it overflows. */
  function hintOverflow() {
    const list = $('#people');
    $('#people-more').hidden = list.scrollWidth <= list.clientWidth + 1;
  }
  window.addEventListener('resize', hintOverflow);

  function renderPeople() {
    const sorted = [...people.values()].sort(
      (a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id),
    );

    ui.people.replaceChildren(
      ...sorted.map((person) => {
        const item = el('li', 'person');
        item.dataset.id = person.id;
        const button = el('button', 'person-button');
        button.type = 'button';
        button.title = 'Send a message to ' + isolated(person.name);
        const label = el('span', 'person-label');
        label.append(nameNode(person.name), el('span', 'short-id', person.id.slice(0, 8)));
        button.append(avatar(person), label);
        button.addEventListener('click', () => {
          ui.recipient.value = person.id;
          ui.message.focus();
        });
        item.append(button);
        return item;
      }),
    );
    ui.peopleCount.textContent = String(people.size);
    ui.peopleEmpty.hidden = people.size > 0;

    // Keep the recipient choice while that person is still here.
    const chosen = ui.recipient.value;
    const everyone = el('option', '', 'Everyone');
    everyone.value = '';
    ui.recipient.replaceChildren(
      everyone,
      ...sorted.map((person) => {
        // An option holds text only; it shows the name alone, in the name's own direction.
        const option = el('option', '', person.name);
        option.dir = 'auto';
        option.value = person.id;
        return option;
      }),
    );
    ui.recipient.value = people.has(chosen) ? chosen : '';
    hintOverflow();
  }

  /** The module's presence (the others, keyed by id) is the truth; mirror it. */
  function syncPeople(presence) {
    people.clear();
    for (const [id, person] of presence) people.set(id, { id, name: person.name });
    renderPeople();
  }

  // ------------------------------------------------------------------- log

  const KIND_LABELS = {
    client_response: 'direct',
    client_broadcast: 'broadcast',
    sent_response: 'direct',
    sent_broadcast: 'broadcast',
    new_user: 'joined',
    user_left: 'left',
    server_message: 'server',
    lagged: 'lagged',
    system: 'info',
    error: 'error',
  };

  /**
   * Appends one entry. `who` is the other party's name ("from X", "to X"), `text`
   * the message, or an array of strings and `{ name }` parts (see withNames); all
   * are untrusted and only ever set as textContent. `eventId` is the id a sent
   * message got in the recipient's stream.
   */
  function log({ kind, direction = 'info', prefix = '', who = '', whoId = '', text = '', tag = '', eventId }) {
    const item = el('li', 'entry');
    item.dataset.kind = kind;
    item.dataset.direction = direction;
    if (whoId) item.dataset.peer = whoId;
    if (eventId !== undefined) {
      item.dataset.eventId = String(eventId);
      item.title = `event #${eventId} in their stream`;
    }

    const now = new Date();
    const time = el('time', 'when', now.toLocaleTimeString([], { hour12: false }));
    time.dateTime = now.toISOString();

    const head = el('div', 'entry-head');
    head.append(time, el('span', 'kind', KIND_LABELS[kind] || kind));
    if (who || prefix) {
      const whoNode = el('span', 'who', prefix);
      if (who) whoNode.append(nameNode(who));
      head.append(whoNode);
    }
    if (tag) head.append(el('span', 'tag', tag));

    item.append(head);
    if (text.length > 0) {
      // A message keeps its own direction (dir=auto: that of its first strong letter).
      const body = el('p', 'text');
      body.dir = 'auto';
      body.append(...(Array.isArray(text) ? withNames(text) : [text]));
      item.append(body);
    }

    // Follow new entries only when the reader is at the bottom already. The
    // log scrolls by itself on a desktop and scrolls with the page on a phone.
    const page = document.scrollingElement;
    const stick =
      ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 40 &&
      page.scrollHeight - page.scrollTop - page.clientHeight < 40;
    ui.log.append(item);
    while (ui.log.childElementCount > MAX_LOG_ENTRIES) ui.log.firstElementChild.remove();
    ui.logEmpty.hidden = true;
    if (stick) item.scrollIntoView({ block: 'nearest' });
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
      log({
        kind: 'sent_response',
        direction: 'out',
        prefix: 'to ',
        who: name,
        whoId: recipient,
        text: messageText(message),
        tag,
        eventId: reply.event_id,
      });
      if (!tag) sendWorked();
    } catch (error) {
      // The automatic greeting has no field: its failure is a line of the conversation.
      if (tag) log({ kind: 'error', prefix: 'to ', who: name, whoId: recipient, text: explain(error) });
      else sendFailed(name, error);
    }
  }

  async function sendBroadcast(message) {
    try {
      const reply = await board.broadcast(message);
      const n = reply.recipients;
      log({
        kind: 'sent_broadcast',
        direction: 'out',
        prefix: 'to everyone',
        text: messageText(message),
        tag: `${n} ${n === 1 ? 'recipient' : 'recipients'}`,
      });
      sendWorked();
    } catch (error) {
      sendFailed('everyone', error);
    }
  }

  ui.sendForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const message = ui.message.value.trim();
    if (!message || !board) return;
    const recipient = ui.recipient.value;
    ui.message.value = '';
    if (recipient) sendDirect(recipient, message);
    else sendBroadcast(message);
  });

  // ------------------------------------------------------------ auto-reply

  /** When the greetings of the last second were sent. */
  const autoReplies = [];

  /** Whether one more greeting fits in the last second; if so, it counts from now. */
  function mayAutoReply() {
    const now = performance.now();
    while (autoReplies.length > 0 && now - autoReplies[0] >= 1000) autoReplies.shift();
    if (autoReplies.length >= AUTO_REPLIES_PER_SECOND) return false;
    autoReplies.push(now);
    return true;
  }

  // ----------------------------------------------------------------- events

  /** What the module dispatches, and what the page does with each. */
  const handlers = {
    // Every (re)attach carries the whole roster; the `presence` event renders it.
    ready({ resumed }) {
      if (resumed) log({ kind: 'system', text: 'reconnected' });
    },

    presence({ presence }) {
      syncPeople(presence);
    },

    new_user({ id, name, replayed }) {
      log({ kind: 'new_user', direction: 'in', who: name, whoId: id, tag: replayed ? 'replayed' : '' });
      // The seed's scenario: greet every newcomer directly. Only live ones: a replayed
      // `new_user` joined before this stream attached (it is in the roster already), and
      // greeting it again after each reconnect would be noise.
      if (replayed) return;
      if (mayAutoReply()) {
        sendDirect(id, `hello there ${name}`, 'auto-reply', name);
      } else {
        log({
          kind: 'system',
          whoId: id,
          text: ['no auto-reply to ', { name }, `: more than ${AUTO_REPLIES_PER_SECOND} newcomers a second`],
        });
      }
    },

    message(data) {
      log({
        kind: 'client_response',
        direction: 'in',
        prefix: 'from ',
        who: data.from_name,
        whoId: data.from,
        text: messageText(data.message),
      });
    },

    broadcast(data) {
      log({
        kind: 'client_broadcast',
        direction: 'in',
        prefix: 'from ',
        who: data.from_name,
        whoId: data.from,
        text: messageText(data.message),
      });
    },

    // A message from the app's backend (the server API).
    server_message(data) {
      log({ kind: 'server_message', direction: 'in', text: messageText(data.message) });
    },

    user_left({ id, name }) {
      log({ kind: 'user_left', direction: 'in', who: name, whoId: id });
    },

    lagged({ missed }) {
      log({
        kind: 'lagged',
        text: `${missed} ${missed === 1 ? 'event was' : 'events were'} dropped while this page was away`,
      });
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
      people.clear();
      renderPeople();
      joinFailed(error);
    },
  };

  // -------------------------------------------------------------- lifecycle

  function showMe(name, id) {
    ui.meName.textContent = name;
    ui.meId.textContent = id;
    ui.nameInput.value = name;
  }

  /**
   * The join token the host page gives this page, for a server running `--auth jwt`:
   * `window.SWITCHBOARD_TOKEN` (a string, or a function returning one or a promise of one,
   * asked again whenever the page joins) set by a script before this module runs, or else
   * `#token=` in the URL (the fragment never reaches a server or a Referer). The fragment is
   * removed from the address bar once read, so the token is not bookmarked or shared with
   * the link. Undefined when there is none (a server running `--auth open` needs none).
   */
  function hostToken() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const inUrl = fragment.get('token');
    if (inUrl !== null) {
      fragment.delete('token');
      const rest = fragment.toString();
      history.replaceState(history.state, '', location.pathname + location.search + (rest ? '#' + rest : ''));
    }
    return globalThis.SWITCHBOARD_TOKEN || inUrl || undefined;
  }

  const joinToken = hostToken();

  async function join(name) {
    const client = new Switchboard({ name, joinToken });
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
    if (client) client.leave();
    people.clear();
    renderPeople();
    setStatus('closed');
    ui.joinHint.textContent = 'You left. Joining says hello again with a new id.';
    log({ kind: 'system', text: 'you left' });
  });

  // Nothing happens until the person presses Join, unless `?join=1` asks for it.
  const params = new URLSearchParams(location.search);
  const requested = (params.get('name') || '').trim();
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
