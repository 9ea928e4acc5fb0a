//! Incremental decoder for an HTTP/1.1 response body carrying Server-Sent Events.
//!
//! This is the generator's hot path: every delivered event of every stream passes through
//! [`SseDecoder::feed`]. It undoes `Transfer-Encoding: chunked` when the server uses it (warp
//! and nginx both do for an open-ended stream), splits lines, and reports each complete event
//! as an [`EventKind`] and the first bytes of its `data`. It never allocates per event: long
//! lines (the `ready` roster of a big audience) are cut at [`LINE_CAP`] bytes, which is
//! plenty for the time stamp the generator looks for.

/// Longest line prefix kept; the rest of a longer line is skipped.
pub const LINE_CAP: usize = 2048;

/// The event names the generator tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// No `event:` field: the SSE default, which nchan uses for every message.
    Message,
    Ready,
    NewUser,
    UserLeft,
    ClientBroadcast,
    ClientResponse,
    Lagged,
    Other,
}

impl EventKind {
    fn from_name(name: &[u8]) -> Self {
        match name {
            b"message" => Self::Message,
            b"ready" => Self::Ready,
            b"new_user" => Self::NewUser,
            b"user_left" => Self::UserLeft,
            b"client_broadcast" => Self::ClientBroadcast,
            b"client_response" => Self::ClientResponse,
            b"lagged" => Self::Lagged,
            _ => Self::Other,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Reading the hex size; `ext` once a `;` extension started.
    Size { size: u64, ext: bool },
    /// Inside chunk data with this many bytes left.
    Data(u64),
    /// After chunk data, skipping its CRLF.
    DataEnd,
    /// The last (empty) chunk was seen: the stream is over.
    Done,
}

/// One stream's decoder state. Feed it bytes in any split; it calls back once per event.
#[derive(Debug)]
pub struct SseDecoder {
    chunked: bool,
    chunk: Chunk,
    line: Vec<u8>,
    line_len: usize,
    kind: EventKind,
    data: Vec<u8>,
    has_fields: bool,
}

impl SseDecoder {
    /// `chunked`: whether the body uses chunked transfer encoding.
    pub fn new(chunked: bool) -> Self {
        Self {
            chunked,
            chunk: Chunk::Size {
                size: 0,
                ext: false,
            },
            line: Vec::new(),
            line_len: 0,
            kind: EventKind::Message,
            data: Vec::new(),
            has_fields: false,
        }
    }

    /// True once a chunked body ended with its last chunk.
    pub fn finished(&self) -> bool {
        matches!(self.chunk, Chunk::Done)
    }

    /// Decodes `bytes`, calling `on_event(kind, data)` for each complete event.
    pub fn feed(&mut self, bytes: &[u8], on_event: &mut impl FnMut(EventKind, &[u8])) {
        if !self.chunked {
            self.sse_bytes(bytes, on_event);
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.chunk {
                Chunk::Size { size, ext } => {
                    let b = rest[0];
                    rest = &rest[1..];
                    self.chunk = match b {
                        b'\n' if size == 0 => Chunk::Done,
                        b'\n' => Chunk::Data(size),
                        b';' => Chunk::Size { size, ext: true },
                        _ if ext => Chunk::Size { size, ext },
                        _ => match (b as char).to_digit(16) {
                            Some(d) => Chunk::Size {
                                size: size.saturating_mul(16).saturating_add(u64::from(d)),
                                ext,
                            },
                            None => Chunk::Size { size, ext },
                        },
                    };
                }
                Chunk::Data(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    let (now, later) = rest.split_at(take);
                    self.sse_bytes(now, on_event);
                    rest = later;
                    let left = left - take as u64;
                    self.chunk = if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    };
                }
                Chunk::DataEnd => {
                    if rest[0] == b'\n' {
                        self.chunk = Chunk::Size {
                            size: 0,
                            ext: false,
                        };
                    }
                    rest = &rest[1..];
                }
                Chunk::Done => return,
            }
        }
    }

    fn sse_bytes(&mut self, bytes: &[u8], on_event: &mut impl FnMut(EventKind, &[u8])) {
        let mut rest = bytes;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let (head, tail) = rest.split_at(end);
                    rest = &tail[1..];
                    if self.line_len == 0 {
                        // The whole line is in this read: no copy.
                        self.line_len = head.len();
                        self.line_done(head, on_event);
                    } else {
                        self.append(head);
                        let line = std::mem::take(&mut self.line);
                        self.line_done(&line, on_event);
                        self.line = line;
                    }
                    self.line.clear();
                    self.line_len = 0;
                }
                None => {
                    self.append(rest);
                    return;
                }
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = LINE_CAP.saturating_sub(self.line.len());
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.line_len += bytes.len();
    }

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(EventKind, &[u8])) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = &line[..line.len().min(LINE_CAP)];
        if line.is_empty() && self.line_len <= 1 {
            if self.has_fields {
                on_event(self.kind, &self.data);
            }
            self.kind = EventKind::Message;
            self.data.clear();
            self.has_fields = false;
            return;
        }
        if line.first() == Some(&b':') {
            return; // comment, e.g. `: ping`
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"event" => {
                self.kind = EventKind::from_name(value);
                self.has_fields = true;
            }
            b"data" => {
                if self.has_fields && !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                let room = LINE_CAP.saturating_sub(self.data.len());
                self.data.extend_from_slice(&value[..value.len().min(room)]);
                self.has_fields = true;
            }
            b"id" => self.has_fields = true,
            _ => {}
        }
    }
}

/// Finds `"key":<digits>` in `data` and returns the number.
pub fn json_u64(data: &[u8], key: &[u8]) -> Option<u64> {
    let mut from = 0;
    while from < data.len() {
        let at = find(&data[from..], key)? + from;
        let mut i = at + key.len();
        while i < data.len() && data[i] == b' ' {
            i += 1;
        }
        if i < data.len() && data[i] == b':' {
            i += 1;
            while i < data.len() && data[i] == b' ' {
                i += 1;
            }
            let start = i;
            let mut v: u64 = 0;
            while i < data.len() && data[i].is_ascii_digit() {
                v = v.checked_mul(10)?.checked_add(u64::from(data[i] - b'0'))?;
                i += 1;
            }
            if i > start {
                return Some(v);
            }
        }
        from = at + 1;
    }
    None
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let off = hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        i += off;
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The send time (µs since the epoch) and sequence number the generator put in a message.
pub fn stamp(data: &[u8]) -> Option<(u64, u64)> {
    Some((json_u64(data, b"\"t\"")?, json_u64(data, b"\"s\"")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunked: bool, parts: &[&[u8]]) -> Vec<(EventKind, String)> {
        let mut dec = SseDecoder::new(chunked);
        let mut out = Vec::new();
        for p in parts {
            dec.feed(p, &mut |k, d| {
                out.push((k, String::from_utf8_lossy(d).into_owned()))
            });
        }
        out
    }

    #[test]
    fn plain_events_split_anywhere() {
        let body = b"retry: 2000\n\nevent: ready\ndata: {\"id\":\"a\"}\n\n: ping\n\nid: 1\nevent: client_broadcast\ndata: {\"message\":{\"t\":12,\"s\":3}}\n\n";
        for cut in 0..body.len() {
            let got = collect(false, &[&body[..cut], &body[cut..]]);
            assert_eq!(got.len(), 2, "cut at {cut}: {got:?}");
            assert_eq!(got[0].0, EventKind::Ready);
            assert_eq!(got[1].0, EventKind::ClientBroadcast);
            assert_eq!(stamp(got[1].1.as_bytes()), Some((12, 3)));
        }
    }

    #[test]
    fn chunked_events_split_anywhere() {
        let inner = b"event: lagged\ndata: {\"missed\":4}\n\ndata: {\"t\":5,\"s\":6}\n\n";
        let mut body = format!("{:x};ext=1\r\n", 10).into_bytes();
        body.extend_from_slice(&inner[..10]);
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(format!("{:X}\r\n", inner.len() - 10).as_bytes());
        body.extend_from_slice(&inner[10..]);
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        for cut in 0..body.len() {
            let mut dec = SseDecoder::new(true);
            let mut got = Vec::new();
            for part in [&body[..cut], &body[cut..]] {
                dec.feed(part, &mut |k, d| got.push((k, d.to_vec())));
            }
            assert!(dec.finished());
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0].0, EventKind::Lagged);
            assert_eq!(json_u64(&got[0].1, b"\"missed\""), Some(4));
            assert_eq!(got[1].0, EventKind::Message);
            assert_eq!(stamp(&got[1].1), Some((5, 6)));
        }
    }

    #[test]
    fn long_lines_are_cut_not_buffered() {
        let mut body = b"event: ready\ndata: ".to_vec();
        body.extend(std::iter::repeat_n(b'x', 100_000));
        body.extend_from_slice(b"\n\ndata: {\"t\":1,\"s\":2}\r\n\r\n");
        let got = collect(false, &body.chunks(1000).collect::<Vec<_>>());
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, EventKind::Ready);
        assert!(got[0].1.len() <= LINE_CAP);
        assert_eq!(stamp(got[1].1.as_bytes()), Some((1, 2)));
    }

    #[test]
    fn json_u64_skips_other_keys() {
        assert_eq!(json_u64(b"{\"at\":1,\"t\": 7}", b"\"t\""), Some(7));
        assert_eq!(json_u64(b"{\"t\":\"x\"}", b"\"t\""), None);
    }
}
