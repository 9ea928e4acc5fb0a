//! Value parsers for flags whose text needs more than `FromStr`: each error names what was
//! wrong, and clap prints it after the flag's name.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use clap::ValueEnum;
use ipnet::IpNet;
use tracing_subscriber::EnvFilter;

use super::LogFormat;
use crate::identity::RoomPattern;

/// `--listen`: what people type. A port alone stays on the loopback address, so exposing the
/// server is always written out (`0.0.0.0:4000`); a host name is resolved once, preferring
/// IPv4 (`localhost` is `127.0.0.1`, as in the README's URLs).
///
/// # Errors
/// A message naming what was wrong, which clap prints after the flag's name.
pub fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    let value = value.trim();
    let port_only = value.strip_prefix(':').unwrap_or(value);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!(
            "expected host:port or a port, e.g. localhost:4000, 0.0.0.0:4000, [::1]:4000 or 4000; got `{value}`"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{port}` is not a port number (0-65535)"))?;
    if host.is_empty() || host.contains(':') && !host.starts_with('[') {
        return Err(format!(
            "`{value}` is ambiguous: write an IPv6 address in brackets, e.g. [::1]:4000"
        ));
    }
    let resolved: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve `{host}`: {err}"))?
        .collect();
    resolved
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("`{host}` resolves to no address"))
}

/// `--log`: a valid `EnvFilter`, checked here so a typo stops the start instead of silently
/// logging at another level. A format name is refused too: `json` alone is a valid filter
/// (every event of a target named `json`), which would silence every line.
///
/// # Errors
/// `EnvFilter`'s explanation, or a hint towards `--log-format`.
pub fn parse_log_filter(value: &str) -> Result<String, String> {
    if LogFormat::from_str(value, true).is_ok() {
        return Err(format!(
            "`{value}` is a log format, not a filter: use --log-format {value}"
        ));
    }
    EnvFilter::try_new(value)
        .map(|_| value.to_owned())
        .map_err(|err| {
            format!("not a valid log filter ({err}); e.g. info, debug, switchboard=debug,warn")
        })
}

/// One `--trusted-proxies` entry: a CIDR block, or one address (a /32 or /128).
pub(super) fn parse_proxy(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not an address or a CIDR block such as 10.0.0.0/8"))
}

/// One `--cors-origin` entry: trimmed, not `*`, and usable as a header value.
pub(super) fn parse_origin(text: &str) -> Result<String, String> {
    let origin = text.trim();
    if origin == "*" {
        return Err(
            "`*` is not supported: list each allowed origin, e.g. https://app.example".into(),
        );
    }
    let not_an_origin = || format!("{origin:?} is not an origin such as https://app.example");
    if origin.is_empty() || warp::http::HeaderValue::from_str(origin).is_err() {
        return Err(not_an_origin());
    }
    // What a browser sends in `Origin`: a scheme and a host (and port), nothing after; an entry
    // with a path or a trailing `/` would never match and so silently allow nobody.
    let Some((scheme, host)) = origin.split_once("://") else {
        return Err(not_an_origin());
    };
    if scheme.is_empty() || host.is_empty() || host.contains(['@', '?', '#']) {
        return Err(not_an_origin());
    }
    if let Some(at) = host.find('/') {
        return Err(format!(
            "{origin:?} has a path; an origin is scheme, host and port only: {scheme}://{}",
            &host[..at]
        ));
    }
    Ok(origin.to_owned())
}

/// A room name or `prefix*` pattern of `--allow-rooms`.
///
/// # Errors
/// The room rule the pattern breaks.
pub(crate) fn parse_room_pattern(raw: &str) -> Result<RoomPattern, String> {
    RoomPattern::parse(raw.trim()).map_err(|err| format!("a room pattern {err}"))
}
