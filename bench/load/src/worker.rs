//! A worker process: holds its share of the streams on one thread (a current-thread runtime,
//! so per-stream state needs no locks), counts what arrives, and reports to the coordinator
//! (see [`crate::proto`]).

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::{sleep, sleep_until, timeout};

use crate::http::{self, Endpoint, HttpConn};
use crate::proto::{Counters, Job, Report, Target, Work, session_name, source_ip};
use crate::sse::{EventKind, SseDecoder, json_u64, stamp};
use crate::sys;

/// Bytes read from a stream socket at once.
const READ_BUF: usize = 4096;

/// A histogram of microseconds, 1 µs to 1 h, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Non-empty buckets of `h`, to ship to the coordinator.
pub fn hist_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

#[derive(Debug, Clone)]
struct Session {
    id: String,
    token: String,
}

struct State {
    job: Job,
    c: RefCell<Counters>,
    counts: Vec<Cell<u64>>,
    latency: RefCell<Histogram<u64>>,
    rtt: RefCell<Histogram<u64>>,
    sessions: RefCell<Vec<Option<Session>>>,
    attached: Cell<usize>,
    attach_failed: Cell<usize>,
    attach_expected: Cell<usize>,
    attach_done: Notify,
    first_error: RefCell<Option<String>>,
    senders_left: Cell<usize>,
    live_cycles: Cell<usize>,
}

impl State {
    fn error(&self, e: impl std::fmt::Display) {
        let mut slot = self.first_error.borrow_mut();
        if slot.is_none() {
            *slot = Some(e.to_string());
        }
    }

    fn attach_result(&self, ok: bool) {
        if ok {
            self.attached.set(self.attached.get() + 1);
        } else {
            self.attach_failed.set(self.attach_failed.get() + 1);
        }
        if self.attached.get() + self.attach_failed.get() >= self.attach_expected.get() {
            self.attach_done.notify_one();
        }
    }

    fn control_ip(&self) -> Ipv4Addr {
        source_ip(self.job.first, self.job.conns_per_ip)
    }

    fn counters(&self) -> Counters {
        let mut c = self.c.borrow().clone();
        c.min_count = self.counts.iter().map(Cell::get).min().unwrap_or(0);
        c.sending_done = self.senders_left.get() == 0;
        c
    }
}

fn emit(r: &Report) {
    let mut out = std::io::stdout().lock();
    let line = serde_json::to_string(r).expect("reports serialize");
    // If the coordinator is gone there is no one to tell: exit.
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(3);
    }
}

/// An attached SSE stream.
struct Stream {
    sock: TcpStream,
    dec: SseDecoder,
    buf: Vec<u8>,
    ready: bool,
    last_seq: u64,
}

impl Stream {
    /// Connects, reads the head and, for switchboard, waits for `ready`.
    async fn attach(
        st: &State,
        ep: &Endpoint,
        path: &str,
        src: Ipv4Addr,
        wait_ready: bool,
    ) -> std::io::Result<Self> {
        let start = http::open_sse(ep, Some(src), path).await?;
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
    async fn pump(&mut self, st: &State, slot: Option<usize>) -> std::io::Result<bool> {
        let n = http::read_some(&self.sock, &mut self.buf).await?;
        if n == 0 {
            return Ok(false);
        }
        let buf = std::mem::take(&mut self.buf);
        self.consume(st, slot, &buf[..n]);
        self.buf = buf;
        Ok(!self.dec.finished())
    }

    fn consume(&mut self, st: &State, slot: Option<usize>, bytes: &[u8]) {
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

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` with the value of any `token=` query parameter replaced.
fn redact(text: &str) -> String {
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

fn events_path(s: &Session) -> String {
    format!("/events/{}?token={}", pct(&s.id), pct(&s.token))
}

/// Registers a session over `conn`.
async fn helo(conn: &mut HttpConn, name: &str) -> Result<Session, String> {
    let body = serde_json::json!({ "name": name }).to_string();
    let r = conn
        .request("POST", "/helo", None, Some(body.as_bytes()))
        .await
        .map_err(|e| format!("helo: {e}"))?;
    helo_reply(r)
}

/// The session in a `POST /helo` answer.
fn helo_reply(r: http::Response) -> Result<Session, String> {
    if r.status != 201 {
        return Err(format!(
            "helo: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&r.body).map_err(|e| format!("helo reply: {e}"))?;
    match (v["id"].as_str(), v["token"].as_str()) {
        (Some(id), Some(token)) => Ok(Session {
            id: id.to_string(),
            token: token.to_string(),
        }),
        _ => Err(format!("helo reply without id/token: {v}")),
    }
}

/// A small pool of keep-alive connections for control calls.
struct Pool {
    ep: Endpoint,
    src: Ipv4Addr,
    idle: RefCell<Vec<HttpConn>>,
}

impl Pool {
    async fn get(&self) -> std::io::Result<HttpConn> {
        let conn = self.idle.borrow_mut().pop();
        match conn {
            Some(c) => Ok(c),
            None => HttpConn::open(&self.ep, Some(self.src)).await,
        }
    }

    fn put(&self, c: HttpConn) {
        if !c.closed {
            self.idle.borrow_mut().push(c);
        }
    }

    /// One request on a pooled connection; when a reused connection turns out to be closed
    /// by the server (keep-alive ended while idle), once more on a new one.
    async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&[u8]>,
    ) -> std::io::Result<http::Response> {
        let pooled = self.idle.borrow_mut().pop();
        if let Some(mut c) = pooled
            && let Ok(r) = c.request(method, path, bearer, body).await
        {
            self.put(c);
            return Ok(r);
        }
        let mut c = HttpConn::open(&self.ep, Some(self.src)).await?;
        let r = c.request(method, path, bearer, body).await?;
        self.put(c);
        Ok(r)
    }
}

/// Runs `f(index)` for `0..count` over `conc` tasks that each hold one connection of `pool`.
async fn for_each_conn<F, Fut>(pool: Rc<Pool>, count: usize, conc: usize, f: F)
where
    F: Fn(usize, HttpConn) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = Option<HttpConn>> + 'static,
{
    let next = Rc::new(Cell::new(0usize));
    let mut tasks = Vec::new();
    for _ in 0..conc.clamp(1, count.max(1)) {
        let (pool, next, f) = (pool.clone(), next.clone(), f.clone());
        tasks.push(tokio::task::spawn_local(async move {
            loop {
                let i = next.get();
                if i >= count {
                    break;
                }
                next.set(i + 1);
                let Ok(conn) = pool.get().await else {
                    // Count the item as failed through the callback's error path.
                    continue;
                };
                if let Some(c) = f(i, conn).await {
                    pool.put(c);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Registers `count` sessions; reports `Heloed`.
async fn helo_all(st: &Rc<State>, base: &Endpoint, count: usize) {
    let t0 = Instant::now();
    let pool = Rc::new(Pool {
        ep: base.clone(),
        src: st.control_ip(),
        idle: RefCell::new(Vec::new()),
    });
    st.sessions.replace(vec![None; count]);
    let failed = Rc::new(Cell::new(0usize));
    let (st2, failed2, first) = (st.clone(), failed.clone(), st.job.first);
    for_each_conn(pool, count, st.job.http_concurrency, move |i, mut conn| {
        let (st, failed) = (st2.clone(), failed2.clone());
        async move {
            match helo(&mut conn, &session_name(first + i)).await {
                Ok(s) => {
                    st.sessions.borrow_mut()[i] = Some(s);
                    Some(conn)
                }
                Err(e) => {
                    st.error(e);
                    failed.set(failed.get() + 1);
                    None
                }
            }
        }
    })
    .await;
    let ok = st.sessions.borrow().iter().filter(|s| s.is_some()).count();
    emit(&Report::Heloed {
        ok,
        failed: count - ok,
        secs: t0.elapsed().as_secs_f64(),
        error: st.first_error.borrow().clone(),
    });
}

/// Deletes every registered session; reports `Cleaned`.
async fn cleanup(st: &Rc<State>, base: &Endpoint) {
    let t0 = Instant::now();
    let sessions: Vec<Session> = st.sessions.borrow().iter().flatten().cloned().collect();
    let pool = Rc::new(Pool {
        ep: base.clone(),
        src: st.control_ip(),
        idle: RefCell::new(Vec::new()),
    });
    let sessions = Rc::new(sessions);
    let n = sessions.len();
    for_each_conn(pool, n, st.job.http_concurrency, move |i, mut conn| {
        let sessions = sessions.clone();
        async move {
            let r = conn
                .request("DELETE", "/session", Some(&sessions[i].token), None)
                .await;
            r.ok().map(|_| conn)
        }
    })
    .await;
    emit(&Report::Cleaned {
        secs: t0.elapsed().as_secs_f64(),
    });
}

/// Attaches one stream per entry of `paths`, `slot` = index; reports `Attached` when all are
/// attached or failed. Streams then keep reading until the process exits.
async fn attach_all(st: &Rc<State>, ep: &Endpoint, paths: Vec<String>, wait_ready: bool) {
    let t0 = Instant::now();
    st.attach_expected.set(paths.len());
    let sem = Rc::new(Semaphore::new(st.job.connect_concurrency.max(1)));
    let attach_timeout = Duration::from_millis(st.job.attach_timeout_ms);
    let total = paths.len();
    for (i, path) in paths.into_iter().enumerate() {
        let (st, sem, ep) = (st.clone(), sem.clone(), ep.clone());
        // Errors name the path without its query: it holds the session's token.
        let shown = path.split('?').next().unwrap_or_default().to_string();
        let src = source_ip(st.job.first + i, st.job.conns_per_ip);
        tokio::task::spawn_local(async move {
            let permit = sem.acquire().await;
            let r = timeout(
                attach_timeout,
                Stream::attach(&st, &ep, &path, src, wait_ready),
            )
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

fn spawn_progress(st: &Rc<State>) {
    let st = st.clone();
    tokio::task::spawn_local(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(st.job.progress_ms.max(5)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            emit(&Report::Progress(st.counters()));
        }
    });
}

/// One pair's sending schedule.
struct Plan {
    from: Session,
    to: String,
    /// Time between two sends; `None`: back to back.
    period: Option<Duration>,
    start: tokio::time::Instant,
    deadline: tokio::time::Instant,
    payload: usize,
}

/// Posts `/response` from the pair's sender to its receiver until the deadline.
async fn sender(st: Rc<State>, ep: Endpoint, plan: Plan) {
    let Plan {
        from,
        to,
        period,
        start,
        deadline,
        payload,
    } = plan;
    let src = st.control_ip();
    let mut conn: Option<HttpConn> = None;
    let mut next = start;
    let mut seq = 0u64;
    let pad = "x".repeat(payload);
    loop {
        if let Some(p) = period {
            next += p;
            let now = tokio::time::Instant::now();
            if next + Duration::from_secs(1) < now {
                next = now; // far behind: do not burst to catch up
            }
            sleep_until(next).await;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let c = match conn.take() {
            Some(c) => c,
            None => match HttpConn::open(&ep, Some(src)).await {
                Ok(c) => c,
                Err(e) => {
                    st.error(format_args!("connect: {e}"));
                    st.c.borrow_mut().send_errors += 1;
                    sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let mut c = c;
        seq += 1;
        let t = sys::now_us();
        let body = if payload == 0 {
            format!(r#"{{"recipient":"{to}","message":{{"t":{t},"s":{seq}}}}}"#)
        } else {
            format!(r#"{{"recipient":"{to}","message":{{"t":{t},"s":{seq},"p":"{pad}"}}}}"#)
        };
        match c
            .request(
                "POST",
                "/response",
                Some(&from.token),
                Some(body.as_bytes()),
            )
            .await
        {
            Ok(r) => {
                let _ = st
                    .rtt
                    .borrow_mut()
                    .record(sys::now_us().saturating_sub(t).max(1));
                match r.status {
                    202 => st.c.borrow_mut().sent_ok += 1,
                    429 => {
                        st.c.borrow_mut().rejected += 1;
                        let wait = r.retry_after.unwrap_or(0).clamp(0, 1);
                        sleep(Duration::from_millis(5).max(Duration::from_secs(wait))).await;
                    }
                    s => {
                        st.error(format_args!(
                            "POST /response: HTTP {s}: {}",
                            String::from_utf8_lossy(&r.body)
                        ));
                        st.c.borrow_mut().send_errors += 1;
                    }
                }
                if !c.closed {
                    conn = Some(c);
                }
            }
            Err(e) => {
                st.error(format_args!("POST /response: {e}"));
                st.c.borrow_mut().send_errors += 1;
            }
        }
    }
    st.senders_left.set(st.senders_left.get() - 1);
}

/// One churn cycle: helo, attach, hold, delete, see the stream end.
async fn churn_cycle(st: Rc<State>, pool: Rc<Pool>, n: usize, hold: Duration) {
    let r: Result<(), String> = async {
        let body = serde_json::json!({ "name": session_name(n) }).to_string();
        let r = pool
            .call("POST", "/helo", None, Some(body.as_bytes()))
            .await
            .map_err(|e| format!("helo: {e}"))?;
        let s = helo_reply(r)?;
        let src = source_ip(n, 1);
        let mut stream = timeout(
            Duration::from_millis(st.job.attach_timeout_ms),
            Stream::attach(&st, &pool.ep, &events_path(&s), src, true),
        )
        .await
        .map_err(|_| "attach timed out".to_string())?
        .map_err(|e| format!("attach: {e}"))?;
        let held = timeout(hold, async {
            while let Ok(true) = stream.pump(&st, None).await {}
        })
        .await;
        if held.is_ok() {
            return Err("stream ended while held".into());
        }
        let r = pool
            .call("DELETE", "/session", Some(&s.token), None)
            .await
            .map_err(|e| format!("delete: {e}"))?;
        if r.status != 204 {
            return Err(format!("DELETE /session: HTTP {}", r.status));
        }
        timeout(Duration::from_secs(5), async {
            while let Ok(true) = stream.pump(&st, None).await {}
        })
        .await
        .map_err(|_| "stream still open 5 s after DELETE /session".to_string())?;
        Ok(())
    }
    .await;
    match r {
        Ok(()) => st.c.borrow_mut().cycles += 1,
        Err(e) => {
            st.error(e);
            st.c.borrow_mut().cycle_failures += 1;
        }
    }
    st.live_cycles.set(st.live_cycles.get() - 1);
}

async fn churn(st: Rc<State>, base: Endpoint, rate: f64, duration: Duration, hold: Duration) {
    let pool = Rc::new(Pool {
        ep: base,
        src: st.control_ip(),
        idle: RefCell::new(Vec::new()),
    });
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    // Enough room for every cycle that should be running, plus slack for slow ones.
    let cap = ((rate * (hold.as_secs_f64() + 5.0)).ceil() as usize).clamp(16, 15_000);
    let start = tokio::time::Instant::now();
    let deadline = start + duration;
    let mut next = start;
    let mut n = st.job.first;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while tokio::time::Instant::now() < deadline {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        while next <= now && next < deadline {
            next += period;
            if st.live_cycles.get() >= cap {
                st.c.borrow_mut().cycles_skipped += 1;
                continue;
            }
            st.live_cycles.set(st.live_cycles.get() + 1);
            tokio::task::spawn_local(churn_cycle(st.clone(), pool.clone(), n, hold));
            n += 1;
        }
    }
    // Let running cycles finish (bounded).
    let wait_until = tokio::time::Instant::now() + hold + Duration::from_secs(10);
    while st.live_cycles.get() > 0 && tokio::time::Instant::now() < wait_until {
        sleep(Duration::from_millis(20)).await;
    }
    st.senders_left.set(0);
}

/// Entry point of `switchboard-load __worker`.
pub fn main() -> ! {
    sys::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run());
    std::process::exit(0)
}

async fn run() {
    let (tx, mut cmds) = mpsc::unbounded_channel::<String>();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let Ok(Some(first)) = lines.next_line().await else {
        eprintln!("worker: no job on stdin");
        std::process::exit(2);
    };
    let job: Job = match serde_json::from_str(&first) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("worker: bad job: {e}");
            std::process::exit(2);
        }
    };
    tokio::task::spawn_local(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            if tx.send(l.trim().to_string()).is_err() {
                break;
            }
        }
        // Coordinator gone: nothing left to report to.
        std::process::exit(0);
    });

    let count = match job.work {
        Work::Streams { count } => count,
        Work::Direct { pairs, .. } => pairs * 2,
        Work::Churn { .. } => 0,
    };
    let st = Rc::new(State {
        counts: (0..count).map(|_| Cell::new(0)).collect(),
        c: RefCell::new(Counters::default()),
        latency: RefCell::new(new_hist()),
        rtt: RefCell::new(new_hist()),
        sessions: RefCell::new(Vec::new()),
        attached: Cell::new(0),
        attach_failed: Cell::new(0),
        attach_expected: Cell::new(0),
        attach_done: Notify::new(),
        first_error: RefCell::new(None),
        senders_left: Cell::new(0),
        live_cycles: Cell::new(0),
        job: job.clone(),
    });

    match (&job.target, &job.work) {
        (Target::Switchboard { base, .. }, Work::Streams { count }) => {
            helo_all(&st, base, *count).await;
            expect(&mut cmds, "attach").await;
            let paths = st
                .sessions
                .borrow()
                .iter()
                .flatten()
                .map(events_path)
                .collect();
            attach_all(&st, base, paths, true).await;
        }
        (Target::Nchan { sub }, Work::Streams { count }) => {
            emit(&Report::Heloed {
                ok: *count,
                failed: 0,
                secs: 0.0,
                error: None,
            });
            expect(&mut cmds, "attach").await;
            attach_all(&st, sub, vec![sub.path.clone(); *count], false).await;
        }
        (Target::Switchboard { base, .. }, Work::Direct { pairs, .. }) => {
            helo_all(&st, base, pairs * 2).await;
            expect(&mut cmds, "attach").await;
            // Receivers are slots 0..pairs (their counts matter); senders follow.
            let sessions = st.sessions.borrow().clone();
            let mut paths: Vec<String> = sessions
                .iter()
                .skip(1)
                .step_by(2)
                .flatten()
                .map(events_path)
                .collect();
            paths.extend(sessions.iter().step_by(2).flatten().map(events_path));
            attach_all(&st, base, paths, true).await;
        }
        (Target::Switchboard { .. }, Work::Churn { .. }) => {
            emit(&Report::Heloed {
                ok: 0,
                failed: 0,
                secs: 0.0,
                error: None,
            });
            expect(&mut cmds, "attach").await;
            emit(&Report::Attached {
                ok: 0,
                failed: 0,
                secs: 0.0,
                error: None,
            });
        }
        (Target::Nchan { .. }, _) => {
            eprintln!("worker: only idle and fanout modes work against nchan");
            std::process::exit(2);
        }
    }

    expect(&mut cmds, "go").await;
    let cpu0 = sys::self_cpu_secs();
    spawn_progress(&st);
    match (&job.target, &job.work) {
        (
            Target::Switchboard { posts, .. },
            Work::Direct {
                pairs,
                rate,
                duration_ms,
                payload,
            },
        ) => {
            let sessions = st.sessions.borrow().clone();
            let start = tokio::time::Instant::now();
            let deadline = start + Duration::from_millis(*duration_ms);
            let period = (*rate > 0.0).then(|| Duration::from_secs_f64(*pairs as f64 / rate));
            st.senders_left.set(*pairs);
            for p in 0..*pairs {
                let (Some(from), Some(to)) = (&sessions[2 * p], &sessions[2 * p + 1]) else {
                    st.senders_left.set(st.senders_left.get() - 1);
                    continue;
                };
                // Spread the pairs' send times over one period.
                let offset =
                    period.map_or(Duration::ZERO, |pd| pd.mul_f64(p as f64 / *pairs as f64));
                let plan = Plan {
                    from: from.clone(),
                    to: to.id.clone(),
                    period,
                    start: start + offset,
                    deadline,
                    payload: *payload,
                };
                tokio::task::spawn_local(sender(st.clone(), posts.clone(), plan));
            }
        }
        (
            Target::Switchboard { base, .. },
            Work::Churn {
                rate,
                duration_ms,
                hold_ms,
            },
        ) => {
            st.senders_left.set(1);
            tokio::task::spawn_local(churn(
                st.clone(),
                base.clone(),
                *rate,
                Duration::from_millis(*duration_ms),
                Duration::from_millis(*hold_ms),
            ));
        }
        _ => {}
    }
    expect(&mut cmds, "stop").await;
    emit(&Report::Done {
        counters: st.counters(),
        latency: hist_pairs(&st.latency.borrow()),
        rtt: hist_pairs(&st.rtt.borrow()),
        cpu_secs: sys::self_cpu_secs() - cpu0,
        error: st.first_error.borrow().clone(),
    });
    if let (Target::Switchboard { base, .. }, true) = (&job.target, job.cleanup) {
        cleanup(&st, base).await;
    }
}

/// Waits for the command `want`, ignoring others; exits when the coordinator is gone.
async fn expect(cmds: &mut mpsc::UnboundedReceiver<String>, want: &str) {
    loop {
        match cmds.recv().await {
            Some(c) if c == want => return,
            Some(_) => {}
            None => std::process::exit(0),
        }
    }
}
