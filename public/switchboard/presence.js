// presence.js: the roster of the others online (`Switchboard.presence`, a Map keyed by id),
// kept from the stream's `ready`, `new_user` and `user_left`.

/** @typedef {import('./types.js').Peer} Peer */

/**
 * Replaces the roster with the one a `ready` carries: each attach's roster is the truth, so a
 * resume never leaves a stale entry.
 * @param {Map<string, Peer>} presence
 * @param {Peer[]} clients The `ready` event's `clients`.
 * @param {string} self This session's id, left out.
 */
export function replaceRoster(presence, clients, self) {
  presence.clear();
  for (const peer of clients) {
    if (peer.id !== self) presence.set(peer.id, { id: peer.id, name: peer.name });
  }
}

/**
 * Adds the peer of a `new_user`. Returns whether the roster listed it already: then this
 * attach's `ready` roster had the peer, so the peer joined before the stream attached and this
 * is the mailbox replaying it (not news).
 * @param {Map<string, Peer>} presence
 * @param {Peer} peer
 * @returns {boolean}
 */
export function addPeer(presence, peer) {
  const replayed = presence.has(peer.id);
  presence.set(peer.id, { id: peer.id, name: peer.name });
  return replayed;
}

/**
 * Removes the peer of a `user_left`.
 * @param {Map<string, Peer>} presence
 * @param {string} id
 */
export function removePeer(presence, id) {
  presence.delete(id);
}
