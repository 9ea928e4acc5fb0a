//! Reading a session's stream in a test: [`SseReader`] over `switchboard-client`'s parsed
//! [`EventStream`], every read bounded and every event checked against its schema in
//! `openapi.yaml`; [`RawStream`] for the bytes the parser would hide.

use std::pin::Pin;
use std::sync::LazyLock;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use switchboard_client::EventStream;
pub use switchboard_client::Frame as SseEvent;
use tokio::time::timeout;

use super::{Session, SessionExt, WAIT};

/// An attached stream; every read is bounded, and failures name the stream by its label.
pub struct SseReader {
    /// Says whose stream this is in failure messages.
    pub label: String,
    pub headers: HeaderMap,
    events: EventStream,
}

impl SseReader {
    /// Wraps a `200` event-stream response made by hand (e.g. with the token in the query).
    pub async fn new(response: Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK, "attach");
        let events = EventStream::from_response(response)
            .await
            .expect("a 200 answer");
        SseReader::from_events("the stream".to_owned(), events)
    }

    /// Wraps a stream `switchboard-client` opened; it must say `text/event-stream`.
    pub fn from_events(label: String, events: EventStream) -> Self {
        let headers = events.headers().clone();
        assert_eq!(
            headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("text/event-stream"),
            "{label}"
        );
        SseReader {
            label,
            headers,
            events,
        }
    }

    /// The next event, or `None` when the stream ended; `Err` when none came within `wait`.
    pub async fn try_next(
        &mut self,
        wait: Duration,
    ) -> Result<Option<SseEvent>, tokio::time::error::Elapsed> {
        let item = timeout(wait, self.events.next()).await?;
        Ok(item.map(|frame| {
            let frame =
                frame.unwrap_or_else(|e| panic!("{}: a well-formed event stream: {e}", self.label));
            check_schema(&self.label, &frame);
            frame
        }))
    }

    /// The next event; fails the test if the stream ends or nothing comes within [`WAIT`].
    pub async fn next(&mut self) -> SseEvent {
        self.next_within(WAIT).await
    }

    /// The next event; fails the test if the stream ends or nothing comes within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> SseEvent {
        match self.try_next(wait).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("{}: ended while an event was expected", self.label),
            Err(_) => panic!("{}: no event within {wait:?}", self.label),
        }
    }

    /// The next event, which must be named `name`; returns it.
    pub async fn next_named(&mut self, name: &str) -> SseEvent {
        let event = self.next().await;
        assert_eq!(
            event.event, name,
            "{}: unexpected event {event:?}",
            self.label
        );
        event
    }

    /// Reads the `ready` event, which must come without an id, and returns its data.
    pub async fn ready(&mut self) -> Value {
        let ready = self.next_named("ready").await;
        assert_eq!(ready.id, None, "ready carries no id");
        ready.data
    }

    /// Asserts the stream ends (the server closed it) within [`WAIT`], with no further event.
    pub async fn expect_end(&mut self) {
        match self.try_next(WAIT).await {
            Ok(None) => {}
            Ok(Some(event)) => panic!("expected the stream to end, got {event:?}"),
            Err(_) => panic!("the stream was still open after {WAIT:?}"),
        }
    }

    /// Reads until the server ends the stream (within [`WAIT`]); the events read meanwhile.
    pub async fn until_end(&mut self) -> Vec<SseEvent> {
        let mut frames = Vec::new();
        loop {
            match self.try_next(WAIT).await {
                Err(_) => panic!("{}: still open after {WAIT:?}", self.label),
                Ok(None) => return frames,
                Ok(Some(frame)) => frames.push(frame),
            }
        }
    }

    /// Asserts nothing arrives for `quiet`. Only for absences no later event can prove.
    pub async fn expect_no_event_within(&mut self, quiet: Duration) {
        match self.try_next(quiet).await {
            Err(_) => {}
            Ok(Some(event)) => panic!("expected silence, got {event:?}"),
            Ok(None) => panic!("expected silence, the stream ended"),
        }
    }

    /// The next event is `new_user` for `who`; returns its id.
    pub async fn expect_new_user(&mut self, who: &Session) -> u64 {
        let frame = self.next().await;
        assert_eq!(
            (frame.event.as_str(), &frame.data),
            ("new_user", &who.member("lobby")),
            "{}",
            self.label
        );
        frame.id.expect("new_user has an id")
    }

    /// The next event is the `client_response` with `event_id` from `from` to `to`.
    pub async fn expect_response(
        &mut self,
        event_id: u64,
        from: &Session,
        to: &Session,
        message: &Value,
    ) {
        let frame = self.next().await;
        assert_eq!(frame.event, "client_response", "{}: {frame:?}", self.label);
        assert_eq!(
            frame.id,
            Some(event_id),
            "{}: the 202's event_id",
            self.label
        );
        assert_eq!(
            frame.data,
            json!({"from": from.id, "from_name": from.name, "recipient": to.id, "message": message})
        );
    }
}

/// The raw bytes of a response body, for wire-format assertions the parser would hide.
pub struct RawStream {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    bytes: Vec<u8>,
    /// Everything read so far, as text.
    pub text: String,
}

impl RawStream {
    pub fn new(response: Response) -> Self {
        RawStream {
            body: Box::pin(response.bytes_stream()),
            bytes: Vec::new(),
            text: String::new(),
        }
    }

    /// Reads until the text received so far contains `needle` (counting from `from`); returns
    /// the index just past its first occurrence. Fails the test after [`WAIT`].
    pub async fn read_until(&mut self, from: usize, needle: &str) -> usize {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(at) = self.text[from..].find(needle) {
                return from + at + needle.len();
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{needle:?} did not arrive within {WAIT:?}; got {:?}",
                        self.text
                    )
                })
                .expect("the stream ended early")
                .expect("reading the body");
            // A chunk may end inside a character; decode everything read so far.
            self.bytes.extend_from_slice(&chunk);
            self.text = String::from_utf8_lossy(&self.bytes).into_owned();
        }
    }
}

/// `openapi.yaml`'s `StreamEvent` (OpenAPI 3.1 schemas are JSON Schema 2020-12), built once
/// per test binary.
static STREAM_EVENT: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let mut root: Value = serde_norway::from_str(include_str!("../../openapi.yaml"))
        .expect("openapi.yaml is valid YAML");
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
    root["$ref"] = "#/components/schemas/StreamEvent".into();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .expect("openapi.yaml's StreamEvent is a valid schema")
});

/// Fails the test when `frame` does not match its schema in `openapi.yaml`, so every event any
/// test reads is checked against the documented contract.
fn check_schema(label: &str, frame: &SseEvent) {
    let mut item = json!({ "event": frame.event, "data": frame.data });
    if let Some(id) = frame.id {
        item["id"] = id.into();
    }
    let errors: Vec<String> = STREAM_EVENT
        .iter_errors(&item)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{label}: {item} does not match openapi.yaml's StreamEvent: {errors:?}"
    );
}
