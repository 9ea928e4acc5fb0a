//! The route table: every (method, path template) the API serves, which drives the metrics
//! labels, the `Allow` header of a 405 and the docs checks; and the headers every response
//! carries, on both connection paths.

/// Every route the API serves, as (method, path template). `openapi.yaml` must list exactly
/// these (a test checks both directions), and metrics label requests by these templates.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/helo"),
    ("GET", "/events/{id}"),
    ("POST", "/response"),
    ("POST", "/broadcast"),
    ("DELETE", "/session"),
    ("PUT", "/session/rooms/{room}"),
    ("DELETE", "/session/rooms/{room}"),
    ("GET", "/clients"),
    ("GET", "/rooms/{room}/members"),
    ("POST", "/api/publish"),
    ("POST", "/api/disconnect"),
    ("GET", "/api/sessions"),
    ("GET", "/api/rooms"),
    ("GET", "/api/rooms/{room}/members"),
    ("PUT", "/api/rooms/{room}/members"),
    ("DELETE", "/api/rooms/{room}/members"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.yaml"),
    ("GET", "/"),
];

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
        .filter(|&&(_, t)| t == template)
        .flat_map(|&(method, _)| match method {
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
        .map(|&(_, template)| template)
        .find(|template| matches(template))
        .unwrap_or("static")
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
