//! `fanout` mode: broadcasts to every held stream, at a rate or saturated; deliveries per
//! second, latency and losses.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::sleep;

use super::Common;
use super::measure::*;
use super::publisher::*;
use super::workers::*;
use crate::outcome::{Outcome, Progress, clock};
use crate::proto::{Target, Work};
use crate::worker::new_hist;

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
    let mut prog = Progress::new(c.quiet);
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
    out.param("instances", c.bases.len());
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
        shared: false,
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
    phase(c, &mut out, "attached");
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
            let total =
                (a.rate > 0.0).then(|| Duration::from_secs_f64(a.broadcasts as f64 / a.rate));
            format!(
                "[fanout] {} streams, sent {}/{} recv {}/{} lagged {}, {}",
                ph.attached,
                publisher.ok.get(),
                a.broadcasts,
                tot.received,
                expect(&publisher),
                tot.lagged_missed,
                clock(t0.elapsed(), total, publisher.ok.get(), a.broadcasts)
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
    phase(c, &mut out, "drained");
    let done = w.stop().await?;
    let tot = &done.totals;
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
    latency_metrics(&mut out, "latency", &done.latency);
    latency_metrics(&mut out, "publish_rtt", &publisher.rtt.borrow());
    out.metric("lagged_missed", tot.lagged_missed as f64);
    out.metric("reordered", tot.dup as f64);
    out.metric("closed", tot.closed as f64);
    win.finish(c, &mut out, done.cpu_secs);
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
    if let Some(e) = &done.error {
        out.notes.push(format!("worker error: {e}"));
    }
    await_cleanup(c, &mut w).await;
    if let (Target::Switchboard { base, .. }, Some(t)) = (&c.target, &token) {
        delete_session(base, t).await;
    }
    Ok(out)
}
