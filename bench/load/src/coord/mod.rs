//! The coordinating process: spawns the workers, drives the phases (register, attach,
//! measure, stop), publishes broadcasts itself, samples the server's memory and CPU, and turns
//! the workers' reports into an [`Outcome`](crate::outcome::Outcome).
//!
//! # Layout
//! - [`workers`]: the worker processes, their reports, and the register + attach phases.
//! - [`measure`]: the server's memory and CPU over a window; latency histograms as metrics.
//! - [`publisher`]: the coordinator's own session and the broadcasts it sends in `fanout`.
//! - one module per mode: [`idle`](mod@idle), [`fanout`](mod@fanout), [`direct`](mod@direct),
//!   [`churn`](mod@churn), [`rooms`](mod@rooms), [`join`](mod@join).

mod churn;
mod direct;
mod fanout;
mod idle;
mod join;
mod measure;
mod publisher;
mod rooms;
mod workers;

use std::time::Duration;

use crate::http::Endpoint;
use crate::proto::Target;

pub use churn::churn;
pub use direct::direct;
pub use fanout::{FanoutArgs, fanout};
pub use idle::idle;
pub use join::{JoinArgs, join};
pub use rooms::{RoomsArgs, rooms};

/// Options every mode shares (see `main.rs` for their documentation).
#[derive(Debug, Clone)]
pub struct Common {
    pub target: Target,
    pub target_name: String,
    /// nchan publish URL (channel filled in).
    pub publish: Option<Endpoint>,
    /// Every instance the streams are spread over (`--url`); the target's `base` is the first.
    pub bases: Vec<Endpoint>,
    /// The server's processes (several: a cluster's instances), summed.
    pub server_pids: Vec<u32>,
    /// `fanout`: run at each phase, the phase's name appended (`--phase-cmd`).
    pub phase_cmd: Option<String>,
    pub workers: Option<usize>,
    pub max_per_worker: usize,
    pub conns_per_ip: usize,
    pub connect_concurrency: usize,
    pub http_concurrency: usize,
    pub attach_timeout: Duration,
    pub label: String,
    pub cleanup: bool,
    /// No progress line and no notes on stderr (errors still).
    pub quiet: bool,
    /// The run's name for nchan channels and rooms (`--channel`, else one per run).
    pub channel: String,
    /// nchan's subscribe and publish URLs, `{channel}` not yet replaced (rooms mode).
    pub sub_url: String,
    pub pub_url: String,
}
