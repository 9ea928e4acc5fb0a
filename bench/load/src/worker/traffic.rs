//! The traffic a worker makes itself: `/response` posts on a schedule per pair (`direct`) and
//! sessions that join, hold and leave (`churn`).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::{sleep, sleep_until, timeout};

use super::control::*;
use super::state::*;
use super::stream::*;
use crate::http::{Endpoint, HttpConn};
use crate::proto::{session_name, source_ip};
use crate::sys;

/// One pair's sending schedule.
pub(super) struct Plan {
    pub(super) from: Session,
    pub(super) to: String,
    /// Time between two sends; `None`: back to back.
    pub(super) period: Option<Duration>,
    pub(super) start: tokio::time::Instant,
    pub(super) deadline: tokio::time::Instant,
    pub(super) payload: usize,
}

/// Posts `/response` from the pair's sender to its receiver until the deadline.
pub(super) async fn sender(st: Rc<State>, ep: Endpoint, plan: Plan) {
    let Plan {
        from,
        to,
        period,
        start,
        deadline,
        payload,
    } = plan;
    let src = st.control_ip();
    let mut conn: Option<HttpConn> = None;
    let mut next = start;
    let mut seq = 0u64;
    let pad = "x".repeat(payload);
    loop {
        if let Some(p) = period {
            next += p;
            let now = tokio::time::Instant::now();
            if next + Duration::from_secs(1) < now {
                next = now; // far behind: do not burst to catch up
            }
            sleep_until(next).await;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let c = match conn.take() {
            Some(c) => c,
            None => match HttpConn::open(&ep, Some(src)).await {
                Ok(c) => c,
                Err(e) => {
                    st.error(format_args!("connect: {e}"));
                    st.c.borrow_mut().send_errors += 1;
                    sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let mut c = c;
        seq += 1;
        let t = sys::now_us();
        let body = if payload == 0 {
            format!(r#"{{"recipient":"{to}","message":{{"t":{t},"s":{seq}}}}}"#)
        } else {
            format!(r#"{{"recipient":"{to}","message":{{"t":{t},"s":{seq},"p":"{pad}"}}}}"#)
        };
        match c
            .request(
                "POST",
                "/response",
                Some(&from.token),
                Some(body.as_bytes()),
            )
            .await
        {
            Ok(r) => {
                let _ = st
                    .rtt
                    .borrow_mut()
                    .record(sys::now_us().saturating_sub(t).max(1));
                match r.status {
                    202 => st.c.borrow_mut().sent_ok += 1,
                    429 => {
                        st.c.borrow_mut().rejected += 1;
                        let wait = r.retry_after.unwrap_or(0).clamp(0, 1);
                        sleep(Duration::from_millis(5).max(Duration::from_secs(wait))).await;
                    }
                    s => {
                        st.error(format_args!(
                            "POST /response: HTTP {s}: {}",
                            String::from_utf8_lossy(&r.body)
                        ));
                        st.c.borrow_mut().send_errors += 1;
                    }
                }
                if !c.closed {
                    conn = Some(c);
                }
            }
            Err(e) => {
                st.error(format_args!("POST /response: {e}"));
                st.c.borrow_mut().send_errors += 1;
            }
        }
    }
    st.senders_left.set(st.senders_left.get() - 1);
}

/// One churn cycle: helo, attach, hold, delete, see the stream end.
pub(super) async fn churn_cycle(st: Rc<State>, pool: Rc<Pool>, n: usize, hold: Duration) {
    let r: Result<(), String> = async {
        let body = serde_json::json!({ "name": session_name(n) }).to_string();
        let r = pool
            .call("POST", "/helo", None, Some(body.as_bytes()))
            .await
            .map_err(|e| format!("helo: {e}"))?;
        let s = helo_reply(r)?;
        let src = source_ip(n, 1);
        let mut stream = timeout(
            Duration::from_millis(st.job.attach_timeout_ms),
            Stream::attach(&st, &pool.ep, &events_path(&s), src, true),
        )
        .await
        .map_err(|_| "attach timed out".to_string())?
        .map_err(|e| format!("attach: {e}"))?;
        let held = timeout(hold, async {
            while let Ok(true) = stream.pump(&st, None).await {}
        })
        .await;
        if held.is_ok() {
            return Err("stream ended while held".into());
        }
        let r = pool
            .call("DELETE", "/session", Some(&s.token), None)
            .await
            .map_err(|e| format!("delete: {e}"))?;
        if r.status != 204 {
            return Err(format!("DELETE /session: HTTP {}", r.status));
        }
        timeout(Duration::from_secs(5), async {
            while let Ok(true) = stream.pump(&st, None).await {}
        })
        .await
        .map_err(|_| "stream still open 5 s after DELETE /session".to_string())?;
        Ok(())
    }
    .await;
    match r {
        Ok(()) => st.c.borrow_mut().cycles += 1,
        Err(e) => {
            st.error(e);
            st.c.borrow_mut().cycle_failures += 1;
        }
    }
    st.live_cycles.set(st.live_cycles.get() - 1);
}

pub(super) async fn churn(
    st: Rc<State>,
    base: Endpoint,
    rate: f64,
    duration: Duration,
    hold: Duration,
) {
    let pool = Rc::new(Pool {
        ep: base,
        src: st.control_ip(),
        idle: RefCell::new(Vec::new()),
    });
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    // Enough room for every cycle that should be running, plus slack for slow ones.
    let cap = ((rate * (hold.as_secs_f64() + 5.0)).ceil() as usize).clamp(16, 15_000);
    let start = tokio::time::Instant::now();
    let deadline = start + duration;
    let mut next = start;
    let mut n = st.job.first;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while tokio::time::Instant::now() < deadline {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        while next <= now && next < deadline {
            next += period;
            if st.live_cycles.get() >= cap {
                st.c.borrow_mut().cycles_skipped += 1;
                continue;
            }
            st.live_cycles.set(st.live_cycles.get() + 1);
            tokio::task::spawn_local(churn_cycle(st.clone(), pool.clone(), n, hold));
            n += 1;
        }
    }
    // Let running cycles finish (bounded).
    let wait_until = tokio::time::Instant::now() + hold + Duration::from_secs(10);
    while st.live_cycles.get() > 0 && tokio::time::Instant::now() < wait_until {
        sleep(Duration::from_millis(20)).await;
    }
    st.senders_left.set(0);
}
