//! HTTP API tests: each starts the real server on an ephemeral port (see `support::server`) and
//! talks to it over 127.0.0.1, with `switchboard-client` for ordinary calls and reqwest for
//! hand-shaped requests. With `TEST_REDIS_URL` set, every test runs in cluster mode.

mod auth;
mod broadcast;
mod concurrency;
mod errors;
mod expiry;
mod helo;
mod idempotency;
mod lifetime;
mod limits;
mod mailbox;
mod misc;
mod names;
mod presence;
mod replay;
mod response;
mod rooms;
mod rooms_api;
mod server_api;
mod session_tokens;
mod shutdown;
mod spec;
mod stream;
mod stream_auth;

#[path = "../support/mod.rs"]
mod support;
