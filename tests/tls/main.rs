//! The TLS listener of the real binary (`--tls-cert`, `--tls-key`, issue 26): HTTP/1.1 and
//! HTTP/2 clients agreeing their protocol by ALPN, a certificate replaced while the server
//! runs, and the one-line refusals of a start without a usable pair.

mod flow;
mod reload;
mod serving;

#[path = "../support/mod.rs"]
mod support;
