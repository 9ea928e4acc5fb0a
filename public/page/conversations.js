// conversations.js: the page's conversations, one per room and one for direct messages, each
// its own log; the list of them in the sidebar (member counts, unread counts, a button to
// leave a room); which one is in view. A conversation is keyed `room:<name>` or `direct`.

import { el, nameNode, withNames } from './dom.js';

const MAX_LOG_ENTRIES = 500;
export const DIRECT = 'direct';

/** @param {string} room */
export const roomKey = (room) => `room:${room}`;

const KIND_LABELS = {
  client_response: 'direct',
  client_broadcast: 'broadcast',
  sent_response: 'direct',
  sent_broadcast: 'broadcast',
  new_user: 'joined',
  user_left: 'left',
  joined: 'joined',
  left: 'left',
  server_message: 'server',
  lagged: 'lagged',
  system: 'info',
  error: 'error',
};

/** Kinds that count as unread in a conversation out of view: what someone said. */
const UNREAD_KINDS = new Set(['client_response', 'client_broadcast', 'server_message']);

/**
 * @typedef {{ log: HTMLUListElement, unread: number, members: number | null,
 *   item: HTMLElement, open: HTMLElement, count: HTMLElement, badge: HTMLElement }} Conversation
 *   Its log, and its entry in the list (kept, and updated in place, so that keyboard focus
 *   stays where it is while messages arrive).
 */

export class Conversations {
  /** @type {Map<string, Conversation>} In the order the list shows them. */
  #all = new Map();
  /** @type {string} */
  #view = DIRECT;
  /** The room in view, or the last one viewed: where "everyone" is. @type {string | null} */
  #room = null;
  #ui;
  #on;

  /**
   * @param {{ list: HTMLElement, logs: HTMLElement, heading: HTMLElement, empty: HTMLElement }} ui
   * @param {{ view: (key: string) => void, leave: (room: string) => void }} on `view` after the
   *   conversation in view changed; `leave` when the person asks to leave a room.
   */
  constructor(ui, on) {
    this.#ui = ui;
    this.#on = on;
    this.#add(DIRECT);
  }

  /** The key of the conversation in view. */
  get view() {
    return this.#view;
  }

  /** The rooms listed, in the list's order. */
  get rooms() {
    return [...this.#all.keys()].filter((key) => key !== DIRECT).map((key) => key.slice('room:'.length));
  }

  /** The room in view, or the one last viewed while direct messages are in view; null when
   * the page is in no room. */
  get room() {
    return this.#room;
  }

  /**
   * The rooms to show, in this order (before joining: the rooms the page will join), with
   * their member counts (null: not known yet). A room that is no longer listed goes, with its
   * log; the one in view is replaced by the first room (or direct messages).
   * @param {string[]} rooms
   * @param {Map<string, number>} [members]
   */
  setRooms(rooms, members = new Map()) {
    const keep = new Set(rooms.map(roomKey));
    for (const [key, conversation] of this.#all) {
      if (key !== DIRECT && !keep.has(key)) {
        conversation.log.remove();
        this.#all.delete(key);
      }
    }
    const ordered = new Map();
    for (const room of rooms) {
      const key = roomKey(room);
      const conversation = this.#all.get(key) || this.#make(key);
      conversation.members = members.has(room) ? /** @type {number} */ (members.get(room)) : null;
      ordered.set(key, conversation);
    }
    ordered.set(DIRECT, /** @type {Conversation} */ (this.#all.get(DIRECT)));
    this.#all = ordered;
    const items = [...ordered.values()].map((conversation) => conversation.item);
    const list = this.#ui.list;
    if (items.length !== list.children.length || items.some((item, i) => list.children[i] !== item)) {
      list.replaceChildren(...items);
    }
    if (this.#room !== null && !keep.has(roomKey(this.#room))) this.#room = null;
    if (!this.#all.has(this.#view) || (this.#view === DIRECT && this.#room === null && rooms.length > 0)) {
      this.select(rooms.length > 0 ? roomKey(rooms[0]) : DIRECT);
    } else {
      this.#render();
    }
  }

  /**
   * Shows the conversation `key` and clears its unread count.
   * @param {string} key
   */
  select(key) {
    if (!this.#all.has(key)) return;
    this.#view = key;
    if (key !== DIRECT) this.#room = key.slice('room:'.length);
    const conversation = /** @type {Conversation} */ (this.#all.get(key));
    conversation.unread = 0;
    for (const [each, { log }] of this.#all) log.hidden = each !== key;
    this.#render();
    this.#on.view(key);
  }

  /**
   * Appends one entry to the conversation `key` (the one in view when it has none, or when it
   * is gone). `who` is the other party's name ("from X", "to X"), `text` the message, or an
   * array of strings and `{ name }` parts (see withNames); all are untrusted and only ever set
   * as textContent. `eventId` is the id a sent message got in the recipient's stream.
   */
  log(key, { kind, direction = 'info', prefix = '', who = '', whoId = '', text = '', tag = '', eventId }) {
    const conversation = this.#all.get(key || this.#view) || /** @type {Conversation} */ (this.#all.get(this.#view));
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

    // Follow new entries only when the reader is at the bottom already. The log scrolls by
    // itself on a desktop and scrolls with the page on a phone.
    const { log } = conversation;
    const page = /** @type {Element} */ (document.scrollingElement);
    const stick =
      log.scrollHeight - log.scrollTop - log.clientHeight < 40 &&
      page.scrollHeight - page.scrollTop - page.clientHeight < 40;
    log.append(item);
    while (log.childElementCount > MAX_LOG_ENTRIES) log.firstElementChild?.remove();
    if (log.hidden) {
      if (direction === 'in' && UNREAD_KINDS.has(kind)) conversation.unread += 1;
    } else if (stick) {
      item.scrollIntoView({ block: 'nearest' });
    }
    this.#render();
  }

  /**
   * A new conversation: its log and its entry in the list.
   * @param {string} key
   * @returns {Conversation}
   */
  #make(key) {
    const log = /** @type {HTMLUListElement} */ (el('ul', 'log'));
    log.dataset.conversation = key;
    log.setAttribute('aria-live', 'polite');
    log.hidden = key !== this.#view;
    this.#ui.logs.append(log);

    const room = key === DIRECT ? null : key.slice('room:'.length);
    const item = el('li', 'conversation-item');
    item.dataset.conversation = key;
    if (room !== null) item.dataset.room = room;
    const open = el('button', 'conversation-button');
    open.type = 'button';
    const label = el('span', 'conversation-name', room === null ? 'Direct messages' : room);
    if (room !== null) label.prepend(el('span', 'hash', '#'));
    const count = el('span', 'members');
    const badge = el('span', 'unread');
    open.append(label, count, badge);
    open.addEventListener('click', () => this.select(key));
    item.append(open);
    if (room !== null) {
      const leave = el('button', 'leave-room', '×');
      leave.type = 'button';
      leave.title = `Leave ${room}`;
      leave.setAttribute('aria-label', `Leave ${room}`);
      leave.addEventListener('click', () => this.#on.leave(room));
      item.append(leave);
    }
    return { log, unread: 0, members: null, item, open, count, badge };
  }

  /** @param {string} key */
  #add(key) {
    const conversation = this.#make(key);
    this.#all.set(key, conversation);
    this.#ui.list.append(conversation.item);
  }

  /** The list's counts and current entry, the heading and the empty-log hint. */
  #render() {
    for (const [key, conversation] of this.#all) this.#update(key, conversation);
    const room = this.#view === DIRECT ? null : this.#view.slice('room:'.length);
    this.#ui.heading.textContent = room === null ? 'Direct messages' : `# ${room}`;
    const shown = /** @type {Conversation} */ (this.#all.get(this.#view));
    this.#ui.empty.hidden = shown.log.childElementCount > 0;
    this.#ui.empty.textContent =
      room === null
        ? 'Direct messages you send and receive appear here. Pick someone under Online to write to them.'
        : `Who comes and goes in ${room}, and what is said to everyone in it, appears here.`;
  }

  /**
   * @param {string} key
   * @param {Conversation} conversation
   */
  #update(key, { unread, members, open, count, badge }) {
    const name = key === DIRECT ? 'Direct messages' : key.slice('room:'.length);
    open.setAttribute('aria-current', String(key === this.#view));
    count.hidden = members === null;
    count.textContent = String(members);
    count.title = `${members} ${members === 1 ? 'member' : 'members'}, you included`;
    badge.hidden = unread === 0;
    badge.textContent = String(unread);
    badge.title = `${unread} unread`;
    open.setAttribute('aria-label', `${name}${unread ? `, ${unread} unread` : ''}`);
  }
}
