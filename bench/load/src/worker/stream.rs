//! Attached SSE streams: connect, read the head (and `ready`), then count every event and its
//! latency until the process exits.

use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::timeout;

use super::shared::helo_then_events;
use super::state::*;
use crate::http::{self, Endpoint, SseStart};
use crate::proto::{Report, source_ip};
use crate::sse::{EventKind, SseDecoder, json_u64, stamp};
use crate::sys;

/// Bytes read from a stream socket at once.
pub(super) const READ_BUF: usize = 4096;

/// An attached SSE stream.
pub(super) struct Stream {
    sock: TcpStream,
    dec: SseDecoder,
    buf: Vec<u8>,
    ready: bool,
    last_seq: u64,
}

impl Stream {
    /// Connects, reads the head and, for switchboard, waits for `ready`.
    pub(super) async fn attach(
        st: &State,
        ep: &Endpoint,
        path: &str,
        src: Ipv4Addr,
        wait_ready: bool,
    ) -> std::io::Result<Self> {
        Self::start(st, http::open_sse(ep, Some(src), path).await?, wait_ready).await
    }

    /// Takes over a stream whose response head was read; for switchboard, waits for `ready`.
    async fn start(st: &State, start: SseStart, wait_ready: bool) -> std::io::Result<Self> {
        let mut s = Stream {
            sock: start.stream,
            dec: SseDecoder::new(start.chunked),
            buf: vec![0; READ_BUF],
            ready: !wait_ready,
            last_seq: 0,
        };
        s.consume(st, None, &start.leftover);
        while !s.ready {
            if !s.pump(st, None).await? {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "stream ended before ready",
                ));
            }
        }
        Ok(s)
    }

    /// Reads once; false when the stream ended.
    pub(super) async fn pump(&mut self, st: &State, slot: Option<usize>) -> std::io::Result<bool> {
        let n = http::read_some(&self.sock, &mut self.buf).await?;
        if n == 0 {
            return Ok(false);
        }
        let buf = std::mem::take(&mut self.buf);
        self.consume(st, slot, &buf[..n]);
        self.buf = buf;
        Ok(!self.dec.finished())
    }

    pub(super) fn consume(&mut self, st: &State, slot: Option<usize>, bytes: &[u8]) {
        let Stream {
            dec,
            ready,
            last_seq,
            ..
        } = self;
        let mut c = st.c.borrow_mut();
        c.bytes += bytes.len() as u64;
        dec.feed(bytes, &mut |kind, data| match kind {
            EventKind::Ready => {
                *ready = true;
                c.other_events += 1;
            }
            EventKind::ClientBroadcast | EventKind::ClientResponse | EventKind::Message => {
                let Some((t, seq)) = stamp(data) else {
                    c.other_events += 1;
                    return;
                };
                let now = sys::now_us();
                c.received += 1;
                if c.first_us == 0 {
                    c.first_us = now;
                }
                c.last_us = now;
                if seq <= *last_seq {
                    c.dup += 1;
                }
                *last_seq = seq;
                let _ = st.latency.borrow_mut().record(now.saturating_sub(t).max(1));
                if let Some(i) = slot {
                    st.counts[i].set(st.counts[i].get() + 1);
                }
            }
            EventKind::Lagged => {
                c.lagged_events += 1;
                c.lagged_missed += json_u64(data, b"\"missed\"").unwrap_or(0);
            }
            _ => c.other_events += 1,
        });
    }
}

/// `text` with the value of any `token=` query parameter replaced.
pub(super) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("token=") {
        out.push_str(&rest[..i + 6]);
        out.push_str("REDACTED");
        rest = &rest[i + 6..];
        let end = rest.find(['&', ' ', ':', '"']).unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// How a stream's connection begins.
#[derive(Debug, Clone)]
pub(super) enum Open {
    /// `GET path` on a new connection.
    Get(String),
    /// As a browser: `POST /helo`, then `GET /events/…` on the same keep-alive connection; the
    /// session goes to the stream's slot of `State::sessions`.
    Helo,
}

impl Open {
    /// What errors name: the path without its query, which holds the session's token.
    fn shown(&self) -> String {
        match self {
            Open::Get(path) => path.split('?').next().unwrap_or_default().to_string(),
            Open::Helo => "/helo + /events".to_string(),
        }
    }
}

/// Opens one stream per entry of `opens`, `slot` = index; reports `Attached` when all are
/// attached or failed. Streams then keep reading until the process exits.
pub(super) async fn attach_all(st: &Rc<State>, ep: &Endpoint, opens: Vec<Open>, wait_ready: bool) {
    let t0 = Instant::now();
    st.attach_expected.set(opens.len());
    let sem = Rc::new(Semaphore::new(st.job.connect_concurrency.max(1)));
    let attach_timeout = Duration::from_millis(st.job.attach_timeout_ms);
    let total = opens.len();
    for (i, open) in opens.into_iter().enumerate() {
        let (st, sem, ep) = (st.clone(), sem.clone(), ep.clone());
        let shown = open.shown();
        let src = source_ip(st.job.first + i, st.job.conns_per_ip);
        tokio::task::spawn_local(async move {
            let permit = sem.acquire().await;
            let r = timeout(attach_timeout, async {
                let start = match &open {
                    Open::Get(path) => http::open_sse(&ep, Some(src), path).await?,
                    Open::Helo => helo_then_events(&st, &ep, i, src).await?,
                };
                Stream::start(&st, start, wait_ready).await
            })
            .await;
            drop(permit);
            let mut s = match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    st.error(format_args!("attach {shown}: {}", redact(&e.to_string())));
                    st.attach_result(false);
                    return;
                }
                Err(_) => {
                    st.error(format_args!("attach {shown}: timed out"));
                    st.attach_result(false);
                    return;
                }
            };
            st.attach_result(true);
            while let Ok(true) = s.pump(&st, Some(i)).await {}
            st.c.borrow_mut().closed += 1;
        });
    }
    if total > 0 {
        st.attach_done.notified().await;
    }
    emit(&Report::Attached {
        ok: st.attached.get(),
        failed: st.attach_failed.get(),
        secs: t0.elapsed().as_secs_f64(),
        error: st.first_error.borrow().clone(),
    });
}
