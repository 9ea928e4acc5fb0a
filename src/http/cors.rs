//! The CORS policy both connection paths apply: which origins may read the answers. hyper's
//! path gets it through tower-http's `CorsLayer` (preflights, the response headers); `lean`,
//! which answers only stream requests and writes its head itself, asks [`Origins::allows`] to
//! echo the origin.
//!
//! Allowed origins may send every header `switchboard.js` sends (`Idempotency-Key` on a direct
//! message included) and read the answers' `Retry-After` (when to try a 429 or 503 again) and
//! `Link` (the next page of `GET /clients`), which a browser hides from other origins unless
//! exposed.

use std::sync::Arc;

use tower_http::cors::{AllowOrigin, CorsLayer};
use warp::http::{HeaderName, Method, header};

/// The origins `--cors-origin` allows; none: same origin only.
#[derive(Clone, Default)]
pub(crate) struct Origins(Arc<[String]>);

impl Origins {
    pub(crate) fn new(origins: &[String]) -> Self {
        Origins(origins.into())
    }

    /// Whether a request from `origin` may read the answer.
    pub(crate) fn allows(&self, origin: &[u8]) -> bool {
        self.0.iter().any(|allowed| allowed.as_bytes() == origin)
    }

    /// The layer for hyper's path; `None` without origins (no CORS headers at all).
    pub(crate) fn layer(&self) -> Option<CorsLayer> {
        if self.0.is_empty() {
            return None;
        }
        let origins = self.clone();
        Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::predicate(move |origin, _| {
                    origins.allows(origin.as_bytes())
                }))
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static("idempotency-key"),
                    HeaderName::from_static("last-event-id"),
                ])
                .expose_headers([header::RETRY_AFTER, header::LINK]),
        )
    }
}
