//! A worker process: holds its share of the streams on one thread (a current-thread runtime,
//! so per-stream state needs no locks), counts what arrives, and reports to the coordinator
//! (see [`crate::proto`]).
//!
//! # Layout
//! - this module: the entry point, which reads the [`Job`] and follows the coordinator's
//!   commands (`attach`, `go`, `stop`) through the phases.
//! - [`state`]: what the worker's tasks share, and the reports it writes.
//! - [`control`]: registering and deleting sessions over a pool of keep-alive connections.
//! - [`stream`]: attaching SSE streams and counting what they deliver.
//! - [`shared`]: a stream opened as a browser opens it, helo first on the same connection.
//! - [`traffic`]: the traffic a worker makes itself, in the `direct` and `churn` modes.
//! - [`rooms`]: the broadcasts into a worker's rooms, step by step, in the `rooms` mode.

mod control;
mod rooms;
mod shared;
mod state;
mod stream;
mod traffic;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Notify, mpsc};

use self::control::*;
use self::state::*;
use self::stream::*;
use self::traffic::*;
use crate::http::Endpoint;
use crate::proto::{Counters, Job, Report, RoomPlan, Target, Work};
use crate::sys;

/// A histogram of microseconds, 1 µs to 1 h, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Non-empty buckets of `h`, to ship to the coordinator.
pub fn hist_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Entry point of `switchboard-load __worker`.
pub fn main() -> ! {
    sys::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run());
    std::process::exit(0)
}

async fn run() {
    let (tx, mut cmds) = mpsc::unbounded_channel::<String>();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let Ok(Some(first)) = lines.next_line().await else {
        eprintln!("worker: no job on stdin");
        std::process::exit(2);
    };
    let job: Job = match serde_json::from_str(&first) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("worker: bad job: {e}");
            std::process::exit(2);
        }
    };
    tokio::task::spawn_local(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            if tx.send(l.trim().to_string()).is_err() {
                break;
            }
        }
        // Coordinator gone: nothing left to report to.
        std::process::exit(0);
    });

    let count = match job.work {
        Work::Streams { count, .. } => count,
        Work::Direct { pairs, .. } => pairs * 2,
        Work::Churn { .. } => 0,
        Work::Rooms { ref plan, .. } => plan.rooms * plan.size,
    };
    let st = Rc::new(State {
        counts: (0..count).map(|_| Cell::new(0)).collect(),
        c: RefCell::new(Counters::default()),
        latency: RefCell::new(new_hist()),
        rtt: RefCell::new(new_hist()),
        sessions: RefCell::new(Vec::new()),
        registered: Cell::new(0),
        attached: Cell::new(0),
        attach_failed: Cell::new(0),
        attach_expected: Cell::new(0),
        attach_done: Notify::new(),
        first_error: RefCell::new(None),
        senders_left: Cell::new(0),
        live_cycles: Cell::new(0),
        job: job.clone(),
    });

    // Progress from the start, so the coordinator can show sessions registered and streams
    // attached as they come.
    spawn_progress(&st);
    match (&job.target, &job.work) {
        (
            Target::Switchboard { base, .. },
            Work::Streams {
                count,
                shared: false,
            },
        ) => helo_then_attach(&st, base, &mut cmds, *count, None).await,
        (
            Target::Switchboard { base, .. },
            Work::Streams {
                count,
                shared: true,
            },
        ) => {
            // Each stream registers its session on its own connection, during attach.
            skip_helo(*count);
            expect(&mut cmds, "attach").await;
            st.sessions.replace(vec![None; *count]);
            attach_all(&st, base, vec![Open::Helo; *count], true).await;
        }
        (Target::Nchan { sub }, Work::Streams { count, .. }) => {
            skip_helo(*count);
            expect(&mut cmds, "attach").await;
            attach_all(&st, sub, vec![Open::Get(sub.path.clone()); *count], false).await;
        }
        (Target::Switchboard { base, .. }, Work::Direct { pairs, .. }) => {
            helo_all(&st, base, pairs * 2, None).await;
            expect(&mut cmds, "attach").await;
            // Receivers are slots 0..pairs (their counts matter); senders follow.
            let sessions = st.sessions.borrow().clone();
            let mut paths: Vec<String> = sessions
                .iter()
                .skip(1)
                .step_by(2)
                .flatten()
                .map(events_path)
                .collect();
            paths.extend(sessions.iter().step_by(2).flatten().map(events_path));
            attach_all(&st, base, paths.into_iter().map(Open::Get).collect(), true).await;
        }
        (Target::Switchboard { .. }, Work::Churn { .. }) => {
            skip_helo(0);
            expect(&mut cmds, "attach").await;
            emit(&Report::Attached {
                ok: 0,
                failed: 0,
                secs: 0.0,
                error: None,
            });
        }
        (Target::Switchboard { base, .. }, Work::Rooms { plan, .. }) => {
            helo_then_attach(&st, base, &mut cmds, count, Some(plan)).await;
        }
        (Target::Nchan { sub }, Work::Rooms { plan, .. }) => {
            skip_helo(count);
            expect(&mut cmds, "attach").await;
            let opens = (0..count)
                .map(|i| Open::Get(sub.path.replace("{channel}", &plan.room_of(i))))
                .collect();
            attach_all(&st, sub, opens, false).await;
        }
        (Target::Nchan { .. }, _) => {
            eprintln!("worker: only idle, fanout and rooms modes work against nchan");
            std::process::exit(2);
        }
    }

    expect(&mut cmds, "go").await;
    let cpu0 = sys::self_cpu_secs();
    match (&job.target, &job.work) {
        (
            Target::Switchboard { posts, .. },
            Work::Direct {
                pairs,
                rate,
                duration_ms,
                payload,
            },
        ) => {
            let sessions = st.sessions.borrow().clone();
            let start = tokio::time::Instant::now();
            let deadline = start + Duration::from_millis(*duration_ms);
            let period = (*rate > 0.0).then(|| Duration::from_secs_f64(*pairs as f64 / rate));
            st.senders_left.set(*pairs);
            for p in 0..*pairs {
                let (Some(from), Some(to)) = (&sessions[2 * p], &sessions[2 * p + 1]) else {
                    st.senders_left.set(st.senders_left.get() - 1);
                    continue;
                };
                // Spread the pairs' send times over one period.
                let offset =
                    period.map_or(Duration::ZERO, |pd| pd.mul_f64(p as f64 / *pairs as f64));
                let plan = Plan {
                    from: from.clone(),
                    to: to.id.clone(),
                    period,
                    start: start + offset,
                    deadline,
                    payload: *payload,
                };
                tokio::task::spawn_local(sender(st.clone(), posts.clone(), plan));
            }
        }
        (
            Target::Switchboard { base, .. },
            Work::Churn {
                rate,
                duration_ms,
                hold_ms,
            },
        ) => {
            st.senders_left.set(1);
            tokio::task::spawn_local(churn(
                st.clone(),
                base.clone(),
                *rate,
                Duration::from_millis(*duration_ms),
                Duration::from_millis(*hold_ms),
            ));
        }
        _ => {}
    }
    if let Work::Rooms {
        plan,
        publish,
        publishers,
    } = &job.work
    {
        let switchboard = matches!(job.target, Target::Switchboard { .. });
        let publish = publish.as_ref().map(|p| (p, *publishers));
        rooms::serve(&st, &mut cmds, plan, publish, switchboard).await;
    } else {
        expect(&mut cmds, "stop").await;
    }
    emit(&Report::Done {
        counters: st.counters(),
        latency: hist_pairs(&st.latency.borrow()),
        rtt: hist_pairs(&st.rtt.borrow()),
        cpu_secs: sys::self_cpu_secs() - cpu0,
        error: st.first_error.borrow().clone(),
    });
    if let (Target::Switchboard { base, .. }, true) = (&job.target, job.cleanup) {
        cleanup(&st, base).await;
    }
}

/// Waits for the command `want`, ignoring others; exits when the coordinator is gone.
/// Registers `count` sessions (each in its room of `rooms`, when given) and, once told to,
/// attaches every registered session's stream.
async fn helo_then_attach(
    st: &Rc<State>,
    base: &Endpoint,
    cmds: &mut mpsc::UnboundedReceiver<String>,
    count: usize,
    rooms: Option<&RoomPlan>,
) {
    helo_all(st, base, count, rooms).await;
    expect(cmds, "attach").await;
    let opens = st
        .sessions
        .borrow()
        .iter()
        .flatten()
        .map(|s| Open::Get(events_path(s)))
        .collect();
    attach_all(st, base, opens, true).await;
}

async fn expect(cmds: &mut mpsc::UnboundedReceiver<String>, want: &str) {
    loop {
        match cmds.recv().await {
            Some(c) if c == want => return,
            Some(_) => {}
            None => std::process::exit(0),
        }
    }
}
