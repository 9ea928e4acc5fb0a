//! Cluster mode: several instances act as one hub over Redis (the Redis broker).
//!
//! Each session is *homed* on one instance, which holds its mailbox in its registry: where it
//! said hello, then wherever its stream last attached. Redis holds what every instance must see
//! (the names are built in [`keys`]):
//!
//! On one Redis server `<prefix>` is `--redis-prefix`; on a Redis Cluster it is `{<prefix>}`, one
//! hash tag, so that every key and channel below lives in one slot, but each room's (but
//! `lobby`'s) channel, counter and starting points, which carry a tag of their own,
//! `{<prefix>:<room>}`, so that rooms spread over the shards (`--redis-shard-rooms`; off, they
//! are `<prefix>:room:<room>` and `<prefix>:seq:<room>` in the one slot). The channels are
//! sharded (`SPUBLISH`, `SSUBSCRIBE`): why, and how topology changes are followed, in
//! [`transport`].
//!
//! | key or channel | type | what |
//! |---|---|---|
//! | [`BUS`](keys::BUS) `<prefix>:bus` | pub/sub channel (sharded on a cluster) | what every instance must see: `lobby`'s joins, leaves and broadcasts, server messages to all, migration requests, drains, adoptions, JSON ([`wire`]) |
//! | [`ROOM`](keys::ROOM) `<prefix>:room:<room>` | pub/sub channel (sharded on a cluster) | one room's traffic (joins, leaves, broadcasts, server messages), read by the instances homing a member ([`rooms`], [`subscriptions`]) |
//! | [`TO`](keys::TO) `<prefix>:to:<uuid>` | pub/sub channel (sharded on a cluster) | what concerns one instance: direct messages to the sessions it homes, `prepare` requests, and the answers to its own requests |
//! | [`SESSIONS`](keys::SESSIONS) `<prefix>:sessions` | hash | session id → `{"name", "token" (SHA-256), "home", "rooms", "lifetime"}` ([`entry`]; `lifetime`: when it ends, if anything bounds it) |
//! | [`ROOMS`](keys::ROOMS) `<prefix>:rooms` | hash | room name → its members in the cluster (written with the entries) |
//! | [`INSTANCE`](keys::INSTANCE) `<prefix>:instance:<uuid>` | string, expiring | this instance is alive (`alive`), or alive and stopping (`leaving`) |
//! | [`INSTANCES`](keys::INSTANCES) `<prefix>:instances` | set, expiring with the newest liveness key | the instances that list themselves at each refresh (not those of releases before issue 13), so that the live ones are read without a keyspace scan ([`liveness`]) |
//! | [`ADOPTED`](keys::ADOPTED) `<prefix>:adopted:<uuid>` | set, expiring after a day | the sessions of this instance that survivors adopted; read and removed when it re-registers (it was only cut off: see [`recovery`]) |
//! | [`PROTOCOL`](keys::PROTOCOL) `<prefix>:protocol:<uuid>` | string, expiring with the above | the wire protocol this instance speaks (3; protocol 1 writes none) |
//! | [`STATS`](keys::STATS) `<prefix>:stats:<uuid>` | string, expiring | this instance's newest figures for the admin console, JSON ([`figures`]) |
//! | [`SEQ`](keys::SEQ) `<prefix>:seq` | string (integer) | the number of the bus's last message that put events into mailboxes: `lobby`'s traffic and server messages to everyone (see [`sequence`]) |
//! | [`SEQ`](keys::SEQ) `<prefix>:seq:<room>` | string (integer) | the number of the last message of a room (but `lobby`) that put events into its members' mailboxes |
//! | [`EVERYONE`](keys::EVERYONE) `<prefix>:everyone` | string (integer) | the number of the last server message to everyone |
//! | [`STARTS`](keys::STARTS) `{<prefix>:<room>}:starts` | hash | with rooms sharded: each member's starting point on the room's counter, and what the room gave each session that left it (`<id>:done`) ([`sequence`]) |
//! | [`COUNTS`](keys::COUNTS) `<prefix>:counts:<session id>` | hash | `direct`, `own`, `done`, and a starting point on each counter the session hears (`base`, `r:<room>`, `all`): how many events it was given (see [`sequence`], [`counting`]) |
//! | [`ENDED`](keys::ENDED) `<prefix>:ended:<session id>` | string, expiring (the session TTL, at least 60 s) | a session that ended at its lifetime: its token's hash and why, so every instance answers `session_expired` ([`ended`]) |
//! | [`STATE`](keys::STATE) `<prefix>:state` | string | Redis holds the cluster's state; missing once it restarted empty (see [`restart`]) |
//! | [`RECOVERING`](keys::RECOVERING) `<prefix>:recovering` | string, expiring | the instances are re-registering their sessions after Redis restarted empty |
//! | [`REGISTERED`](keys::REGISTERED) `<prefix>:registered:<uuid>` | string, expiring | this instance has re-registered its sessions |
//!
//! Why one channel for what everyone sees: Redis delivers a channel's messages to every subscriber
//! in the one order it executed the PUBLISHes, so every instance sees joins, broadcasts and
//! migrations in the same order. A broadcast is one PUBLISH; each instance appends one shared
//! envelope to the mailboxes it homes, and encodes it once for all of its streams.
//!
//! A direct message concerns two instances only, so it goes to its recipient's home on that
//! instance's own channel, and the answer to the sender's; the other instances never read it.
//! A room's traffic concerns the instances homing its members only, so it goes on the room's
//! channel (but `lobby`'s, see [`rooms`]). An instance reads all of its channels (the bus, its
//! own, its rooms') on one connection, and Redis writes to a connection in the order it
//! executed the PUBLISHes, so what one instance reads is a part of one order, the same for
//! every instance: a migration sees the same messages before and after its request as before,
//! provided its puller reads the session's rooms before it asks (see [`rooms`]). With rooms
//! sharded, a room's channel is on its own shard, and no order covers two shards: each room's
//! messages are numbered on its own counter, and a session handed between instances continues
//! each of its rooms after the number its old home applied there ([`transit`]).
//! A direct message that reaches the old home of a session that just migrated is forwarded to
//! the new one (which buffers it until the mailbox arrives).
//!
//! Direct messages to a session homed elsewhere are published to its home with a request id;
//! the home applies them (or refuses: full mailbox) and answers the sender with the event id.
//! A home that is not subscribed (gone) is known at once: the PUBLISH reached nobody.
//!
//! Faults: pub/sub does not queue for a disconnected subscriber, so while Redis is unreachable
//! writes fail with `Unavailable` (503) and `/healthz` says why; on reconnection the instance
//! re-subscribes and re-registers the sessions it homes, but those a survivor adopted while it
//! was cut off, which it drops (see [`recovery`]): a session has one home. Events published while an instance was
//! cut off are not replayed to it, but numbered ones are reported: each mailbox skips as many
//! ids as numbered messages of its rooms (and to everyone) went by meanwhile (a lost
//! connection, a resharding, a failover), so its stream says `lagged` (see [`channels`],
//! [`sequence`]). A gap in a room's numbers while subscribed is no loss: an instance reads a
//! room's channel only while it homes a member.
//!
//! # Mixed versions (rolling upgrades)
//!
//! Instances of two releases share a cluster while a deploy replaces them one by one. The rule:
//! - Every message carries the protocol that wrote it (`"v"`; none: protocol 1). A reader
//!   applies what it knows of a message from a newer protocol (fields it does not know are
//!   ignored) and ignores a kind it does not know; both are logged once and counted
//!   (`switchboard_bus_messages_ignored_total{reason}`), and neither ends the subscription.
//! - A message kind or field is never renamed or given a new meaning; a new field must be one
//!   an older reader may ignore. What an older instance cannot ignore is never sent to it: a
//!   new kind goes only to instances known to speak it (`prepare`, sent to an instance's own
//!   channel after its protocol key said 2).
//! - Each instance says its protocol beside its liveness key ([`PROTOCOL`](keys::PROTOCOL),
//!   [`liveness`]). While an instance without one (protocol 1, which reads room traffic on
//!   the bus only) is alive, and for 3 s after, the cluster is *mixed*: every room's traffic
//!   is published on the bus, a join or leave as one message naming all of its rooms, as
//!   protocol 1 does. Instances of protocol 2 keep reading their rooms' channels meanwhile,
//!   so the switch back loses nothing. An older instance that starts in a cluster of newer
//!   ones is seen within a liveness tick (1 s), by the bus's readers outnumbering the listed
//!   instances (rarely, within a keyspace scan's 15 s: see [`liveness`]); room traffic
//!   published meanwhile on room channels does not reach its sessions.
//! - Protocol 3 numbers a room's messages on the room's own counter (protocol 2 numbered them
//!   on the bus's, wherever they travelled), and adds `"all"` to server messages to everyone
//!   ([`sequence`]): a reader takes a room channel's `"seq"` as the room's number only from
//!   protocol 3 on. Protocol 2 instances read protocol 3's messages as their own. While
//!   instances of both are alive, what the older ones publish is counted the old way, so a
//!   crash then may report a `lagged` that is off for sessions outside `lobby`.
//! - Protocol 1 is commit 13e0970; `tests/cluster/upgrade.rs` runs its binary beside this one.
//! - With rooms sharded (a Redis Cluster, `--redis-shard-rooms`), the cluster is never mixed: no
//!   release before protocol 2 speaks to a Redis Cluster, and the room keys of releases before
//!   the flag are in the deployment's slot, so every instance of a deployment runs with the same
//!   setting (a deployment of such a release upgrades with the flag off). `handover` then
//!   carries `points` and `handed_over` `applied` ([`transit`]).
//!
//! # Glossary
//! - *home*: the instance holding a session's mailbox; the directory names it.
//! - *directory*: the hash of every session of the cluster ([`directory`]).
//! - *peer directory*: this instance's copy of who is in which room, kept from the bus and
//!   read by every `ready` ([`peers`]).
//! - *bus*: the channel every instance reads in one order; an instance's *own channel* carries
//!   what concerns it alone.
//! - *numbered message*: one that puts an event into the mailboxes of a room's members (or of
//!   every session), numbered on the room's counter in Redis so that a crash loses no count
//!   ([`sequence`]).
//! - *migrate*: a session's mailbox moves, ids included, to the instance its stream attached
//!   to, which pulls it from its home ([`migrate`]; on the wire `handover`, `handed_over`).
//! - *drain*: a stopping instance sends every session it homes to the others before it stops
//!   ([`drain`]; on the wire `handoff`, then `handed_over` for each session).
//! - *arrival*: a session on its way here (migrating or drained), buffering what concerns it
//!   until its mailbox arrives ([`transit`]).
//! - *liveness*: each instance's expiring key, saying whether it is alive and takes sessions
//!   ([`liveness`]).
//! - *adopt*: a survivor takes the sessions of a dead instance, with exact counts of what they
//!   lost ([`recovery`], [`sequence`]).
//! - *probe*: a message `/healthz` publishes and waits to read back.
//! - *prepare*: asking an instance to read rooms' channels before a session joins one there,
//!   or before sessions in them are drained there ([`rooms`], [`drain`]).
//! - *mixed*: an instance of an older protocol is alive (see above).
//!
//! # Layout
//! Types that own their state, each imported by the ones below it:
//! - [`transport`]: one Redis server or a Redis Cluster: commands, publishing, subscribing.
//! - [`keys`]: the key and channel names, and the error a Redis failure becomes.
//! - [`request`]: request/reply over the bus ([`request::Requests`]).
//! - [`entry`]: one session as the directory stores it ([`entry::Entry`]).
//! - [`directory`]: the sessions hash ([`directory::Directory`]).
//! - [`ended`]: sessions that ended at their lifetime lately ([`ended::Ended`]).
//! - [`peers`]: who is in which room, kept in memory from the bus ([`peers::Peers`]).
//! - [`wire`]: every message instances send each other.
//! - [`protocol`]: the protocol version on the wire, and reading a newer instance's messages.
//! - [`counting`]: the scripts that number and count, and what each message counts for.
//! - [`sequence`]: counting each session's events in Redis ([`sequence::Sequence`]).
//! - [`liveness`]: this instance's key, and reading the others' ([`liveness::Liveness`]).
//! - [`restart`]: the keys that tell when Redis lost its state ([`restart::Restart`]).
//! - [`subscriptions`]: the room channels this instance reads ([`subscriptions::Subscriptions`]).
//! - [`transit`]: sessions on their way here or lately sent away ([`transit::Migrations`]).
//! - [`instance`]: [`Cluster`], which holds all of the above and starts the tasks.
//!
//! What [`Cluster`] does, one concern a file:
//! - [`operations`]: the broker operations the hub calls (register, attach, deliver, ...).
//! - [`rooms`]: joining and leaving rooms, reading who is in which; room channels, and why
//!   `lobby` stays on the bus.
//! - [`channels`]: publishing, and the task that reads this instance's channels; every raw
//!   pub/sub call.
//! - [`dispatch`]: what each message does when it comes back.
//! - [`migrate`]: pulling a session here; giving one up when pulled.
//! - [`drain`]: sending every session to the others when this instance stops.
//! - [`lifetime`]: refreshing a session homed elsewhere (its home's reaper ends it); its end in
//!   the directory, so it survives a crash; why an ended session's token is refused.
//! - [`recovery`]: keeping alive, adopting a dead instance's sessions, re-registering;
//!   telling an attach at once that a session's instance died.
//! - [`restart`]: after Redis restarted empty, telling a forgotten session from a gone one.
//! - [`figures`]: this instance's figures for the admin console, and reading the others'.
//!
//! Locks, in order: the migration lock ([`transit`]), then the registry's (see
//! [`crate::registry`]), then a request table ([`request`]), which is held only to insert or
//! remove one waiter.

mod channels;
mod counting;
mod directory;
mod dispatch;
mod drain;
mod ended;
mod entry;
mod figures;
mod instance;
mod keys;
mod lifetime;
mod liveness;
mod migrate;
mod operations;
mod peers;
mod protocol;
mod recovery;
mod request;
mod restart;
mod rooms;
mod sequence;
mod subscriptions;
mod transit;
mod transport;
mod wire;

pub(crate) use instance::Cluster;
