//! What of a request may be logged: its URI with any `token` query value replaced.
//!
//! Both connection paths (`lean` and hyper's, in `server`) name their request spans with this,
//! so a token sent as `?token=` never reaches a log line.

use warp::http::Uri;

/// The URI with any `token` query parameter's value replaced, for logs and traces.
pub(crate) fn redact(uri: &Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("token", _)) => "token=REDACTED".to_owned(),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}?{}", uri.path(), query.join("&"))
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
        let uri: Uri = "/clients".parse().unwrap();
        assert_eq!(redact(&uri), "/clients");
    }
}
