//! `churn` mode: sessions that join, hold their stream a while and leave, at a rate, with the
//! server's memory sampled throughout.

use std::time::{Duration, Instant};

use tokio::time::sleep;

use super::Common;
use super::measure::*;
use super::workers::*;
use crate::outcome::{Outcome, Progress, clock};
use crate::proto::{Target, Work};

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
    let mut prog = Progress::new(c.quiet);
    let workers = c.workers.unwrap_or(1).max(1);
    out.param("rate", rate);
    out.param("duration_s", duration.as_secs_f64());
    out.param("hold_ms", hold.as_millis() as u64);
    out.param("workers", workers);
    target_param(c, &mut out);
    // Each worker numbers its sessions from far apart bases so names and addresses differ.
    let mut jobs = jobs(c, workers, workers, 500, |_| Work::Churn {
        rate: per_worker(rate, workers),
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
                "[churn] {}, cycles {} ({:.0}/s) failed {} skipped {} rss {} KiB",
                clock(el, Some(duration), 0, 0),
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
    let done = w.stop().await?;
    let t = &done.totals;
    out.metric("cycles", t.cycles as f64);
    out.metric("cycles_per_s", t.cycles as f64 / churn_s.max(1e-3));
    out.metric("cycle_failures", t.cycle_failures as f64);
    out.metric("cycles_skipped", t.cycles_skipped as f64);
    out.metric("events_received", (t.other_events + t.received) as f64);
    win.finish(c, &mut out, done.cpu_secs);
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
            done.error.clone().unwrap_or_default()
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
