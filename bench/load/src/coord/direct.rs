//! `direct` mode: sender→receiver pairs posting `/response` at a rate; latency and round trips.

use std::time::{Duration, Instant};

use tokio::time::sleep;

use super::Common;
use super::measure::*;
use super::workers::*;
use crate::outcome::{Outcome, Progress, clock};
use crate::proto::{Target, Work};

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
    let mut prog = Progress::new(c.quiet);
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
    let jobs = jobs(c, pairs, workers, 250, |n| Work::Direct {
        pairs: n,
        rate: per_worker(rate, workers),
        duration_ms: duration.as_millis() as u64,
        payload,
    });
    let (mut w, ph) = start_streams(c, &mut out, jobs, pairs * 2, &mut prog).await?;
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
                "[direct] {} streams, {}, sent {} recv {} ({:.0}/s) 429s {}",
                ph.attached,
                clock(t0.elapsed(), Some(duration), 0, 0),
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
    w.drain(|t| t.received >= t.sent_ok, drain_timeout).await;
    prog.done();
    let done = w.stop().await?;
    let t = &done.totals;
    out.metric("sent_ok", t.sent_ok as f64);
    out.metric("received", t.received as f64);
    out.metric("lost", t.sent_ok.saturating_sub(t.received) as f64);
    out.metric(
        "sustained_per_s",
        t.received as f64 / send_s.min(duration.as_secs_f64()).max(1e-3),
    );
    out.metric("rejected_429", t.rejected as f64);
    out.metric("send_errors", t.send_errors as f64);
    latency_metrics(&mut out, "latency", &done.latency);
    latency_metrics(&mut out, "post_rtt", &done.rtt);
    out.metric("reordered", t.dup as f64);
    win.finish(c, &mut out, done.cpu_secs);
    if t.received < t.sent_ok {
        out.fail(format!("{} messages lost", t.sent_ok - t.received));
    }
    if t.send_errors > 0 {
        out.fail(format!(
            "{} sends failed: {}",
            t.send_errors,
            done.error.clone().unwrap_or_default()
        ));
    }
    if t.dup > 0 {
        out.fail(format!("{} messages out of order", t.dup));
    }
    await_cleanup(c, &mut w).await;
    Ok(out)
}
