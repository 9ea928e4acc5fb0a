// switchboard web client: the reference client for the HTTP + SSE contract.
//
// On load it says hello (POST /helo), keeps the returned id and token in memory
// only, and reads its events from `new EventSource("/events/<id>?token=<token>")`.
// Every `new_user` is answered with a direct "hello there <name>" (POST /response),
// the form sends to one person or to everyone (POST /broadcast), and closing the
// tab leaves (DELETE /session with keepalive) so the others hear it at once.
//
// Everything another user controls (names, messages) is written with textContent,
// never parsed as HTML.
'use strict';

(() => {
  const MAX_LOG_ENTRIES = 500;

  const $ = (selector) => document.querySelector(selector);
  const ui = {
    status: $('#status'),
    statusText: $('#status-text'),
    meName: $('#me-name'),
    meId: $('#me-id'),
    leave: $('#leave'),
    rejoinForm: $('#rejoin-form'),
    nameInput: $('#name-input'),
    people: $('#people'),
    peopleCount: $('#people-count'),
    peopleEmpty: $('#people-empty'),
    log: $('#log'),
    logEmpty: $('#log-empty'),
    sendForm: $('#send-form'),
    recipient: $('#recipient'),
    message: $('#message'),
    send: $('#send'),
  };

  /** The current session: `{id, token, name}` while we hold one, else null. */
  let me = null;
  /** The EventSource reading `me`'s stream. */
  let source = null;
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

  async function api(method, path, body) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (me) headers.Authorization = 'Bearer ' + me.token;
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const reason = (data && data.message) || response.statusText || 'request failed';
      const retry = response.headers.get('Retry-After');
      const error = new Error(retry ? `${reason} (retry after ${retry} s)` : reason);
      error.status = response.status;
      error.code = data && data.error;
      throw error;
    }
    return data;
  }

  // ----------------------------------------------------------------- status

  /** One of connecting, live, reconnecting, closed. */
  function setStatus(state) {
    ui.status.dataset.state = state;
    ui.statusText.textContent = state;
    const live = state === 'live';
    ui.send.disabled = !live;
    ui.leave.hidden = state === 'closed';
    ui.leave.disabled = !me;
    ui.rejoinForm.hidden = state !== 'closed';
    document.body.dataset.state = state;
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
        button.title = 'Send a message to ' + person.name;
        const label = el('span', 'person-label');
        label.append(el('span', 'name', person.name), el('span', 'short-id', person.id.slice(0, 8)));
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
        const option = el('option', '', person.name);
        option.value = person.id;
        return option;
      }),
    );
    ui.recipient.value = people.has(chosen) ? chosen : '';
    hintOverflow();
  }

  function addPerson(id, name) {
    if (!me || id === me.id) return;
    people.set(id, { id, name });
    renderPeople();
  }

  function removePerson(id) {
    if (people.delete(id)) renderPeople();
  }

  // ------------------------------------------------------------------- log

  const KIND_LABELS = {
    client_response: 'direct',
    client_broadcast: 'broadcast',
    sent_response: 'direct',
    sent_broadcast: 'broadcast',
    new_user: 'joined',
    user_left: 'left',
    lagged: 'lagged',
    system: 'info',
    error: 'error',
  };

  /**
   * Appends one entry. `who` is the other party ("from X", "to X"), `text` the
   * message; both are untrusted and only ever set as textContent. `eventId` is
   * the id a sent message got in the recipient's stream.
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
      if (who) whoNode.append(el('strong', 'name', who));
      head.append(whoNode);
    }
    if (tag) head.append(el('span', 'tag', tag));

    item.append(head);
    if (text) item.append(el('p', 'text', text));

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

  async function sendDirect(recipient, message, tag) {
    const name = nameOf(recipient);
    try {
      const reply = await api('POST', '/response', { recipient, message });
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
    } catch (error) {
      log({ kind: 'error', prefix: 'to ', who: name, whoId: recipient, text: error.message });
    }
  }

  async function sendBroadcast(message) {
    try {
      const reply = await api('POST', '/broadcast', { message });
      const n = reply.recipients;
      log({
        kind: 'sent_broadcast',
        direction: 'out',
        prefix: 'to everyone',
        text: messageText(message),
        tag: `${n} ${n === 1 ? 'recipient' : 'recipients'}`,
      });
    } catch (error) {
      log({ kind: 'error', prefix: 'to everyone', text: error.message });
    }
  }

  ui.sendForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const message = ui.message.value.trim();
    if (!message || !me) return;
    const recipient = ui.recipient.value;
    ui.message.value = '';
    if (recipient) sendDirect(recipient, message);
    else sendBroadcast(message);
  });

  // ----------------------------------------------------------------- events

  function parse(event) {
    try {
      return JSON.parse(event.data);
    } catch {
      log({ kind: 'error', text: `unreadable ${event.type} event` });
      return null;
    }
  }

  const handlers = {
    // Sent on every (re)attach: the whole roster of the others, so it replaces ours.
    ready(data) {
      people.clear();
      for (const person of data.clients || []) {
        if (person.id !== me.id) people.set(person.id, { id: person.id, name: person.name });
      }
      renderPeople();
    },

    new_user(data) {
      if (data.id === me.id) return;
      addPerson(data.id, data.name);
      log({ kind: 'new_user', direction: 'in', who: data.name, whoId: data.id });
      // The seed's scenario: greet every newcomer directly.
      sendDirect(data.id, `hello there ${data.name}`, 'auto-reply');
    },

    client_response(data) {
      log({
        kind: 'client_response',
        direction: 'in',
        prefix: 'from ',
        who: data.from_name,
        whoId: data.from,
        text: messageText(data.message),
      });
    },

    client_broadcast(data) {
      log({
        kind: 'client_broadcast',
        direction: 'in',
        prefix: 'from ',
        who: data.from_name,
        whoId: data.from,
        text: messageText(data.message),
      });
    },

    user_left(data) {
      removePerson(data.id);
      log({ kind: 'user_left', direction: 'in', who: data.name, whoId: data.id });
    },

    lagged(data) {
      const n = data.missed;
      log({
        kind: 'lagged',
        text: `${n} ${n === 1 ? 'event was' : 'events were'} dropped while this page was away`,
      });
    },
  };

  function attach() {
    const url = `/events/${encodeURIComponent(me.id)}?token=${encodeURIComponent(me.token)}`;
    const stream = new EventSource(url);
    source = stream;
    let opened = false;

    stream.addEventListener('open', () => {
      if (source !== stream) return;
      if (opened) log({ kind: 'system', text: 'reconnected' });
      opened = true;
      setStatus('live');
    });

    // The browser reconnects by itself (readyState CONNECTING) and sends
    // Last-Event-ID, so the server replays what we missed. It gives up
    // (readyState CLOSED) when the server answers with an error, e.g. 404 once
    // the session has expired: then the session is gone for good.
    stream.addEventListener('error', () => {
      if (source !== stream) return;
      if (stream.readyState === EventSource.CLOSED) {
        closed('the session ended; reconnect to join again');
      } else {
        setStatus(opened ? 'reconnecting' : 'connecting');
      }
    });

    for (const [name, handle] of Object.entries(handlers)) {
      stream.addEventListener(name, (event) => {
        if (source !== stream) return;
        const data = parse(event);
        if (data) handle(data);
      });
    }
  }

  // -------------------------------------------------------------- lifecycle

  function showMe(name, id) {
    ui.meName.textContent = name;
    ui.meId.textContent = id;
    ui.nameInput.value = name;
  }

  async function join(name) {
    setStatus('connecting');
    showMe(name, 'not connected');
    try {
      const session = await api('POST', '/helo', { name });
      me = { id: session.id, token: session.token, name: session.name };
    } catch (error) {
      log({ kind: 'error', text: `could not say hello: ${error.message}` });
      setStatus('closed');
      return;
    }
    showMe(me.name, me.id);
    people.clear();
    renderPeople();
    attach();
    setStatus('connecting');
  }

  function stopStream() {
    if (source) source.close();
    source = null;
  }

  /** The session is over (expired, deleted, refused): say so and offer to rejoin. */
  function closed(reason) {
    stopStream();
    me = null;
    people.clear();
    renderPeople();
    setStatus('closed');
    if (reason) log({ kind: 'system', text: reason });
  }

  /** Leave on purpose: delete the session so the others hear `user_left` at once. */
  function leave({ keepalive }) {
    if (!me) return;
    const token = me.token;
    stopStream();
    me = null;
    fetch('/session', {
      method: 'DELETE',
      keepalive,
      headers: { Authorization: 'Bearer ' + token },
    }).catch(() => {});
  }

  ui.leave.addEventListener('click', () => {
    leave({ keepalive: false });
    closed('you left');
  });

  ui.rejoinForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const name = ui.nameInput.value.trim();
    if (name) join(name);
  });

  // `pagehide` also fires when the page goes into the back/forward cache; a
  // page restored from it has no session any more, so it starts a new one.
  window.addEventListener('pagehide', () => leave({ keepalive: true }));
  window.addEventListener('pageshow', (event) => {
    if (event.persisted && !me) join(ui.nameInput.value.trim() || randomName());
  });

  const requested = new URLSearchParams(location.search).get('name');
  join((requested && requested.trim()) || randomName());
})();
