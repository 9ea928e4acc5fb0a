//! `idle` mode: hold streams that receive nothing, to measure what a held stream costs the server.

use std::time::Duration;

use tokio::time::sleep;

use super::Common;
use super::measure::*;
use super::workers::*;
use crate::outcome::{Outcome, Progress, clock};
use crate::proto::{Target, Work};

/// `idle`: hold `streams` streams; server memory before, after and per stream. `shared`: each
/// stream's helo goes first on the stream's own connection (switchboard only).
pub async fn idle(
    c: &Common,
    streams: usize,
    shared: bool,
    settle: Duration,
    hold: Duration,
) -> Result<Outcome, String> {
    if shared && !matches!(c.target, Target::Switchboard { .. }) {
        return Err("--shared-connection needs switchboard's POST /helo; nchan has none".into());
    }
    let label = match (c.label.as_str(), shared) {
        ("", true) => "idle-shared",
        (l, _) => l,
    };
    let mut out = Outcome::new("idle", &c.target_name, label);
    let mut prog = Progress::new(c.quiet);
    let workers = worker_count(c, streams);
    out.param("streams", streams);
    out.param("workers", workers);
    out.param("shared_connection", shared);
    target_param(c, &mut out);
    let mem0 = memory(c);
    let win = Window::start(c);
    let jobs = jobs(c, streams, workers, 500, |n| Work::Streams {
        count: n,
        shared,
    });
    let (mut w, ph) = start_streams(c, &mut out, jobs, streams, &mut prog).await?;
    w.send("go").await;
    let reg = ph.helo_s + ph.attach_s;
    out.metric("attached", ph.attached as f64);
    out.metric("attach_failed", ph.failed as f64);
    // Shared: the helo calls are part of attach_s (ph.helo_s is only the workers' start-up).
    out.metric("register_s", if shared { 0.0 } else { ph.helo_s });
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
                "[idle] holding {} streams, {} closed, {}",
                ph.attached,
                tot.closed,
                clock(t.elapsed(), Some(settle + hold), 0, 0)
            )
        });
    }
    prog.done();
    let mem2 = memory(c);
    let done = w.stop().await?;
    let tot = &done.totals;
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
    win.finish(c, &mut out, done.cpu_secs);
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
