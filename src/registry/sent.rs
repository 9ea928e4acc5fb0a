//! Idempotent sends: the keys of the last direct messages a session was sent with one
//! (`Idempotency-Key`), so that a sender's retry of a message that was delivered, but whose
//! answer it never got, is answered with the first event id instead of being delivered again.
//!
//! A key's scope is its sender and recipient: it is looked up with its sender, and the room
//! is shared fairly. The recipient keeps [`KEPT`] keys; when they are all taken it forgets the
//! oldest key of whichever sender holds the most, so one sender's traffic pushes out its own
//! keys first and cannot flush another's (a sender's last key goes only when [`KEPT`] senders
//! hold one each). The record lives with the recipient because the check and the delivery
//! must be one step under its lock: a retry racing the first attempt is still one delivery.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::event::EventId;
use crate::identity::SessionId;

/// How many keyed messages a session remembers, from all senders together.
pub const KEPT: usize = 256;

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 128;

/// One sender's key for one message, with a digest of the message to tell a retry from a
/// different message sent with the same key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendKey {
    pub from: SessionId,
    pub key: String,
    pub digest: u64,
}

impl SendKey {
    /// `key` from `from` for `message` (its JSON text); `None` when the key is empty, longer
    /// than [`MAX_KEY_LEN`], or not visible ASCII.
    pub fn new(from: SessionId, key: &str, message: &str) -> Option<SendKey> {
        let valid = !key.is_empty()
            && key.len() <= MAX_KEY_LEN
            && key.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return None;
        }
        // Stable across processes: another instance may compare it.
        let hash = Sha256::digest(message.as_bytes());
        let digest = u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"));
        Some(SendKey {
            from,
            key: key.to_owned(),
            digest,
        })
    }
}

/// What a session's record says of a keyed message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not sent before (or too long ago to remember).
    New,
    /// Sent before with this id.
    Again(EventId),
    /// The key was sent before with another message.
    Reused,
}

/// The last keyed messages a session was sent, oldest first, at most [`KEPT`], shared fairly
/// between senders. Stored (state file, hand-over) as the list of entries alone, as before.
#[derive(Clone, Debug, Default)]
pub struct Sent {
    /// No count per sender beside it: that map cost every session 48 bytes (2% of an idle
    /// stream) for a question asked only when the record is full.
    entries: VecDeque<(SendKey, EventId)>,
}

impl Sent {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn check(&self, key: &SendKey) -> Seen {
        let earlier = self
            .entries
            .iter()
            .find(|(sent, _)| sent.from == key.from && sent.key == key.key);
        match earlier {
            None => Seen::New,
            Some((sent, id)) if sent.digest == key.digest => Seen::Again(*id),
            Some(_) => Seen::Reused,
        }
    }

    pub(crate) fn record(&mut self, key: SendKey, id: EventId) {
        if self.entries.len() >= KEPT {
            self.forget_one();
        }
        self.entries.push_back((key, id));
    }

    /// Forgets the oldest key of the sender holding the most (of the heaviest, the one whose
    /// oldest key is oldest). Counted here, over at most [`KEPT`] entries, only when full.
    fn forget_one(&mut self) {
        let mut held: HashMap<SessionId, usize> = HashMap::new();
        for (sent, _) in &self.entries {
            *held.entry(sent.from).or_default() += 1;
        }
        let most = held.values().copied().max().unwrap_or(0);
        if let Some(at) = self
            .entries
            .iter()
            .position(|(sent, _)| held.get(&sent.from) == Some(&most))
        {
            self.entries.remove(at);
        }
    }
}

impl Serialize for Sent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Sent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = VecDeque::<(SendKey, EventId)>::deserialize(deserializer)?;
        let mut sent = Sent::default();
        for (key, id) in entries {
            sent.record(key, id);
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(from: SessionId, key: &str) -> SendKey {
        SendKey::new(from, key, "1").unwrap()
    }

    #[test]
    fn a_key_tells_a_retry_from_another_message() {
        let ann = SessionId::random();
        let bob = SessionId::random();
        let first = SendKey::new(ann, "k-1", r#"{"n":1}"#).unwrap();
        let mut sent = Sent::default();
        assert_eq!(sent.check(&first), Seen::New);
        sent.record(first.clone(), 7);
        assert_eq!(sent.check(&first), Seen::Again(7));
        let other_message = SendKey::new(ann, "k-1", r#"{"n":2}"#).unwrap();
        assert_eq!(sent.check(&other_message), Seen::Reused);
        let other_sender = SendKey::new(bob, "k-1", r#"{"n":2}"#).unwrap();
        assert_eq!(sent.check(&other_sender), Seen::New, "keys are per sender");

        assert!(SendKey::new(ann, "", "1").is_none());
        assert!(SendKey::new(ann, "with space", "1").is_none());
        assert!(SendKey::new(ann, &"k".repeat(MAX_KEY_LEN + 1), "1").is_none());
    }

    #[test]
    fn a_sender_alone_is_remembered_for_kept_keys_then_its_oldest_go() {
        let ann = SessionId::random();
        let mut sent = Sent::default();
        for n in 0..=KEPT {
            sent.record(key(ann, &format!("a-{n}")), n as EventId);
        }
        assert_eq!(sent.check(&key(ann, "a-0")), Seen::New);
        assert_eq!(sent.check(&key(ann, "a-1")), Seen::Again(1));
    }

    #[test]
    fn other_senders_cannot_flush_a_senders_key() {
        let ann = SessionId::random();
        let mut sent = Sent::default();
        sent.record(key(ann, "mine"), 1);
        // One other sender, far more than the record holds.
        let bob = SessionId::random();
        for n in 0..3 * KEPT {
            sent.record(key(bob, &format!("b-{n}")), 2 + n as EventId);
        }
        assert_eq!(sent.check(&key(ann, "mine")), Seen::Again(1));
        // Many other senders, a few keys each.
        for _ in 0..KEPT / 4 {
            let other = SessionId::random();
            for n in 0..8 {
                sent.record(key(other, &format!("o-{n}")), 9);
            }
        }
        assert_eq!(sent.check(&key(ann, "mine")), Seen::Again(1));
        assert!(sent.entries.len() <= KEPT);
    }

    #[test]
    fn stored_as_the_list_of_entries_and_read_back_fairly() {
        let ann = SessionId::random();
        let mut sent = Sent::default();
        sent.record(key(ann, "k"), 3);
        let json = serde_json::to_value(&sent).unwrap();
        assert!(json.is_array(), "{json}");
        let back: Sent = serde_json::from_value(json).unwrap();
        assert_eq!(back.check(&key(ann, "k")), Seen::Again(3));
        assert_eq!(back.entries.len(), 1);
    }
}
