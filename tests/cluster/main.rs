//! Cluster mode, tested for real: each test starts its own `redis-server` on an ephemeral port
//! and two or three `switchboard` processes (the real binary) pointed at it with a prefix of
//! their own, then drives them over HTTP across instances.
//!
//! Synchronisation never rests on a bare sleep:
//! - every HTTP call and every SSE read is bounded by [`support::WAIT`], so a missing answer or event
//!   fails the test in seconds instead of hanging it;
//! - "eventually" conditions (a dead instance's sessions leaving, health coming back) are polled
//!   until a deadline;
//! - [`support::cluster::Cluster::settle`] is a barrier on the bus (see `support::cluster`). Settling after every
//!   `helo` makes presence deterministic: a session hears `new_user` exactly for the sessions
//!   registered after it.
//!
//! "Nothing else arrived" is checked with a marker: a direct message sent afterwards must be the
//! very next event of the stream.
//!
//! A failing test prints the end of each instance's log; `CLUSTER_LOGS=1` prints them always.
//!
//! With `TEST_REDIS_CLUSTER=redis+cluster://127.0.0.1:P1,...` (scripts/test.sh starts one) every
//! test runs over that Redis Cluster instead, on a prefix of its own, but those that need a
//! server of their own (they kill it, count its commands, or put a proxy before it), which
//! start one (`Cluster::start_own`) in both passes. `redis_cluster` starts clusters of its own
//! to reshard and break under traffic, in the first pass only.
//!
//! Needs `redis-server` (Debian: `apt-get install -y redis-server`); without it every test fails
//! and says so. `proxy` also needs `nginx` (`apt-get install -y nginx`).

mod backplane;
mod crashes;
mod departures;
mod deploys;
mod expiry;
mod lagged;
mod messaging;
mod outages;
mod proxy;
mod redis_cluster;
mod resume;
mod rooms;
mod rosters;
mod stats;
mod tokens;
mod upgrade;

#[path = "../support/mod.rs"]
mod support;
