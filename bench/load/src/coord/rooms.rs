//! `rooms` mode: many small rooms (switchboard rooms, or one nchan channel each), broadcasts
//! into them at increasing rates, one step per rate; the highest rate whose p99 latency stays
//! within the limit with nothing lost.

use std::time::{Duration, Instant};

use tokio::time::sleep;

use super::Common;
use super::measure::*;
use super::workers::*;
use crate::http::Endpoint;
use crate::outcome::{Outcome, Progress, Step, clock};
use crate::proto::{Counters, Report, RoomPlan, Target, Work};
use crate::worker::new_hist;

/// Options of the rooms mode.
pub struct RoomsArgs {
    pub rooms: usize,
    pub size: usize,
    /// Broadcasts per second in all, one step each, in this order.
    pub rates: Vec<f64>,
    /// Connections broadcasting at once, per worker process.
    pub publishers: usize,
    pub step: Duration,
    pub p99_limit_ms: f64,
    /// Go on after a failed step instead of stopping there.
    pub all_steps: bool,
    /// Tries more of a rate whose step failed before giving up on it.
    pub retries: u32,
    pub drain_timeout: Duration,
}

/// The streams of `rooms` rooms of `size`, spread over workers whole rooms at a time, and
/// over how many connections each worker publishes (None: hold only).
pub(super) async fn start_rooms(
    c: &Common,
    out: &mut Outcome,
    rooms: usize,
    size: usize,
    publishers: Option<usize>,
    progress_ms: u64,
    prog: &mut Progress,
) -> Result<(Workers, Phases), String> {
    let streams = rooms * size;
    let workers = worker_count(c, streams).min(rooms.max(1));
    out.param("rooms", rooms);
    out.param("room_size", size);
    out.param("streams", streams);
    out.param("workers", workers);
    let nchan_publish = match &c.target {
        Target::Switchboard { .. } => None,
        Target::Nchan { .. } => publishers
            .map(|_| Endpoint::parse(&c.pub_url))
            .transpose()?,
    };
    let mut jobs = jobs(c, rooms, workers, progress_ms, |_| Work::Streams {
        count: 0,
        shared: false,
    });
    let mut first_room = 0;
    for j in &mut jobs {
        let share = rooms / workers + usize::from(j.index < rooms % workers);
        // A worker's sessions, streams and broadcasts all go to its own instance (with
        // several `--url`s, one each in turn), as a balancer that pins a room's clients.
        let publish = match &mut j.target {
            Target::Switchboard { base, posts } => publishers.map(|_| Endpoint {
                path: "/broadcast".into(),
                ..(if c.bases.len() > 1 { base } else { posts }).clone()
            }),
            Target::Nchan { sub } => {
                *sub = Endpoint::parse(&c.sub_url)?;
                nchan_publish.clone()
            }
        };
        j.first = first_room * size;
        j.work = Work::Rooms {
            plan: RoomPlan {
                prefix: c.channel.clone(),
                first_room,
                rooms: share,
                size,
            },
            publish,
            publishers: publishers.unwrap_or(0),
        };
        first_room += share;
    }
    start_streams(c, out, jobs, streams, prog).await
}

/// `rooms`: hold the rooms' streams, then one step per rate until a step fails.
pub async fn rooms(c: &Common, a: &RoomsArgs) -> Result<Outcome, String> {
    let mut out = Outcome::new("rooms", &c.target_name, &c.label);
    let mut prog = Progress::new(c.quiet);
    out.param("step_s", a.step.as_secs_f64());
    out.param("p99_limit_ms", a.p99_limit_ms);
    out.param("retries", a.retries);
    target_param(c, &mut out);
    out.param("publishers_per_worker", a.publishers);
    let publishers = Some(a.publishers.max(1));
    let (mut w, ph) = start_rooms(c, &mut out, a.rooms, a.size, publishers, 200, &mut prog).await?;
    out.metric("attached", ph.attached as f64);
    out.metric("register_s", ph.helo_s);
    out.metric("attach_s", ph.attach_s);
    if ph.failed > 0 {
        return Ok(out);
    }
    let workers = w.count();
    phase(c, &mut out, "attached");
    w.send("go").await;
    let win = Window::start(c);
    let mut before = w.totals();
    let mut best: Option<Step> = None;
    let (mut i, mut steps_run, mut tries) = (0, 0u64, 0);
    while let Some(&rate) = a.rates.get(i) {
        steps_run += 1;
        let t0 = Instant::now();
        let cpu0 = server_cpu(c);
        w.send(&format!(
            "step {} {}",
            per_worker(rate, workers),
            a.step.as_millis()
        ))
        .await;
        let done_at = steps_run * workers as u64;
        let limit = a.step + Duration::from_secs(60);
        while w.totals().steps_done < done_at && t0.elapsed() < limit {
            tokio::select! {
                _ = w.next() => {}
                _ = sleep(Duration::from_millis(100)) => {}
            }
            let t = w.totals();
            prog.show(|| {
                format!(
                    "[rooms] {} streams, step {}/{}: {rate}/s, sent {} recv {}/{}, {}",
                    ph.attached,
                    i + 1,
                    a.rates.len(),
                    t.sent_ok - before.sent_ok,
                    t.received - before.received,
                    t.expected - before.expected,
                    clock(t0.elapsed(), Some(a.step), 0, 0)
                )
            });
        }
        let send_s = a.step.as_secs_f64();
        // The step's deliveries, or until they stop coming.
        let step_done = |t: &Counters| t.received - before.received >= t.expected - before.expected;
        w.drain(step_done, a.drain_timeout).await;
        w.send("mark").await;
        let marks = w
            .collect(
                "step",
                Duration::from_secs(30),
                |_| {},
                |r| match r {
                    Report::Step {
                        counters,
                        latency,
                        error,
                    } => Some((counters, latency, error)),
                    _ => None,
                },
            )
            .await?;
        let mut hist = new_hist();
        let mut now = Counters::empty();
        for (cn, lat, _) in &marks {
            merge_hist(&mut hist, lat);
            now.merge(cn);
        }
        let mut step = step_result(rate, send_s, &before, &now, &hist, a.p99_limit_ms);
        if let (Some(cpu0), Some(cpu1)) = (cpu0, server_cpu(c)) {
            let us = cpu1.saturating_sub(cpu0).as_secs_f64() * 1e6;
            step.server_cpu_us_per_broadcast = Some(us / step.broadcasts.max(1) as f64);
        }
        prog.note(format_args!(
            "[rooms] {rate}/s: sent {:.0}/s, p99 {:.1} ms, lost {}, {}",
            step.achieved_per_s,
            step.latency_p99_ms,
            step.lost,
            if step.ok { "ok" } else { "over the limit" }
        ));
        if step.ok {
            best = Some(step.clone());
        } else if let Some(e) = marks.iter().find_map(|m| m.2.clone()) {
            out.notes.push(format!("at {rate}/s: {e}"));
        }
        let failed = !step.ok;
        out.steps.push(step);
        before = now;
        if failed && tries < a.retries {
            // Once more at the same rate: on a shared host one step can meet another
            // process's burst.
            tries += 1;
            continue;
        }
        tries = 0;
        if failed && !a.all_steps {
            break;
        }
        i += 1;
    }
    prog.done();
    phase(c, &mut out, "drained");
    match &best {
        Some(s) => {
            out.metric("max_rate_per_s", s.rate);
            out.metric("max_rate_sent_per_s", s.achieved_per_s);
            out.metric(
                "max_rate_deliveries_per_s",
                s.received as f64 / a.step.as_secs_f64(),
            );
            out.metric("max_rate_latency_p99_ms", s.latency_p99_ms);
            if let Some(us) = s.server_cpu_us_per_broadcast {
                out.metric("max_rate_server_cpu_us_per_broadcast", us);
            }
        }
        None => {
            out.metric("max_rate_per_s", 0.0);
            out.notes.push("no rate passed".into());
        }
    }
    if best.is_some() && out.steps.iter().all(|s| s.ok) {
        out.notes.push(format!(
            "every rate passed: the limit is above {}/s (try higher --rates)",
            a.rates.last().copied().unwrap_or(0.0)
        ));
    }
    let done = w.stop().await?;
    let t = &done.totals;
    closed_streams(&mut out, t.closed, "streams closed during the run");
    win.finish(c, &mut out, done.cpu_secs);
    await_cleanup(c, &mut w).await;
    Ok(out)
}

/// One step's figures from the counters before and after it.
fn step_result(
    rate: f64,
    send_s: f64,
    before: &Counters,
    now: &Counters,
    hist: &hdrhistogram::Histogram<u64>,
    p99_limit_ms: f64,
) -> Step {
    let broadcasts = now.sent_ok - before.sent_ok;
    let expected = now.expected - before.expected;
    let received = now.received - before.received;
    let q = |p: f64| {
        if hist.is_empty() {
            0.0
        } else {
            ms(hist.value_at_quantile(p))
        }
    };
    let achieved = broadcasts as f64 / send_s.max(1e-3);
    let mut s = Step {
        rate,
        achieved_per_s: achieved,
        broadcasts,
        expected,
        received,
        lost: expected.saturating_sub(received),
        lagged_missed: now.lagged_missed - before.lagged_missed,
        errors: now.send_errors - before.send_errors,
        latency_p50_ms: q(0.5),
        latency_p99_ms: q(0.99),
        latency_max_ms: if hist.is_empty() { 0.0 } else { ms(hist.max()) },
        server_cpu_us_per_broadcast: None,
        ok: false,
    };
    s.ok = s.lost == 0
        && s.lagged_missed == 0
        && s.errors == 0
        && expected > 0
        && s.latency_p99_ms <= p99_limit_ms
        && achieved >= 0.9 * rate;
    s
}
