//! Room names and the patterns that say which rooms a session may be in.
//!
//! A room name is 1 to 64 characters of `A-Z a-z 0-9 _ . : @ -`, case-sensitive, starting with
//! a letter or a digit: safe in a URL path segment as it is, in a Redis channel name and in a
//! log line, and never mistaken for a pattern. `lobby` is the room of a session that names none.
//!
//! A pattern ([`RoomPattern`]) is a room name, or a prefix of one followed by `*` (`team-7:*`);
//! `*` alone allows every room. The JWT `rooms` claim and `--allow-rooms` are lists of them
//! ([`RoomPatterns`]).

use std::fmt;
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

/// A room's name; cheap to clone (one shared string).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomName(Arc<str>);

/// Why a room name (or pattern) was refused; `Display` follows the name of the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("must be 1 to {} characters", RoomName::MAX_CHARS)]
    Length,
    #[error("may hold only A-Z a-z 0-9 and _ . : @ -")]
    Character,
    #[error("must start with a letter or a digit")]
    Start,
}

impl RoomName {
    /// Longest room name, in characters (all ASCII, so bytes too).
    pub const MAX_CHARS: usize = 64;

    /// The room of a session that names none.
    pub const LOBBY: &'static str = "lobby";

    /// Checks `raw` against the room rule; nothing is trimmed.
    ///
    /// # Errors
    /// [`RoomError`] naming the first rule broken: length, then characters, then the start.
    pub fn parse(raw: &str) -> Result<Self, RoomError> {
        if raw == Self::LOBBY {
            return Ok(Self::lobby());
        }
        check(raw, false)?;
        Ok(RoomName(Arc::from(raw)))
    }

    /// `lobby`: one name shared by every session in it, not an allocation each.
    pub fn lobby() -> Self {
        static LOBBY: LazyLock<RoomName> = LazyLock::new(|| RoomName(Arc::from(RoomName::LOBBY)));
        LOBBY.clone()
    }

    /// Whether this is `lobby`.
    pub fn is_lobby(&self) -> bool {
        &*self.0 == Self::LOBBY
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RoomName {
    type Error = RoomError;

    fn try_from(raw: String) -> Result<Self, RoomError> {
        RoomName::parse(&raw)
    }
}

impl From<RoomName> for String {
    fn from(room: RoomName) -> String {
        room.0.to_string()
    }
}

/// The room rule, for a name or (with `prefix`) for what comes before a pattern's `*`, which
/// may be empty.
fn check(raw: &str, prefix: bool) -> Result<(), RoomError> {
    if raw.len() > RoomName::MAX_CHARS || (raw.is_empty() && !prefix) {
        return Err(RoomError::Length);
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b))
    {
        return Err(RoomError::Character);
    }
    match raw.bytes().next() {
        Some(first) if !first.is_ascii_alphanumeric() => Err(RoomError::Start),
        _ => Ok(()),
    }
}

/// One room, or every room whose name starts with a prefix (`prefix*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomPattern {
    Exact(RoomName),
    Prefix(String),
}

impl RoomPattern {
    /// A room name, or a prefix followed by `*` (`*` alone: any room).
    ///
    /// # Errors
    /// [`RoomError`] as for a name; the prefix may be empty but otherwise follows the rule.
    pub fn parse(raw: &str) -> Result<Self, RoomError> {
        match raw.strip_suffix('*') {
            Some(prefix) => check(prefix, true).map(|()| RoomPattern::Prefix(prefix.to_owned())),
            None => RoomName::parse(raw).map(RoomPattern::Exact),
        }
    }

    pub fn matches(&self, room: &RoomName) -> bool {
        match self {
            RoomPattern::Exact(name) => name == room,
            RoomPattern::Prefix(prefix) => room.as_str().starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for RoomPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoomPattern::Exact(name) => write!(f, "{name}"),
            RoomPattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// The rooms a session may be in: any room one of the patterns matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct RoomPatterns(Vec<RoomPattern>);

impl RoomPatterns {
    /// Every room (`*`).
    pub fn any() -> Self {
        RoomPatterns(vec![RoomPattern::Prefix(String::new())])
    }

    /// No room at all.
    pub fn none() -> Self {
        RoomPatterns(Vec::new())
    }

    /// `lobby` alone: a join token without a `rooms` claim.
    pub fn lobby() -> Self {
        RoomPatterns(vec![RoomPattern::Exact(RoomName::lobby())])
    }

    /// Each of `raw` as a pattern.
    ///
    /// # Errors
    /// The first pattern refused, with the reason.
    pub fn parse<S: AsRef<str>>(raw: &[S]) -> Result<Self, (String, RoomError)> {
        raw.iter()
            .map(|p| RoomPattern::parse(p.as_ref()).map_err(|e| (p.as_ref().to_owned(), e)))
            .collect::<Result<_, _>>()
            .map(RoomPatterns)
    }

    pub fn allows(&self, room: &RoomName) -> bool {
        self.0.iter().any(|pattern| pattern.matches(room))
    }
}

impl From<Vec<RoomPattern>> for RoomPatterns {
    fn from(patterns: Vec<RoomPattern>) -> Self {
        RoomPatterns(patterns)
    }
}

impl TryFrom<Vec<String>> for RoomPatterns {
    type Error = String;

    fn try_from(raw: Vec<String>) -> Result<Self, String> {
        RoomPatterns::parse(&raw)
            .map_err(|(pattern, err)| format!("room pattern {pattern:?} {err}"))
    }
}

impl From<RoomPatterns> for Vec<String> {
    fn from(patterns: RoomPatterns) -> Vec<String> {
        patterns.0.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_rule() {
        for ok in [
            "lobby",
            "a",
            "Team-7:dev",
            "doc.42@acme",
            "9_x",
            &"r".repeat(64),
        ] {
            assert_eq!(
                RoomName::parse(ok).map(|r| r.to_string()),
                Ok(ok.to_owned())
            );
        }
        assert_eq!(RoomName::parse(""), Err(RoomError::Length));
        assert_eq!(RoomName::parse(&"r".repeat(65)), Err(RoomError::Length));
        for bad in ["a b", "a/b", "é", "a*", "a\n", "a%20"] {
            assert_eq!(RoomName::parse(bad), Err(RoomError::Character), "{bad:?}");
        }
        for bad in ["-a", ".a", ":a", "@a", "_a"] {
            assert_eq!(RoomName::parse(bad), Err(RoomError::Start), "{bad:?}");
        }
        assert_ne!(
            RoomName::parse("Lobby"),
            Ok(RoomName::lobby()),
            "case-sensitive"
        );
    }

    #[test]
    fn patterns_match_names_and_prefixes() {
        let room = |r| RoomName::parse(r).unwrap();
        let patterns = RoomPatterns::parse(&["lobby", "team-7:*"]).unwrap();
        assert!(patterns.allows(&room("lobby")));
        assert!(patterns.allows(&room("team-7:dev")));
        assert!(!patterns.allows(&room("team-8:dev")));
        assert!(!patterns.allows(&room("lobby2")));
        assert!(RoomPatterns::any().allows(&room("anything")));
        assert!(RoomPatterns::lobby().allows(&room("lobby")));
        assert!(!RoomPatterns::lobby().allows(&room("dev")));
        assert!(RoomPatterns::parse(&["a b*"]).is_err());
        assert!(RoomPatterns::parse(&["*x"]).is_err());
        let json = serde_json::to_string(&patterns).unwrap();
        assert_eq!(json, r#"["lobby","team-7:*"]"#);
        assert_eq!(
            serde_json::from_str::<RoomPatterns>(&json).unwrap(),
            patterns
        );
    }
}
