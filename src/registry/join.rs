//! Who a new session is, as its join decided ([`Joining`]), and what proves it later
//! ([`Credential`]): the token itself, or only its hash.

use tokio::time::Instant;

use crate::identity::{DisplayName, RoomPatterns, Token, TokenHash};

/// Who a new session is, as its join decided: the name it goes by, the app's user id when a
/// join token named one, whether it may broadcast, the rooms its token allows, and when the
/// token stops counting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joining {
    pub name: DisplayName,
    pub user: Option<String>,
    pub may_broadcast: bool,
    /// The join token's `rooms` (`lobby` alone when it has none); `None` on an open join.
    pub may_join: Option<RoomPatterns>,
    /// When its join token runs out (`exp` plus the leeway); `None` on an open join.
    pub expires: Option<Instant>,
}

/// An open join: a name, no user id, broadcasting allowed, rooms as the server allows.
impl From<DisplayName> for Joining {
    fn from(name: DisplayName) -> Self {
        Joining {
            name,
            user: None,
            may_broadcast: true,
            may_join: None,
            expires: None,
        }
    }
}

/// What a session checks presented tokens against: the token itself when it was issued here (or
/// its client brought it along a hand-over), only its hash when the session was restored from a
/// state file or handed off by an instance that stopped.
#[derive(Clone, Debug)]
pub(crate) enum Credential {
    Token(Token),
    Hash(TokenHash),
}

impl From<Token> for Credential {
    fn from(token: Token) -> Self {
        Credential::Token(token)
    }
}

impl From<TokenHash> for Credential {
    fn from(hash: TokenHash) -> Self {
        Credential::Hash(hash)
    }
}

impl Credential {
    /// Whether `token` proves this session; constant-time either way.
    pub(crate) fn matches(&self, token: &Token) -> bool {
        match self {
            Credential::Token(own) => own.matches(token),
            Credential::Hash(hash) => hash.verifies(token),
        }
    }

    pub(crate) fn hash(&self) -> TokenHash {
        match self {
            Credential::Token(token) => TokenHash::of(token),
            Credential::Hash(hash) => hash.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SessionId;

    #[test]
    fn a_credential_checks_tokens_by_token_or_by_hash() {
        let token = Token::issue(SessionId::random());
        assert!(Credential::Token(token.clone()).matches(&token));
        assert!(Credential::Hash(TokenHash::of(&token)).matches(&token));
        let other = Token::issue(token.session());
        assert!(!Credential::Token(token.clone()).matches(&other));
        assert!(!Credential::Hash(TokenHash::of(&other)).matches(&token));
    }
}
