//! Cluster mode: several instances act as one hub over Redis (the Redis broker).
//!
//! Each session is *homed* on one instance, which holds its mailbox in its registry: where it
//! said hello, then wherever its stream last attached. Redis holds what every instance must see
//! (the names are built in [`keys`]):
//!
//! On one Redis server `<prefix>` is `--redis-prefix`; on a Redis Cluster it is `{<prefix>}`, one
//! hash tag, so that every key and channel below lives in one slot, and the channels are sharded
//! (`SPUBLISH`, `SSUBSCRIBE`): why, and how topology changes are followed, in [`transport`].
//!
//! | key or channel | type | what |
//! |---|---|---|
//! | [`BUS`](keys::BUS) `<prefix>:bus` | pub/sub channel (sharded on a cluster) | what every instance must see: joins, leaves, broadcasts, migration requests, JSON ([`wire`]) |
//! | [`TO`](keys::TO) `<prefix>:to:<uuid>` | pub/sub channel (sharded on a cluster) | what concerns one instance: direct messages to the sessions it homes, and the answers to its own requests |
//! | [`SESSIONS`](keys::SESSIONS) `<prefix>:sessions` | hash | session id → `{"name", "token" (SHA-256), "home", "rooms"}` |
//! | [`ROOMS`](keys::ROOMS) `<prefix>:rooms` | hash | room name → its members in the cluster (written with the entries) |
//! | [`INSTANCE`](keys::INSTANCE) `<prefix>:instance:<uuid>` | string, expiring | this instance is alive (`alive`), or alive and stopping (`leaving`) |
//! | [`SEQ`](keys::SEQ) `<prefix>:seq` | string (integer) | the number of the last message that put an event into every mailbox (see [`sequence`]) |
//! | [`COUNTS`](keys::COUNTS) `<prefix>:counts:<session id>` | hash | `base`, `own`, `direct`: how many events the session was given (see [`sequence`]) |
//!
//! Why one channel for what everyone sees: Redis delivers a channel's messages to every subscriber
//! in the one order it executed the PUBLISHes, so every instance sees joins, broadcasts and
//! migrations in the same order. A broadcast is one PUBLISH; each instance appends one shared
//! envelope to the mailboxes it homes, and encodes it once for all of its streams.
//!
//! A direct message concerns two instances only, so it goes to its recipient's home on that
//! instance's own channel, and the answer to the sender's; the other instances never read it.
//! An instance reads both of its channels on one connection, and Redis writes to a connection
//! in the order it executed the PUBLISHes, so what one instance reads keeps the order of the
//! single channel: a migration sees the same messages before and after its request as before.
//! A direct message that reaches the old home of a session that just migrated is forwarded to
//! the new one (which buffers it until the mailbox arrives).
//!
//! Direct messages to a session homed elsewhere are published to its home with a request id;
//! the home applies them (or refuses: full mailbox) and answers the sender with the event id.
//! A home that is not subscribed (gone) is known at once: the PUBLISH reached nobody.
//!
//! Faults: pub/sub does not queue for a disconnected subscriber, so while Redis is unreachable
//! writes fail with `Unavailable` (503) and `/healthz` says why; on reconnection the instance
//! re-subscribes and re-registers the sessions it homes. Events published while an instance was
//! cut off are not replayed to it, but numbered ones are reported: each mailbox skips as many
//! ids as numbered messages went by meanwhile, or as a hole in the numbers shows (a message
//! published where this instance was not reading, as during a resharding), so its stream says
//! `lagged` (see [`channels`], [`dispatch`]).
//!
//! # Glossary
//! - *home*: the instance holding a session's mailbox; the directory names it.
//! - *directory*: the hash of every session of the cluster ([`directory`]).
//! - *bus*: the channel every instance reads in one order; an instance's *own channel* carries
//!   what concerns it alone.
//! - *numbered message*: one that puts an event into every mailbox, counted in Redis so that a
//!   crash loses no count ([`sequence`]).
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
//!
//! # Layout
//! Types that own their state, each imported by the ones below it:
//! - [`transport`]: one Redis server or a Redis Cluster: commands, publishing, subscribing.
//! - [`keys`]: the key and channel names, and the error a Redis failure becomes.
//! - [`request`]: request/reply over the bus ([`request::Requests`]).
//! - [`directory`]: the sessions hash ([`directory::Directory`]).
//! - [`wire`]: every message instances send each other.
//! - [`sequence`]: counting each session's events in Redis ([`sequence::Sequence`]).
//! - [`liveness`]: this instance's key, and reading the others' ([`liveness::Liveness`]).
//! - [`transit`]: sessions on their way here or lately sent away ([`transit::Migrations`]).
//! - [`instance`]: [`Cluster`], which holds all of the above and starts the tasks.
//!
//! What [`Cluster`] does, one concern a file:
//! - [`operations`]: the broker operations the hub calls (register, attach, deliver, ...).
//! - [`rooms`]: joining and leaving rooms, reading who is in which; why rooms share the bus.
//! - [`channels`]: publishing, and the task that reads this instance's channels.
//! - [`dispatch`]: what each message does when it comes back.
//! - [`migrate`]: pulling a session here; giving one up when pulled.
//! - [`drain`]: sending every session to the others when this instance stops.
//! - [`lifetime`]: refreshing a session homed elsewhere (its home's reaper ends it).
//! - [`recovery`]: keeping alive, adopting a dead instance's sessions, re-registering.
//!
//! Locks, in order: the migration lock ([`transit`]), then the registry's (see
//! [`crate::registry`]), then a request table ([`request`]), which is held only to insert or
//! remove one waiter.

mod channels;
mod directory;
mod dispatch;
mod drain;
mod instance;
mod keys;
mod lifetime;
mod liveness;
mod migrate;
mod operations;
mod recovery;
mod request;
mod rooms;
mod sequence;
mod transit;
mod transport;
mod wire;

pub(crate) use instance::Cluster;
