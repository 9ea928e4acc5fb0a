//! This instance's side of the cluster: what it holds, and the tasks it starts.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;
use uuid::Uuid;

use super::directory::Directory;
use super::keys::{Keys, unavailable};
use super::liveness::Liveness;
use super::request::Requests;
use super::sequence::Sequence;
use super::transit::Migrations;
use super::transport::{Conn, Target};
use super::wire::Outcome;
use crate::backplane::events::BrokerEvents;
use crate::registry::{Registry, RegistryError};

/// Longest wait for another instance's answer (a direct message, a migration).
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
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
    pub(super) sequence: Sequence,
    pub(super) liveness: Liveness,
    /// Direct messages awaiting their home's reply.
    pub(super) replies: Requests<Outcome>,
    /// Health probes awaiting their own return.
    pub(super) probes: Requests<()>,
    pub(super) migrations: Migrations,
    /// Subscribed to the bus and re-registered: healthy.
    pub(super) subscribed: AtomicBool,
}

impl Cluster {
    /// Connects lazily (an unreachable Redis at start is reported, not fatal) and starts the
    /// subscriber and liveness tasks, which end when `shutdown` fires. `announces`: whether
    /// joins and leaves put events into mailboxes (presence on).
    ///
    /// # Errors
    /// When `url` is not a valid Redis URL (one server) or seed list (a Redis Cluster, see
    /// [`transport`](super::transport)).
    pub(crate) fn start(
        registry: Registry,
        events: Arc<dyn BrokerEvents>,
        announces: bool,
        url: &str,
        prefix: &str,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RegistryError> {
        let target = Target::parse(url).map_err(unavailable)?;
        let conn = target.connect_lazily().map_err(unavailable)?;
        let instance = Uuid::new_v4();
        let keys = Keys::new(&target.key_prefix(prefix));
        let cluster = Arc::new(Cluster {
            registry,
            events,
            instance,
            directory: Directory::new(conn.clone(), &keys, instance),
            sequence: Sequence::new(conn.clone(), keys.clone(), announces),
            liveness: Liveness::new(conn.clone(), keys.clone(), instance),
            keys,
            target,
            conn,
            replies: Requests::default(),
            probes: Requests::default(),
            migrations: Migrations::default(),
            subscribed: AtomicBool::new(false),
        });
        info!(instance = %cluster.instance, prefix, "cluster mode");
        tokio::spawn(Arc::clone(&cluster).subscribe(shutdown.clone()));
        tokio::spawn(Arc::clone(&cluster).keep_alive(shutdown));
        Ok(cluster)
    }
}
