//! Idempotent sends: the keys of the last direct messages a session was sent with one
//! (`Idempotency-Key`), so that a sender's retry of a message that was delivered, but whose
//! answer it never got, is answered with the first event id instead of being delivered again.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::event::EventId;
use crate::identity::SessionId;

/// How many keyed messages a session remembers.
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

/// The last [`KEPT`] keyed messages a session was sent, oldest first.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sent(VecDeque<(SendKey, EventId)>);

impl Sent {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn check(&self, key: &SendKey) -> Seen {
        let earlier = self
            .0
            .iter()
            .find(|(sent, _)| sent.from == key.from && sent.key == key.key);
        match earlier {
            None => Seen::New,
            Some((sent, id)) if sent.digest == key.digest => Seen::Again(*id),
            Some(_) => Seen::Reused,
        }
    }

    pub(crate) fn record(&mut self, key: SendKey, id: EventId) {
        if self.0.len() == KEPT {
            self.0.pop_front();
        }
        self.0.push_back((key, id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_tells_a_retry_from_another_message_and_is_forgotten_after_kept_others() {
        let ann = SessionId::random();
        let bob = SessionId::random();
        let first = SendKey::new(ann, "k-1", r#"{"n":1}"#).unwrap();
        let mut sent = Sent::default();
        assert_eq!(sent.check(&first), Seen::New);
        sent.record(first.clone(), 7);
        assert_eq!(sent.check(&first), Seen::Again(7));
        let other_message = SendKey::new(ann, "k-1", r#"{"n":2}"#).unwrap();
        assert_eq!(sent.check(&other_message), Seen::Reused);
        let other_sender = SendKey::new(bob, "k-1", r#"{"n":1}"#).unwrap();
        assert_eq!(sent.check(&other_sender), Seen::New, "keys are per sender");
        for n in 0..KEPT {
            let key = SendKey::new(bob, &format!("b-{n}"), "1").unwrap();
            sent.record(key, 8 + n as EventId);
        }
        assert_eq!(
            sent.check(&first),
            Seen::New,
            "forgotten after {KEPT} others"
        );

        assert!(SendKey::new(ann, "", "1").is_none());
        assert!(SendKey::new(ann, "with space", "1").is_none());
        assert!(SendKey::new(ann, &"k".repeat(MAX_KEY_LEN + 1), "1").is_none());
    }
}
