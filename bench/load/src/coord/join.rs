//! `join` mode: what one `POST /helo` into a small room costs while many other sessions are
//! on the hub. Background sessions sit in rooms of `room_size`, their streams attached; then
//! joiners `POST /helo` into those rooms one after another (each leaving again with
//! `DELETE /session`, so every join meets a room of the same size), and the helo round trip is
//! measured. With rooms, the cost should follow the room, not the hub.

use std::time::{Duration, Instant};

use tokio::time::sleep_until;

use super::Common;
use super::measure::*;
use super::publisher::COORD_IP;
use super::rooms::start_rooms;
use super::workers::await_cleanup;
use crate::http::HttpConn;
use crate::outcome::{Outcome, Progress, clock};
use crate::proto::{Target, room_name};
use crate::worker::new_hist;

/// Options of the join mode.
pub struct JoinArgs {
    /// Sessions on the hub besides the joiners, in rooms of `room_size`.
    pub sessions: usize,
    pub room_size: usize,
    pub joins: u64,
    /// Joins per second (one at a time, never overlapping).
    pub rate: f64,
}

/// `join`: helo round trip into a room of `room_size` with `sessions` on the hub.
pub async fn join(c: &Common, a: &JoinArgs) -> Result<Outcome, String> {
    let Target::Switchboard { base, .. } = &c.target else {
        return Err("join mode needs --target switchboard".into());
    };
    let mut out = Outcome::new("join", &c.target_name, &c.label);
    let mut prog = Progress::new(c.quiet);
    let size = a.room_size.max(1);
    let rooms = a.sessions.div_ceil(size).max(1);
    out.param("joins", a.joins);
    out.param("join_rate", a.rate);
    target_param(c, &mut out);
    let (mut w, ph) = start_rooms(c, &mut out, rooms, size, None, 500, &mut prog).await?;
    out.metric("attached", ph.attached as f64);
    out.metric("register_s", ph.helo_s);
    out.metric("attach_s", ph.attach_s);
    w.send("go").await;
    let win = Window::start(c);
    let mut conn = HttpConn::open(base, Some(COORD_IP))
        .await
        .map_err(|e| format!("connect {}: {e}", base.host))?;
    let (mut rtt, mut leave) = (new_hist(), new_hist());
    let (mut errors, mut first_error) = (0u64, None::<String>);
    let t0 = Instant::now();
    let period = Duration::from_secs_f64(1.0 / a.rate.max(0.1));
    for n in 0..a.joins {
        // Wait for this join's turn, reading the workers' reports meanwhile.
        let due = tokio::time::Instant::from_std(t0 + period.mul_f64(n as f64));
        while tokio::time::Instant::now() < due {
            tokio::select! {
                _ = w.next() => {}
                _ = sleep_until(due) => {}
            }
        }
        let room = room_name(&c.channel, n as usize % rooms);
        let body = serde_json::json!({ "name": format!("joiner-{n}"), "rooms": [room] });
        let body = body.to_string();
        let t = Instant::now();
        let r = conn
            .request("POST", "/helo", None, Some(body.as_bytes()))
            .await;
        let us = t.elapsed().as_micros() as u64;
        let token = match r {
            Ok(r) if r.status == 201 => {
                let _ = rtt.record(us.max(1));
                serde_json::from_slice::<serde_json::Value>(&r.body)
                    .ok()
                    .and_then(|v| v["token"].as_str().map(str::to_string))
            }
            Ok(r) => {
                first_error.get_or_insert_with(|| {
                    format!(
                        "helo: HTTP {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    )
                });
                None
            }
            Err(e) => {
                first_error.get_or_insert_with(|| format!("helo: {e}"));
                None
            }
        };
        let Some(token) = token else {
            errors += 1;
            conn = HttpConn::open(base, Some(COORD_IP))
                .await
                .map_err(|e| format!("reconnect: {e}"))?;
            continue;
        };
        let t = Instant::now();
        match conn.request("DELETE", "/session", Some(&token), None).await {
            Ok(r) if (200..300).contains(&r.status) => {
                let _ = leave.record((t.elapsed().as_micros() as u64).max(1));
            }
            _ => errors += 1,
        }
        if conn.closed {
            conn = HttpConn::open(base, Some(COORD_IP))
                .await
                .map_err(|e| format!("reconnect: {e}"))?;
        }
        prog.show(|| {
            format!(
                "[join] {} streams, joins {}/{}, {}",
                ph.attached,
                n + 1,
                a.joins,
                clock(t0.elapsed(), None, n + 1, a.joins)
            )
        });
    }
    prog.done();
    out.metric("joins_ok", rtt.len() as f64);
    out.metric("errors", errors as f64);
    latency_metrics(&mut out, "helo", &rtt);
    latency_metrics(&mut out, "leave", &leave);
    if let Some(e) = first_error {
        out.fail(format!("{errors} joins or leaves failed; first: {e}"));
    }
    let done = w.stop().await?;
    let t = &done.totals;
    closed_streams(&mut out, t.closed, "background streams closed");
    out.metric("lagged_missed", t.lagged_missed as f64);
    out.metric("presence_events", t.other_events as f64);
    win.finish(c, &mut out, done.cpu_secs);
    await_cleanup(c, &mut w).await;
    Ok(out)
}
