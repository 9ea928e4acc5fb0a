//! `GET /api/stats` read as the admin console reads it: each `stats` event's data, checked
//! against `openapi.yaml`'s `StatsEvent`, every read bounded.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use super::{Endpoint, TEST_API_KEY, WAIT, send};

/// `openapi.yaml`'s `StatsEvent`, built once per test binary.
static STATS_EVENT: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let mut root: Value = serde_norway::from_str(include_str!("../../openapi.yaml"))
        .expect("openapi.yaml is valid YAML");
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
    root["$ref"] = "#/components/schemas/StatsEvent".into();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .expect("openapi.yaml's StatsEvent is a valid schema")
});

/// An open `/api/stats` stream.
pub struct StatsStream {
    response: Response,
    buffered: String,
}

impl StatsStream {
    /// Opens `app`'s stats stream with the test API key; it must answer 200, an event stream.
    pub async fn open(app: &Endpoint) -> StatsStream {
        let request = app
            .client
            .get(app.url("/api/stats"))
            .bearer_auth(TEST_API_KEY);
        let response = send(request).await;
        assert_eq!(response.status(), StatusCode::OK, "GET /api/stats");
        assert_eq!(
            response.headers()[CONTENT_TYPE].to_str().unwrap(),
            "text/event-stream"
        );
        StatsStream {
            response,
            buffered: String::new(),
        }
    }

    /// The next `stats` event's data, within [`WAIT`]; it must match `StatsEvent`.
    pub async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffered.find("\n\n") {
                let frame: String = self.buffered.drain(..end + 2).collect();
                let event = frame.lines().find_map(|l| l.strip_prefix("event: "));
                let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
                let item = json!({
                    "event": event.expect("every frame names its event"),
                    "data": serde_json::from_str::<Value>(data.expect("every frame has data"))
                        .expect("the data is JSON"),
                });
                let errors: Vec<String> = STATS_EVENT
                    .iter_errors(&item)
                    .map(|e| e.to_string())
                    .collect();
                assert!(errors.is_empty(), "{item} is not a StatsEvent: {errors:?}");
                return item["data"].clone();
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("a stats event within WAIT")
                .expect("reading the stats stream")
                .expect("the stats stream went on");
            self.buffered
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// Every event left until the server ends the stream, which it must within `limit`.
    pub async fn rest(mut self, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        let mut events = Vec::new();
        loop {
            while self.buffered.contains("\n\n") {
                events.push(self.next().await);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .expect("the stats stream ends within the limit")
                .expect("reading the stats stream");
            match chunk {
                Some(chunk) => self
                    .buffered
                    .push_str(std::str::from_utf8(&chunk).expect("UTF-8")),
                None => return events,
            }
        }
    }

    /// Reads figures until one satisfies `ready`, for at most `WAIT` after the call.
    pub async fn until(&mut self, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let figures = self.next().await;
            if ready(&figures) {
                return figures;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {what}; last figures {figures}"
            );
        }
    }
}
