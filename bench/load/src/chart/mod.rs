//! The `chart` subcommand: SVG charts of results files (`--json` lines), one per question the
//! benchmarks answer, and `charts.json` with the numbers each chart draws.
//!
//! Each chart picks its runs by mode and parameters, takes one metric against one parameter,
//! and draws the median of the successful runs at each point, one line per target
//! (switchboard, nchan, the floor). A chart without runs is left out.
//!
//! # Layout
//! - this module: which runs and metrics make which chart; `charts.json`.
//! - [`draw`]: the SVG drawing (plotters, SVG backend only).

mod draw;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::outcome::{Outcome, median, read_runs};

/// One line of a chart: `(x, y)` points in increasing x.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart as drawn: file name, titles, lines, and an optional horizontal limit line.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub file: String,
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    pub limit: Option<(String, f64)>,
}

/// Writes every chart the runs in `files` allow into `out`, and `charts.json`.
pub fn chart(files: &[PathBuf], out: &Path) -> Result<(), String> {
    let runs = read_runs(files)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let charts = charts(&runs);
    if charts.is_empty() {
        return Err("no results that any chart uses".into());
    }
    for c in &charts {
        let path = out.join(&c.file);
        draw::svg(c, &path)?;
        eprintln!("wrote {}", path.display());
    }
    let json = serde_json::to_string_pretty(&charts).expect("charts serialize");
    let path = out.join("charts.json");
    std::fs::write(&path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

/// The charts these runs allow.
pub fn charts(runs: &[Outcome]) -> Vec<Chart> {
    let str_param =
        |r: &Outcome, k: &str| r.params.get(k).and_then(|v| v.as_str().map(String::from));
    let num = |r: &Outcome, k: &str| r.params.get(k).and_then(serde_json::Value::as_f64);
    let at_rate = |r: &Outcome| r.mode == "fanout" && num(r, "rate").is_some();
    let saturated =
        |r: &Outcome| r.mode == "fanout" && str_param(r, "rate").as_deref() == Some("saturated");
    let idle = |r: &Outcome| {
        r.mode == "idle"
            && r.params.get("shared_connection") != Some(&serde_json::Value::Bool(true))
    };
    let direct = |r: &Outcome| r.mode == "direct" && num(r, "rate").is_some();
    let streams = |r: &Outcome| num(r, "streams").map(|n| (n, n));
    let mut out = Vec::new();
    let mut push = |file: &str, title: String, x: &str, y: &str, series: Vec<Series>| {
        if !series.is_empty() {
            out.push(Chart {
                file: file.into(),
                title,
                x_desc: x.into(),
                y_desc: y.into(),
                series,
                limit: None,
            });
        }
    };
    let rates: Vec<f64> = runs
        .iter()
        .filter(|r| at_rate(r))
        .filter_map(|r| num(r, "rate"))
        .collect();
    let rate_txt = match rates.first() {
        Some(r) if rates.iter().all(|x| x == r) => format!("{r} broadcast/s"),
        _ => "broadcasts at a rate".into(),
    };
    push(
        "p99-vs-streams.svg",
        format!("Delivery latency p99, {rate_txt}, against streams"),
        "streams",
        "p99 latency (ms)",
        by_target(runs, at_rate, streams, |r| metric(r, "latency_p99_ms")),
    );
    push(
        "memory-per-stream.svg",
        "Server memory per idle stream (RSS)".into(),
        "streams",
        "bytes per stream",
        by_target(runs, idle, streams, |r| metric(r, "rss_per_stream_bytes")),
    );
    push(
        "fanout-saturated.svg",
        "Saturated fan-out: deliveries per second".into(),
        "streams",
        "deliveries/s",
        by_target(runs, saturated, streams, |r| metric(r, "deliveries_per_s")),
    );
    // Drawn at the rate sustained, not the one asked for: the generator's senders wait for
    // each answer, so past some rate they fall short of it.
    let sustained = |r: &Outcome| Some((num(r, "rate")?, metric(r, "sustained_per_s")?));
    let mut dm = by_target(runs, direct, sustained, |r| metric(r, "latency_p50_ms"));
    dm.iter_mut().for_each(|s| s.name += " p50");
    let mut p99 = by_target(runs, direct, sustained, |r| metric(r, "latency_p99_ms"));
    p99.iter_mut().for_each(|s| s.name += " p99");
    dm.extend(p99);
    push(
        "direct-latency-vs-rate.svg",
        "Direct messages: POST /response to event, latency against rate".into(),
        "messages/s sustained",
        "latency (ms)",
        dm,
    );
    push(
        "join-p99.svg",
        "POST /helo into a 10-member room: p99 against sessions on the hub".into(),
        "sessions on the hub",
        "helo p99 (ms)",
        by_target(
            runs,
            |r| r.mode == "join",
            streams,
            |r| metric(r, "helo_p99_ms"),
        ),
    );
    out.extend(rooms_chart(runs));
    out
}

/// A run's metric by name.
fn metric(r: &Outcome, name: &str) -> Option<f64> {
    r.metrics.iter().find(|m| m.name == name).map(|m| m.value)
}

/// One series per target: over the successful runs `pick` accepts, grouped by the first
/// number `x` gives (a parameter), the median of its second (where the point is drawn) and
/// of `y`.
fn by_target(
    runs: &[Outcome],
    pick: impl Fn(&Outcome) -> bool,
    x: impl Fn(&Outcome) -> Option<(f64, f64)>,
    y: impl Fn(&Outcome) -> Option<f64>,
) -> Vec<Series> {
    let mut points: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.ok && pick(r)) {
        if let (Some((k, x)), Some(y)) = (x(r), y(r)) {
            points.entry(r.target.clone()).or_default().push((k, x, y));
        }
    }
    points
        .into_iter()
        .map(|(name, p)| Series {
            name,
            points: medians(p),
        })
        .collect()
}

/// For each group key `(key, x, y)`, in increasing key: the median x and the median y.
fn medians(mut p: Vec<(f64, f64, f64)>) -> Vec<(f64, f64)> {
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        let group: Vec<_> = p[i..].iter().take_while(|q| q.0 == p[i].0).collect();
        i += group.len();
        let mut xs: Vec<f64> = group.iter().map(|q| q.1).collect();
        let mut ys: Vec<f64> = group.iter().map(|q| q.2).collect();
        out.push((median(&mut xs), median(&mut ys)));
    }
    out
}

/// Room fan-out: p99 against the broadcast rate, every step of every rooms run, with the
/// limit drawn and each target's highest passing rate (median over runs) in the title.
fn rooms_chart(runs: &[Outcome]) -> Option<Chart> {
    let num = |r: &Outcome, k: &str| r.params.get(k).and_then(serde_json::Value::as_f64);
    let rooms: Vec<&Outcome> = runs.iter().filter(|r| r.mode == "rooms").collect();
    let first = rooms.first()?;
    let mut points: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
    let mut best: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in &rooms {
        for s in &r.steps {
            points
                .entry(r.target.clone())
                .or_default()
                // Plotted at the rate sent, not asked: a step beyond what a server carries
                // lands at its ceiling.
                .push((s.rate, s.achieved_per_s, s.latency_p99_ms));
        }
        if let Some(m) = metric(r, "max_rate_per_s") {
            best.entry(r.target.clone()).or_default().push(m);
        }
    }
    let limit = first
        .params
        .get("p99_limit_ms")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(50.0);
    let shape = match (num(first, "rooms"), num(first, "room_size")) {
        (Some(n), Some(k)) => format!("{} rooms of {k}", draw::human(n)),
        _ => "rooms".into(),
    };
    let best: Vec<String> = best
        .into_iter()
        .map(|(t, mut v)| format!("{t} {}/s", draw::human(median(&mut v))))
        .collect();
    Some(Chart {
        file: "rooms-p99-vs-rate.svg".into(),
        title: format!(
            "Room fan-out, {shape}: p99 against broadcast rate (best: {})",
            best.join(", ")
        ),
        x_desc: "room broadcasts/s sent".into(),
        y_desc: "p99 latency (ms)".into(),
        series: points
            .into_iter()
            .map(|(name, p)| Series {
                name,
                points: medians(p),
            })
            .collect(),
        limit: Some((format!("p99 limit {limit} ms"), limit)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Step;

    fn run(
        mode: &str,
        target: &str,
        params: serde_json::Value,
        metrics: &[(&str, f64)],
    ) -> Outcome {
        let mut o = Outcome::new(mode, target, "");
        for (k, v) in params.as_object().expect("object") {
            o.param(k, v.clone());
        }
        for (k, v) in metrics {
            o.metric(k, *v);
        }
        o
    }

    #[test]
    fn medians_per_target_and_point_skipping_failed_runs() {
        let p = |n: u64| serde_json::json!({"streams": n, "rate": 1.0});
        let mut failed = run("fanout", "nchan", p(1000), &[("latency_p99_ms", 900.0)]);
        failed.ok = false;
        let runs = vec![
            run("fanout", "switchboard", p(1000), &[("latency_p99_ms", 3.0)]),
            run("fanout", "switchboard", p(1000), &[("latency_p99_ms", 5.0)]),
            run("fanout", "switchboard", p(1000), &[("latency_p99_ms", 4.0)]),
            run(
                "fanout",
                "switchboard",
                p(10000),
                &[("latency_p99_ms", 60.0)],
            ),
            run("fanout", "nchan", p(1000), &[("latency_p99_ms", 7.0)]),
            failed,
            // Saturated runs are another chart.
            run(
                "fanout",
                "switchboard",
                serde_json::json!({"streams": 1000, "rate": "saturated"}),
                &[("latency_p99_ms", 99.0)],
            ),
        ];
        let c = charts(&runs);
        let p99 = c
            .iter()
            .find(|c| c.file == "p99-vs-streams.svg")
            .expect("p99 chart");
        assert_eq!(p99.series.len(), 2);
        let sb = p99
            .series
            .iter()
            .find(|s| s.name == "switchboard")
            .expect("switchboard line");
        assert_eq!(sb.points, vec![(1000.0, 4.0), (10000.0, 60.0)]);
        let nc = p99
            .series
            .iter()
            .find(|s| s.name == "nchan")
            .expect("nchan line");
        assert_eq!(nc.points, vec![(1000.0, 7.0)]);
        assert!(
            c.iter().all(|c| c.file != "memory-per-stream.svg"),
            "no idle runs, no chart"
        );
    }

    #[test]
    fn direct_points_group_by_the_rate_asked_and_sit_at_the_rate_sustained() {
        let d = |sustained: f64, p99: f64| {
            run(
                "direct",
                "switchboard",
                serde_json::json!({"rate": 10000.0}),
                &[
                    ("sustained_per_s", sustained),
                    ("latency_p50_ms", 1.0),
                    ("latency_p99_ms", p99),
                ],
            )
        };
        let c = charts(&[d(9000.0, 10.0), d(9500.0, 30.0), d(9400.0, 20.0)]);
        let direct = c
            .iter()
            .find(|c| c.file == "direct-latency-vs-rate.svg")
            .expect("direct chart");
        let p99 = direct
            .series
            .iter()
            .find(|s| s.name == "switchboard p99")
            .expect("p99 line");
        assert_eq!(p99.points, vec![(9400.0, 20.0)]);
    }

    #[test]
    fn rooms_chart_draws_steps_and_names_the_best_rate() {
        let mut r = run(
            "rooms",
            "nchan",
            serde_json::json!({"rooms": 1900, "room_size": 10, "p99_limit_ms": 50.0}),
            &[("max_rate_per_s", 500.0)],
        );
        for (rate, p99, ok) in [
            (100.0, 3.0, true),
            (500.0, 20.0, true),
            (1000.0, 80.0, false),
        ] {
            r.steps.push(Step {
                rate,
                latency_p99_ms: p99,
                ok,
                ..Step::default()
            });
        }
        let c = rooms_chart(&[r]).expect("rooms chart");
        assert!(c.title.contains("1,900 rooms of 10"), "{}", c.title);
        assert!(c.title.contains("nchan 500/s"), "{}", c.title);
        assert_eq!(c.series[0].points.len(), 3);
        assert_eq!(c.limit.as_ref().map(|l| l.1), Some(50.0));
        let dir = std::env::temp_dir().join(format!("sb-chart-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(&c.file);
        draw::svg(&c, &path).expect("svg drawn");
        let svg = std::fs::read_to_string(&path).expect("svg written");
        std::fs::remove_dir_all(&dir).expect("temp dir removed");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("nchan") && svg.contains("p99 limit 50 ms"));
    }
}
