//! Streams asked for on a connection that hyper serves move to [`lean`](super::lean).
//!
//! A browser sends `GET /app.js`, `POST /helo` and then the EventSource's `GET /events/...` on
//! one keep-alive connection, so its stream reaches hyper, whose connection holds an 8 KiB
//! read buffer and an 8 KiB write buffer for its whole life: such a stream cost 16.5 KB
//! instead of the lean path's 6.4 KB (measured with 5,000 streams). So hyper never answers a
//! stream: its service hands the request head to the connection's task and never responds;
//! the task drops the hyper connection (and its buffers) and gives the socket to `lean`,
//! which answers as it answers a stream on a fresh connection.
//!
//! hyper owns the socket it serves, and dropping the connection would close it; it is given a
//! [`SharedSocket`] instead, and the task keeps the other handle.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use warp::http::request::Parts;
use warp::http::{Method, Request};

/// The request that asked for a stream, sent once from hyper's service to the task.
pub(crate) type Handed = oneshot::Receiver<Parts>;

/// The service's end: takes the first stream request of the connection.
#[derive(Clone)]
pub(crate) struct Takeover(Arc<Mutex<Option<oneshot::Sender<Parts>>>>);

impl Takeover {
    /// A connection's pair: the service keeps the [`Takeover`], the task awaits [`Handed`].
    pub(crate) fn new() -> (Self, Handed) {
        let (send, handed) = oneshot::channel();
        (Takeover(Arc::new(Mutex::new(Some(send)))), handed)
    }

    /// Hands `request` to the task when it asks for a stream (as [`lean::claims`] decides
    /// for a new connection); gives it back otherwise, for hyper to answer.
    ///
    /// [`lean::claims`]: super::lean::claims
    pub(crate) fn take<B>(&self, request: Request<B>) -> Option<Request<B>> {
        let stream =
            request.method() == Method::GET && request.uri().path().starts_with("/events/");
        if !stream {
            return Some(request);
        }
        let send = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        match send {
            Some(send) => {
                let _ = send.send(request.into_parts().0);
                None
            }
            None => Some(request),
        }
    }
}

/// A socket as async I/O with its `TcpStream` shared: hyper's, so that dropping hyper's
/// connection leaves it open for the connection's task; and `lean`'s, whose stream shares it
/// with the registry (see `registry::writer`).
pub(crate) struct SharedSocket(pub(crate) Arc<TcpStream>);

impl AsyncRead for SharedSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match self.0.try_read(unfilled) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl SharedSocket {
    /// `write` once the socket takes bytes; again when its readiness was stale.
    fn poll_writing(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match write(&self.0) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }
}

impl AsyncWrite for SharedSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_writing(cx, |socket| socket.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_writing(cx, |socket| socket.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The write half only: what `TcpStream`'s own `poll_shutdown` does.
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}
