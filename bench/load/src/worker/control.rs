//! Control calls: registering sessions (`POST /helo`) and deleting them, over a small pool of
//! keep-alive connections from the worker's control address.

use std::cell::{Cell, RefCell};
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::Instant;

use super::state::*;
use crate::http::{self, Endpoint, HttpConn};
use crate::proto::{Report, RoomPlan, session_name};

/// Registers a session over `conn`, in `room` when given (else the server's default).
pub(super) async fn helo(
    conn: &mut HttpConn,
    name: &str,
    room: Option<&str>,
) -> Result<Session, String> {
    let body = match room {
        Some(r) => serde_json::json!({ "name": name, "rooms": [r] }),
        None => serde_json::json!({ "name": name }),
    }
    .to_string();
    let r = conn
        .request("POST", "/helo", None, Some(body.as_bytes()))
        .await
        .map_err(|e| format!("helo: {e}"))?;
    helo_reply(r)
}

/// The session in a `POST /helo` answer.
pub(super) fn helo_reply(r: http::Response) -> Result<Session, String> {
    if r.status != 201 {
        return Err(format!(
            "helo: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&r.body).map_err(|e| format!("helo reply: {e}"))?;
    match (v["id"].as_str(), v["token"].as_str()) {
        (Some(id), Some(token)) => Ok(Session {
            id: id.to_string(),
            token: token.to_string(),
        }),
        _ => Err(format!("helo reply without id/token: {v}")),
    }
}

/// A small pool of keep-alive connections for control calls.
pub(super) struct Pool {
    pub(super) ep: Endpoint,
    pub(super) src: Ipv4Addr,
    pub(super) idle: RefCell<Vec<HttpConn>>,
}

impl Pool {
    pub(super) async fn get(&self) -> std::io::Result<HttpConn> {
        let conn = self.idle.borrow_mut().pop();
        match conn {
            Some(c) => Ok(c),
            None => HttpConn::open(&self.ep, Some(self.src)).await,
        }
    }

    pub(super) fn put(&self, c: HttpConn) {
        if !c.closed {
            self.idle.borrow_mut().push(c);
        }
    }

    /// One request on a pooled connection; when a reused connection turns out to be closed
    /// by the server (keep-alive ended while idle), once more on a new one.
    pub(super) async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&[u8]>,
    ) -> std::io::Result<http::Response> {
        let pooled = self.idle.borrow_mut().pop();
        if let Some(mut c) = pooled
            && let Ok(r) = c.request(method, path, bearer, body).await
        {
            self.put(c);
            return Ok(r);
        }
        let mut c = HttpConn::open(&self.ep, Some(self.src)).await?;
        let r = c.request(method, path, bearer, body).await?;
        self.put(c);
        Ok(r)
    }
}

/// Runs `f(index)` for `0..count` over `conc` tasks that each hold one connection of `pool`.
pub(super) async fn for_each_conn<F, Fut>(pool: Rc<Pool>, count: usize, conc: usize, f: F)
where
    F: Fn(usize, HttpConn) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = Option<HttpConn>> + 'static,
{
    let next = Rc::new(Cell::new(0usize));
    let mut tasks = Vec::new();
    for _ in 0..conc.clamp(1, count.max(1)) {
        let (pool, next, f) = (pool.clone(), next.clone(), f.clone());
        tasks.push(tokio::task::spawn_local(async move {
            loop {
                let i = next.get();
                if i >= count {
                    break;
                }
                next.set(i + 1);
                let Ok(conn) = pool.get().await else {
                    // Count the item as failed through the callback's error path.
                    continue;
                };
                if let Some(c) = f(i, conn).await {
                    pool.put(c);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Registers `count` sessions, each in its room of `rooms` when given; reports `Heloed`.
pub(super) async fn helo_all(
    st: &Rc<State>,
    base: &Endpoint,
    count: usize,
    rooms: Option<&RoomPlan>,
) {
    let t0 = Instant::now();
    let pool = Rc::new(Pool {
        ep: base.clone(),
        src: st.control_ip(),
        idle: RefCell::new(Vec::new()),
    });
    st.sessions.replace(vec![None; count]);
    let failed = Rc::new(Cell::new(0usize));
    let (st2, failed2, first) = (st.clone(), failed.clone(), st.job.first);
    let rooms = rooms.cloned();
    for_each_conn(pool, count, st.job.http_concurrency, move |i, mut conn| {
        let (st, failed) = (st2.clone(), failed2.clone());
        let room = rooms.as_ref().map(|p| p.room_of(i));
        async move {
            match helo(&mut conn, &session_name(first + i), room.as_deref()).await {
                Ok(s) => {
                    st.sessions.borrow_mut()[i] = Some(s);
                    st.registered.set(st.registered.get() + 1);
                    Some(conn)
                }
                Err(e) => {
                    st.error(e);
                    failed.set(failed.get() + 1);
                    None
                }
            }
        }
    })
    .await;
    let ok = st.sessions.borrow().iter().filter(|s| s.is_some()).count();
    emit(&Report::Heloed {
        ok,
        failed: count - ok,
        secs: t0.elapsed().as_secs_f64(),
        error: st.first_error.borrow().clone(),
    });
}

/// Reports `Heloed` for `count` streams whose sessions are not registered here: nchan has
/// none, a shared-connection stream registers its own while attaching, churn joins in its loop.
pub(super) fn skip_helo(count: usize) {
    emit(&Report::Heloed {
        ok: count,
        failed: 0,
        secs: 0.0,
        error: None,
    });
}

/// Deletes every registered session; reports `Cleaned`.
pub(super) async fn cleanup(st: &Rc<State>, base: &Endpoint) {
    let t0 = Instant::now();
    let sessions: Vec<Session> = st.sessions.borrow().iter().flatten().cloned().collect();
    let pool = Rc::new(Pool {
        ep: base.clone(),
        src: st.control_ip(),
        idle: RefCell::new(Vec::new()),
    });
    let sessions = Rc::new(sessions);
    let n = sessions.len();
    for_each_conn(pool, n, st.job.http_concurrency, move |i, mut conn| {
        let sessions = sessions.clone();
        async move {
            let r = conn
                .request("DELETE", "/session", Some(&sessions[i].token), None)
                .await;
            r.ok().map(|_| conn)
        }
    })
    .await;
    emit(&Report::Cleaned {
        secs: t0.elapsed().as_secs_f64(),
    });
}
