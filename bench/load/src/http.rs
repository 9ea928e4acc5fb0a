//! A deliberately small HTTP/1.1 client over tokio TCP: keep-alive request/response for the
//! control calls (`/helo`, `/broadcast`, `/response`, `DELETE /session`, nchan's publish URL)
//! and the opening of an SSE stream, whose body [`crate::sse`] then decodes.
//!
//! Only loopback targets are accepted: [`Endpoint::parse`] refuses anything outside 127.0.0.0/8.
//! Each socket can be bound to a chosen source address before it connects, so tens of thousands
//! of connections spread over 127.0.0.2… and never run out of ephemeral ports.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Largest response header block accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A parsed `http://127.x.y.z:port/path` URL.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    pub addr: SocketAddrV4,
    /// Value of the `Host` header.
    pub host: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Endpoint {
    /// Parses a plain-HTTP URL whose host is an IPv4 loopback address (or `localhost`).
    ///
    /// # Errors
    /// Anything else: other schemes, names, or non-loopback addresses.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{url}: bad port {p:?}"))?,
            ),
            None => (authority, 80),
        };
        let ip: Ipv4Addr = if host == "localhost" {
            Ipv4Addr::LOCALHOST
        } else {
            host.parse()
                .map_err(|_| format!("{url}: host must be an IPv4 loopback address"))?
        };
        if !ip.is_loopback() {
            return Err(format!(
                "{url}: only loopback (127.0.0.0/8) targets are allowed"
            ));
        }
        Ok(Self {
            addr: SocketAddrV4::new(ip, port),
            host: authority.to_string(),
            path: path.to_string(),
        })
    }
}

/// Connects to `ep`, from `src` (port chosen by the kernel) when given, with `TCP_NODELAY`.
///
/// # Errors
/// Socket, bind and connect failures.
pub async fn connect(ep: &Endpoint, src: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = src {
        // Choose the port at connect time, unique per 4-tuple: a plain bind to port 0 would
        // search the whole ephemeral range under a lock for every socket.
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)
            .map_err(io::Error::from)?;
        sock.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    }
    let stream = sock.connect(SocketAddr::V4(ep.addr)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A parsed response with its whole body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: Vec<u8>,
}

struct Head {
    status: u16,
    len: usize,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
    retry_after: Option<u64>,
}

fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return Err(bad("response head too large"));
            }
            return Ok(None);
        }
        Err(e) => return Err(bad(&format!("bad response: {e}"))),
    };
    let mut head = Head {
        status: resp.code.unwrap_or(0),
        len,
        content_length: None,
        chunked: false,
        close: resp.version == Some(0),
        retry_after: None,
    };
    for h in resp.headers.iter() {
        let v = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            head.content_length = v.parse().ok();
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = v.to_ascii_lowercase().contains("chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            head.close = v.eq_ignore_ascii_case("close");
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = v.parse().ok();
        }
    }
    Ok(Some(head))
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Decodes a complete chunked body at the start of `buf`: `(body, bytes consumed)`, or
/// `None` while incomplete.
fn dechunk(buf: &[u8]) -> io::Result<Option<(Vec<u8>, usize)>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[at..at + nl]).map_err(|_| bad("bad chunk size"))?;
        let size_txt = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_txt, 16).map_err(|_| bad("bad chunk size"))?;
        at += nl + 1;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') else {
                    return Ok(None);
                };
                let empty = buf[at..at + nl].iter().all(|&b| b == b'\r');
                at += nl + 1;
                if empty {
                    return Ok(Some((body, at)));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size;
        at += if buf[at] == b'\r' { 2 } else { 1 };
    }
}

/// A keep-alive connection for request/response calls.
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    host: String,
    /// Set when the server asked to close; the caller should open a new connection.
    pub closed: bool,
}

impl HttpConn {
    /// Opens a connection to `ep`.
    ///
    /// # Errors
    /// As [`connect`].
    pub async fn open(ep: &Endpoint, src: Option<Ipv4Addr>) -> io::Result<Self> {
        Ok(Self {
            stream: connect(ep, src).await?,
            buf: Vec::with_capacity(1024),
            host: ep.host.clone(),
            closed: false,
        })
    }

    /// Sends one request and reads the whole response.
    ///
    /// # Errors
    /// I/O errors, a malformed response, or the peer closing early.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        let mut req = Vec::with_capacity(256 + body.map_or(0, <[u8]>::len));
        req.extend_from_slice(method.as_bytes());
        req.push(b' ');
        req.extend_from_slice(path.as_bytes());
        req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        req.extend_from_slice(self.host.as_bytes());
        req.extend_from_slice(b"\r\n");
        if let Some(t) = bearer {
            req.extend_from_slice(b"Authorization: Bearer ");
            req.extend_from_slice(t.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        match body {
            Some(b) => {
                req.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
                req.extend_from_slice(b.len().to_string().as_bytes());
                req.extend_from_slice(b"\r\n\r\n");
                req.extend_from_slice(b);
            }
            None => req.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
        }
        self.stream.write_all(&req).await?;
        self.read_response(method == "HEAD").await
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut tmp = [0u8; 4096];
        let n = self.stream.read(&mut tmp).await?;
        if n == 0 {
            self.closed = true;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by server",
            ));
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    async fn read_response(&mut self, head_only: bool) -> io::Result<Response> {
        let head = loop {
            if let Some(h) = parse_head(&self.buf)? {
                break h;
            }
            self.fill().await?;
        };
        self.buf.drain(..head.len);
        let no_body = head_only || head.status == 204 || head.status == 304 || head.status < 200;
        let body = if no_body {
            Vec::new()
        } else if head.chunked {
            loop {
                if let Some((body, used)) = dechunk(&self.buf)? {
                    self.buf.drain(..used);
                    break body;
                }
                self.fill().await?;
            }
        } else if let Some(n) = head.content_length {
            while self.buf.len() < n {
                self.fill().await?;
            }
            self.buf.drain(..n).collect()
        } else {
            // Read to end of stream.
            while self.fill().await.is_ok() {}
            self.closed = true;
            std::mem::take(&mut self.buf)
        };
        if head.close {
            self.closed = true;
        }
        Ok(Response {
            status: head.status,
            retry_after: head.retry_after,
            body,
        })
    }
}

/// An SSE response whose head was read: the socket, the body bytes already read, and whether
/// the body is chunked.
pub struct SseStart {
    pub stream: TcpStream,
    pub leftover: Vec<u8>,
    pub chunked: bool,
}

/// Sends `GET path` with `Accept: text/event-stream` and reads the response head.
///
/// # Errors
/// I/O errors, or a status other than 200 (the error text carries the status and body start).
pub async fn open_sse(ep: &Endpoint, src: Option<Ipv4Addr>, path: &str) -> io::Result<SseStart> {
    sse_on(connect(ep, src).await?, &ep.host, path).await
}

impl HttpConn {
    /// Sends `GET path` as an SSE request on this same keep-alive connection, as a browser's
    /// EventSource does after a `fetch`, and reads the response head (see [`open_sse`]).
    ///
    /// # Errors
    /// The server closed the connection after its last response, or sent more than it; else
    /// as [`open_sse`].
    pub async fn into_sse(self, path: &str) -> io::Result<SseStart> {
        if self.closed {
            return Err(bad("server closed the connection after its response"));
        }
        if !self.buf.is_empty() {
            return Err(bad("unexpected bytes after the previous response"));
        }
        sse_on(self.stream, &self.host, path).await
    }
}

async fn sse_on(mut stream: TcpStream, host: &str, path: &str) -> io::Result<SseStart> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut tmp = [0u8; 2048];
    loop {
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before response head",
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(head) = parse_head(&buf)? {
            if head.status != 200 {
                let body = String::from_utf8_lossy(&buf[head.len..]);
                let body: String = body.chars().take(200).collect();
                let shown = path.split('?').next().unwrap_or_default();
                return Err(io::Error::other(format!(
                    "HTTP {} on {shown}: {body}",
                    head.status
                )));
            }
            return Ok(SseStart {
                stream,
                leftover: buf.split_off(head.len),
                chunked: head.chunked,
            });
        }
    }
}

/// Reads what is in the socket into `buf` and tells the reactor the socket is drained when a
/// read comes back short, saving the extra `read` that would only return `EAGAIN`.
///
/// Returns `Ok(0)` at end of stream. The readiness is cleared through [`TcpStream::try_io`],
/// which keeps it if a new edge arrived meanwhile, so no wake-up is lost.
///
/// # Errors
/// I/O errors other than `WouldBlock`.
pub async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        let mut got = None;
        let r = stream.try_io(tokio::io::Interest::READABLE, || {
            match nix::unistd::read(stream.as_fd(), buf) {
                Ok(n) => {
                    got = Some(n);
                    if n > 0 && n < buf.len() {
                        // Short read: the receive queue is empty now.
                        Err(io::ErrorKind::WouldBlock.into())
                    } else {
                        Ok(())
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => Err(io::ErrorKind::WouldBlock.into()),
                Err(nix::errno::Errno::EINTR) => Ok(()),
                Err(e) => Err(io::Error::from(e)),
            }
        });
        match (got, r) {
            (Some(n), _) => return Ok(n),
            (None, Ok(())) => {}
            (None, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            (None, Err(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_accepts_only_loopback() {
        let ep = Endpoint::parse("http://127.0.0.1:4000/sub/x?a=1").unwrap();
        assert_eq!(ep.addr.port(), 4000);
        assert_eq!(ep.path, "/sub/x?a=1");
        assert_eq!(Endpoint::parse("http://localhost:80").unwrap().path, "/");
        assert!(Endpoint::parse("http://10.0.0.1:80/").is_err());
        assert!(Endpoint::parse("https://127.0.0.1/").is_err());
        assert!(Endpoint::parse("http://example.com/").is_err());
    }

    #[test]
    fn dechunk_waits_for_the_end() {
        let b = b"3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\nNEXT";
        let (body, used) = dechunk(b).unwrap().unwrap();
        assert_eq!(body, b"abcde");
        assert_eq!(&b[used..], b"NEXT");
        assert!(dechunk(&b[..b.len() - 6]).unwrap().is_none());
    }

    /// Reads a request from `s`: everything until the bytes read end with `end`.
    async fn read_until(s: &mut TcpStream, end: &[u8]) -> String {
        let mut buf = Vec::new();
        while !buf.ends_with(end) {
            let mut tmp = [0u8; 1024];
            let n = s.read(&mut tmp).await.unwrap();
            assert!(n > 0, "client closed");
            buf.extend_from_slice(&tmp[..n]);
        }
        String::from_utf8(buf).unwrap()
    }

    #[tokio::test]
    async fn helo_then_sse_on_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ep = Endpoint::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let helo = read_until(&mut s, b"\r\n\r\n{}").await;
            assert!(helo.starts_with("POST /helo HTTP/1.1\r\n"), "{helo}");
            assert!(!helo.to_ascii_lowercase().contains("connection: close"));
            let body = br#"{"id":"a","token":"t"}"#;
            let head = format!(
                "HTTP/1.1 201 Created\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(body).await.unwrap();
            let get = read_until(&mut s, b"\r\n\r\n").await;
            assert!(
                get.starts_with("GET /events/a?token=t HTTP/1.1\r\n"),
                "{get}"
            );
            let sse = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            s.write_all(sse.as_bytes()).await.unwrap();
        });
        let mut conn = HttpConn::open(&ep, None).await.unwrap();
        let r = conn
            .request("POST", "/helo", None, Some(b"{}"))
            .await
            .unwrap();
        assert_eq!(
            (r.status, &r.body[..]),
            (201, &br#"{"id":"a","token":"t"}"#[..])
        );
        let start = conn.into_sse("/events/a?token=t").await.unwrap();
        assert!(start.chunked);
        server.await.unwrap();
    }
}
