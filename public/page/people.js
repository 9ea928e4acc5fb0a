// people.js: the roster beside the conversation in view (the room's members, or everyone this
// page shares a room with while direct messages are in view), and the recipient choice of the
// send form: everyone in the room, or one person.

import { avatar, el, isolated, nameNode } from './dom.js';

/**
 * @typedef {{ id: string, name: string }} Person
 * @typedef {{ people: HTMLElement, count: HTMLElement, title: HTMLElement, empty: HTMLElement,
 *   more: HTMLElement, recipient: HTMLSelectElement, message: HTMLInputElement }} PeopleUi
 */

export class People {
  /** Who is shown, keyed by id. @type {Map<string, Person>} */
  #shown = new Map();
  /** @type {PeopleUi} */
  #ui;

  /** @param {PeopleUi} ui */
  constructor(ui) {
    this.#ui = ui;
    // On a phone the people list is one scrolling row: say so when it overflows.
    window.addEventListener('resize', () => this.#hintOverflow());
  }

  /** Whether `id` is listed. @param {string} id */
  has(id) {
    return this.#shown.has(id);
  }

  /**
   * Shows `people` as the roster of the room in view (`inRoom`; null for direct messages:
   * everyone online), and offers them as recipients; "everyone" means everyone in `room` (the
   * one in view, or the last viewed; null: in no room).
   * @param {{ inRoom: string | null, people: Iterable<Person> | null, members: number | null,
   *   room: string | null }} view `people` null: a room above the presence limit, of which only
   *   `members` is known.
   */
  show({ inRoom, people, members, room }) {
    this.#shown.clear();
    for (const person of people || []) this.#shown.set(person.id, { id: person.id, name: person.name });
    const sorted = [...this.#shown.values()].sort(
      (a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id),
    );
    const ui = this.#ui;
    // A room's name keeps its case (room names are case-sensitive) in the title's capitals.
    if (inRoom === null) ui.title.textContent = 'Online';
    else ui.title.replaceChildren('In ', el('span', 'room-name', inRoom));
    ui.people.replaceChildren(...sorted.map((person) => this.#person(person)));
    ui.count.textContent = String(people === null ? Math.max(0, (members || 1) - 1) : this.#shown.size);
    ui.empty.hidden = this.#shown.size > 0;
    ui.empty.textContent =
      people === null
        ? `${members} members: too many to list them one by one.`
        : 'Nobody else is here yet. Open this page in another tab.';

    // Keep the recipient choice while that person is still listed.
    const chosen = ui.recipient.value;
    const everyone = el('option', '', room === null ? 'Everyone (join a room first)' : `Everyone in ${room}`);
    everyone.value = '';
    everyone.disabled = room === null;
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
    ui.recipient.value = this.#shown.has(chosen) ? chosen : room === null && sorted.length ? sorted[0].id : '';
    this.#hintOverflow();
  }

  /** @param {Person} person */
  #person(person) {
    const item = el('li', 'person');
    item.dataset.id = person.id;
    const button = el('button', 'person-button');
    button.type = 'button';
    button.title = 'Send a message to ' + isolated(person.name);
    const label = el('span', 'person-label');
    label.append(nameNode(person.name), el('span', 'short-id', person.id.slice(0, 8)));
    button.append(avatar(person), label);
    button.addEventListener('click', () => {
      this.#ui.recipient.value = person.id;
      this.#ui.message.focus();
    });
    item.append(button);
    return item;
  }

  #hintOverflow() {
    const list = this.#ui.people;
    this.#ui.more.hidden = list.scrollWidth <= list.clientWidth + 1;
  }
}
