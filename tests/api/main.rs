//! HTTP API tests: each starts the real server on an ephemeral port (see `helpers`) and talks
//! to it over 127.0.0.1 with reqwest, reading streams with `eventsource-stream`.

mod broadcast;
mod concurrency;
mod errors;
mod helo;
mod helpers;
mod lifetime;
mod misc;
mod presence;
mod replay;
mod response;
mod shutdown;
mod stream;
