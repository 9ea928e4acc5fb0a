//! The worker processes: spawned from our own executable with a [`Job`] each, commanded over
//! stdin, reporting over stdout; and the register + attach phases every mode starts with.

use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use hdrhistogram::Histogram;

use super::Common;
use super::measure::merge_hist;
use crate::outcome::{Outcome, Progress, clock};
use crate::proto::{Counters, Job, Report, Target, Work};
use crate::worker::new_hist;

pub(super) struct Workers {
    stdins: Vec<ChildStdin>,
    _children: Vec<Child>,
    rx: mpsc::UnboundedReceiver<(usize, Report)>,
    latest: Vec<Counters>,
    /// Workers that reported `Cleaned` (or exited), whenever that arrived.
    cleaned: Vec<bool>,
}

impl Workers {
    pub(super) async fn spawn(jobs: Vec<Job>) -> Result<Self, String> {
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

    pub(super) fn count(&self) -> usize {
        self.stdins.len()
    }

    pub(super) async fn send(&mut self, cmd: &str) {
        for s in &mut self.stdins {
            let _ = s.write_all(format!("{cmd}\n").as_bytes()).await;
            let _ = s.flush().await;
        }
    }

    /// The next report; progress is also kept in `latest`.
    pub(super) async fn next(&mut self) -> (usize, Report) {
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
    pub(super) async fn collect<T>(
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

    /// Tells every worker to stop and collects what each reports when done (within a minute).
    pub(super) async fn stop(&mut self) -> Result<Finished, String> {
        self.send("stop").await;
        let done = self
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
        let mut finished = Finished {
            latency: new_hist(),
            rtt: new_hist(),
            cpu_secs: 0.0,
            error: None,
            // `next` took each worker's final counters from its `Done`.
            totals: self.totals(),
        };
        for (latency, rtt, cpu_secs, error) in done {
            merge_hist(&mut finished.latency, &latency);
            merge_hist(&mut finished.rtt, &rtt);
            finished.cpu_secs += cpu_secs;
            finished.error = finished.error.or(error);
        }
        Ok(finished)
    }

    /// Reads reports until `done` holds for the totals, or until no delivery has arrived for
    /// `quiet`: what is missing then is lost, for the caller to count.
    pub(super) async fn drain(&mut self, done: impl Fn(&Counters) -> bool, quiet: Duration) {
        let mut last = self.totals().received;
        let mut last_change = Instant::now();
        loop {
            if done(&self.totals()) || last_change.elapsed() >= quiet {
                return;
            }
            tokio::select! {
                _ = self.next() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            let r = self.totals().received;
            if r != last {
                last = r;
                last_change = Instant::now();
            }
        }
    }

    pub(super) fn totals(&self) -> Counters {
        let mut t = Counters::empty();
        for c in &self.latest {
            t.merge(c);
        }
        t
    }
}

/// What the workers reported when they stopped: their histograms merged, their CPU seconds
/// summed, the first error any of them met, and the totals of their counters.
pub(super) struct Finished {
    pub(super) latency: Histogram<u64>,
    pub(super) rtt: Histogram<u64>,
    pub(super) cpu_secs: f64,
    pub(super) error: Option<String>,
    pub(super) totals: Counters,
}

/// Each worker's share of a rate the workers make together.
pub(super) fn per_worker(rate: f64, workers: usize) -> f64 {
    rate / workers.max(1) as f64
}

/// How many workers: the user's choice, else as few as the per-worker limit allows (fewer
/// processes wake up less often and so spend less CPU per event on this shared host); a
/// multiple of the instances, so that each instance gets the same share.
pub(super) fn worker_count(c: &Common, streams: usize) -> usize {
    let need = streams.div_ceil(c.max_per_worker.max(1)).max(1);
    c.workers
        .unwrap_or(need)
        .max(need)
        .next_multiple_of(c.bases.len().max(1))
}

pub(super) fn jobs(
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
            target: balanced(c, i),
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

/// Worker `i`'s target: with several instances, the `i`-th in turn (all of a worker's
/// sessions and streams on one instance, as a balancer pinning a client would).
fn balanced(c: &Common, i: usize) -> Target {
    match &c.target {
        Target::Switchboard { posts, .. } if c.bases.len() > 1 => Target::Switchboard {
            base: c.bases[i % c.bases.len()].clone(),
            posts: posts.clone(),
        },
        target => target.clone(),
    }
}

/// Runs `--phase-cmd` with `phase` appended and waits for it; a failure is only a note.
pub(super) fn phase(c: &Common, out: &mut Outcome, phase: &str) {
    let Some(cmd) = &c.phase_cmd else { return };
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} {phase}"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => out.notes.push(format!("--phase-cmd {phase}: {s}")),
        Err(e) => out.notes.push(format!("--phase-cmd {phase}: {e}")),
    }
}

/// Waits (bounded) for the workers' `Cleaned` reports.
pub(super) async fn await_cleanup(c: &Common, w: &mut Workers) {
    if c.cleanup && matches!(c.target, Target::Switchboard { .. }) {
        let t = Instant::now();
        let limit = Duration::from_secs(120);
        while w.cleaned.iter().any(|d| !d) && t.elapsed() < limit {
            let _ = tokio::time::timeout(Duration::from_millis(200), w.next()).await;
        }
        if !w.cleaned.iter().all(|d| *d) {
            eprintln!("cleanup: workers did not finish deleting sessions within {limit:?}");
        } else if !c.quiet {
            eprintln!("sessions deleted in {:.1} s", t.elapsed().as_secs_f64());
        }
    }
}

pub(super) struct Phases {
    pub(super) helo_s: f64,
    pub(super) attach_s: f64,
    pub(super) attached: usize,
    pub(super) failed: usize,
}

/// Spawns the workers and runs register + attach; `Err` only when workers break.
pub(super) async fn start_streams(
    c: &Common,
    out: &mut Outcome,
    jobs: Vec<Job>,
    total: usize,
    prog: &mut Progress,
) -> Result<(Workers, Phases), String> {
    let t0 = Instant::now();
    let mut w = Workers::spawn(jobs).await?;
    let limit = c.attach_timeout + Duration::from_secs(600);
    let mode = out.mode.clone();
    let heloed = w
        .collect(
            "helo",
            limit,
            |w| {
                let t = w.totals();
                prog.show(|| {
                    format!(
                        "[{mode}] registering: {}/{total} sessions, {}",
                        t.registered,
                        clock(t0.elapsed(), None, t.registered, total as u64)
                    )
                });
            },
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
    let t1 = Instant::now();
    w.send("attach").await;
    let attached = w
        .collect(
            "attach",
            limit,
            |w| {
                let t = w.totals();
                prog.show(|| {
                    format!(
                        "[{mode}] attaching: {}/{total} streams, {}",
                        t.attached,
                        clock(t1.elapsed(), None, t.attached, total as u64)
                    )
                });
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
    prog.note(format_args!(
        "[{mode}] {ok}/{total} streams attached: register {helo_s:.2} s, attach {attach_s:.2} s"
    ));
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, common};

    fn common_of(args: &[&str]) -> Common {
        let cli = Cli::parse_from([&["switchboard-load"], args, &["fanout"]].concat());
        common(&cli.opts).expect("valid options")
    }

    fn base_port(job: &Job) -> String {
        match &job.target {
            Target::Switchboard { base, .. } => base.host.clone(),
            Target::Nchan { .. } => unreachable!("a switchboard target"),
        }
    }

    #[test]
    fn the_workers_are_spread_over_a_clusters_instances_in_equal_shares() {
        let urls = "http://127.0.0.1:4701,http://127.0.0.1:4702,http://127.0.0.1:4703";
        let c = common_of(&["--url", urls, "--max-per-worker", "17000"]);
        // 100,000 streams need 6 workers of at most 17,000: a multiple of 3 already.
        assert_eq!(worker_count(&c, 100_000), 6);
        // 20,000 need 2, rounded up to one per instance.
        assert_eq!(worker_count(&c, 20_000), 3);
        let jobs = jobs(&c, 100_000, 6, 200, |n| Work::Streams {
            count: n,
            shared: false,
        });
        let hosts: Vec<_> = jobs.iter().map(base_port).collect();
        let want =
            ["4701", "4702", "4703", "4701", "4702", "4703"].map(|p| format!("127.0.0.1:{p}"));
        assert_eq!(hosts, want);
        for job in &jobs {
            let Work::Streams { count, .. } = job.work else {
                unreachable!("streams")
            };
            assert!((16_666..=16_667).contains(&count), "{count}");
            // The publisher's endpoint stays the first instance.
            let Target::Switchboard { posts, .. } = &job.target else {
                unreachable!("switchboard")
            };
            assert_eq!(posts.host, "127.0.0.1:4701");
        }
    }

    #[test]
    fn one_url_keeps_every_worker_on_it() {
        let c = common_of(&["--url", "http://127.0.0.1:4400"]);
        assert_eq!(worker_count(&c, 40_000), 3);
        let jobs = jobs(&c, 40_000, 3, 200, |n| Work::Streams {
            count: n,
            shared: false,
        });
        assert!(jobs.iter().all(|j| base_port(j) == "127.0.0.1:4400"));
    }
}
