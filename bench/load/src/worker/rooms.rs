//! The rooms mode's own traffic: after `go`, each `step RATE MS` broadcasts into this worker's
//! rooms at RATE/s for MS ms, round robin over the rooms, and `mark` reports what the step
//! delivered (its latency histogram, then emptied for the next step).
//!
//! switchboard: the first member of each room sends (`POST /broadcast` with `"room"`, as a chat
//! member does); the answer's `recipients` is what the step must deliver. nchan: the room's
//! channel URL is published to; every one of the room's streams must receive it.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::state::*;
use super::{hist_pairs, new_hist};
use crate::http::{Endpoint, HttpConn};
use crate::proto::{Report, RoomPlan};
use crate::sys;

/// The broadcasting side of a worker's rooms, kept across steps.
struct Rooms {
    plan: RoomPlan,
    publish: Endpoint,
    /// Connections sending at once.
    conns: usize,
    switchboard: bool,
    /// Next room to send to, shared by the sending connections.
    next: Cell<usize>,
    /// Last sequence number sent into each room (a stream checks its room's order).
    seq: Vec<Cell<u64>>,
}

/// Follows `step` / `mark` commands until `stop`.
pub(super) async fn serve(
    st: &Rc<State>,
    cmds: &mut mpsc::UnboundedReceiver<String>,
    plan: &RoomPlan,
    publish: Option<(&Endpoint, usize)>,
    switchboard: bool,
) {
    let rooms = publish.map(|(p, conns)| {
        Rc::new(Rooms {
            plan: plan.clone(),
            publish: p.clone(),
            conns: conns.max(1),
            switchboard,
            next: Cell::new(0),
            seq: (0..plan.rooms).map(|_| Cell::new(0)).collect(),
        })
    });
    loop {
        let Some(cmd) = cmds.recv().await else {
            // Coordinator gone: nothing left to report to.
            std::process::exit(0);
        };
        let mut words = cmd.split_whitespace();
        match (words.next(), &rooms) {
            (Some("stop"), _) => return,
            (Some("step"), Some(r)) => {
                let rate: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
                let ms: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                tokio::task::spawn_local(step(
                    st.clone(),
                    r.clone(),
                    rate,
                    Duration::from_millis(ms),
                ));
            }
            (Some("mark"), _) => {
                let latency = hist_pairs(&st.latency.borrow());
                st.latency.replace(new_hist());
                emit(&Report::Step {
                    counters: st.counters(),
                    latency,
                    error: st.first_error.borrow().clone(),
                });
            }
            _ => {}
        }
    }
}

/// One step: `rate` broadcasts a second over `r.conns` keep-alive connections for `dur`.
async fn step(st: Rc<State>, r: Rc<Rooms>, rate: f64, dur: Duration) {
    let conns = r.conns;
    let per_conn = rate / conns as f64;
    let start = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::task::spawn_local(sender(st.clone(), r.clone(), per_conn, start, dur)))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    st.c.borrow_mut().steps_done += 1;
}

/// Sends at `rate`/s from `start` for `dur`, each broadcast to the next room. Behind schedule
/// (the server or this host too slow) it sends back to back, and stops at the end of `dur`
/// all the same, so the step's achieved rate tells whether the target was reached. (It used
/// to send every broadcast of the schedule however long that took, and a step asked beyond
/// what the server carries was reported as reached: fixed in session 14.)
async fn sender(st: Rc<State>, r: Rc<Rooms>, rate: f64, start: Instant, dur: Duration) {
    if rate <= 0.0 || r.plan.rooms == 0 {
        return;
    }
    let src = st.control_ip();
    let mut conn: Option<HttpConn> = None;
    let mut n = 0u64;
    let end = start + dur;
    loop {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        if due >= end || Instant::now() >= end {
            return;
        }
        sleep_until(due).await;
        n += 1;
        let k = r.next.get() % r.plan.rooms;
        r.next.set(k + 1);
        let seq = r.seq[k].get() + 1;
        r.seq[k].set(seq);
        let c = match conn.take() {
            Some(c) => c,
            None => match HttpConn::open(&r.publish, Some(src)).await {
                Ok(c) => c,
                Err(e) => {
                    st.c.borrow_mut().send_errors += 1;
                    st.error(format_args!("connect: {e}"));
                    continue;
                }
            },
        };
        conn = publish(&st, &r, c, k, seq).await;
    }
}

/// One broadcast into room `k`; the connection back unless it closed.
async fn publish(st: &State, r: &Rooms, mut c: HttpConn, k: usize, seq: u64) -> Option<HttpConn> {
    let room = crate::proto::room_name(&r.plan.prefix, r.plan.first_room + k);
    let t = sys::now_us();
    let msg = format!(r#"{{"t":{t},"s":{seq}}}"#);
    let (path, body, token) = if r.switchboard {
        let sessions = st.sessions.borrow();
        let Some(Some(s)) = sessions.get(k * r.plan.size) else {
            drop(sessions);
            st.c.borrow_mut().send_errors += 1;
            st.error(format_args!("room {room} has no registered sender"));
            return Some(c);
        };
        let body = format!(r#"{{"message":{msg},"room":"{room}"}}"#);
        (r.publish.path.clone(), body, Some(s.token.clone()))
    } else {
        (r.publish.path.replace("{channel}", &room), msg, None)
    };
    match c
        .request("POST", &path, token.as_deref(), Some(body.as_bytes()))
        .await
    {
        Ok(resp) if (200..300).contains(&resp.status) => {
            let _ = st
                .rtt
                .borrow_mut()
                .record(sys::now_us().saturating_sub(t).max(1));
            let promised = if r.switchboard {
                serde_json::from_slice::<serde_json::Value>(&resp.body)
                    .ok()
                    .and_then(|v| v["recipients"].as_u64())
                    .unwrap_or(0)
            } else {
                r.plan.size as u64
            };
            let mut cnt = st.c.borrow_mut();
            cnt.sent_ok += 1;
            cnt.expected += promised;
        }
        Ok(resp) => {
            let mut cnt = st.c.borrow_mut();
            if resp.status == 429 {
                cnt.rejected += 1;
            }
            cnt.send_errors += 1;
            drop(cnt);
            st.error(format_args!(
                "broadcast: HTTP {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ));
        }
        Err(e) => {
            st.c.borrow_mut().send_errors += 1;
            st.error(format_args!("broadcast: {e}"));
            return None;
        }
    }
    (!c.closed).then_some(c)
}
