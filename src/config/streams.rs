//! The stream credential flags, one group of [`Config`](super::Config): whether a session
//! token may still travel in a stream's URL, and how long a stream ticket lives.

use std::time::Duration;

use clap::{Args, ValueEnum};

/// The stream credential flags; see [`Config`](super::Config) for how they are read.
#[derive(Clone, Debug, Args, PartialEq)]
pub struct StreamAuthFlags {
    /// Whether `GET /events/{id}?token=` is accepted (curl, old clients). `off`: a stream is
    /// opened with the session cookie, a ticket or the `Authorization` header only, so no
    /// session token ever stands in a URL that a proxy logs.
    #[arg(long, env = "SWITCHBOARD_URL_TOKENS", value_enum, default_value_t = UrlTokens::On)]
    pub url_tokens: UrlTokens,

    /// How long a stream ticket (`POST /session/ticket`, used once as `?ticket=`) lives.
    #[arg(long, env = "SWITCHBOARD_TICKET_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub ticket_ttl: Duration,
}

/// `--url-tokens`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum UrlTokens {
    /// `?token=` opens a stream.
    #[default]
    On,
    /// `?token=` is refused (401).
    Off,
}

impl Default for StreamAuthFlags {
    fn default() -> Self {
        StreamAuthFlags {
            url_tokens: UrlTokens::On,
            ticket_ttl: Duration::from_secs(60),
        }
    }
}
