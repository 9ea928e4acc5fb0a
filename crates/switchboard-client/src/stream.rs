//! [`EventStream`]: an attached session's stream, read as [`Frame`]s.

use std::pin::Pin;
use std::task::{Context, Poll};

use eventsource_stream::{Event as RawEvent, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};

use crate::{Error, Frame, status_error};

type RawEvents =
    Pin<Box<dyn Stream<Item = Result<RawEvent, EventStreamError<reqwest::Error>>> + Send>>;

/// An attached session's stream: a [`Stream`] of [`Frame`]s that ends when the server closes
/// it (takeover, `DELETE /session`, expiry, shutdown). Comments (the keep-alive) are skipped.
pub struct EventStream {
    headers: HeaderMap,
    events: RawEvents,
    last_event_id: Option<u64>,
}

impl EventStream {
    /// Wraps the answer to `GET /events/{id}` made by other means.
    ///
    /// # Errors
    /// [`Error::Status`] unless the answer is `200`.
    pub async fn from_response(response: Response) -> Result<EventStream, Error> {
        if response.status() != StatusCode::OK {
            return Err(status_error(response).await);
        }
        Ok(EventStream {
            headers: response.headers().clone(),
            events: Box::pin(response.bytes_stream().eventsource()),
            last_event_id: None,
        })
    }

    /// The answer's headers (`content-type: text/event-stream`, `cache-control`, ...).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The id of the last event read, to pass to [`Client::attach`] when resuming.
    pub fn last_event_id(&self) -> Option<u64> {
        self.last_event_id
    }
}

impl Stream for EventStream {
    type Item = Result<Frame, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let raw = match self.events.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(EventStreamError::Transport(err)))) => {
                return Poll::Ready(Some(Err(Error::Http(err))));
            }
            Poll::Ready(Some(Err(err))) => {
                return Poll::Ready(Some(Err(Error::Stream(err.to_string()))));
            }
            Poll::Ready(Some(Ok(raw))) => raw,
        };
        let id = if raw.id.is_empty() {
            None
        } else {
            match raw.id.parse() {
                Ok(id) => Some(id),
                Err(_) => {
                    let err = Error::Stream(format!("event id {:?} is not a number", raw.id));
                    return Poll::Ready(Some(Err(err)));
                }
            }
        };
        if id.is_some() {
            self.last_event_id = id;
        }
        let frame = serde_json::from_str(&raw.data)
            .map(|data| Frame {
                id,
                event: raw.event.clone(),
                data,
            })
            .map_err(|source| Error::Data {
                event: raw.event,
                source,
            });
        Poll::Ready(Some(frame))
    }
}
