//! The coordinating process: spawns the workers, drives the phases (register, attach,
//! measure, stop), publishes broadcasts itself, samples the server's memory and CPU, and turns
//! the workers' reports into an [`Outcome`].

use std::cell::{Cell, RefCell};
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::sleep;

use crate::http::{self, Endpoint, HttpConn};
use crate::outcome::{Outcome, Progress};
use crate::proto::{Counters, Job, Report, Target, Work};
use crate::sys::{self, Memory};
use crate::worker::new_hist;

/// Options every mode shares (see `main.rs` for their documentation).
#[derive(Debug, Clone)]
pub struct Common {
    pub target: Target,
    pub target_name: String,
    /// nchan publish URL (channel filled in).
    pub publish: Option<Endpoint>,
    pub server_pid: Option<u32>,
    pub workers: Option<usize>,
    pub max_per_worker: usize,
    pub conns_per_ip: usize,
    pub connect_concurrency: usize,
    pub http_concurrency: usize,
    pub attach_timeout: Duration,
    pub label: String,
    pub cleanup: bool,
}

/// Source address of the coordinator's own connections.
const COORD_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 252);

struct Workers {
    stdins: Vec<ChildStdin>,
    _children: Vec<Child>,
    rx: mpsc::UnboundedReceiver<(usize, Report)>,
    latest: Vec<Counters>,
    /// Workers that reported `Cleaned` (or exited), whenever that arrived.
    cleaned: Vec<bool>,
}

impl Workers {
    async fn spawn(jobs: Vec<Job>) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut stdins = Vec::new();
        let mut children = Vec::new();
        let n = jobs.len();
        for (i, job) in jobs.into_iter().enumerate() {
            let mut child = Command::new(&exe)
                .arg("__worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("spawn worker: {e}"))?;
            let mut stdin = child.stdin.take().expect("piped stdin");
            let stdout = child.stdout.take().expect("piped stdout");
            let line = serde_json::to_string(&job).expect("job serializes") + "\n";
            stdin
                .write_all(line.as_bytes())
                .await
                .map_err(|e| format!("write job: {e}"))?;
            let tx = tx.clone();
            tokio::task::spawn_local(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    match serde_json::from_str::<Report>(&l) {
                        Ok(r) => {
                            let _ = tx.send((i, r));
                        }
                        Err(e) => eprintln!("worker {i}: unreadable report ({e}): {l}"),
                    }
                }
                let _ = tx.send((i, Report::Exited));
            });
            stdins.push(stdin);
            children.push(child);
        }
        Ok(Self {
            stdins,
            _children: children,
            rx,
            latest: vec![Counters::default(); n],
            cleaned: vec![false; n],
        })
    }

    async fn send(&mut self, cmd: &str) {
        for s in &mut self.stdins {
            let _ = s.write_all(format!("{cmd}\n").as_bytes()).await;
            let _ = s.flush().await;
        }
    }

    /// The next report; progress is also kept in `latest`.
    async fn next(&mut self) -> (usize, Report) {
        let (i, r) = self.rx.recv().await.unwrap_or((0, Report::Exited));
        if let Report::Progress(c) = &r {
            self.latest[i] = c.clone();
        }
        if let Report::Done { counters, .. } = &r {
            self.latest[i] = counters.clone();
        }
        if let Report::Cleaned { .. } | Report::Exited = &r {
            self.cleaned[i] = true;
        }
        (i, r)
    }

    /// Waits until every worker sent a report `pick` accepts, in worker order.
    async fn collect<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut on_progress: impl FnMut(&Self),
        pick: impl Fn(Report) -> Option<T>,
    ) -> Result<Vec<T>, String> {
        let mut got: Vec<Option<T>> = (0..self.stdins.len()).map(|_| None).collect();
        let deadline = tokio::time::Instant::now() + limit;
        while got.iter().any(Option::is_none) {
            let (i, r) = tokio::time::timeout_at(deadline, self.next())
                .await
                .map_err(|_| format!("workers did not report {what} within {limit:?}"))?;
            if let Report::Exited = r {
                return Err(format!("worker {i} exited before reporting {what}"));
            }
            if let Report::Progress(_) = r {
                on_progress(self);
                continue;
            }
            if let Some(t) = pick(r) {
                got[i] = Some(t);
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    fn totals(&self) -> Counters {
        let mut t = Counters::empty();
        for c in &self.latest {
            t.merge(c);
        }
        t
    }
}

/// How many workers: the user's choice, else as few as the per-worker limit allows (fewer
/// processes wake up less often and so spend less CPU per event on this shared host).
fn worker_count(c: &Common, streams: usize) -> usize {
    let need = streams.div_ceil(c.max_per_worker.max(1)).max(1);
    c.workers.unwrap_or(need).max(need)
}

fn jobs(
    c: &Common,
    total: usize,
    workers: usize,
    progress_ms: u64,
    work: impl Fn(usize) -> Work,
) -> Vec<Job> {
    let mut out = Vec::new();
    let mut first = 0;
    for i in 0..workers {
        let share = total / workers + usize::from(i < total % workers);
        out.push(Job {
            index: i,
            target: c.target.clone(),
            work: work(share),
            first,
            conns_per_ip: c.conns_per_ip,
            connect_concurrency: c.connect_concurrency,
            http_concurrency: c.http_concurrency,
            attach_timeout_ms: c.attach_timeout.as_millis() as u64,
            progress_ms,
            cleanup: c.cleanup,
        });
        first += share.max(1) * 2;
    }
    out
}

fn memory(c: &Common) -> Option<Memory> {
    c.server_pid.and_then(sys::memory)
}

fn merge_hist(into: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for (v, n) in pairs {
        let _ = into.record_n(*v, *n);
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn latency_metrics(out: &mut Outcome, prefix: &str, h: &Histogram<u64>) {
    if h.is_empty() {
        return;
    }
    out.metric(&format!("{prefix}_p50_ms"), ms(h.value_at_quantile(0.50)));
    out.metric(&format!("{prefix}_p99_ms"), ms(h.value_at_quantile(0.99)));
    out.metric(&format!("{prefix}_p999_ms"), ms(h.value_at_quantile(0.999)));
    out.metric(&format!("{prefix}_max_ms"), ms(h.max()));
}

/// Server memory, CPU and the generator's own CPU over one measured window.
struct Window {
    t0: Instant,
    cpu0: f64,
    server_cpu0: Option<Duration>,
}

impl Window {
    fn start(c: &Common) -> Self {
        Self {
            t0: Instant::now(),
            cpu0: sys::self_cpu_secs(),
            server_cpu0: c.server_pid.map(sys::tree_cpu),
        }
    }

    /// Adds `gen_cpu_*` (coordinator + `worker_cpu`) and `server_cpu_*` metrics.
    fn finish(&self, c: &Common, out: &mut Outcome, worker_cpu: f64) {
        let wall = self.t0.elapsed().as_secs_f64().max(1e-6);
        let gen_cpu = sys::self_cpu_secs() - self.cpu0 + worker_cpu;
        out.metric("window_s", wall);
        out.metric("gen_cpu_s", gen_cpu);
        out.metric("gen_cpu_pct", 100.0 * gen_cpu / wall);
        if let (Some(pid), Some(s0)) = (c.server_pid, self.server_cpu0) {
            let s = sys::tree_cpu(pid).saturating_sub(s0).as_secs_f64();
            out.metric("server_cpu_s", s);
            out.metric("server_cpu_pct", 100.0 * s / wall);
        }
    }
}

/// A switchboard session the coordinator itself uses (the publisher), with its stream read
/// and thrown away so the session neither expires nor fills its mailbox.
async fn coordinator_session(base: &Endpoint) -> Result<String, String> {
    let mut conn = HttpConn::open(base, Some(COORD_IP))
        .await
        .map_err(|e| format!("connect {}: {e}", base.host))?;
    let body = br#"{"name":"load-publisher"}"#;
    let r = conn
        .request("POST", "/helo", None, Some(body))
        .await
        .map_err(|e| format!("helo: {e}"))?;
    if r.status != 201 {
        return Err(format!(
            "publisher helo: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
    let id = v["id"].as_str().ok_or("helo reply without id")?.to_string();
    let token = v["token"]
        .as_str()
        .ok_or("helo reply without token")?
        .to_string();
    let path = format!("/events/{id}?token={token}");
    let start = http::open_sse(base, Some(COORD_IP), &path)
        .await
        .map_err(|e| format!("publisher stream: {e}"))?;
    tokio::task::spawn_local(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = http::read_some(&start.stream, &mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    Ok(token)
}

async fn delete_session(base: &Endpoint, token: &str) {
    if let Ok(mut c) = HttpConn::open(base, Some(COORD_IP)).await {
        let _ = c.request("DELETE", "/session", Some(token), None).await;
    }
}

/// Waits (bounded) for the workers' `Cleaned` reports.
async fn await_cleanup(c: &Common, w: &mut Workers) {
    if c.cleanup && matches!(c.target, Target::Switchboard { .. }) {
        let t = Instant::now();
        let limit = Duration::from_secs(120);
        while w.cleaned.iter().any(|d| !d) && t.elapsed() < limit {
            let _ = tokio::time::timeout(Duration::from_millis(200), w.next()).await;
        }
        if w.cleaned.iter().all(|d| *d) {
            eprintln!("sessions deleted in {:.1} s", t.elapsed().as_secs_f64());
        } else {
            eprintln!("cleanup: workers did not finish deleting sessions within {limit:?}");
        }
    }
}

struct Phases {
    helo_s: f64,
    attach_s: f64,
    attached: usize,
    failed: usize,
}

/// Spawns the workers and runs register + attach; `Err` only when workers break.
async fn start_streams(
    c: &Common,
    out: &mut Outcome,
    jobs: Vec<Job>,
    total: usize,
    prog: &mut Progress,
) -> Result<(Workers, Phases), String> {
    let t0 = Instant::now();
    let mut w = Workers::spawn(jobs).await?;
    let limit = c.attach_timeout + Duration::from_secs(600);
    let heloed = w
        .collect(
            "helo",
            limit,
            |_| {},
            |r| match r {
                Report::Heloed {
                    ok, failed, error, ..
                } => Some((ok, failed, error)),
                _ => None,
            },
        )
        .await?;
    let helo_s = t0.elapsed().as_secs_f64();
    let helo_failed: usize = heloed.iter().map(|h| h.1).sum();
    if helo_failed > 0 {
        let err = heloed.iter().find_map(|h| h.2.clone()).unwrap_or_default();
        out.fail(format!(
            "{helo_failed} of {total} helo calls failed; first: {err}"
        ));
    }
    prog.show(|| {
        format!(
            "[{}] {total} sessions registered in {helo_s:.1} s, attaching…",
            out.mode
        )
    });
    let t1 = Instant::now();
    w.send("attach").await;
    let attached = w
        .collect(
            "attach",
            limit,
            |w| {
                let t = w.totals();
                prog.show(|| format!("[attach] events {} bytes {}", t.other_events, t.bytes));
            },
            |r| match r {
                Report::Attached {
                    ok, failed, error, ..
                } => Some((ok, failed, error)),
                _ => None,
            },
        )
        .await?;
    let attach_s = t1.elapsed().as_secs_f64();
    let ok: usize = attached.iter().map(|a| a.0).sum();
    let failed = total - ok.min(total);
    if failed > 0 {
        let err = attached
            .iter()
            .find_map(|a| a.2.clone())
            .unwrap_or_default();
        out.fail(format!(
            "{failed} of {total} streams did not attach; first error: {err}"
        ));
    }
    prog.done();
    eprintln!(
        "[{}] {ok}/{total} streams attached: register {helo_s:.2} s, attach {attach_s:.2} s",
        out.mode
    );
    Ok((
        w,
        Phases {
            helo_s,
            attach_s,
            attached: ok,
            failed,
        },
    ))
}

fn target_param(c: &Common, out: &mut Outcome) {
    match &c.target {
        Target::Switchboard { base, .. } => out.param("url", format!("http://{}", base.host)),
        Target::Nchan { sub } => {
            out.param("sub", format!("http://{}{}", sub.host, sub.path));
        }
    }
}

/// `idle`: hold `streams` streams; server memory before, after and per stream.
pub async fn idle(
    c: &Common,
    streams: usize,
    settle: Duration,
    hold: Duration,
) -> Result<Outcome, String> {
    let mut out = Outcome::new("idle", &c.target_name, &c.label);
    let mut prog = Progress::new();
    let workers = worker_count(c, streams);
    out.param("streams", streams);
    out.param("workers", workers);
    target_param(c, &mut out);
    let mem0 = memory(c);
    let win = Window::start(c);
    let jobs = jobs(c, streams, workers, 500, |n| Work::Streams { count: n });
    let (mut w, ph) = start_streams(c, &mut out, jobs, streams, &mut prog).await?;
    w.send("go").await;
    let reg = ph.helo_s + ph.attach_s;
    out.metric("attached", ph.attached as f64);
    out.metric("attach_failed", ph.failed as f64);
    out.metric("register_s", ph.helo_s);
    out.metric("attach_s", ph.attach_s);
    out.metric("connect_per_s", ph.attached as f64 / reg.max(1e-6));
    // Let the server settle, then read memory; hold and read again.
    let t = tokio::time::Instant::now();
    let mut mem1 = None;
    while t.elapsed() < settle + hold {
        tokio::select! {
            _ = w.next() => {}
            _ = sleep(Duration::from_millis(200)) => {}
        }
        if mem1.is_none() && t.elapsed() >= settle {
            mem1 = memory(c);
        }
        let tot = w.totals();
        prog.show(|| {
            format!(
                "[idle] holding {} streams, {} closed, {:.0}/{:.0} s",
                ph.attached,
                tot.closed,
                t.elapsed().as_secs_f64(),
                (settle + hold).as_secs_f64()
            )
        });
    }
    prog.done();
    let mem2 = memory(c);
    w.send("stop").await;
    let done = w
        .collect(
            "done",
            Duration::from_secs(60),
            |_| {},
            |r| match r {
                Report::Done { cpu_secs, .. } => Some(cpu_secs),
                _ => None,
            },
        )
        .await?;
    let tot = w.totals();
    let worker_cpu: f64 = done.iter().sum();
    out.metric("closed_during_hold", tot.closed as f64);
    out.metric("events_received", (tot.other_events + tot.received) as f64);
    out.metric("stream_bytes_received", tot.bytes as f64);
    if tot.closed > 0 {
        out.fail(format!(
            "{} streams were closed by the server while idle",
            tot.closed
        ));
    }
    if let (Some(m0), Some(m2)) = (mem0, mem2) {
        let m1 = mem1.unwrap_or(m2);
        let per = |after: u64, before: u64| {
            (after.saturating_sub(before) as f64 * 1024.0) / ph.attached.max(1) as f64
        };
        out.metric("server_processes", m0.processes as f64);
        out.metric("rss_before_kb", m0.rss_kb as f64);
        out.metric("rss_after_kb", m2.rss_kb as f64);
        out.metric("rss_settled_kb", m1.rss_kb as f64);
        out.metric(
            "rss_per_stream_bytes",
            per(m2.rss_kb.max(m1.rss_kb), m0.rss_kb),
        );
        out.metric(
            "pss_per_stream_bytes",
            per(m2.pss_kb.max(m1.pss_kb), m0.pss_kb),
        );
    } else {
        out.notes
            .push("no --server-pid: server memory not measured".into());
    }
    // CPU covers register + attach + hold.
    win.finish(c, &mut out, worker_cpu);
    await_cleanup(c, &mut w).await;
    if let Some(m3) = memory(c) {
        sleep(Duration::from_secs(1)).await;
        out.metric(
            "rss_after_release_kb",
            memory(c).unwrap_or(m3).rss_kb as f64,
        );
    }
    Ok(out)
}

/// Broadcast bodies, and how many were accepted.
struct Publisher {
    ep: Endpoint,
    path: String,
    token: Option<String>,
    switchboard: bool,
    payload: String,
    next: Cell<u64>,
    ok: Cell<u64>,
    errors: Cell<u64>,
    recipients: Cell<i64>,
    first_us: Cell<u64>,
    last_us: Cell<u64>,
    error: RefCell<Option<String>>,
    rtt: RefCell<Histogram<u64>>,
}

impl Publisher {
    /// Sends broadcasts numbered 1..=total as `allowed` permits, over one connection; several
    /// of these may run at once and share the numbering.
    async fn run(self: Rc<Self>, total: u64, mut allowed: watch::Receiver<u64>) {
        let mut conn: Option<HttpConn> = None;
        loop {
            let seq = loop {
                let seq = self.next.get() + 1;
                if seq > total {
                    return;
                }
                if *allowed.borrow_and_update() >= seq {
                    self.next.set(seq);
                    break seq;
                }
                if allowed.changed().await.is_err() {
                    return;
                }
            };
            let c = match conn.take() {
                Some(c) => Ok(c),
                None => HttpConn::open(&self.ep, Some(COORD_IP)).await,
            };
            let mut c = match c {
                Ok(c) => c,
                Err(e) => {
                    self.fail(format!("connect: {e}"));
                    continue;
                }
            };
            let t = sys::now_us();
            if self.first_us.get() == 0 {
                self.first_us.set(t);
            }
            self.last_us.set(t);
            let msg = format!(r#"{{"t":{t},"s":{seq}{}}}"#, self.payload);
            let body = if self.switchboard {
                format!(r#"{{"message":{msg}}}"#)
            } else {
                msg
            };
            match c
                .request(
                    "POST",
                    &self.path,
                    self.token.as_deref(),
                    Some(body.as_bytes()),
                )
                .await
            {
                Ok(r) if (200..300).contains(&r.status) => {
                    let _ = self
                        .rtt
                        .borrow_mut()
                        .record(sys::now_us().saturating_sub(t).max(1));
                    self.ok.set(self.ok.get() + 1);
                    if self.switchboard {
                        let n = serde_json::from_slice::<serde_json::Value>(&r.body)
                            .ok()
                            .and_then(|v| v["recipients"].as_i64())
                            .unwrap_or(-1);
                        self.recipients.set(n);
                    }
                    if !c.closed {
                        conn = Some(c);
                    }
                }
                Ok(r) => {
                    self.fail(format!(
                        "publish: HTTP {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    ));
                    if !c.closed {
                        conn = Some(c);
                    }
                }
                Err(e) => self.fail(format!("publish: {e}")),
            }
        }
    }

    fn fail(&self, e: String) {
        self.errors.set(self.errors.get() + 1);
        self.error.borrow_mut().get_or_insert(e);
    }
}

/// Options of the fanout mode.
pub struct FanoutArgs {
    pub streams: usize,
    pub broadcasts: u64,
    pub rate: f64,
    pub window: u64,
    pub publishers: usize,
    pub payload: usize,
    pub drain_timeout: Duration,
}

/// `fanout`: N streams, M broadcasts at a rate (or saturated within a window); deliveries/s,
/// latency, lost.
pub async fn fanout(c: &Common, a: &FanoutArgs) -> Result<Outcome, String> {
    let mut out = Outcome::new("fanout", &c.target_name, &c.label);
    let mut prog = Progress::new();
    let workers = worker_count(c, a.streams);
    out.param("streams", a.streams);
    out.param("broadcasts", a.broadcasts);
    out.param(
        "rate",
        if a.rate > 0.0 {
            serde_json::json!(a.rate)
        } else {
            serde_json::json!("saturated")
        },
    );
    out.param("window", a.window);
    out.param("publishers", a.publishers);
    out.param("payload_bytes", a.payload);
    out.param("workers", workers);
    target_param(c, &mut out);

    let (ep, path, token) = match (&c.target, &c.publish) {
        (Target::Switchboard { base, posts }, _) => {
            let token = coordinator_session(base).await?;
            (posts.clone(), "/broadcast".to_string(), Some(token))
        }
        (Target::Nchan { .. }, Some(p)) => (p.clone(), p.path.clone(), None),
        (Target::Nchan { .. }, None) => return Err("nchan fanout needs --pub-url".into()),
    };
    // Saturated runs steer the window by the workers' progress: report it often.
    let progress_ms = if a.rate > 0.0 { 200 } else { 10 };
    let jobs = jobs(c, a.streams, workers, progress_ms, |n| Work::Streams {
        count: n,
    });
    let (mut w, ph) = start_streams(c, &mut out, jobs, a.streams, &mut prog).await?;
    out.metric("attached", ph.attached as f64);
    out.metric("register_s", ph.helo_s);
    out.metric("attach_s", ph.attach_s);
    if let Some(m) = memory(c) {
        out.metric("server_rss_kb", m.rss_kb as f64);
    }

    let publisher = Rc::new(Publisher {
        ep: ep.clone(),
        path,
        token: token.clone(),
        switchboard: matches!(c.target, Target::Switchboard { .. }),
        payload: if a.payload > 0 {
            format!(r#","p":"{}""#, "x".repeat(a.payload))
        } else {
            String::new()
        },
        next: Cell::new(0),
        ok: Cell::new(0),
        errors: Cell::new(0),
        recipients: Cell::new(-1),
        first_us: Cell::new(0),
        last_us: Cell::new(0),
        error: RefCell::new(None),
        rtt: RefCell::new(new_hist()),
    });
    w.send("go").await;
    let win = Window::start(c);
    let (allow_tx, allow_rx) = watch::channel(0u64);
    let pub_tasks: Vec<_> = (0..a.publishers.max(1))
        .map(|_| tokio::task::spawn_local(publisher.clone().run(a.broadcasts, allow_rx.clone())))
        .collect();
    let t0 = Instant::now();
    let tick_every = if a.rate > 0.0 {
        Duration::from_secs_f64((1.0 / a.rate).clamp(0.001, 0.05))
    } else {
        Duration::from_millis(5)
    };
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let sent_all = |p: &Publisher| p.ok.get() + p.errors.get() >= a.broadcasts;
    let expect = |p: &Publisher| p.ok.get() * ph.attached as u64;
    // Publishing.
    let publish_limit = if a.rate > 0.0 {
        Duration::from_secs_f64(a.broadcasts as f64 / a.rate + 60.0)
    } else {
        Duration::from_secs(600)
    };
    while !sent_all(&publisher) && t0.elapsed() < publish_limit {
        tokio::select! {
            _ = w.next() => {}
            _ = tick.tick() => {}
        }
        let tot = w.totals();
        let allowed = if a.rate > 0.0 {
            (t0.elapsed().as_secs_f64() * a.rate).floor() as u64 + 1
        } else {
            tot.min_count.saturating_add(a.window)
        };
        allow_tx.send_if_modified(|v| {
            let n = allowed.min(a.broadcasts);
            let changed = n > *v;
            if changed {
                *v = n;
            }
            changed
        });
        prog.show(|| {
            format!(
                "[fanout] sent {}/{} recv {}/{} lagged {}",
                publisher.ok.get(),
                a.broadcasts,
                tot.received,
                expect(&publisher),
                tot.lagged_missed
            )
        });
    }
    for t in pub_tasks {
        t.abort();
    }
    // Draining: wait for the last deliveries, or for progress to stop.
    let mut last_recv = w.totals().received;
    let mut last_change = Instant::now();
    while w.totals().received < expect(&publisher) && last_change.elapsed() < a.drain_timeout {
        tokio::select! {
            _ = w.next() => {}
            _ = sleep(Duration::from_millis(50)) => {}
        }
        let tot = w.totals();
        if tot.received != last_recv {
            last_recv = tot.received;
            last_change = Instant::now();
        }
        prog.show(|| {
            format!(
                "[fanout] draining: recv {}/{}",
                tot.received,
                expect(&publisher)
            )
        });
    }
    prog.done();
    w.send("stop").await;
    let done = w
        .collect(
            "done",
            Duration::from_secs(60),
            |_| {},
            |r| match r {
                Report::Done {
                    latency,
                    cpu_secs,
                    error,
                    ..
                } => Some((latency, cpu_secs, error)),
                _ => None,
            },
        )
        .await?;
    let mut hist = new_hist();
    let mut worker_cpu = 0.0;
    for (lat, cpu, _) in &done {
        merge_hist(&mut hist, lat);
        worker_cpu += cpu;
    }
    let tot = w.totals();
    let expected = expect(&publisher);
    let span_us = tot.last_us.saturating_sub(publisher.first_us.get()).max(1);
    out.metric("broadcasts_ok", publisher.ok.get() as f64);
    out.metric("expected", expected as f64);
    out.metric("received", tot.received as f64);
    out.metric("lost", expected.saturating_sub(tot.received) as f64);
    out.metric(
        "deliveries_per_s",
        tot.received as f64 / (span_us as f64 / 1e6),
    );
    out.metric(
        "broadcasts_per_s",
        publisher.ok.get() as f64
            / (publisher
                .last_us
                .get()
                .saturating_sub(publisher.first_us.get())
                .max(1) as f64
                / 1e6),
    );
    latency_metrics(&mut out, "latency", &hist);
    latency_metrics(&mut out, "publish_rtt", &publisher.rtt.borrow());
    out.metric("lagged_missed", tot.lagged_missed as f64);
    out.metric("reordered", tot.dup as f64);
    out.metric("closed", tot.closed as f64);
    win.finish(c, &mut out, worker_cpu);
    if tot.received < expected {
        out.fail(format!(
            "{} events lost ({} received of {expected})",
            expected - tot.received,
            tot.received
        ));
    }
    if tot.received > expected {
        out.notes.push(format!(
            "{} more events than expected",
            tot.received - expected
        ));
    }
    if publisher.errors.get() > 0 {
        out.fail(format!(
            "{} broadcasts failed; first: {}",
            publisher.errors.get(),
            publisher.error.borrow().clone().unwrap_or_default()
        ));
    }
    let r = publisher.recipients.get();
    if publisher.switchboard && r >= 0 && r as usize != ph.attached {
        out.notes.push(format!(
            "server reported {r} recipients for {} streams (other sessions on the server?)",
            ph.attached
        ));
    }
    if tot.dup > 0 {
        if a.publishers <= 1 {
            out.fail(format!("{} events arrived out of order", tot.dup));
        } else {
            // Concurrent publishers: the server may order their broadcasts either way.
            out.notes.push(format!(
                "{} events arrived out of sequence order ({} concurrent publishers)",
                tot.dup, a.publishers
            ));
        }
    }
    if let Some(e) = done.iter().find_map(|d| d.2.clone()) {
        out.notes.push(format!("worker error: {e}"));
    }
    await_cleanup(c, &mut w).await;
    if let (Target::Switchboard { base, .. }, Some(t)) = (&c.target, &token) {
        delete_session(base, t).await;
    }
    Ok(out)
}

/// `direct`: `pairs` sender→receiver pairs at `rate`/s for `duration`.
pub async fn direct(
    c: &Common,
    pairs: usize,
    rate: f64,
    duration: Duration,
    payload: usize,
    drain_timeout: Duration,
) -> Result<Outcome, String> {
    if !matches!(c.target, Target::Switchboard { .. }) {
        return Err("direct mode needs --target switchboard".into());
    }
    let mut out = Outcome::new("direct", &c.target_name, &c.label);
    let mut prog = Progress::new();
    let workers = c
        .workers
        .unwrap_or(1)
        .max(pairs.div_ceil(c.max_per_worker / 2).max(1));
    out.param("pairs", pairs);
    out.param(
        "rate",
        if rate > 0.0 {
            serde_json::json!(rate)
        } else {
            serde_json::json!("closed-loop")
        },
    );
    out.param("duration_s", duration.as_secs_f64());
    out.param("workers", workers);
    target_param(c, &mut out);
    let jobs = {
        let per_rate = rate / workers as f64;
        jobs(c, pairs, workers, 250, |n| Work::Direct {
            pairs: n,
            rate: per_rate,
            duration_ms: duration.as_millis() as u64,
            payload,
        })
    };
    let (mut w, ph) = start_streams(c, &mut out, jobs, pairs, &mut prog).await?;
    out.metric("streams_attached", ph.attached as f64);
    w.send("go").await;
    let win = Window::start(c);
    let t0 = Instant::now();
    let limit = duration + Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = w.next() => {}
            _ = sleep(Duration::from_millis(100)) => {}
        }
        let t = w.totals();
        let el = t0.elapsed().as_secs_f64();
        prog.show(|| {
            format!(
                "[direct] {el:.0}/{:.0} s sent {} recv {} ({:.0}/s) 429s {}",
                duration.as_secs_f64(),
                t.sent_ok,
                t.received,
                t.received as f64 / el.max(1e-3),
                t.rejected
            )
        });
        if (t.sending_done && t0.elapsed() >= duration) || t0.elapsed() > limit {
            break;
        }
    }
    let send_s = t0.elapsed().as_secs_f64();
    let mut last_change = Instant::now();
    let mut last = w.totals().received;
    while w.totals().received < w.totals().sent_ok && last_change.elapsed() < drain_timeout {
        tokio::select! {
            _ = w.next() => {}
            _ = sleep(Duration::from_millis(50)) => {}
        }
        let r = w.totals().received;
        if r != last {
            last = r;
            last_change = Instant::now();
        }
    }
    prog.done();
    w.send("stop").await;
    let done = w
        .collect(
            "done",
            Duration::from_secs(60),
            |_| {},
            |r| match r {
                Report::Done {
                    latency,
                    rtt,
                    cpu_secs,
                    error,
                    ..
                } => Some((latency, rtt, cpu_secs, error)),
                _ => None,
            },
        )
        .await?;
    let (mut lat, mut rtt, mut cpu) = (new_hist(), new_hist(), 0.0);
    for d in &done {
        merge_hist(&mut lat, &d.0);
        merge_hist(&mut rtt, &d.1);
        cpu += d.2;
    }
    let t = w.totals();
    out.metric("sent_ok", t.sent_ok as f64);
    out.metric("received", t.received as f64);
    out.metric("lost", t.sent_ok.saturating_sub(t.received) as f64);
    out.metric(
        "sustained_per_s",
        t.received as f64 / send_s.min(duration.as_secs_f64()).max(1e-3),
    );
    out.metric("rejected_429", t.rejected as f64);
    out.metric("send_errors", t.send_errors as f64);
    latency_metrics(&mut out, "latency", &lat);
    latency_metrics(&mut out, "post_rtt", &rtt);
    out.metric("reordered", t.dup as f64);
    win.finish(c, &mut out, cpu);
    if t.received < t.sent_ok {
        out.fail(format!("{} messages lost", t.sent_ok - t.received));
    }
    if t.send_errors > 0 {
        out.fail(format!(
            "{} sends failed: {}",
            t.send_errors,
            done.iter().find_map(|d| d.3.clone()).unwrap_or_default()
        ));
    }
    if t.dup > 0 {
        out.fail(format!("{} messages out of order", t.dup));
    }
    await_cleanup(c, &mut w).await;
    Ok(out)
}

/// `churn`: sessions start at `rate`/s, each held `hold` then deleted, for `duration`;
/// server RSS sampled every `sample`.
pub async fn churn(
    c: &Common,
    rate: f64,
    duration: Duration,
    hold: Duration,
    sample: Duration,
    warmup: Duration,
) -> Result<Outcome, String> {
    if !matches!(c.target, Target::Switchboard { .. }) {
        return Err("churn mode needs --target switchboard".into());
    }
    let mut out = Outcome::new("churn", &c.target_name, &c.label);
    let mut prog = Progress::new();
    let workers = c.workers.unwrap_or(1).max(1);
    out.param("rate", rate);
    out.param("duration_s", duration.as_secs_f64());
    out.param("hold_ms", hold.as_millis() as u64);
    out.param("workers", workers);
    target_param(c, &mut out);
    let per_rate = rate / workers as f64;
    // Each worker numbers its sessions from far apart bases so names and addresses differ.
    let mut jobs = jobs(c, workers, workers, 500, |_| Work::Churn {
        rate: per_rate,
        duration_ms: duration.as_millis() as u64,
        hold_ms: hold.as_millis() as u64,
    });
    for (i, j) in jobs.iter_mut().enumerate() {
        j.first = i * 10_000_000;
        j.cleanup = false;
    }
    let mem0 = memory(c);
    let (mut w, _) = start_streams(c, &mut out, jobs, 0, &mut prog).await?;
    w.send("go").await;
    let win = Window::start(c);
    let t0 = Instant::now();
    let mut next_sample = Duration::ZERO;
    let limit = duration + hold + Duration::from_secs(30);
    let mut warm: Option<u64> = None;
    loop {
        tokio::select! {
            _ = w.next() => {}
            _ = sleep(Duration::from_millis(100)) => {}
        }
        let el = t0.elapsed();
        if el >= next_sample {
            next_sample += sample;
            if let Some(m) = memory(c) {
                out.rss_samples.push((el.as_secs_f64(), m.rss_kb));
                if warm.is_none() && el >= warmup {
                    warm = Some(m.rss_kb);
                }
            }
        }
        let t = w.totals();
        let rss = out.rss_samples.last().map_or(0, |s| s.1);
        prog.show(|| {
            format!(
                "[churn] {:.0}/{:.0} s cycles {} ({:.0}/s) failed {} skipped {} rss {} KiB",
                el.as_secs_f64(),
                duration.as_secs_f64(),
                t.cycles,
                t.cycles as f64 / el.as_secs_f64().max(1e-3),
                t.cycle_failures,
                t.cycles_skipped,
                rss
            )
        });
        if (t.sending_done && el >= duration) || el > limit {
            break;
        }
    }
    let churn_s = t0.elapsed().as_secs_f64();
    let end = memory(c);
    prog.done();
    w.send("stop").await;
    let done = w
        .collect(
            "done",
            Duration::from_secs(60),
            |_| {},
            |r| match r {
                Report::Done {
                    cpu_secs, error, ..
                } => Some((cpu_secs, error)),
                _ => None,
            },
        )
        .await?;
    let t = w.totals();
    out.metric("cycles", t.cycles as f64);
    out.metric("cycles_per_s", t.cycles as f64 / churn_s.max(1e-3));
    out.metric("cycle_failures", t.cycle_failures as f64);
    out.metric("cycles_skipped", t.cycles_skipped as f64);
    out.metric("events_received", (t.other_events + t.received) as f64);
    win.finish(c, &mut out, done.iter().map(|d| d.0).sum());
    if let (Some(m0), Some(end)) = (mem0, end) {
        let warm = warm.unwrap_or(m0.rss_kb);
        let max = out
            .rss_samples
            .iter()
            .map(|s| s.1)
            .max()
            .unwrap_or(end.rss_kb);
        out.metric("rss_before_kb", m0.rss_kb as f64);
        out.metric("rss_warm_kb", warm as f64);
        out.metric("rss_end_kb", end.rss_kb as f64);
        out.metric("rss_max_kb", max as f64);
        out.metric(
            "rss_growth_pct",
            100.0 * (end.rss_kb as f64 - warm as f64) / warm.max(1) as f64,
        );
        sleep(Duration::from_secs(2)).await;
        if let Some(m) = memory(c) {
            out.metric("rss_quiet_kb", m.rss_kb as f64);
        }
    } else {
        out.notes
            .push("no --server-pid: server memory not sampled".into());
    }
    if t.cycle_failures > 0 {
        out.fail(format!(
            "{} cycles failed; first: {}",
            t.cycle_failures,
            done.iter().find_map(|d| d.1.clone()).unwrap_or_default()
        ));
    }
    if t.cycles_skipped > 0 {
        out.notes.push(format!(
            "{} cycle starts skipped: the target rate was not reached",
            t.cycles_skipped
        ));
    }
    Ok(out)
}
