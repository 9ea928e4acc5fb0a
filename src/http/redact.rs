//! What of a request may be logged: its URI with any `token` or `ticket` query value replaced.
//!
//! Both connection paths (`lean` and hyper's, in `server`) open their request spans with
//! [`request_span`], so a token sent as `?token=` never reaches a log line.

use std::fmt::Display;

use tracing::Span;
use warp::http::Uri;

/// The span a request is served in, on either path.
pub(crate) fn request_span(method: &dyn Display, uri: &Uri) -> Span {
    tracing::debug_span!("http", method = %method, uri = %redact(uri))
}

/// The URI with the value of every query parameter whose *decoded* name is `token` or `ticket` (in any
/// case: `%74oken`, `TOKEN`) replaced, for logs and traces. A query the parser cannot decode is
/// left out altogether: what it holds cannot be told apart, so none of it is logged.
pub(crate) fn redact(uri: &Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(query) else {
        return format!("{}?<undecodable query>", uri.path());
    };
    let pairs: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(name, value)| {
            let name_is = |secret: &str| name.trim().eq_ignore_ascii_case(secret);
            if name_is("token") || name_is("ticket") {
                (name, "REDACTED".to_owned())
            } else {
                (name, value)
            }
        })
        .collect();
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    format!("{}?{}", uri.path(), query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_queries_are_redacted() {
        let uri: Uri = "/events/x?last_event_id=3&token=secret.abc"
            .parse()
            .unwrap();
        assert_eq!(redact(&uri), "/events/x?last_event_id=3&token=REDACTED");
        let uri: Uri = "/events/x?ticket=abc".parse().unwrap();
        assert_eq!(redact(&uri), "/events/x?ticket=REDACTED");
        for spelling in ["%74oken", "tok%65n", "TOKEN", "%54oken"] {
            let uri: Uri = format!("/events/x?{spelling}=secret.abc").parse().unwrap();
            assert!(
                !redact(&uri).contains("secret"),
                "{spelling}: {}",
                redact(&uri)
            );
        }
        let uri: Uri = "/events/x?token=secret.abc&%FF=1".parse().unwrap();
        assert!(!redact(&uri).contains("secret"));
        let uri: Uri = "/clients".parse().unwrap();
        assert_eq!(redact(&uri), "/clients");
    }
}
