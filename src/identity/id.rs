//! A session's public identifier.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A session's public identifier (a UUID v4), safe to show to other clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(Uuid);

impl SessionId {
    pub(crate) fn random() -> Self {
        SessionId(Uuid::new_v4())
    }

    /// Parses the textual form; any UUID is accepted, the registry decides whether it exists.
    pub fn parse(text: &str) -> Option<Self> {
        Uuid::parse_str(text).ok().map(SessionId)
    }

    /// The 32 hex digits without hyphens, as a token embeds them.
    pub(crate) fn simple(&self) -> uuid::fmt::Simple {
        self.0.simple()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
