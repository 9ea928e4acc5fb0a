//! The route table: every (method, path template) the API serves and the statuses it answers,
//! which drives the metrics labels (each series from 0), the `Allow` header of a 405 and the
//! docs checks; and the headers every response carries, on both connection paths.

use crate::metrics::Metrics;

/// Every route the API serves, as (method, path template, the statuses it answers).
/// `openapi.yaml` must list exactly these routes and, for each, exactly these responses beside
/// `default` (tests check both directions). Metrics label requests by these templates, and
/// count each (route, status) here from 0 at start, so a dashboard has every series before the
/// first request; any other status (405, a preflight's 204, a 500) is counted when it happens.
pub const ROUTES: &[(&str, &str, &[u16])] = &[
    (
        "POST",
        "/helo",
        &[201, 400, 401, 403, 408, 409, 411, 413, 415, 429, 503],
    ),
    ("GET", "/events/{id}", &[200, 400, 401, 404, 429, 503]),
    (
        "POST",
        "/response",
        &[202, 400, 401, 403, 404, 408, 411, 413, 415, 422, 429, 503],
    ),
    (
        "POST",
        "/broadcast",
        &[202, 400, 401, 403, 408, 411, 413, 415, 429, 503],
    ),
    ("DELETE", "/session", &[204, 401, 503]),
    ("POST", "/session/ticket", &[201, 401, 429, 503]),
    (
        "POST",
        "/session/refresh",
        &[200, 400, 401, 403, 408, 411, 413, 415, 503],
    ),
    (
        "PUT",
        "/session/rooms/{room}",
        &[200, 400, 401, 403, 409, 503],
    ),
    (
        "DELETE",
        "/session/rooms/{room}",
        &[204, 400, 401, 404, 503],
    ),
    ("GET", "/clients", &[200, 400, 401, 429, 503]),
    (
        "GET",
        "/rooms/{room}/members",
        &[200, 400, 401, 403, 429, 503],
    ),
    ("POST", "/api/publish", &[202, 400, 401, 404, 429, 503]),
    ("POST", "/api/disconnect", &[200, 400, 401, 404, 503]),
    ("POST", "/api/refresh", &[200, 400, 401, 404, 503]),
    ("GET", "/api/sessions", &[200, 400, 401, 503]),
    ("GET", "/api/stats", &[200, 401]),
    ("GET", "/api/rooms", &[200, 400, 401, 503]),
    ("GET", "/api/rooms/{room}/members", &[200, 400, 401, 503]),
    (
        "PUT",
        "/api/rooms/{room}/members",
        &[200, 400, 401, 404, 409, 503],
    ),
    (
        "DELETE",
        "/api/rooms/{room}/members",
        &[200, 400, 401, 404, 503],
    ),
    ("GET", "/healthz", &[200, 503]),
    ("GET", "/readyz", &[200, 503]),
    ("GET", "/metrics", &[200]),
    ("GET", "/openapi.yaml", &[200]),
    ("GET", "/admin", &[200, 304, 404]),
    ("GET", "/", &[200, 304, 404]),
];

/// The label of every path no route serves: the web client's other files, and 404s.
const STATIC: &str = "static";
/// What [`STATIC`] answers: a file, a file not modified since the client's copy, none.
const STATIC_STATUSES: &[u16] = &[200, 304, 404];

/// Creates every route's request series (each status in [`ROUTES`], and [`STATIC`]'s) and its
/// duration histogram at 0.
pub(crate) fn count_from_zero(metrics: &Metrics) {
    let routes = ROUTES
        .iter()
        .map(|&(_, template, statuses)| (template, statuses));
    for (route, statuses) in routes.chain([(STATIC, STATIC_STATUSES)]) {
        metrics.http_series(route, statuses);
    }
}

/// Headers on every response, from both connection paths: no MIME sniffing, the page's code
/// only from this origin (no inline code), never framed, and no `Referer` leaked onwards.
pub(crate) const SECURITY_HEADERS: [(&str, &str); 3] = [
    ("x-content-type-options", "nosniff"),
    (
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
];

/// The `Allow` value for a path: the methods its route serves (`HEAD` with every `GET`).
pub(crate) fn allowed_methods(path: &str) -> String {
    let template = route_of(path);
    let methods: Vec<&str> = ROUTES
        .iter()
        .filter(|&&(_, t, _)| t == template)
        .flat_map(|&(method, _, _)| match method {
            "GET" => vec!["GET", "HEAD"],
            other => vec![other],
        })
        .collect();
    methods.join(", ")
}

/// The route template a concrete path belongs to, for metrics labels: a `{...}` segment of a
/// template matches any one non-empty segment.
pub(crate) fn route_of(path: &str) -> &'static str {
    let matches = |template: &str| {
        let (mut want, mut got) = (template.split('/'), path.split('/'));
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some(w), Some(g)) if w.starts_with('{') => {
                    if g.is_empty() {
                        return false;
                    }
                }
                (Some(w), Some(g)) if w == g => {}
                _ => return false,
            }
        }
    };
    ROUTES
        .iter()
        .map(|&(_, template, _)| template)
        .find(|template| matches(template))
        .unwrap_or(STATIC)
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn paths_map_to_their_templates() {
        assert_eq!(route_of("/helo"), "/helo");
        assert_eq!(route_of("/events/abc"), "/events/{id}");
        assert_eq!(route_of("/events/abc/def"), "static");
        assert_eq!(route_of("/events/"), "static");
        assert_eq!(route_of("/session/rooms/dev"), "/session/rooms/{room}");
        assert_eq!(route_of("/rooms/dev/members"), "/rooms/{room}/members");
        assert_eq!(route_of("/api/rooms"), "/api/rooms");
        assert_eq!(
            route_of("/api/rooms/dev/members"),
            "/api/rooms/{room}/members"
        );
        assert_eq!(route_of("/session"), "/session");
        assert_eq!(route_of("/app.js"), "static");
    }
}
