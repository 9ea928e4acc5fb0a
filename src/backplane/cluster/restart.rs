//! After Redis restarted empty: telling a session that is gone from one whose instance has not
//! written it again yet.
//!
//! Redis restarted without its data forgets every session; each instance writes those it homes
//! again once it has subscribed again (see [`recovery`](super::recovery)): within seconds, not
//! at once. Meanwhile the directory does not know a live, attached session, and "unknown"
//! (404) would tell its senders that it is gone for good. So:
//!
//! - [`STATE`](super::keys::STATE) never expires: an instance that had subscribed before and
//!   finds it missing when it re-registers knows that Redis lost its state, and starts the
//!   recovery ([`RECOVERING`](super::keys::RECOVERING), for at most [`RECOVERY_LIMIT`]);
//! - each instance writes its [`REGISTERED`](super::keys::REGISTERED) key once it has
//!   re-registered;
//! - a session the directory does not know is answered `backplane_recovering` (503, retry)
//!   while [`STATE`](super::keys::STATE) is missing (nobody re-registered yet), or while the
//!   recovery lasts: until [`RESUBSCRIBED_WITHIN`] has passed since it began (by then every
//!   live instance has subscribed again) and every instance reading its channel has
//!   re-registered. After that, unknown means unknown again (404).
//!
//! Not covered: an instance starting for the first time while Redis restarts writes the state
//! key without starting a recovery, and `FLUSHALL` on a running Redis drops no subscription, so
//! nobody re-registers (as before).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::Script;
use uuid::Uuid;

use super::instance::Cluster;
use super::keys::{Keys, LIVENESS, unavailable};
use super::transport::Conn;
use crate::registry::RegistryError;

/// Longest a recovery lasts, whatever the instances say.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
/// How long after Redis is back every live instance has subscribed again: the subscriber's
/// longest pause between attempts (2 s) and its longest attempt (2 s), with a margin.
const RESUBSCRIBED_WITHIN: Duration = Duration::from_secs(2 * LIVENESS.as_secs());
/// What a sender is told to wait: a session may be written again at any moment.
const RETRY: Duration = Duration::from_secs(1);

/// Writes the state key KEYS[1] if missing and then, when ARGV[1] is `1` (this instance had
/// subscribed before), starts the recovery KEYS[2]; writes this instance's mark KEYS[3].
/// ARGV[2]: how long the recovery and the mark live, in ms. One script: nobody sees the state
/// key back without the recovery.
static REGISTERED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('SET', KEYS[1], '1', 'NX') and ARGV[1] == '1' then
            redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2])
        end
        redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
        ",
    )
});

/// This instance's part in recovering from a Redis restart (module doc).
pub(super) struct Restart {
    conn: Conn,
    keys: Keys,
    here: Uuid,
    /// Whether this instance has re-registered before: a subscription again, not its first.
    before: AtomicBool,
}

impl Restart {
    pub(super) fn new(conn: Conn, keys: Keys, here: Uuid) -> Self {
        Restart {
            conn,
            keys,
            here,
            before: AtomicBool::new(false),
        }
    }

    /// This instance re-registered the sessions it homes (after each subscription): starts a
    /// recovery if Redis lost its state, and marks this instance as done.
    pub(super) async fn registered(&self) -> Result<(), RegistryError> {
        let again = self.before.swap(true, Ordering::Relaxed);
        REGISTERED
            .key(self.keys.state())
            .key(self.keys.recovering())
            .key(self.keys.registered(self.here))
            .arg(if again { "1" } else { "0" })
            .arg(RECOVERY_LIMIT.as_millis() as u64)
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// Whether a session the directory does not know may be one an instance has not written
    /// again yet since Redis lost its state: then how long to wait before asking again.
    pub(super) async fn pending(&self) -> Result<Option<Duration>, RegistryError> {
        let mut conn = self.conn.clone();
        let (kept, left): (bool, i64) = redis::pipe()
            .exists(self.keys.state())
            .pttl(self.keys.recovering())
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if !kept {
            return Ok(Some(RETRY));
        }
        let Ok(left) = u64::try_from(left) else {
            return Ok(None); // no recovery (-2), or one without an end (-1: not ours)
        };
        let elapsed = RECOVERY_LIMIT.saturating_sub(Duration::from_millis(left));
        if elapsed < RESUBSCRIBED_WITHIN {
            return Ok(Some(RETRY));
        }
        let channels = self
            .conn
            .channels_matching(self.keys.channels())
            .await
            .map_err(unavailable)?;
        let marks: Vec<String> = channels
            .iter()
            .filter_map(|channel| Uuid::parse_str(channel.rsplit(':').next()?).ok())
            .map(|instance| self.keys.registered(instance))
            .collect();
        if marks.is_empty() {
            return Ok(None);
        }
        let written: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&marks)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(written.iter().any(Option::is_none).then_some(RETRY))
    }
}

impl Cluster {
    /// `missing`, the answer for a session the directory does not know, unless it may be one
    /// that Redis forgot when it restarted empty and its instance has not written again yet:
    /// then `Recovering` (module doc).
    pub(super) async fn unknown(&self, missing: RegistryError) -> RegistryError {
        match self.restart.pending().await {
            Ok(Some(retry_after)) => RegistryError::Recovering {
                message: format!(
                    "Redis restarted empty and the instances are writing their sessions to it \
                     again; this one may be among them: retry in {} s",
                    retry_after.as_secs().max(1)
                ),
                retry_after,
            },
            Ok(None) => missing,
            Err(err) => err,
        }
    }
}
