//! This instance's side of the cluster: what it holds, and the tasks it starts.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;
use uuid::Uuid;

use super::directory::Directory;
use super::ended::Ended;
use super::keys::{Keys, unavailable};
use super::liveness::Liveness;
use super::peers::Peers;
use super::request::Requests;
use super::restart::Restart;
use super::sequence::Sequence;
use super::subscriptions::Subscriptions;
use super::transit::Migrations;
use super::transport::{Conn, Target};
use super::wire::Outcome;
use crate::backplane::events::BrokerEvents;
use crate::registry::{Registry, RegistryError};

/// Longest wait for another instance's answer (a direct message, a migration).
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a room channel subscribed for a session on its way here stays read without it (see
/// [`subscriptions`](super::subscriptions)).
pub(super) const HOLD: Duration = Duration::from_secs(5);
/// Longest wait for a health probe to come back.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// This instance's side of the cluster: the Redis broker.
pub(crate) struct Cluster {
    /// The sessions homed here.
    pub(super) registry: Registry,
    /// Where what reaches the sessions homed here is reported (the hub).
    pub(super) events: Arc<dyn BrokerEvents>,
    pub(crate) instance: Uuid,
    pub(super) keys: Keys,
    /// Where Redis is: the pub/sub connection is opened there (a dedicated one, reopened
    /// after each loss).
    pub(super) target: Target,
    /// Commands and publishing; reconnects by itself.
    pub(super) conn: Conn,
    pub(super) directory: Directory,
    /// Sessions that ended at their lifetime lately, for every instance to refuse their tokens
    /// as expired.
    pub(super) ended: Ended,
    /// Who is in which room, kept from the bus: the rosters attaches read. Shared with
    /// `subscriptions`, which tells it which rooms are read.
    pub(super) peers: Arc<Peers>,
    pub(super) sequence: Arc<Sequence>,
    pub(super) liveness: Liveness,
    /// Telling a forgotten session from a gone one after Redis restarted empty.
    pub(super) restart: Restart,
    /// Direct messages awaiting their home's reply.
    pub(super) replies: Requests<Outcome>,
    /// Health probes awaiting their own return.
    pub(super) probes: Requests<()>,
    pub(super) migrations: Migrations,
    /// The room channels read here.
    pub(super) subscriptions: Subscriptions,
    /// Subscribed to the bus and re-registered: healthy.
    pub(super) subscribed: AtomicBool,
    /// What was not understood on the channels and logged already: (reason, kind or fields).
    pub(super) not_understood: Mutex<HashSet<(&'static str, String)>>,
}

impl Cluster {
    /// Connects lazily (an unreachable Redis at start is reported, not fatal) and starts the
    /// subscriber and liveness tasks, which end when `shutdown` fires.
    ///
    /// # Errors
    /// When `url` is not a valid Redis URL (one server) or seed list (a Redis Cluster, see
    /// [`transport`](super::transport)).
    pub(crate) fn start(
        registry: Registry,
        events: Arc<dyn BrokerEvents>,
        url: &str,
        (prefix, shard_rooms): (&str, bool),
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RegistryError> {
        let target = Target::parse(url).map_err(unavailable)?;
        let conn = target.connect_lazily().map_err(unavailable)?;
        let instance = Uuid::new_v4();
        let keys = match target.shards_rooms(shard_rooms) {
            true => Keys::sharded(prefix),
            false => Keys::new(&target.key_prefix(prefix)),
        };
        let peers = Arc::new(Peers::default());
        let session_ttl = registry.settings().session_ttl;
        let sequence = Arc::new(Sequence::new(conn.clone(), keys.clone()));
        let cluster = Arc::new(Cluster {
            registry,
            events,
            instance,
            directory: Directory::new(conn.clone(), &keys, instance),
            ended: Ended::new(conn.clone(), keys.clone(), session_ttl),
            sequence: Arc::clone(&sequence),
            liveness: Liveness::new(conn.clone(), keys.clone(), instance),
            restart: Restart::new(conn.clone(), keys.clone(), instance),
            subscriptions: Subscriptions::new(keys.clone(), Arc::clone(&peers), sequence),
            peers,
            keys,
            target,
            conn,
            replies: Requests::default(),
            probes: Requests::default(),
            migrations: Migrations::default(),
            subscribed: AtomicBool::new(false),
            not_understood: Mutex::default(),
        });
        let rooms_sharded = cluster.keys.is_sharded();
        info!(instance = %cluster.instance, prefix, rooms_sharded, "cluster mode");
        tokio::spawn(Arc::clone(&cluster).subscribe(shutdown.clone()));
        tokio::spawn(Arc::clone(&cluster).keep_alive(shutdown));
        Ok(cluster)
    }
}
