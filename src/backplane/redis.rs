//! Cluster mode: several instances act as one hub over Redis.
//!
//! Each session is *homed* on one instance, which holds its mailbox in its [`Registry`]: where it
//! said hello, then wherever its stream last attached. Redis holds what every instance must see:
//!
//! | key (`<prefix>` = `--redis-prefix`) | type | what |
//! |---|---|---|
//! | [`BUS`] `<prefix>:bus` | pub/sub channel | every cross-instance message, JSON ([`Bus`]) |
//! | [`SESSIONS`] `<prefix>:sessions` | hash | session id → `{"name", "token" (SHA-256), "home"}` |
//! | [`INSTANCE`] `<prefix>:instance:<uuid>` | string, expiring | this instance is alive |
//!
//! Why one channel: Redis delivers a channel's messages to every subscriber in the one order it
//! executed the PUBLISHes, so every instance sees joins, broadcasts, direct messages and
//! hand-overs in the same order. A broadcast is one PUBLISH; each instance appends one shared
//! envelope to the mailboxes it homes, and encodes it once for all of its streams.
//!
//! Moving a session keeps its event ids: B publishes `handover`; when B reads its own request
//! back it starts buffering every later message that concerns the session; the home A reads the
//! same request at the same point, exports the mailbox (closing its stream) and publishes
//! `handed_over`; B imports it and applies the buffer. Everything before the request reached A,
//! everything after it reaches B: nothing twice, nothing lost.
//!
//! Direct messages to a session homed elsewhere are published with a request id; the home
//! applies them (or refuses: full mailbox) and publishes the reply with the event id.
//!
//! Liveness: each instance refreshes its `instance` key; any instance that finds directory
//! entries homed on an instance whose key expired removes them and announces `user_left`, so a
//! crashed instance leaves no session behind for longer than [`LIVENESS`] plus a sweep.
//!
//! Faults: pub/sub does not queue for a disconnected subscriber, so while Redis is unreachable
//! writes fail with `Unavailable` (503) and `/healthz` says why; on reconnection the instance
//! re-subscribes and re-registers the sessions it homes. Events published while an instance was
//! cut off are not replayed to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::registry::event::{Broadcast, Event};
use crate::registry::{
    DisplayName, EventId, Peer, Registry, RegistryError, SessionId, Snapshot, Subscription, Token,
};

/// Suffix of the pub/sub channel every instance subscribes to.
pub const BUS: &str = "bus";
/// Suffix of the hash: session id → [`Entry`] JSON.
pub const SESSIONS: &str = "sessions";
/// Suffix (then `:<instance uuid>`) of each instance's liveness key.
pub const INSTANCE: &str = "instance";
/// How long an instance's liveness key outlives its last refresh.
pub const LIVENESS: Duration = Duration::from_secs(3);
/// Longest wait for another instance's answer (a direct message, a hand-over, a probe).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything that travels on the bus.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "body", rename_all = "snake_case")]
enum Bus {
    Join {
        peer: Peer,
    },
    Leave {
        peer: Peer,
    },
    Broadcast {
        from: Peer,
        message: Box<RawValue>,
    },
    Direct {
        req: u64,
        origin: Uuid,
        from: Peer,
        to: SessionId,
        message: Box<RawValue>,
    },
    Reply {
        req: u64,
        origin: Uuid,
        outcome: Outcome,
    },
    Handover {
        req: u64,
        origin: Uuid,
        session: SessionId,
    },
    HandedOver {
        req: u64,
        origin: Uuid,
        session: SessionId,
        snapshot: Box<Snapshot>,
    },
    Probe {
        req: u64,
        origin: Uuid,
    },
}

/// What the home instance did with a direct message.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Delivered(EventId),
    MailboxFull,
    UnknownRecipient,
}

/// A session in the directory.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    name: DisplayName,
    /// SHA-256 of the token, hex: enough to check a token, useless to forge one.
    token: String,
    home: Uuid,
}

fn token_hash(token: &Token) -> String {
    hex::encode(Sha256::digest(token.reveal().as_bytes()))
}

/// A session being moved here.
struct Handover {
    req: u64,
    /// Our own request came back on the bus: from now on, buffer what concerns the session.
    seen: bool,
    buffer: Vec<Bus>,
    done: Option<oneshot::Sender<Box<Snapshot>>>,
}

#[derive(Default)]
struct Pending {
    replies: HashMap<u64, oneshot::Sender<Outcome>>,
    probes: HashMap<u64, oneshot::Sender<()>>,
    handovers: HashMap<SessionId, Handover>,
}

/// This instance's side of the cluster.
pub struct Cluster {
    registry: Registry,
    instance: Uuid,
    prefix: String,
    client: redis::Client,
    conn: ConnectionManager,
    /// Waiters for answers, and sessions being moved here. Held while applying a bus message,
    /// so a hand-over completes atomically with respect to the bus.
    pending: Mutex<Pending>,
    next_req: AtomicU64,
    subscribed: AtomicBool,
    presence: bool,
}

fn unavailable(err: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(err.to_string())
}

impl Cluster {
    /// Connects lazily (an unreachable Redis at start is reported, not fatal) and starts the
    /// subscriber and liveness tasks, which end when `shutdown` fires.
    ///
    /// # Errors
    /// When `url` is not a valid Redis URL.
    pub fn start(
        registry: Registry,
        url: &str,
        prefix: &str,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RegistryError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?;
        let presence = registry.settings().presence;
        let cluster = Arc::new(Cluster {
            registry,
            instance: Uuid::new_v4(),
            prefix: prefix.to_owned(),
            client,
            conn,
            pending: Mutex::new(Pending::default()),
            next_req: AtomicU64::new(1),
            subscribed: AtomicBool::new(false),
            presence,
        });
        info!(instance = %cluster.instance, prefix, "cluster mode");
        tokio::spawn(Arc::clone(&cluster).subscribe(shutdown.clone()));
        tokio::spawn(Arc::clone(&cluster).keep_alive(shutdown));
        Ok(cluster)
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    fn instance_key(&self, instance: Uuid) -> String {
        format!("{}:{INSTANCE}:{instance}", self.prefix)
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().expect("pending lock poisoned")
    }

    fn next_req(&self) -> u64 {
        self.next_req.fetch_add(1, Ordering::Relaxed)
    }

    async fn publish(&self, message: &Bus) -> Result<(), RegistryError> {
        let payload = serde_json::to_string(message).expect("bus messages serialise");
        let mut conn = self.conn.clone();
        conn.publish::<_, _, ()>(self.key(BUS), payload)
            .await
            .map_err(unavailable)
    }

    /// Publishes from synchronous code (the bus loop); a failure is logged: the asker times out.
    fn publish_soon(self: &Arc<Self>, message: Bus) {
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(err) = cluster.publish(&message).await {
                warn!(error = %err, "could not publish an answer");
            }
        });
    }

    async fn entry(&self, id: SessionId) -> Result<Option<Entry>, RegistryError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn
            .hget(self.key(SESSIONS), id.to_string())
            .await
            .map_err(unavailable)?;
        Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
    }

    async fn set_entry(&self, peer: &Peer, token: &Token) -> Result<(), RegistryError> {
        let entry = Entry {
            name: peer.name.clone(),
            token: token_hash(token),
            home: self.instance,
        };
        let mut conn = self.conn.clone();
        conn.hset::<_, _, _, ()>(
            self.key(SESSIONS),
            peer.id.to_string(),
            serde_json::to_string(&entry).expect("entries serialise"),
        )
        .await
        .map_err(unavailable)
    }

    /// Removes a directory entry; true when this call removed it (so it announces the leave).
    async fn delete_entry(&self, id: SessionId) -> Result<bool, RegistryError> {
        let mut conn = self.conn.clone();
        let removed: u64 = conn
            .hdel(self.key(SESSIONS), id.to_string())
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }

    async fn entries(&self) -> Result<HashMap<String, Entry>, RegistryError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = conn
            .hgetall(self.key(SESSIONS))
            .await
            .map_err(unavailable)?;
        Ok(all
            .into_iter()
            .filter_map(|(id, json)| Some((id, serde_json::from_str(&json).ok()?)))
            .collect())
    }

    pub async fn register(&self, name: DisplayName) -> Result<(Peer, Token), RegistryError> {
        let limit = self.registry.settings().max_sessions;
        let mut conn = self.conn.clone();
        let count: usize = conn.hlen(self.key(SESSIONS)).await.map_err(unavailable)?;
        if count >= limit {
            return Err(RegistryError::SessionLimit(limit));
        }
        let id = SessionId::random();
        let peer = Peer { id, name };
        let token = Token::issue(id);
        self.registry.insert(peer.clone(), token.clone())?;
        if let Err(err) = self.set_entry(&peer, &token).await {
            self.registry.remove_id(id);
            return Err(err);
        }
        self.publish(&Bus::Join { peer: peer.clone() }).await?;
        info!(session = %id, name = peer.name.as_str(), "helo");
        Ok((peer, token))
    }

    pub async fn authenticate(&self, token: &Token) -> Result<Peer, RegistryError> {
        if let Ok(peer) = self.registry.authenticate(token) {
            return Ok(peer);
        }
        let id = token.session();
        let entry = self.entry(id).await?.ok_or(RegistryError::BadToken)?;
        if bool::from(entry.token.as_bytes().ct_eq(token_hash(token).as_bytes())) {
            Ok(Peer {
                id,
                name: entry.name,
            })
        } else {
            Err(RegistryError::BadToken)
        }
    }

    pub async fn attach(
        self: &Arc<Self>,
        id: SessionId,
        token: &Token,
        last_event_id: Option<EventId>,
    ) -> Result<Subscription, RegistryError> {
        if !self.registry.homes(id) {
            if self.entry(id).await?.is_none() {
                return Err(RegistryError::UnknownSession(id));
            }
            if token.session() != id {
                return Err(RegistryError::BadToken);
            }
            self.authenticate(token).await?;
            self.move_here(id, token).await?;
        }
        let mut subscription = self.registry.attach(id, token, last_event_id)?;
        if self.presence {
            // Read after the session is homed here, so any later join reaches it as new_user.
            let roster = self.list().await?.into_iter().filter(|p| p.id != id);
            subscription.set_roster(roster.collect());
        }
        Ok(subscription)
    }

    /// Moves session `id` from its home to this instance (see the module doc).
    async fn move_here(
        self: &Arc<Self>,
        id: SessionId,
        token: &Token,
    ) -> Result<(), RegistryError> {
        let req = self.next_req();
        let (done, answer) = oneshot::channel();
        {
            let mut pending = self.lock();
            if pending.handovers.contains_key(&id) {
                return Err(unavailable("the session is already moving here; retry"));
            }
            pending.handovers.insert(
                id,
                Handover {
                    req,
                    seen: false,
                    buffer: Vec::new(),
                    done: Some(done),
                },
            );
        }
        let cleanup = || {
            self.lock().handovers.remove(&id);
        };
        if let Err(err) = self
            .publish(&Bus::Handover {
                req,
                origin: self.instance,
                session: id,
            })
            .await
        {
            cleanup();
            return Err(err);
        }
        let snapshot = match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
            Ok(Ok(snapshot)) => snapshot,
            Ok(Err(_)) => {
                cleanup();
                return Err(RegistryError::UnknownSession(id)); // it left meanwhile
            }
            Err(_) => {
                cleanup();
                return Err(unavailable("the session's instance did not hand it over"));
            }
        };
        {
            let mut pending = self.lock();
            let handover = pending.handovers.remove(&id);
            self.registry.import(*snapshot, token.clone())?;
            for message in handover.map(|h| h.buffer).unwrap_or_default() {
                self.apply_to(&message, Some(id));
            }
        }
        let peer = self.registry.authenticate(token)?;
        self.set_entry(&peer, token).await?;
        info!(session = %id, "moved here");
        Ok(())
    }

    pub async fn deliver(
        &self,
        from: &Peer,
        to: SessionId,
        message: Box<RawValue>,
    ) -> Result<EventId, RegistryError> {
        if self.registry.homes(to) {
            return self.registry.push_direct(from, to, message);
        }
        if self.entry(to).await?.is_none() {
            return Err(RegistryError::UnknownRecipient(to));
        }
        let req = self.next_req();
        let (reply, answer) = oneshot::channel();
        self.lock().replies.insert(req, reply);
        let sent = self
            .publish(&Bus::Direct {
                req,
                origin: self.instance,
                from: from.clone(),
                to,
                message,
            })
            .await;
        let outcome = match sent {
            Ok(()) => tokio::time::timeout(ANSWER_TIMEOUT, answer).await,
            Err(err) => {
                self.lock().replies.remove(&req);
                return Err(err);
            }
        };
        self.lock().replies.remove(&req);
        match outcome {
            Ok(Ok(Outcome::Delivered(id))) => Ok(id),
            Ok(Ok(Outcome::MailboxFull)) => Err(RegistryError::MailboxFull {
                retry_after: Duration::from_secs(1),
            }),
            Ok(Ok(Outcome::UnknownRecipient)) => Err(RegistryError::UnknownRecipient(to)),
            _ => Err(unavailable("the recipient's instance did not answer")),
        }
    }

    pub async fn broadcast(
        &self,
        from: &Peer,
        message: Box<RawValue>,
    ) -> Result<usize, RegistryError> {
        let mut conn = self.conn.clone();
        let count: usize = conn.hlen(self.key(SESSIONS)).await.map_err(unavailable)?;
        self.publish(&Bus::Broadcast {
            from: from.clone(),
            message,
        })
        .await?;
        Ok(count.saturating_sub(1))
    }

    pub async fn remove(&self, peer: &Peer) -> Result<(), RegistryError> {
        if self.delete_entry(peer.id).await? {
            self.publish(&Bus::Leave { peer: peer.clone() }).await?;
        }
        // Applied here too when our own Leave comes back; removing now ends the stream at once.
        self.registry.remove_id(peer.id);
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<Peer>, RegistryError> {
        Ok(self
            .entries()
            .await?
            .into_iter()
            .filter_map(|(id, entry)| {
                Some(Peer {
                    id: SessionId::parse(&id)?,
                    name: entry.name,
                })
            })
            .collect())
    }

    /// Proves the whole path: a probe published through Redis must come back to us.
    pub async fn health(&self) -> Result<(), String> {
        if !self.subscribed.load(Ordering::Relaxed) {
            return Err("not subscribed to the Redis bus (Redis unreachable?)".to_owned());
        }
        let req = self.next_req();
        let (back, answer) = oneshot::channel();
        self.lock().probes.insert(req, back);
        let result = match self
            .publish(&Bus::Probe {
                req,
                origin: self.instance,
            })
            .await
        {
            Ok(()) => tokio::time::timeout(Duration::from_secs(1), answer)
                .await
                .map_err(|_| "a probe published through Redis did not come back".to_owned())
                .and_then(|r| r.map_err(|_| "probe dropped".to_owned())),
            Err(err) => Err(err.to_string()),
        };
        self.lock().probes.remove(&req);
        result
    }

    /// Publishes the leave of sessions the reaper removed here.
    pub fn expired(self: &Arc<Self>, peers: Vec<Peer>) {
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            for peer in peers {
                match cluster.delete_entry(peer.id).await {
                    Ok(true) => {
                        if let Err(err) = cluster.publish(&Bus::Leave { peer }).await {
                            warn!(error = %err, "could not announce an expiry");
                        }
                    }
                    Ok(false) => {}
                    Err(err) => warn!(error = %err, "could not remove an expired session"),
                }
            }
        });
    }

    /// Reads the bus until shutdown, reconnecting with backoff; after each (re)connection it
    /// re-registers the sessions homed here (Redis may have restarted empty).
    async fn subscribe(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let channel = self.key(BUS);
        loop {
            let connected = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let connected = tokio::select! {
                () = shutdown.cancelled() => return,
                c = tokio::time::timeout(Duration::from_secs(2), connected) => c,
            };
            match connected {
                Ok(Ok(mut pubsub)) => {
                    backoff = Duration::from_millis(100);
                    info!(channel, "subscribed to the Redis bus");
                    // Healthy only once re-registered: the command connection may still be
                    // reconnecting, so retry until it works (bus messages wait meanwhile).
                    while let Err(err) = self.reregister().await {
                        warn!(error = %err, "could not re-register homed sessions; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                    }
                    self.subscribed.store(true, Ordering::Relaxed);
                    let mut messages = pubsub.on_message();
                    loop {
                        let message = tokio::select! {
                            () = shutdown.cancelled() => return,
                            m = messages.next() => m,
                        };
                        let Some(message) = message else { break };
                        match serde_json::from_slice::<Bus>(message.get_payload_bytes()) {
                            Ok(bus) => self.apply(bus),
                            Err(err) => warn!(error = %err, "ignoring a malformed bus message"),
                        }
                    }
                    self.subscribed.store(false, Ordering::Relaxed);
                    error!("lost the Redis bus subscription; reconnecting");
                }
                Ok(Err(err)) => {
                    error!(error = %err, retry_in = ?backoff, "cannot subscribe to Redis")
                }
                Err(_) => error!(retry_in = ?backoff, "cannot subscribe to Redis: timed out"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Re-writes the directory entries of the sessions homed here, liveness key first: Redis
    /// may have restarted empty, and another instance's sweep must not find these entries
    /// without it and remove them as a dead instance's.
    async fn reregister(&self) -> Result<(), RegistryError> {
        self.refresh_liveness().await?;
        let homed = self.registry.homed();
        let count = homed.len();
        for (peer, token) in homed {
            self.set_entry(&peer, &token).await?;
        }
        if count > 0 {
            info!(sessions = count, "re-registered homed sessions");
        }
        Ok(())
    }

    /// Refreshes this instance's liveness key and removes sessions of instances that died.
    async fn keep_alive(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(LIVENESS / 3);
        // After an outage the other instances need time to refresh their own keys too: until
        // two liveness periods have passed, a missing key means "not back yet", not "dead".
        let mut reachable = true;
        let mut sweep_after = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let settled = reachable && tokio::time::Instant::now() >= sweep_after;
            let result = async {
                self.refresh_liveness().await?;
                if settled {
                    self.sweep().await?;
                }
                Ok::<_, RegistryError>(())
            }
            .await;
            match result {
                Ok(()) if !reachable => {
                    info!("Redis reachable again");
                    reachable = true;
                    sweep_after = tokio::time::Instant::now() + LIVENESS * 2;
                }
                Err(err) if reachable => {
                    error!(error = %err, "Redis unreachable");
                    reachable = false;
                }
                _ => {}
            }
        }
    }

    /// Sets this instance's liveness key for another [`LIVENESS`].
    async fn refresh_liveness(&self) -> Result<(), RegistryError> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.instance_key(self.instance))
            .arg(1)
            .arg("PX")
            .arg(LIVENESS.as_millis() as u64)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// Removes directory entries homed on instances whose liveness key expired.
    async fn sweep(&self) -> Result<(), RegistryError> {
        let mut alive: HashMap<Uuid, bool> = HashMap::new();
        for (id, entry) in self.entries().await? {
            if entry.home == self.instance {
                continue;
            }
            let live = match alive.get(&entry.home) {
                Some(live) => *live,
                None => {
                    let mut conn = self.conn.clone();
                    let live: bool = conn
                        .exists(self.instance_key(entry.home))
                        .await
                        .map_err(unavailable)?;
                    alive.insert(entry.home, live);
                    live
                }
            };
            let Some(id) = SessionId::parse(&id) else {
                continue;
            };
            if !live && self.delete_entry(id).await? {
                info!(session = %id, home = %entry.home, "removing a session of a dead instance");
                let peer = Peer {
                    id,
                    name: entry.name,
                };
                self.publish(&Bus::Leave { peer }).await?;
            }
        }
        Ok(())
    }

    /// Applies one bus message, in bus order.
    fn apply(self: &Arc<Self>, message: Bus) {
        let mut pending = self.lock();
        for (session, handover) in &mut pending.handovers {
            if handover.seen && concerns(&message, *session) {
                handover.buffer.push(message.clone());
            }
        }
        match &message {
            Bus::Reply {
                req,
                origin,
                outcome,
            } if *origin == self.instance => {
                if let Some(reply) = pending.replies.remove(req) {
                    let _ = reply.send(outcome.clone());
                }
            }
            Bus::Probe { req, origin } if *origin == self.instance => {
                if let Some(back) = pending.probes.remove(req) {
                    let _ = back.send(());
                }
            }
            Bus::Handover {
                req,
                origin,
                session,
            } => {
                if *origin == self.instance {
                    if let Some(handover) = pending.handovers.get_mut(session)
                        && handover.req == *req
                    {
                        handover.seen = true;
                    }
                } else if let Some(snapshot) = self.registry.export(*session) {
                    debug!(session = %session, to = %origin, "handing over");
                    self.publish_soon(Bus::HandedOver {
                        req: *req,
                        origin: *origin,
                        session: *session,
                        snapshot: Box::new(snapshot),
                    });
                }
            }
            Bus::HandedOver {
                req,
                origin,
                session,
                snapshot,
            } if *origin == self.instance => {
                if let Some(handover) = pending.handovers.get_mut(session)
                    && handover.req == *req
                    && let Some(done) = handover.done.take()
                {
                    let _ = done.send(snapshot.clone());
                }
            }
            Bus::Leave { peer } => {
                // A session that leaves while moving here: the mover learns it from `done`.
                if let Some(handover) = pending.handovers.get_mut(&peer.id) {
                    handover.done.take();
                }
                drop(pending);
                self.registry.remove_id(peer.id);
                self.apply_to(&message, None);
            }
            _ => {
                drop(pending);
                self.apply_to(&message, None);
            }
        }
    }

    /// The effect of a join, leave, broadcast or direct message on the sessions homed here, or
    /// only on `only` (replaying a hand-over's buffer).
    fn apply_to(self: &Arc<Self>, message: &Bus, only: Option<SessionId>) {
        match message {
            Bus::Join { peer } if self.presence => {
                self.registry
                    .deliver_all(Event::NewUser(peer.clone()), Some(peer.id), only);
            }
            Bus::Leave { peer } if self.presence => {
                self.registry
                    .deliver_all(Event::UserLeft(peer.clone()), Some(peer.id), only);
            }
            Bus::Broadcast { from, message } => {
                let event = Event::ClientBroadcast(Broadcast {
                    from: from.id,
                    from_name: from.name.clone(),
                    message: message.clone(),
                });
                self.registry.deliver_all(event, Some(from.id), only);
            }
            Bus::Direct {
                req,
                origin,
                from,
                to,
                message,
            } if self.registry.homes(*to) && only.is_none_or(|id| id == *to) => {
                let outcome = match self.registry.push_direct(from, *to, message.clone()) {
                    Ok(id) => Outcome::Delivered(id),
                    Err(RegistryError::MailboxFull { .. }) => Outcome::MailboxFull,
                    Err(_) => Outcome::UnknownRecipient,
                };
                self.publish_soon(Bus::Reply {
                    req: *req,
                    origin: *origin,
                    outcome,
                });
            }
            _ => {}
        }
    }
}

/// Whether `message` changes what `session`'s stream receives.
fn concerns(message: &Bus, session: SessionId) -> bool {
    match message {
        Bus::Join { peer } | Bus::Leave { peer } => peer.id != session,
        Bus::Broadcast { from, .. } => from.id != session,
        Bus::Direct { to, .. } => *to == session,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_messages_round_trip_with_raw_json_inside() {
        let peer = Peer {
            id: SessionId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap(),
            name: DisplayName::parse("ann").unwrap(),
        };
        let message = Bus::Broadcast {
            from: peer.clone(),
            message: RawValue::from_string(r#"{"a": [1, 2]}"#.into()).unwrap(),
        };
        let json = serde_json::to_string(&message).unwrap();
        let Bus::Broadcast { from, message } = serde_json::from_str(&json).unwrap() else {
            panic!("wrong variant from {json}");
        };
        assert_eq!(from.id, peer.id);
        assert_eq!(message.get(), r#"{"a": [1, 2]}"#);

        let snapshot = Snapshot {
            peer: peer.clone(),
            last_id: 3,
            delivered: 1,
            events: vec![(3, Event::UserLeft(peer))],
        };
        let json = serde_json::to_string(&Bus::HandedOver {
            req: 1,
            origin: Uuid::nil(),
            session: snapshot.peer.id,
            snapshot: Box::new(snapshot),
        })
        .unwrap();
        let Bus::HandedOver { snapshot, .. } = serde_json::from_str(&json).unwrap() else {
            panic!("wrong variant from {json}");
        };
        assert_eq!(snapshot.events[0].0, 3);
    }

    #[test]
    fn tokens_are_stored_hashed() {
        let token = Token::issue(SessionId::random());
        let hash = token_hash(&token);
        assert_eq!(hash.len(), 64);
        assert!(!token.reveal().contains(&hash));
    }
}
