//! The command line: options every mode shares ([`Opts`]), the modes ([`Mode`]), and the
//! [`Common`] options the coordinator runs with.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::coord::Common;
use crate::http::Endpoint;
use crate::proto::Target;
use crate::sys;

/// Load generator for switchboard (and nginx+nchan for comparison).
///
/// Only loopback (127.0.0.0/8) targets are accepted. Connections are spread over worker
/// processes (this host allows ~20,000 open files per process) and over source addresses
/// 127.0.0.2, .3, … so ephemeral ports never run out.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub opts: Opts,
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// switchboard's contract: POST /helo, GET /events/{id}, POST /broadcast, …
    Switchboard,
    /// A plain "subscribe URL + publish URL" pair, e.g. nginx+nchan.
    Nchan,
}

#[derive(Debug, Clone, Args)]
pub struct Opts {
    /// Which kind of server to load.
    #[arg(long, global = true, value_enum, default_value_t = TargetKind::Switchboard)]
    target: TargetKind,
    /// The target's name in `--json` results and `report` columns (default: the kind);
    /// `bench/run.sh` loads rawfan, the machine's floor, as `--target nchan --name floor`.
    #[arg(long, global = true)]
    name: Option<String>,
    /// switchboard's base URL; several, comma-separated, name the instances of a cluster: the
    /// streams are then spread over them as a balancer would, each worker process on one
    /// instance in turn (the workers' number is rounded up to a multiple of the instances).
    /// The publisher's own session is on the first.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:4000"
    )]
    url: Vec<String>,
    /// switchboard URL for `POST /broadcast` and `/response` (default: the first `--url`).
    /// Point it at another instance of a cluster to measure cross-instance delivery.
    #[arg(long, global = true)]
    post_url: Option<String>,
    /// nchan subscribe URL (an EventSource endpoint); `{channel}` is replaced.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080/sub/{channel}"
    )]
    sub_url: String,
    /// nchan publish URL (POST); `{channel}` is replaced.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080/pub/{channel}"
    )]
    pub_url: String,
    /// Channel name for nchan; default: a new one per run.
    #[arg(long, global = true)]
    channel: Option<String>,
    /// The server's process id, to read its memory (VmRSS, Pss) and CPU time from /proc.
    /// Children count too (nginx's workers); several, comma-separated, are summed (a cluster).
    #[arg(long, global = true, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// `fanout` and `rooms`: a shell command run, and waited for, at each phase with the
    /// phase's name appended: `attached` (every stream attached, before the first broadcast)
    /// and `drained` (the last delivery in, or the ladder's last step over, before the
    /// streams stop). `bench/100k.sh` reads Redis's and each instance's figures there.
    #[arg(long, global = true)]
    phase_cmd: Option<String>,
    /// Worker processes holding the streams (default: as few as `--max-per-worker` allows).
    #[arg(long, global = true)]
    workers: Option<usize>,
    /// Most streams one worker process may hold (the open-file limit is ~20,000).
    #[arg(long, global = true, default_value_t = 15_000)]
    max_per_worker: usize,
    /// Connections per source address before moving on to the next one.
    #[arg(long, global = true, default_value_t = 10_000)]
    conns_per_ip: usize,
    /// Streams connecting at once, per worker.
    #[arg(long, global = true, default_value_t = 128)]
    connect_concurrency: usize,
    /// Keep-alive connections per worker for helo and DELETE /session.
    #[arg(long, global = true, default_value_t = 8)]
    http_concurrency: usize,
    /// Seconds one stream may take to attach.
    #[arg(long, global = true, default_value_t = 60)]
    attach_timeout: u64,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, global = true, default_value_t = 1800)]
    pub max_secs: u64,
    /// Name of the scenario, for `report` (default: the mode).
    #[arg(long, global = true, default_value = "")]
    label: String,
    /// Print the result as one JSON line instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Keep the sessions at the end instead of deleting them.
    #[arg(long, global = true)]
    no_cleanup: bool,
    /// No progress line and no notes on stderr (errors still). Without a terminal on stderr
    /// there is no progress line anyway.
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Hold N idle streams: time to attach them and server memory per stream.
    Idle {
        #[arg(long, short = 'n', default_value_t = 1000)]
        streams: usize,
        /// Seconds to wait after attaching before reading memory.
        #[arg(long, default_value_t = 3)]
        settle: u64,
        /// Further seconds to hold the streams (any stream closed meanwhile fails the run).
        #[arg(long, default_value_t = 5)]
        hold: u64,
        /// Open each stream as a browser does: `POST /helo`, then `GET /events/…` on the same
        /// keep-alive connection (by default all sessions register first, over a few pooled
        /// connections, and each stream gets a new connection). The helo calls then count in
        /// `attach_s` and `register_s` is 0. Default label `idle-shared`. switchboard only:
        /// refused with `--target nchan`, which has no POST /helo.
        #[arg(long)]
        shared_connection: bool,
    },
    /// N streams, M broadcasts: deliveries/s, delivery latency, events lost.
    Fanout {
        #[arg(long, short = 'n', default_value_t = 1000)]
        streams: usize,
        #[arg(long, short = 'm', default_value_t = 100)]
        broadcasts: u64,
        /// Broadcasts per second; 0 = saturated (as fast as `--window` allows).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Saturated mode: at most this many broadcasts ahead of the slowest stream.
        #[arg(long, default_value_t = 64)]
        window: u64,
        /// Publishing connections sending at once. nchan answers a publish only after writing
        /// the message to its subscribers, so one sequential publisher cannot saturate it.
        /// With more than one, arrival order is not checked.
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Padding bytes added to each message.
        #[arg(long, default_value_t = 0)]
        payload: usize,
        /// Give up waiting for deliveries after this many seconds without progress.
        #[arg(long, default_value_t = 10)]
        drain_timeout: u64,
    },
    /// K sender→receiver pairs posting /response: sustained rate and POST→event latency.
    Direct {
        #[arg(long, short = 'k', default_value_t = 50)]
        pairs: usize,
        /// Messages per second in all; 0 = each pair back to back.
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 0)]
        payload: usize,
        #[arg(long, default_value_t = 5)]
        drain_timeout: u64,
    },
    /// Sessions connecting and leaving continuously (helo, attach, hold, DELETE /session);
    /// server RSS sampled over time.
    Churn {
        /// New sessions per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Seconds to churn.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Milliseconds each session stays attached.
        #[arg(long, default_value_t = 1000)]
        hold_ms: u64,
        /// Seconds between RSS samples.
        #[arg(long, default_value_t = 5)]
        sample: u64,
        /// RSS growth is measured from the first sample after this many seconds.
        #[arg(long, default_value_t = 10)]
        warmup: u64,
    },
    /// Rooms of a few streams (switchboard rooms; nchan: a channel each), broadcasts into
    /// them at increasing rates, one step per rate: the highest rate with p99 within
    /// `--p99-limit-ms` and nothing lost. switchboard: each room's first member broadcasts
    /// (`POST /broadcast` with `"room"`); nchan: the same tool publishes to each room's channel.
    Rooms {
        #[arg(long, default_value_t = 1900)]
        rooms: usize,
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        /// Broadcasts per second in all, one step each, tried in this order.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "100,200,500,1000,2000,5000,10000,20000,30000,50000,70000,100000"
        )]
        rates: Vec<f64>,
        /// Connections each worker process broadcasts over at once (each waits for its
        /// answer: nchan answers a publish once it is delivered).
        #[arg(long, default_value_t = 16)]
        publishers: usize,
        /// Seconds of broadcasting per step.
        #[arg(long, default_value_t = 5)]
        step_secs: u64,
        #[arg(long, default_value_t = 50.0)]
        p99_limit_ms: f64,
        /// Try every rate, also after one failed (default: stop at the first failure).
        #[arg(long)]
        all_steps: bool,
        /// Further tries of a rate whose step failed, before it counts as failed.
        #[arg(long, default_value_t = 1)]
        retries: u32,
        #[arg(long, default_value_t = 5)]
        drain_timeout: u64,
    },
    /// `POST /helo` into a small room while `--sessions` others are on the hub, in rooms of
    /// `--room-size` with their streams attached: the helo round trip (each joiner leaves
    /// again, so every join meets a room of the same size). switchboard only.
    Join {
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        #[arg(long, default_value_t = 500)]
        joins: u64,
        /// Joins per second, one at a time.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
    },
    /// SVG charts (and the data behind them, `charts.json`) from files of `--json` lines.
    Chart {
        files: Vec<PathBuf>,
        /// Directory to write the charts to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Medians and switchboard/nchan ratios from files of `--json` lines (Markdown table).
    Report {
        files: Vec<PathBuf>,
        /// Only these metrics (comma-separated).
        #[arg(long, value_delimiter = ',')]
        metrics: Vec<String>,
    },
    #[command(name = "__worker", hide = true)]
    Worker,
}

pub fn common(o: &Opts) -> Result<Common, String> {
    let channel = o.channel.clone().unwrap_or_else(|| {
        format!(
            "load{}x{}",
            std::process::id(),
            sys::now_us() % 1_000_000_000
        )
    });
    let bases = o
        .url
        .iter()
        .map(|u| Endpoint::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    let first = bases.first().ok_or("--url names no instance")?.clone();
    let (target, publish) = match o.target {
        TargetKind::Switchboard => (
            Target::Switchboard {
                posts: match &o.post_url {
                    Some(url) => Endpoint::parse(url)?,
                    None => first.clone(),
                },
                base: first,
            },
            None,
        ),
        TargetKind::Nchan => (
            Target::Nchan {
                sub: Endpoint::parse(&o.sub_url.replace("{channel}", &channel))?,
            },
            Some(Endpoint::parse(&o.pub_url.replace("{channel}", &channel))?),
        ),
    };
    Ok(Common {
        target,
        target_name: o.name.clone().unwrap_or_else(|| match o.target {
            TargetKind::Switchboard => "switchboard".into(),
            TargetKind::Nchan => "nchan".into(),
        }),
        publish,
        bases,
        server_pids: o.server_pid.clone(),
        phase_cmd: o.phase_cmd.clone(),
        workers: o.workers,
        max_per_worker: o.max_per_worker.clamp(1, 18_000),
        conns_per_ip: o.conns_per_ip.max(1),
        connect_concurrency: o.connect_concurrency.max(1),
        http_concurrency: o.http_concurrency.max(1),
        attach_timeout: Duration::from_secs(o.attach_timeout),
        label: o.label.clone(),
        cleanup: !o.no_cleanup,
        quiet: o.quiet,
        channel,
        sub_url: o.sub_url.clone(),
        pub_url: o.pub_url.clone(),
    })
}
