//! The session lifetime flags, one group of [`Config`](super::Config): how long a session may
//! live after its join, whatever its streams do.

use std::time::Duration;

use clap::Args;

/// The session lifetime flags; see [`Config`](super::Config) for how they are read.
#[derive(Clone, Debug, Default, Args, PartialEq)]
pub struct SessionFlags {
    /// Longest a session lives after its join (e.g. 8h), streaming or not, in any `--auth`
    /// mode; with `--auth jwt` it also caps what a refreshed join token may grant. The session
    /// gets `refresh_required`, then `expired`. The server API (`POST /api/refresh`) is not
    /// held to it. Default: off.
    #[arg(long, env = "SWITCHBOARD_MAX_SESSION_AGE", value_parser = humantime::parse_duration)]
    pub max_session_age: Option<Duration>,
}
