//! How long a session may live whatever its streams do: until its join token's `exp` (plus the
//! leeway), or `--max-session-age` after its join, unless refreshed. The TTL ends sessions
//! nobody streams; a [`Lifetime`] ends sessions whose credential ran out.
//!
//! A session with a lifetime gets `refresh_required` ahead of its end (a minute, or a third of
//! what it had left for a short one), then at its end `expired`, and is removed as a `DELETE
//! /session` would. Both moments wait in the registry's `lifetimes` queue, which the reaper
//! walks beside the TTL's (see [`Registry::expire`](super::Registry::expire)): no timer per
//! session. A refresh moves the end and re-arms the warning.
//!
//! Time here is the runtime's [`Instant`] (so tests can pause it); what is kept across a
//! restart or carried to another instance is wall-clock time ([`Deadline`]).
//!
//! Sessions that ended this way are remembered for a while ([`Ended`]), so their token is
//! refused with "expired" rather than "unknown".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{info, warn};

use super::event::{Envelope, Event, Expired, RefreshRequired};
use super::session::{Closed, Session};
use super::{Departure, Registry, RegistryError, State};
use crate::identity::{SessionId, Token, TokenHash};

/// The longest warning ahead of a session's end.
pub const WARN_AHEAD: Duration = Duration::from_secs(60);

/// How many ended sessions are remembered (see [`Ended`]): at about 60 bytes each, 600 KB.
const ENDED_KEPT: usize = 10_000;

/// What bounds a session's life, and so why it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Its join token's `exp` plus `--jwt-leeway`.
    JoinToken,
    /// `--max-session-age` after its join.
    MaxSessionAge,
    /// The app's backend, through `POST /api/refresh`.
    Server,
}

impl Bound {
    /// Why a session with this bound ended, for people.
    pub fn reason(self) -> &'static str {
        match self {
            Bound::JoinToken => "its join token expired (exp plus --jwt-leeway) without a refresh",
            Bound::MaxSessionAge => "it reached --max-session-age",
            Bound::Server => "the server API ended it (POST /api/refresh)",
        }
    }
}

/// When a session ends, and when it is warned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// When the session ends.
    pub ends: Instant,
    /// What set `ends`.
    pub bound: Bound,
    /// When `refresh_required` is due; `None` once sent.
    pub warn_at: Option<Instant>,
    /// The latest end a join token may set: `--max-session-age` after the join. The server API
    /// is not held to it.
    pub cap: Option<Instant>,
}

impl Lifetime {
    /// A session joining at `now`: ends at `token` (a join token's end) or at `cap`, whichever
    /// comes first; `None` when neither bounds it.
    pub fn at_join(token: Option<Instant>, cap: Option<Instant>, now: Instant) -> Option<Self> {
        let (ends, bound) = match (token, cap) {
            (Some(token), Some(cap)) if cap < token => (cap, Bound::MaxSessionAge),
            (Some(token), _) => (token, Bound::JoinToken),
            (None, Some(cap)) => (cap, Bound::MaxSessionAge),
            (None, None) => return None,
        };
        Some(Lifetime {
            ends,
            bound,
            warn_at: Some(warning(ends, now)),
            cap,
        })
    }

    /// Moved to end at `ends` (a new join token's, held to the cap; or the backend's, as is),
    /// warned anew ahead of it.
    #[must_use]
    pub fn moved(self, ends: Instant, bound: Bound, now: Instant) -> Self {
        let (ends, bound) = match self.cap {
            Some(cap) if bound == Bound::JoinToken && cap < ends => (cap, Bound::MaxSessionAge),
            _ => (ends, bound),
        };
        Lifetime {
            ends,
            bound,
            warn_at: (ends > now).then(|| warning(ends, now)),
            cap: self.cap,
        }
    }

    /// A session's lifetime after a refresh to `ends` set by `bound`: `old` moved (see
    /// [`Lifetime::moved`]), or, for a session that had none, one ending then without a cap.
    pub fn refreshed(old: Option<Lifetime>, ends: Instant, bound: Bound, now: Instant) -> Self {
        let old = old.unwrap_or(Lifetime {
            ends,
            bound,
            warn_at: None,
            cap: None,
        });
        old.moved(ends, bound, now)
    }

    /// The next moment the reaper must look at this session.
    pub fn next(&self) -> Instant {
        self.warn_at.unwrap_or(self.ends)
    }

    /// Whole seconds left at `now`, rounded up (what `refresh_required` says).
    pub fn seconds_left(&self, now: Instant) -> u64 {
        let left = self.ends.saturating_duration_since(now);
        left.as_secs() + u64::from(left.subsec_nanos() > 0)
    }
}

/// When to warn a session that ends at `ends`: a minute ahead, or a third of what it has left
/// at `now` when that is shorter, so a short token is warned with time to refresh.
fn warning(ends: Instant, now: Instant) -> Instant {
    let left = ends.saturating_duration_since(now);
    ends - WARN_AHEAD.min(left / 3)
}

/// A [`Lifetime`] in wall-clock time (milliseconds since the Unix epoch), to keep across a
/// restart or carry to another instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadline {
    pub ends_ms: u64,
    pub bound: Bound,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_ms: Option<u64>,
}

impl Deadline {
    /// `lifetime` in wall-clock time.
    pub fn of(lifetime: &Lifetime) -> Self {
        let clock = Clock::now();
        Deadline {
            ends_ms: clock.wall(lifetime.ends),
            bound: lifetime.bound,
            warn_at_ms: lifetime.warn_at.map(|at| clock.wall(at)),
            cap_ms: lifetime.cap.map(|at| clock.wall(at)),
        }
    }

    /// Why it ended, if it has by wall-clock time `now_ms` (milliseconds since the epoch).
    pub fn ended_at(&self, now_ms: u64) -> Option<Bound> {
        (self.ends_ms <= now_ms).then_some(self.bound)
    }

    /// Back in this process's time; moments already past are now.
    pub fn lifetime(&self) -> Lifetime {
        let clock = Clock::now();
        Lifetime {
            ends: clock.instant(self.ends_ms),
            bound: self.bound,
            warn_at: self.warn_at_ms.map(|ms| clock.instant(ms)),
            cap: self.cap_ms.map(|ms| clock.instant(ms)),
        }
    }
}

/// One reading of both clocks, to convert between them.
struct Clock {
    instant: Instant,
    wall_ms: u64,
}

impl Clock {
    fn now() -> Self {
        Clock {
            instant: Instant::now(),
            wall_ms: unix_ms(SystemTime::now()),
        }
    }

    fn wall(&self, at: Instant) -> u64 {
        if at >= self.instant {
            self.wall_ms + millis(at - self.instant)
        } else {
            self.wall_ms.saturating_sub(millis(self.instant - at))
        }
    }

    fn instant(&self, ms: u64) -> Instant {
        let ahead = Duration::from_millis(ms.saturating_sub(self.wall_ms));
        self.instant + ahead
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, millis)
}

/// `seconds` since the Unix epoch as a moment of this process; now when it is past.
pub fn instant_of_unix(seconds: u64) -> Instant {
    instant_of_unix_ms(seconds.saturating_mul(1000))
}

/// `ms` milliseconds since the Unix epoch as a moment of this process; now when it is past.
pub fn instant_of_unix_ms(ms: u64) -> Instant {
    Clock::now().instant(ms)
}

/// `at` as seconds since the Unix epoch, rounded down.
pub fn unix_of_instant(at: Instant) -> u64 {
    unix_ms_of_instant(at) / 1000
}

/// `at` as milliseconds since the Unix epoch.
pub fn unix_ms_of_instant(at: Instant) -> u64 {
    Clock::now().wall(at)
}

/// Sessions that ended at their lifetime's end, lately: their token's hash and why, so that
/// the token is refused as expired rather than unknown. The oldest are forgotten past
/// [`ENDED_KEPT`].
#[derive(Default)]
pub struct Ended(IndexMap<SessionId, (TokenHash, Bound)>);

impl Ended {
    pub fn record(&mut self, id: SessionId, hash: TokenHash, bound: Bound) {
        if self.0.len() >= ENDED_KEPT {
            self.0.shift_remove_index(0);
        }
        self.0.insert(id, (hash, bound));
    }

    /// Why session `id` ended, and its token's hash, if it is one of them.
    pub fn get(&self, id: SessionId) -> Option<(TokenHash, Bound)> {
        self.0.get(&id).cloned()
    }

    /// Why `token`'s session ended, if it is one of them and the token is its own.
    pub fn check(&self, token: &Token) -> Option<Bound> {
        let (hash, bound) = self.0.get(&token.session())?;
        hash.verifies(token).then_some(*bound)
    }
}

impl State {
    /// What to answer for session `id`, which is not here: `SessionExpired` when it ended at
    /// its lifetime lately and `token` is its own, else `otherwise`.
    pub(super) fn gone(
        &self,
        id: SessionId,
        token: &Token,
        otherwise: RegistryError,
    ) -> RegistryError {
        match self.ended.check(token) {
            Some(bound) if token.session() == id => RegistryError::SessionExpired(bound),
            _ => otherwise,
        }
    }
}

impl Registry {
    /// Moves the end of session `id` to `ends`, set by `bound`: a join token's end is held to
    /// `--max-session-age`, the server's is not. An end already past ends the session at the
    /// reaper's next look, which is at once. Returns the lifetime it has now.
    ///
    /// # Errors
    /// `UnknownSession` when it does not live here.
    pub(crate) fn refresh(
        &self,
        id: SessionId,
        ends: Instant,
        bound: Bound,
    ) -> Result<Lifetime, RegistryError> {
        let now = Instant::now();
        let mut state = self.lock();
        let session = state.session(id)?;
        let lifetime = {
            let mut inner = session.lock();
            let moved = Lifetime::refreshed(inner.lifetime.as_deref().copied(), ends, bound, now);
            inner.lifetime = Some(Box::new(moved));
            moved
        };
        state.lifetimes.insert((lifetime.next(), id));
        drop(state);
        self.shared.metrics.session_refreshes.inc();
        self.shared.reaper.notify_one();
        info!(session = %id, ?bound, "lifetime moved");
        Ok(lifetime)
    }

    /// Gives session `id` the lifetime `deadline` describes, if it lives here without one: a
    /// deadline the cluster's directory kept for it while it lived where none was enforced
    /// (see `backplane::cluster::lifetime`). Whether it took it.
    pub(crate) fn take_deadline(&self, id: SessionId, deadline: &Deadline) -> bool {
        let mut state = self.lock();
        let Some(session) = state.sessions.get(&id).cloned() else {
            return false;
        };
        let lifetime = {
            let mut inner = session.lock();
            if inner.lifetime.is_some() {
                return false;
            }
            let lifetime = deadline.lifetime();
            inner.lifetime = Some(Box::new(lifetime));
            lifetime
        };
        state.lifetimes.insert((lifetime.next(), id));
        drop(state);
        self.shared.reaper.notify_one();
        info!(session = %id, bound = ?lifetime.bound, "lifetime taken from the directory");
        true
    }

    /// Why session `id` ended at its lifetime lately, and its token's hash, if it did here.
    pub(crate) fn ended(&self, id: SessionId) -> Option<(TokenHash, Bound)> {
        self.lock().ended.get(id)
    }

    /// Sends `refresh_required` to the sessions whose warning is due by `now`, and ends those
    /// whose lifetime is over (into `departed`); the next moment left.
    pub(super) fn run_lifetimes(
        &self,
        state: &mut State,
        now: Instant,
        departed: &mut Vec<Departure>,
    ) -> Option<Instant> {
        while let Some(&(at, id)) = state.lifetimes.first() {
            if at > now {
                return Some(at);
            }
            state.lifetimes.pop_first();
            let Some(session) = state.sessions.get(&id).cloned() else {
                continue;
            };
            let mut inner = session.lock();
            // Stale: a refresh moved it, and queued its new moment.
            let Some(lifetime) = inner
                .lifetime
                .as_deref()
                .copied()
                .filter(|l| l.next() == at)
            else {
                continue;
            };
            if lifetime.ends <= now {
                drop(inner);
                self.end(state, &session, lifetime.bound, departed);
            } else {
                inner.lifetime = Some(Box::new(Lifetime {
                    warn_at: None,
                    ..lifetime
                }));
                drop(inner);
                state.lifetimes.insert((lifetime.ends, id));
                let expires_in = lifetime.seconds_left(now);
                self.tell(
                    &session,
                    Event::RefreshRequired(RefreshRequired { expires_in }),
                );
            }
        }
        None
    }

    /// Ends `session` at its lifetime's end: `expired` is the last event its stream writes,
    /// its token is refused as expired from now on, and it departs.
    fn end(
        &self,
        state: &mut State,
        session: &Arc<Session>,
        bound: Bound,
        departed: &mut Vec<Departure>,
    ) {
        self.tell(session, Event::Expired(Expired { reason: bound }));
        let Some(rooms) = self.remove_locked(state, session, Closed::Expired) else {
            return;
        };
        let id = session.peer.id;
        state.ended.record(id, session.token.hash(), bound);
        self.shared.metrics.sessions_expired.inc();
        info!(session = %id, ?bound, "lifetime ended");
        departed.push(Departure {
            peer: session.peer.clone(),
            rooms,
        });
    }

    /// Appends news of its lifetime to `session`'s mailbox (kept like a direct message).
    fn tell(&self, session: &Session, event: Event) {
        let metrics = &self.shared.metrics;
        if session
            .push_keyed(&Envelope::new(event), metrics, None)
            .is_err()
        {
            warn!(session = %session.peer.id, "mailbox full of unread messages: lifetime event dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_warned_a_minute_ahead_or_a_third_of_a_short_life() {
        let now = Instant::now();
        let long = Lifetime::at_join(Some(now + Duration::from_secs(600)), None, now).unwrap();
        assert_eq!(long.warn_at, Some(now + Duration::from_secs(540)));
        assert_eq!(long.bound, Bound::JoinToken);
        let short = Lifetime::at_join(Some(now + Duration::from_secs(30)), None, now).unwrap();
        assert_eq!(short.warn_at, Some(now + Duration::from_secs(20)));
        assert_eq!(short.seconds_left(now + Duration::from_millis(20_500)), 10);
        assert!(Lifetime::at_join(None, None, now).is_none());
    }

    #[test]
    fn the_cap_bounds_the_join_and_join_token_refreshes_but_not_the_server() {
        let now = Instant::now();
        let cap = Some(now + Duration::from_secs(100));
        let joined = Lifetime::at_join(Some(now + Duration::from_secs(600)), cap, now).unwrap();
        assert_eq!(
            (joined.ends, joined.bound),
            (now + Duration::from_secs(100), Bound::MaxSessionAge)
        );
        let early = Lifetime::at_join(Some(now + Duration::from_secs(10)), cap, now).unwrap();
        let refreshed = early.moved(now + Duration::from_secs(500), Bound::JoinToken, now);
        assert_eq!(refreshed.ends, now + Duration::from_secs(100));
        assert_eq!(refreshed.bound, Bound::MaxSessionAge);
        let server = early.moved(now + Duration::from_secs(500), Bound::Server, now);
        assert_eq!(server.ends, now + Duration::from_secs(500));
        let ended = early.moved(now, Bound::Server, now);
        assert_eq!(ended.next(), now, "an end now is not warned");
    }

    #[test]
    fn a_deadline_keeps_a_lifetime_in_wall_clock_time() {
        let now = Instant::now();
        let lifetime = Lifetime::at_join(
            Some(now + Duration::from_secs(90)),
            Some(now + Duration::from_secs(3600)),
            now,
        )
        .unwrap();
        let back = Deadline::of(&lifetime).lifetime();
        let close = |a: Instant, b: Instant| {
            a.max(b).saturating_duration_since(a.min(b)) < Duration::from_millis(50)
        };
        assert!(close(back.ends, lifetime.ends));
        assert!(close(back.warn_at.unwrap(), lifetime.warn_at.unwrap()));
        assert!(close(back.cap.unwrap(), lifetime.cap.unwrap()));
        let json = serde_json::to_string(&Deadline::of(&lifetime)).unwrap();
        assert!(json.contains(r#""bound":"join_token""#), "{json}");
    }

    #[test]
    fn an_ended_session_is_known_by_its_own_token_only() {
        let token = Token::issue(SessionId::random());
        let mut ended = Ended::default();
        ended.record(token.session(), TokenHash::of(&token), Bound::JoinToken);
        assert_eq!(ended.check(&token), Some(Bound::JoinToken));
        assert_eq!(ended.check(&Token::issue(token.session())), None);
        assert_eq!(ended.check(&Token::issue(SessionId::random())), None);
    }
}
