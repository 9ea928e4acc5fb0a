//! The secret that proves a session, and the digest kept in its place where it is stored.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::SessionId;

/// The bearer secret of one session: `<session id>.<256 random bits, hex>`.
///
/// Embedding the id lets the registry find the session without a second index keyed by a
/// secret, and then compare the secret in constant time. `Debug` never prints the secret.
#[derive(Clone)]
pub struct Token {
    session: SessionId,
    secret: [u8; 32],
}

impl Token {
    pub(crate) fn issue(session: SessionId) -> Self {
        Token {
            session,
            secret: rand::random(),
        }
    }

    /// Splits a presented token into its session id and secret; `None` when malformed.
    pub fn parse(text: &str) -> Option<Self> {
        let (id, secret_hex) = text.split_once('.')?;
        let session = SessionId::parse(id)?;
        if secret_hex.len() != 64 {
            return None;
        }
        let mut secret = [0u8; 32];
        hex::decode_to_slice(secret_hex, &mut secret).ok()?;
        Some(Token { session, secret })
    }

    /// The session this token claims to belong to (not yet verified).
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Constant-time comparison of the secrets, so response timing leaks nothing about them.
    pub(crate) fn matches(&self, other: &Token) -> bool {
        self.session == other.session && bool::from(self.secret.ct_eq(&other.secret))
    }

    /// The string handed to the client once, at `helo`.
    pub fn reveal(&self) -> String {
        format!("{}.{}", self.session.simple(), hex::encode(self.secret))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}, <redacted>)", self.session)
    }
}

/// A token's SHA-256 digest (of its revealed form): what is written to disk or Redis instead of
/// the secret, and enough to check a presented token later. 256 random bits need no salt.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &Token) -> Self {
        TokenHash(Sha256::digest(token.reveal().as_bytes()).into())
    }

    /// Parses the 64 hex digits [`TokenHash::to_hex`] wrote; `None` when malformed.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(text, &mut digest).ok()?;
        Some(TokenHash(digest))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether `token` hashes to this digest, compared in constant time.
    pub fn verifies(&self, token: &Token) -> bool {
        bool::from(self.0.ct_eq(&TokenHash::of(token).0))
    }
}

/// As its 64 hex digits, the form the directory and the state file use.
impl Serialize for TokenHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = String::deserialize(deserializer)?;
        TokenHash::from_hex(&hex).ok_or_else(|| serde::de::Error::custom("not 64 hex digits"))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_rejects_other_secrets() {
        let id = SessionId::random();
        let token = Token::issue(id);
        let parsed = Token::parse(&token.reveal()).expect("own token parses");
        assert!(token.matches(&parsed));
        assert_eq!(parsed.session(), id);
        assert!(!token.matches(&Token::issue(id)));
        assert!(Token::parse("nonsense").is_none());
        assert!(Token::parse(&format!("{id}.abc")).is_none());
    }

    #[test]
    fn a_hash_verifies_its_token_only() {
        let token = Token::issue(SessionId::random());
        let hash = TokenHash::of(&token);
        assert!(hash.verifies(&token));
        assert!(!hash.verifies(&Token::issue(token.session())));
        let hex = hash.to_hex();
        assert!(!token.reveal().contains(&hex));
        assert_eq!(TokenHash::from_hex(&hex), Some(hash.clone()));
        assert!(TokenHash::from_hex("zz").is_none());
    }
}
