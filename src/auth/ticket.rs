//! Stream tickets: short-lived, single-use stand-ins for a session token, for an `EventSource`
//! on another origin (which can send neither a header nor this origin's cookie). A ticket in a
//! URL may be logged by a proxy, but by then it is spent or about to expire.
//!
//! Only the ticket's SHA-256 digest is kept, beside the session token it stands for. A ticket
//! stays in the book for one lifetime past its expiry, so that a late use is told "expired"
//! rather than "unknown"; the book is pruned whenever a ticket is issued, so it holds at most
//! two lifetimes of tickets (and issuing them is counted against the session's message rate).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::identity::Token;

/// Why a presented ticket opens nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TicketError {
    /// Never issued here (or forgotten: long expired, or issued by another instance).
    Unknown,
    /// Already opened a stream.
    Used,
    /// Past its lifetime.
    Expired,
}

impl TicketError {
    /// What a 401 says.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            TicketError::Unknown => {
                "unknown ticket: get one from POST /session/ticket on this server"
            }
            TicketError::Used => {
                "this ticket was already used (a ticket opens one stream): get a new one from POST /session/ticket"
            }
            TicketError::Expired => {
                "this ticket expired: get a new one from POST /session/ticket just before opening the stream"
            }
        }
    }
}

struct Entry {
    token: Token,
    expires: Instant,
    used: bool,
}

/// The tickets issued by this process.
pub(crate) struct Tickets {
    ttl: Duration,
    book: Mutex<HashMap<[u8; 32], Entry>>,
}

impl Tickets {
    pub(crate) fn new(ttl: Duration) -> Self {
        Tickets {
            ttl,
            book: Mutex::new(HashMap::new()),
        }
    }

    /// How long a ticket lives.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new ticket for the session `token` proves (the caller has checked it).
    pub(crate) fn issue(&self, token: Token) -> String {
        let ticket = hex::encode(rand::random::<[u8; 32]>());
        let now = Instant::now();
        let entry = Entry {
            token,
            expires: now + self.ttl,
            used: false,
        };
        let mut book = self.book.lock().expect("ticket book poisoned");
        let ttl = self.ttl;
        book.retain(|_, entry| entry.expires + ttl > now);
        book.insert(digest(&ticket), entry);
        ticket
    }

    /// The session token `ticket` stands for, spending the ticket when `spend` (a `GET`; a
    /// `HEAD` only asks).
    pub(crate) fn redeem(&self, ticket: &str, spend: bool) -> Result<Token, TicketError> {
        let mut book = self.book.lock().expect("ticket book poisoned");
        let entry = book.get_mut(&digest(ticket)).ok_or(TicketError::Unknown)?;
        if entry.used {
            return Err(TicketError::Used);
        }
        if Instant::now() >= entry.expires {
            return Err(TicketError::Expired);
        }
        entry.used |= spend;
        Ok(entry.token.clone())
    }
}

fn digest(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SessionId;

    #[test]
    fn a_ticket_opens_one_stream_and_then_says_it_was_used() {
        let tickets = Tickets::new(Duration::from_secs(60));
        let token = Token::issue(SessionId::random());
        let ticket = tickets.issue(token.clone());
        assert!(
            tickets.redeem(&ticket, false).is_ok(),
            "a HEAD spends nothing"
        );
        assert!(tickets.redeem(&ticket, true).unwrap().matches(&token));
        assert_eq!(tickets.redeem(&ticket, true).err(), Some(TicketError::Used));
        assert_eq!(
            tickets.redeem("nope", true).err(),
            Some(TicketError::Unknown)
        );
    }

    #[test]
    fn an_expired_ticket_says_so() {
        let tickets = Tickets::new(Duration::ZERO);
        let ticket = tickets.issue(Token::issue(SessionId::random()));
        assert_eq!(
            tickets.redeem(&ticket, true).err(),
            Some(TicketError::Expired)
        );
    }
}
