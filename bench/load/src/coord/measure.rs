//! What a run measures around the workers' counters: the server's memory and CPU and our own CPU
//! over a window, latency histograms turned into metrics, and the target named in the params.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::Common;
use crate::outcome::Outcome;
use crate::proto::Target;
use crate::sys::{self, Memory};

/// The memory of every server process named, summed; `None` when none is named or alive.
pub(super) fn memory(c: &Common) -> Option<Memory> {
    c.server_pids
        .iter()
        .filter_map(|pid| sys::memory(*pid))
        .reduce(|a, b| Memory {
            rss_kb: a.rss_kb + b.rss_kb,
            pss_kb: a.pss_kb + b.pss_kb,
            processes: a.processes + b.processes,
        })
}

/// The CPU time of every server process named, summed; `None` when none is named.
pub(super) fn server_cpu(c: &Common) -> Option<Duration> {
    (!c.server_pids.is_empty()).then(|| c.server_pids.iter().map(|p| sys::tree_cpu(*p)).sum())
}

pub(super) fn merge_hist(into: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for (v, n) in pairs {
        let _ = into.record_n(*v, *n);
    }
}

pub(super) fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub(super) fn latency_metrics(out: &mut Outcome, prefix: &str, h: &Histogram<u64>) {
    if h.is_empty() {
        return;
    }
    out.metric(&format!("{prefix}_p50_ms"), ms(h.value_at_quantile(0.50)));
    out.metric(&format!("{prefix}_p99_ms"), ms(h.value_at_quantile(0.99)));
    out.metric(&format!("{prefix}_p999_ms"), ms(h.value_at_quantile(0.999)));
    out.metric(&format!("{prefix}_max_ms"), ms(h.max()));
}

/// `closed`: the streams the server closed during the run, which fails the run (saying
/// `"{closed} {why}"`) unless there were none.
pub(super) fn closed_streams(out: &mut Outcome, closed: u64, why: &str) {
    out.metric("closed", closed as f64);
    if closed > 0 {
        out.fail(format!("{closed} {why}"));
    }
}

/// Server memory, CPU and the generator's own CPU over one measured window.
pub(super) struct Window {
    t0: Instant,
    cpu0: f64,
    server_cpu0: Option<Duration>,
}

impl Window {
    pub(super) fn start(c: &Common) -> Self {
        Self {
            t0: Instant::now(),
            cpu0: sys::self_cpu_secs(),
            server_cpu0: server_cpu(c),
        }
    }

    /// Adds `gen_cpu_*` (coordinator + `worker_cpu`) and `server_cpu_*` metrics.
    pub(super) fn finish(&self, c: &Common, out: &mut Outcome, worker_cpu: f64) {
        let wall = self.t0.elapsed().as_secs_f64().max(1e-6);
        let gen_cpu = sys::self_cpu_secs() - self.cpu0 + worker_cpu;
        out.metric("window_s", wall);
        out.metric("gen_cpu_s", gen_cpu);
        out.metric("gen_cpu_pct", 100.0 * gen_cpu / wall);
        if let (Some(now), Some(s0)) = (server_cpu(c), self.server_cpu0) {
            let s = now.saturating_sub(s0).as_secs_f64();
            out.metric("server_cpu_s", s);
            out.metric("server_cpu_pct", 100.0 * s / wall);
        }
    }
}

pub(super) fn target_param(c: &Common, out: &mut Outcome) {
    match &c.target {
        Target::Switchboard { base, .. } => out.param("url", format!("http://{}", base.host)),
        Target::Nchan { sub } => {
            out.param("sub", format!("http://{}{}", sub.host, sub.path));
        }
    }
}
