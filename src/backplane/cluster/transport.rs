//! How this instance reaches Redis: one server (`redis://`, `rediss://`, as before) or a Redis
//! Cluster (`redis+cluster://h1:7000,h2:7001`, `rediss+cluster://` with TLS; the hosts are
//! seeds, the rest of the cluster is discovered). The other files see only [`Conn`] (commands,
//! scripts, publishing) and [`Subscription`] (reading channels).
//!
//! # On a Redis Cluster
//! Every key and channel of the deployment carries one hash tag, `{<prefix>}`, so it lives in
//! one slot; with rooms sharded (`--redis-shard-rooms`, [`Keys::sharded`](super::keys::Keys))
//! each room's channel, counter and starting points carry a tag of their own,
//! `{<prefix>:<room>}`, and the scripts of a room's traffic touch that slot alone
//! ([`counting`](super::counting)). Without, everything is in the one slot:
//! - the scripts tie the shared keys together (a numbered message increments its room's
//!   counter ([`SEQ`](super::keys::SEQ)) and its sender's [`COUNTS`](super::keys::COUNTS); a
//!   room change moves a session's starting point on the room's counter; adopting reads
//!   [`SESSIONS`](super::keys::SESSIONS), every `COUNTS` and the counters they name), and
//!   publish in the same step, so keys and channels must share a slot;
//! - an instance reads the bus and its own channel on one connection, which keeps the single
//!   order the module doc's migrations rely on ([`super`]); two slots could be two shards and
//!   two connections, with no order between them.
//!
//! Channels use sharded pub/sub (`SPUBLISH`, `SSUBSCRIBE`): a message is handled by the shard
//! owning the slot (its master and replicas) instead of being copied to every node, as
//! `PUBLISH` is on a cluster. The price of one slot: one deployment's Redis work is on one
//! shard; with rooms sharded, only what every instance reads is (`lobby`'s traffic, direct
//! messages, the directory), and each room's traffic is on the shard owning its slot. One
//! subscription then reads channels on several shards (the crate keeps a connection per node
//! and passes every push on one queue); each channel is subscribed on its own, as one
//! `SSUBSCRIBE` names channels of one slot only.
//!
//! Commands go through the redis crate's cluster connection, which follows `MOVED`/`ASK` and
//! failovers by itself. The crate subscribes to sharded channels too (RESP3 pushes), but
//! when resharding moves a slot, the server ends the subscription with a `sunsubscribe` push
//! and the crate does not subscribe again on the slot's new owner. So [`Subscription`] treats
//! that push (for a channel this instance is not leaving itself), like a lost connection, as
//! the end of the subscription: the caller opens a new
//! one from the seeds (which learns the current topology) and, as after any outage, counts
//! what it may have missed meanwhile (see [`channels`](super::channels)).

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    Cmd, Pipeline, ProtocolVersion, PushKind, RedisError, RedisFuture, RedisResult, Value,
};
use tokio::sync::{OnceCell, mpsc};

/// The scheme of a Redis Cluster's seed list; with TLS, [`CLUSTER_TLS`].
const CLUSTER: &str = "redis+cluster://";
const CLUSTER_TLS: &str = "rediss+cluster://";
/// Longest wait to connect to a node, and for a command's answer.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Where Redis is, from `--redis-url`.
#[derive(Clone)]
pub(super) enum Target {
    Server(Box<redis::Client>),
    /// The node URLs of the seeds (`redis://` or `rediss://` each).
    Cluster(Vec<String>),
}

impl Target {
    /// Reads `--redis-url`: a cluster's seed list, or a single server's URL.
    pub(super) fn parse(url: &str) -> RedisResult<Target> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix(CLUSTER) {
            ("redis://", rest)
        } else if let Some(rest) = url.strip_prefix(CLUSTER_TLS) {
            ("rediss://", rest)
        } else {
            return redis::Client::open(url).map(|client| Target::Server(Box::new(client)));
        };
        // `[user:password@]h1:p1,h2:p2[/?query]`: the credentials and query apply to every seed.
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), authority),
        };
        let seeds: Vec<String> = hosts
            .split(',')
            .filter(|host| !host.is_empty())
            .map(|host| format!("{scheme}{credentials}{host}{tail}"))
            .collect();
        if seeds.is_empty() {
            return Err(invalid("a Redis Cluster URL names at least one seed node"));
        }
        // Each seed must be a valid node URL on its own.
        for seed in &seeds {
            redis::Client::open(seed.as_str())?;
        }
        Ok(Target::Cluster(seeds))
    }

    /// `prefix` as the keys and channels start: on a cluster, one hash tag (module doc).
    pub(super) fn key_prefix(&self, prefix: &str) -> String {
        match self {
            Target::Server(_) => prefix.to_owned(),
            Target::Cluster(_) => format!("{{{prefix}}}"),
        }
    }

    /// Whether each room gets a slot of its own (`--redis-shard-rooms`): on a cluster only.
    pub(super) fn shards_rooms(&self, asked: bool) -> bool {
        asked && matches!(self, Target::Cluster(_))
    }

    /// The command connection; it connects on first use and reconnects by itself.
    pub(super) fn connect_lazily(&self) -> RedisResult<Conn> {
        match self {
            Target::Server(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(TIMEOUT);
                ConnectionManager::new_lazy_with_config(*client.clone(), config).map(Conn::Server)
            }
            Target::Cluster(seeds) => Ok(Conn::Cluster(Arc::new(Lazy {
                client: cluster_client(seeds).build()?,
                conn: OnceCell::new(),
            }))),
        }
    }
}

/// A node connection's settings, shared by commands and subscriptions.
fn cluster_client(seeds: &[String]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(TIMEOUT)
        .response_timeout(TIMEOUT)
        .retries(2)
}

fn invalid(what: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::InvalidClientConfig, what))
}

/// Commands, scripts and publishing, on one server or a cluster.
#[derive(Clone)]
pub(super) enum Conn {
    Server(ConnectionManager),
    Cluster(Arc<Lazy>),
}

/// A cluster connection made on first use, so that a cluster unreachable at start is reported
/// by `/healthz` rather than stopping the start (as with one server).
pub(super) struct Lazy {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

impl Lazy {
    async fn get(&self) -> RedisResult<ClusterConnection> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

impl Conn {
    /// Publishes `payload` on `channel`; how many subscribers got it (on a cluster, those of
    /// the shard owning the channel: all of ours).
    pub(super) async fn publish(&self, channel: String, payload: String) -> RedisResult<u64> {
        redis::cmd(self.publish_command())
            .arg(channel)
            .arg(payload)
            .query_async(&mut self.clone())
            .await
    }

    /// `PUBLISH`, or `SPUBLISH` on a cluster; the scripts call it too.
    pub(super) fn publish_command(&self) -> &'static str {
        match self {
            Conn::Server(_) => "PUBLISH",
            Conn::Cluster(_) => "SPUBLISH",
        }
    }

    /// How many subscribers read `channel`.
    pub(super) async fn readers(&self, channel: String) -> RedisResult<u64> {
        let (_, readers): (String, u64) = match self {
            Conn::Server(conn) => {
                redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(channel)
                    .query_async(&mut conn.clone())
                    .await?
            }
            Conn::Cluster(lazy) => {
                let mut cmd = redis::cmd("PUBSUB");
                cmd.arg("SHARDNUMSUB").arg(&channel);
                let reply = lazy
                    .get()
                    .await?
                    .route_command(cmd, owner_of(&channel))
                    .await?;
                redis::from_redis_value(reply)?
            }
        };
        Ok(readers)
    }

    /// The channels matching `pattern` that somebody reads (on a cluster: the sharded channels
    /// of the pattern's slot).
    pub(super) async fn channels_matching(&self, pattern: String) -> RedisResult<Vec<String>> {
        match self {
            Conn::Server(conn) => {
                redis::cmd("PUBSUB")
                    .arg("CHANNELS")
                    .arg(pattern)
                    .query_async(&mut conn.clone())
                    .await
            }
            Conn::Cluster(lazy) => {
                let mut cmd = redis::cmd("PUBSUB");
                cmd.arg("SHARDCHANNELS").arg(&pattern);
                let reply = lazy
                    .get()
                    .await?
                    .route_command(cmd, owner_of(&pattern))
                    .await?;
                Ok(redis::from_redis_value(reply)?)
            }
        }
    }

    /// Every key matching `pattern` (one slot's keys on a cluster: the pattern's hash tag).
    /// [`SCAN_COUNT`] keys a round trip: Redis's default, 10, makes a scan of 100,000 keys
    /// 10,000 round trips.
    pub(super) async fn keys_matching(&self, pattern: String) -> RedisResult<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let (next, batch): (u64, Vec<String>) = match self {
                Conn::Server(conn) => cmd.query_async(&mut conn.clone()).await?,
                // The crate does not route SCAN; every cursor goes to the slot's owner.
                Conn::Cluster(lazy) => {
                    let reply = lazy
                        .get()
                        .await?
                        .route_command(cmd, owner_of(&pattern))
                        .await?;
                    redis::from_redis_value(reply)?
                }
            };
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

/// How many keys a SCAN looks at per round trip.
const SCAN_COUNT: usize = 1000;

/// The master owning the slot of `key`.
fn owner_of(key: &str) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
        key,
        SlotAddr::Master,
    )))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(lazy) => {
                Box::pin(async move { lazy.get().await?.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(conn) => conn.req_packed_commands(cmd, offset, count),
            Conn::Cluster(lazy) => Box::pin(async move {
                lazy.get()
                    .await?
                    .req_packed_commands(cmd, offset, count)
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(conn) => conn.get_db(),
            Conn::Cluster(_) => 0,
        }
    }
}

/// A subscription to some channels on a connection of its own, until it is lost.
pub(super) enum Subscription {
    Server(Pin<Box<dyn Stream<Item = redis::Msg> + Send>>),
    Cluster {
        pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
        /// The channels this instance is leaving: their `sunsubscribe` is its own doing. Any
        /// other means the server moved the channel's slot away: the subscription is lost.
        leaving: Leaving,
    },
}

/// The channels a cluster subscription is leaving, shared by its [`Sink`] and reader.
type Leaving = Arc<Mutex<HashSet<String>>>;

/// Where a [`Subscription`]'s connection is told to read more channels, or fewer.
pub(super) enum Sink {
    Server(PubSubSink),
    /// Kept open: dropping every handle would end the subscription.
    Cluster {
        conn: ClusterConnection,
        leaving: Leaving,
    },
}

impl Sink {
    /// Subscribes the connection to `channels` as well.
    pub(super) async fn listen(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Sink::Server(sink) => sink.subscribe(channels).await,
            Sink::Cluster { conn, leaving } => {
                {
                    let mut leaving = leaving.lock().expect("leaving lock poisoned");
                    for channel in channels {
                        leaving.remove(channel);
                    }
                }
                each_channel(conn, channels, |mut conn, channel| async move {
                    conn.ssubscribe(channel).await
                })
                .await
            }
        }
    }

    /// Unsubscribes the connection from `channels`.
    pub(super) async fn unlisten(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Sink::Server(sink) => sink.unsubscribe(channels).await,
            Sink::Cluster { conn, leaving } => {
                (leaving.lock().expect("leaving lock poisoned")).extend(channels.iter().cloned());
                each_channel(conn, channels, |mut conn, channel| async move {
                    conn.sunsubscribe(channel).await
                })
                .await
            }
        }
    }
}

/// Runs `call` for each of `channels` at once, each on its own: one `SSUBSCRIBE` names
/// channels of one slot only, and with rooms sharded each room has a slot of its own.
async fn each_channel<F, Fut>(
    conn: &ClusterConnection,
    channels: &[String],
    call: F,
) -> RedisResult<()>
where
    F: Fn(ClusterConnection, String) -> Fut,
    Fut: Future<Output = RedisResult<()>>,
{
    let calls = channels
        .iter()
        .map(|channel| call(conn.clone(), channel.clone()));
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .collect()
}

impl Subscription {
    /// Subscribes to `channels` (on a cluster, sharded channels of one slot: one node), and
    /// answers the sink that adds or removes channels on the same connection.
    pub(super) async fn open(
        target: &Target,
        channels: &[&str],
    ) -> RedisResult<(Sink, Subscription)> {
        match target {
            Target::Server(client) => {
                let (mut sink, messages) = client.get_async_pubsub().await?.split();
                sink.subscribe(channels).await?;
                Ok((Sink::Server(sink), Subscription::Server(Box::pin(messages))))
            }
            Target::Cluster(seeds) => {
                let (tx, pushes) = mpsc::unbounded_channel();
                let mut conn = cluster_client(seeds)
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(tx)
                    .build()?
                    .get_async_connection()
                    .await?;
                conn.ssubscribe(channels).await?;
                let leaving = Leaving::default();
                let sink = Sink::Cluster {
                    conn,
                    leaving: Arc::clone(&leaving),
                };
                Ok((sink, Subscription::Cluster { pushes, leaving }))
            }
        }
    }

    /// The next message: its channel and payload; `None` once the subscription is lost (the
    /// connection closed, or on a cluster the server moved a slot away: `sunsubscribe`).
    pub(super) async fn next(&mut self) -> Option<(String, Vec<u8>)> {
        match self {
            Subscription::Server(messages) => {
                let message = messages.next().await?;
                Some((
                    message.get_channel_name().to_owned(),
                    message.get_payload_bytes().to_vec(),
                ))
            }
            Subscription::Cluster { pushes, leaving } => loop {
                let push = pushes.recv().await?;
                match push.kind {
                    PushKind::SMessage => {
                        let [channel, payload]: [Value; 2] = push.data.try_into().ok()?;
                        let channel = redis::from_redis_value::<String>(channel).ok()?;
                        let payload = redis::from_redis_value::<Vec<u8>>(payload).ok()?;
                        return Some((channel, payload));
                    }
                    PushKind::Disconnection => return None,
                    PushKind::SUnsubscribe => {
                        let channel = push.data.first().cloned();
                        let channel =
                            channel.and_then(|c| redis::from_redis_value::<String>(c).ok())?;
                        let ours = leaving
                            .lock()
                            .expect("leaving lock poisoned")
                            .remove(&channel);
                        if !ours {
                            return None;
                        }
                    }
                    // Confirmations of our own subscriptions; nothing else is subscribed.
                    _ => {}
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(url: &str) -> Vec<String> {
        match Target::parse(url).unwrap() {
            Target::Cluster(seeds) => seeds,
            Target::Server(_) => panic!("{url} is a single server"),
        }
    }

    #[test]
    fn a_cluster_url_lists_its_seeds_with_the_credentials_and_tls_of_the_whole() {
        assert_eq!(
            seeds("redis+cluster://h1:7000,h2:7001"),
            ["redis://h1:7000", "redis://h2:7001"]
        );
        assert_eq!(
            seeds("rediss+cluster://u:p@h1:7000,h2:7001/?protocol=resp2"),
            [
                "rediss://u:p@h1:7000/?protocol=resp2",
                "rediss://u:p@h2:7001/?protocol=resp2"
            ]
        );
        assert!(Target::parse("redis+cluster://").is_err());
        assert!(Target::parse("redis+cluster://h1:notaport").is_err());
    }

    #[test]
    fn one_server_keeps_its_names_and_a_cluster_tags_them_into_one_slot() {
        let server = Target::parse("redis://127.0.0.1:6379/0").unwrap();
        assert!(matches!(server, Target::Server(_)));
        assert_eq!(server.key_prefix("sb"), "sb");
        let cluster = Target::parse("redis+cluster://127.0.0.1:7000").unwrap();
        assert_eq!(cluster.key_prefix("sb"), "{sb}");
        let (a, b) = (
            Route::with_key("{sb}:seq", SlotAddr::Master),
            Route::with_key(
                "{sb}:to:67e55044-10b1-426f-9247-bb680e5fe0c8",
                SlotAddr::Master,
            ),
        );
        assert_eq!(a, b);
    }
}
