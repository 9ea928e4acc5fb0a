// presence.js: who is where. `Presence` keeps this session's rooms (each with its member count
// and, unless the room is above the server's presence limit, its roster of the others) and the
// others online (`Switchboard.presence`: everyone listed in any of those rosters, once), from
// the stream's `ready`, `joined`, `left`, `new_user`, `user_left` and `room_count`.

/**
 * @typedef {import('./types.js').Peer} Peer
 * @typedef {import('./types.js').Room} Room
 */

/** The rooms and the others; the client reads them, only the stream's events change them. */
export class Presence {
  /** The others online, keyed by id. @type {Map<string, Peer>} */
  others = new Map();
  /** This session's rooms, keyed by name. @type {Map<string, Room>} */
  rooms = new Map();

  /**
   * Replaces everything with what a `ready` carries: each attach's rosters are the truth, so
   * a resume never leaves a stale entry.
   * @param {{ clients?: Peer[], rooms?: Record<string, Peer[] | { members: number }> }} ready
   * @param {string} self This session's id, left out.
   */
  reset(ready, self) {
    this.others.clear();
    this.rooms.clear();
    for (const peer of ready.clients || []) {
      if (peer.id !== self) this.others.set(peer.id, copy(peer));
    }
    for (const [name, roster] of Object.entries(ready.rooms || {})) {
      this.rooms.set(name, room(name, roster, self));
    }
  }

  /** Forgets everyone and every room (the session is gone or closed). */
  clear() {
    this.others.clear();
    this.rooms.clear();
  }

  /**
   * This session joined `name` (`joined`): its roster (absent above the presence limit) and
   * member count, this session included.
   * @param {string} name
   * @param {Peer[] | undefined} clients
   * @param {number} members
   * @param {string} self
   */
  join(name, clients, members, self) {
    const joined = room(name, clients === undefined ? { members } : clients, self);
    joined.members = members;
    this.rooms.set(name, joined);
    for (const peer of joined.roster?.values() || []) this.others.set(peer.id, copy(peer));
  }

  /**
   * This session left `name` (`left`): the others it knew only from there are no longer seen.
   * @param {string} name
   */
  leave(name) {
    const gone = this.rooms.get(name);
    this.rooms.delete(name);
    for (const id of gone?.roster?.keys() || []) this.#forgetUnlessSeen(id);
  }

  /**
   * A peer arrived (`new_user`), in `name` when the event says. Returns whether the roster
   * listed it already: then this attach's `ready` had the peer, so it joined before the stream
   * attached and this is the mailbox replaying it (not news).
   * @param {Peer} peer
   * @param {string | undefined} name
   * @returns {boolean}
   */
  arrive(peer, name) {
    const into = name === undefined ? undefined : this.rooms.get(name);
    let replayed;
    if (into?.roster) {
      replayed = into.roster.has(peer.id);
      if (!replayed) into.members += 1;
      into.roster.set(peer.id, copy(peer));
    } else {
      replayed = name === undefined && this.others.has(peer.id);
    }
    this.others.set(peer.id, copy(peer));
    return replayed;
  }

  /**
   * A peer left `name` (`user_left`), or, when the event names no room, the hub.
   * @param {string} id
   * @param {string | undefined} name
   */
  depart(id, name) {
    if (name === undefined) {
      for (const each of this.rooms.values()) {
        if (each.roster?.delete(id)) each.members -= 1;
      }
      this.others.delete(id);
      return;
    }
    const from = this.rooms.get(name);
    if (from?.roster?.delete(id)) from.members -= 1;
    this.#forgetUnlessSeen(id);
  }

  /**
   * A room above the presence limit has `members` now (`room_count`).
   * @param {string} name
   * @param {number} members
   */
  count(name, members) {
    const counted = this.rooms.get(name);
    if (counted) counted.members = members;
  }

  /** @param {string} id */
  #forgetUnlessSeen(id) {
    for (const each of this.rooms.values()) {
      if (each.roster?.has(id)) return;
    }
    this.others.delete(id);
  }
}

/**
 * A room as `ready` or `joined` tells it: a roster of the others, or only a member count.
 * @param {string} name
 * @param {Peer[] | { members: number }} roster
 * @param {string} self
 * @returns {Room}
 */
function room(name, roster, self) {
  if (!Array.isArray(roster)) return { name, members: roster.members, roster: null };
  const others = new Map();
  for (const peer of roster) {
    if (peer.id !== self) others.set(peer.id, copy(peer));
  }
  return { name, members: others.size + 1, roster: others };
}

/**
 * @param {Peer} peer
 * @returns {Peer}
 */
function copy(peer) {
  return { id: peer.id, name: peer.name };
}
