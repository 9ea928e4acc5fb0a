//! A run's result: printed as a table, or as one JSON line (`--json`) that `report` reads
//! back to compute medians and switchboard/nchan ratios over several rounds.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One named number. The unit is in the name: `_ms`, `_s`, `_kb`, `_bytes`, `_per_s`, `_pct`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
}

/// One rate of the rooms mode's ladder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Step {
    /// Broadcasts per second asked for, and sent (accepted by the server).
    pub rate: f64,
    pub achieved_per_s: f64,
    pub broadcasts: u64,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub lagged_missed: u64,
    pub errors: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// The server's CPU time (every `--server-pid`) per broadcast sent in the step, its drain
    /// included: what a rate costs the server whatever the generator could send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_broadcast: Option<f64>,
    /// p99 within the limit, nothing lost, no errors, the rate reached.
    pub ok: bool,
}

/// Everything a mode measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub mode: String,
    pub target: String,
    /// Scenario name given with `--label`; `report` groups by it.
    pub label: String,
    pub params: BTreeMap<String, serde_json::Value>,
    pub metrics: Vec<Metric>,
    /// Churn: `(seconds since start, server RSS KiB)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rss_samples: Vec<(f64, u64)>,
    /// Rooms: one entry per broadcast rate tried, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    pub notes: Vec<String>,
    /// False when the run broke a rule (events lost, streams failed, errors).
    pub ok: bool,
}

impl Outcome {
    pub fn new(mode: &str, target: &str, label: &str) -> Self {
        Self {
            mode: mode.into(),
            target: target.into(),
            label: if label.is_empty() {
                mode.into()
            } else {
                label.into()
            },
            ok: true,
            ..Self::default()
        }
    }

    pub fn param(&mut self, k: &str, v: impl Into<serde_json::Value>) {
        self.params.insert(k.into(), v.into());
    }

    pub fn metric(&mut self, name: &str, value: f64) {
        self.metrics.push(Metric {
            name: name.into(),
            value,
        });
    }

    /// Records a failure: the run is not ok and the note says why.
    pub fn fail(&mut self, why: impl Into<String>) {
        self.ok = false;
        self.notes.push(why.into());
    }

    /// The human table.
    pub fn print_table(&self) {
        println!();
        println!(
            "== {} against {} ({}) ==",
            self.mode, self.target, self.label
        );
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("params: {}", params.join(" "));
        let w = self
            .metrics
            .iter()
            .map(|m| m.name.len())
            .max()
            .unwrap_or(10);
        println!("{:<w$}  {:>14}", "metric", "value");
        println!("{:-<w$}  {:->14}", "", "");
        for m in &self.metrics {
            println!("{:<w$}  {:>14}", m.name, fmt_num(m.value));
        }
        if !self.rss_samples.is_empty() {
            println!("server RSS over time (s: KiB):");
            let line: Vec<String> = self
                .rss_samples
                .iter()
                .map(|(t, kb)| format!("{t:.0}:{kb}"))
                .collect();
            println!("  {}", line.join(" "));
        }
        if !self.steps.is_empty() {
            println!("rate/s  sent/s  p50 ms  p99 ms  expected  lost  lagged  errors  ok");
            for s in &self.steps {
                println!(
                    "{:>6}  {:>6.0}  {:>6.2}  {:>6.2}  {:>8}  {:>4}  {:>6}  {:>6}  {}",
                    fmt_num(s.rate),
                    s.achieved_per_s,
                    s.latency_p50_ms,
                    s.latency_p99_ms,
                    s.expected,
                    s.lost,
                    s.lagged_missed,
                    s.errors,
                    if s.ok { "yes" } else { "no" }
                );
            }
        }
        for n in &self.notes {
            println!("note: {n}");
        }
        println!("result: {}", if self.ok { "OK" } else { "FAILED" });
    }
}

/// Formats a number with sensible precision.
pub fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// What a long run is doing, on stderr: one line rewritten in place, only on a terminal and
/// not with `--quiet` (a log file or CI gets no progress lines). `note` lines (phases done,
/// sessions deleted) go to stderr either way, except with `--quiet`.
pub struct Progress {
    tty: bool,
    quiet: bool,
    last: Option<Instant>,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Self {
            tty: !quiet && std::io::stderr().is_terminal(),
            quiet,
            last: None,
        }
    }

    /// Shows `msg` in place unless a line was shown in the last 250 ms.
    pub fn show(&mut self, msg: impl FnOnce() -> String) {
        if !self.tty
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(250))
        {
            return;
        }
        self.last = Some(Instant::now());
        eprint!("\r\x1b[K{}", msg());
    }

    /// Ends the progress line.
    pub fn done(&mut self) {
        if self.tty && self.last.is_some() {
            eprint!("\r\x1b[K");
        }
        self.last = None;
    }

    /// A line that stays (unless `--quiet`).
    pub fn note(&mut self, msg: impl std::fmt::Display) {
        self.done();
        if !self.quiet {
            eprintln!("{msg}");
        }
    }
}

/// `elapsed` seconds, and what is left of `total` at the pace so far (or of a fixed total).
pub fn clock(elapsed: Duration, total: Option<Duration>, done: u64, of: u64) -> String {
    let el = elapsed.as_secs_f64();
    let left = match total {
        Some(t) => (t.as_secs_f64() - el).max(0.0),
        None if done > 0 && of > done => el * (of - done) as f64 / done as f64,
        None => 0.0,
    };
    format!("{el:.0} s, ~{left:.0} s left")
}

/// Whether a smaller value of this metric is better (latency, memory, CPU, losses, time).
pub fn lower_is_better(name: &str) -> bool {
    !(name.ends_with("_per_s") || name == "attached" || name == "cycles")
}

/// Every result in files of `--json` lines (other lines are skipped); an error when none.
pub fn read_runs(files: &[std::path::PathBuf]) -> Result<Vec<Outcome>, String> {
    let mut runs: Vec<Outcome> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        runs.extend(
            text.lines()
                .filter(|l| l.starts_with('{'))
                .filter_map(|l| serde_json::from_str::<Outcome>(l).ok()),
        );
    }
    if runs.is_empty() {
        return Err("no results found".into());
    }
    Ok(runs)
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `report` subcommand: medians per scenario and target (switchboard, nchan, and the
/// floor: rawfan run as `--name floor`), and switchboard's ratio to each.
/// Reads files of `--json` lines (other lines are skipped). Prints a Markdown table.
pub fn report(files: &[std::path::PathBuf], only: &[String]) -> Result<(), String> {
    let runs = read_runs(files)?;
    // label -> target -> metric -> values, keeping first-seen order of labels and metrics.
    let mut labels: Vec<String> = Vec::new();
    let mut metric_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut vals: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    let mut failed: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &runs {
        if !labels.contains(&r.label) {
            labels.push(r.label.clone());
        }
        if !r.ok {
            *failed
                .entry((r.label.clone(), r.target.clone()))
                .or_default() += 1;
        }
        let order = metric_order.entry(r.label.clone()).or_default();
        for m in &r.metrics {
            if !only.is_empty() && !only.contains(&m.name) {
                continue;
            }
            if !order.contains(&m.name) {
                order.push(m.name.clone());
            }
            vals.entry((r.label.clone(), r.target.clone(), m.name.clone()))
                .or_default()
                .push(m.value);
        }
    }
    println!(
        "| scenario | metric | switchboard | nchan | floor | switchboard/nchan | switchboard/floor | better |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    for label in &labels {
        for name in metric_order.get(label).into_iter().flatten() {
            let mut get = |t: &str| {
                vals.get_mut(&(label.clone(), t.to_string(), name.clone()))
                    .map(|v| (median(v), v.len()))
            };
            let sb = get("switchboard");
            let nc = get("nchan");
            let floor = get("floor");
            let cell = |x: Option<(f64, usize)>| match x {
                Some((m, n)) => format!("{} (n={n})", fmt_num(m)),
                None => "-".into(),
            };
            let ratio = |other: Option<(f64, usize)>| match (sb, other) {
                (Some((a, _)), Some((b, _))) if b != 0.0 => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            let better = if lower_is_better(name) {
                "lower"
            } else {
                "higher"
            };
            println!(
                "| {label} | {name} | {} | {} | {} | {} | {} | {better} |",
                cell(sb),
                cell(nc),
                cell(floor),
                ratio(nc),
                ratio(floor)
            );
        }
    }
    for ((label, target), n) in &failed {
        println!("\nWARNING: {n} {target} run(s) of {label} FAILED (see their notes)");
    }
    Ok(())
}
