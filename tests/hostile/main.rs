//! Hostile and broken clients against the real binary (issue 9): for each attack, a legitimate
//! client (healthz, helo, attach, response) is still served during it and afterwards.
//!
//! The server runs with a low open-file limit (set in the child before exec), so an attack that
//! holds sockets would exhaust the connection budget quickly. Every wait is bounded. The
//! clients here speak raw HTTP/1.1 over their own sockets: the attacks are on the wire format
//! (`tls`: the same against the TLS listener).

mod attach;
mod bytes;
mod client;
mod flood;
mod headers;
mod malformed;
mod paths;
mod server;
mod stalled;
mod tls;

#[path = "../support/mod.rs"]
mod support;
