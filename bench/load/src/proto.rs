//! What the coordinating process and its worker processes say to each other.
//!
//! The coordinator re-executes its own binary as `switchboard-load __worker` (one process may
//! hold at most ~20,000 open files here, so large audiences are spread over several), writes one
//! [`Job`] as a JSON line to the worker's stdin and then plain commands, one a line:
//! `attach`, `go`, `stop` (in the rooms mode also `step RATE MS` and `mark` between `go` and
//! `stop`). The worker answers with [`Report`]s, one JSON line each, on stdout.
//! Its stderr is the coordinator's, for errors a human should see.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::http::Endpoint;

/// The server under test, as a worker needs to know it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Target {
    /// switchboard: `POST /helo`, `GET /events/{id}?token=`, `DELETE /session` on `base`;
    /// `POST /broadcast` and `/response` on `posts` (another instance, to measure cluster mode).
    Switchboard { base: Endpoint, posts: Endpoint },
    /// nginx+nchan (or any plain SSE endpoint): subscribe with `GET sub`, no sessions.
    Nchan { sub: Endpoint },
}

/// One worker's share of the work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub index: usize,
    pub target: Target,
    pub work: Work,
    /// Global number of this worker's first stream: names and source addresses follow it.
    pub first: usize,
    /// Connections per source address before moving to the next (127.0.0.2, .3, …).
    pub conns_per_ip: usize,
    /// Streams connecting at once (each waits for its `ready`).
    pub connect_concurrency: usize,
    /// Keep-alive connections used for `helo` and `DELETE /session`.
    pub http_concurrency: usize,
    pub attach_timeout_ms: u64,
    pub progress_ms: u64,
    /// Delete the sessions at `stop`, so a later run starts from an empty server.
    pub cleanup: bool,
}

/// What a worker does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Work {
    /// Hold `count` streams (idle and fanout modes). `shared`: each stream's session is
    /// registered on the stream's own keep-alive connection, just before its `GET /events`
    /// (as a browser does), instead of all of them over the control pool before `attach`.
    Streams { count: usize, shared: bool },
    /// `pairs` sender→receiver pairs posting `/response` at `rate`/s in all (0: back to back).
    Direct {
        pairs: usize,
        rate: f64,
        duration_ms: u64,
        payload: usize,
    },
    /// Start `rate` sessions a second (helo, attach, hold, delete) for `duration_ms`.
    Churn {
        rate: f64,
        duration_ms: u64,
        hold_ms: u64,
    },
    /// Hold the streams of `plan.rooms` rooms of `plan.size` (switchboard: each session's
    /// helo names its room; nchan: each stream subscribes to its room's channel). After `go`,
    /// each `step RATE MS` command broadcasts into the rooms at RATE/s for MS ms (when
    /// `publish` is set), and `mark` reports the step.
    Rooms {
        plan: RoomPlan,
        /// switchboard: `POST /broadcast` on this endpoint, with `"room"`; nchan: the publish
        /// URL, `{channel}` in its path replaced by the room. None: hold only (`join` mode).
        publish: Option<Endpoint>,
        /// Keep-alive connections broadcasting at once.
        publishers: usize,
    },
}

/// Which rooms a worker's streams are in: stream `i` is in room `first_room + i / size`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomPlan {
    /// Room names are this prefix and the room's number (nchan's channel ids are `\w+`).
    pub prefix: String,
    pub first_room: usize,
    pub rooms: usize,
    pub size: usize,
}

impl RoomPlan {
    /// The room of this worker's stream `i`.
    pub fn room_of(&self, i: usize) -> String {
        room_name(&self.prefix, self.first_room + i / self.size.max(1))
    }
}

/// The name of room number `k` (a switchboard room name and an nchan channel id alike).
pub fn room_name(prefix: &str, k: usize) -> String {
    format!("{prefix}r{k}")
}

/// Counters a worker keeps; summed over workers by the coordinator (but `min_count`: min).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Sessions registered and streams attached so far (for the progress line).
    pub registered: u64,
    pub attached: u64,
    /// Timed messages received (broadcasts, responses, nchan messages).
    pub received: u64,
    /// Fewest timed messages any one stream of this worker received (streams work only).
    pub min_count: u64,
    /// Timed messages whose sequence number was not above the last one on that stream.
    pub dup: u64,
    pub lagged_events: u64,
    /// Sum of `missed` in `lagged` events.
    pub lagged_missed: u64,
    /// Every other event (`ready`, `new_user`, `user_left`, …).
    pub other_events: u64,
    /// Body bytes read on streams.
    pub bytes: u64,
    /// Streams that ended after they were attached.
    pub closed: u64,
    /// Direct: `/response` calls answered 202.
    pub sent_ok: u64,
    /// Direct: 429 answers (mailbox full).
    pub rejected: u64,
    pub send_errors: u64,
    /// Rooms: deliveries the accepted broadcasts promised (switchboard's `recipients`, the
    /// room's size for nchan), and the steps whose sending ended.
    pub expected: u64,
    pub steps_done: u64,
    pub sending_done: bool,
    /// Churn: complete helo→attach→delete cycles, failed ones, and starts skipped because too
    /// many cycles were still running.
    pub cycles: u64,
    pub cycle_failures: u64,
    pub cycles_skipped: u64,
    /// Receive times (µs since the epoch) of the first and last timed message.
    pub first_us: u64,
    pub last_us: u64,
}

impl Counters {
    /// Adds `o` into `self` (min of `min_count`, span of the time stamps).
    pub fn merge(&mut self, o: &Counters) {
        self.registered += o.registered;
        self.attached += o.attached;
        self.expected += o.expected;
        self.steps_done += o.steps_done;
        self.received += o.received;
        self.min_count = self.min_count.min(o.min_count);
        self.dup += o.dup;
        self.lagged_events += o.lagged_events;
        self.lagged_missed += o.lagged_missed;
        self.other_events += o.other_events;
        self.bytes += o.bytes;
        self.closed += o.closed;
        self.sent_ok += o.sent_ok;
        self.rejected += o.rejected;
        self.send_errors += o.send_errors;
        self.sending_done &= o.sending_done;
        self.cycles += o.cycles;
        self.cycle_failures += o.cycle_failures;
        self.cycles_skipped += o.cycles_skipped;
        if o.first_us != 0 && (self.first_us == 0 || o.first_us < self.first_us) {
            self.first_us = o.first_us;
        }
        self.last_us = self.last_us.max(o.last_us);
    }

    /// The identity of [`Counters::merge`].
    pub fn empty() -> Self {
        Self {
            min_count: u64::MAX,
            sending_done: true,
            ..Self::default()
        }
    }
}

/// A worker's messages, one JSON line each.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Report {
    /// Sessions registered (switchboard) — sent right away for nchan.
    Heloed {
        ok: usize,
        failed: usize,
        secs: f64,
        error: Option<String>,
    },
    /// Streams attached (`ready` seen for switchboard, response head for nchan).
    Attached {
        ok: usize,
        failed: usize,
        secs: f64,
        error: Option<String>,
    },
    Progress(Counters),
    /// Final numbers. Histograms are `(value µs, count)` pairs.
    Done {
        counters: Counters,
        latency: Vec<(u64, u64)>,
        rtt: Vec<(u64, u64)>,
        cpu_secs: f64,
        error: Option<String>,
    },
    /// Rooms: the numbers at the end of a step (after `mark`); `latency` covers that step only.
    Step {
        counters: Counters,
        latency: Vec<(u64, u64)>,
        error: Option<String>,
    },
    /// Sessions deleted after `Done`.
    Cleaned {
        secs: f64,
    },
    /// Not sent by workers: the coordinator's note that a worker's stdout ended.
    Exited,
}

/// Source address of global connection number `n`: 127.0.0.2 + n / per_ip, wrapping at .251.
pub fn source_ip(n: usize, per_ip: usize) -> Ipv4Addr {
    let block = (n / per_ip.max(1)) % 250;
    Ipv4Addr::new(127, 0, 0, 2 + block as u8)
}

/// A name for session number `n`.
pub fn session_name(n: usize) -> String {
    format!("load-{n}")
}
