// storage.js: the session kept in sessionStorage by `persist: true`, so that a reload resumes
// it (same id, replay of what was missed).
//
// The trade-off: any script running on the page's origin can read sessionStorage (in memory the
// token dies with the page), and a duplicated tab copies sessionStorage, so two tabs would hold
// one session and take its stream over from each other.

/** @typedef {import('./types.js').Session} Session */

/** One saved session under one key: storage that fails is as good as empty, never an error. */
export class SessionStore {
  /** @type {Storage} */
  #storage;
  #key;

  /**
   * @param {Storage} storage
   * @param {string} key One per server, so that clients of two servers keep apart.
   */
  constructor(storage, key) {
    this.#storage = storage;
    this.#key = key;
  }

  /**
   * The saved session, or null (none, unreadable, or storage unavailable).
   * @param {string} name The name to assume when the saved one lacks it.
   * @returns {{ id: string, token: string, name: string, lastEventId: number | null } | null}
   */
  read(name) {
    try {
      const saved = JSON.parse(this.#storage.getItem(this.#key) || 'null');
      if (saved && typeof saved.id === 'string' && typeof saved.token === 'string') {
        return {
          id: saved.id,
          token: saved.token,
          name: typeof saved.name === 'string' ? saved.name : name,
          lastEventId: Number.isSafeInteger(saved.lastEventId) ? saved.lastEventId : null,
        };
      }
    } catch {
      // Unreadable or unavailable storage: start a new session.
    }
    return null;
  }

  /**
   * Saves `session` and its resume point.
   * @param {Session} session
   * @param {number | null} lastEventId
   */
  write(session, lastEventId) {
    const { id, token, name } = session;
    try {
      this.#storage.setItem(this.#key, JSON.stringify({ id, token, name, lastEventId }));
    } catch {
      // Storage full or refused: the session still works, it just will not survive a reload.
    }
  }

  clear() {
    try {
      this.#storage.removeItem(this.#key);
    } catch {
      // Nothing to undo.
    }
  }
}
