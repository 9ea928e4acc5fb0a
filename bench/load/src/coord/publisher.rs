//! The coordinator's own traffic in `fanout`: a session of its own (the publisher), and
//! [`Publisher`], which numbers and times broadcasts over a few keep-alive connections.

use std::cell::{Cell, RefCell};
use std::net::Ipv4Addr;
use std::rc::Rc;

use hdrhistogram::Histogram;
use tokio::sync::watch;

use crate::http::{self, Endpoint, HttpConn};
use crate::sys::{self};

/// Source address of the coordinator's own connections.
pub(super) const COORD_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 252);

/// A switchboard session the coordinator itself uses (the publisher), with its stream read
/// and thrown away so the session neither expires nor fills its mailbox.
pub(super) async fn coordinator_session(base: &Endpoint) -> Result<String, String> {
    let mut conn = HttpConn::open(base, Some(COORD_IP))
        .await
        .map_err(|e| format!("connect {}: {e}", base.host))?;
    let body = br#"{"name":"load-publisher"}"#;
    let r = conn
        .request("POST", "/helo", None, Some(body))
        .await
        .map_err(|e| format!("helo: {e}"))?;
    if r.status != 201 {
        return Err(format!(
            "publisher helo: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
    let id = v["id"].as_str().ok_or("helo reply without id")?.to_string();
    let token = v["token"]
        .as_str()
        .ok_or("helo reply without token")?
        .to_string();
    let path = format!("/events/{id}?token={token}");
    let start = http::open_sse(base, Some(COORD_IP), &path)
        .await
        .map_err(|e| format!("publisher stream: {e}"))?;
    tokio::task::spawn_local(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = http::read_some(&start.stream, &mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    Ok(token)
}

pub(super) async fn delete_session(base: &Endpoint, token: &str) {
    if let Ok(mut c) = HttpConn::open(base, Some(COORD_IP)).await {
        let _ = c.request("DELETE", "/session", Some(token), None).await;
    }
}

/// Broadcast bodies, and how many were accepted.
pub(super) struct Publisher {
    pub(super) ep: Endpoint,
    pub(super) path: String,
    pub(super) token: Option<String>,
    pub(super) switchboard: bool,
    pub(super) payload: String,
    pub(super) next: Cell<u64>,
    pub(super) ok: Cell<u64>,
    pub(super) errors: Cell<u64>,
    pub(super) recipients: Cell<i64>,
    pub(super) first_us: Cell<u64>,
    pub(super) last_us: Cell<u64>,
    pub(super) error: RefCell<Option<String>>,
    pub(super) rtt: RefCell<Histogram<u64>>,
}

impl Publisher {
    /// Sends broadcasts numbered 1..=total as `allowed` permits, over one connection; several
    /// of these may run at once and share the numbering.
    pub(super) async fn run(self: Rc<Self>, total: u64, mut allowed: watch::Receiver<u64>) {
        let mut conn: Option<HttpConn> = None;
        loop {
            let seq = loop {
                let seq = self.next.get() + 1;
                if seq > total {
                    return;
                }
                if *allowed.borrow_and_update() >= seq {
                    self.next.set(seq);
                    break seq;
                }
                if allowed.changed().await.is_err() {
                    return;
                }
            };
            let c = match conn.take() {
                Some(c) => Ok(c),
                None => HttpConn::open(&self.ep, Some(COORD_IP)).await,
            };
            let mut c = match c {
                Ok(c) => c,
                Err(e) => {
                    self.fail(format!("connect: {e}"));
                    continue;
                }
            };
            let t = sys::now_us();
            if self.first_us.get() == 0 {
                self.first_us.set(t);
            }
            self.last_us.set(t);
            let msg = format!(r#"{{"t":{t},"s":{seq}{}}}"#, self.payload);
            let body = if self.switchboard {
                format!(r#"{{"message":{msg}}}"#)
            } else {
                msg
            };
            match c
                .request(
                    "POST",
                    &self.path,
                    self.token.as_deref(),
                    Some(body.as_bytes()),
                )
                .await
            {
                Ok(r) if (200..300).contains(&r.status) => {
                    let _ = self
                        .rtt
                        .borrow_mut()
                        .record(sys::now_us().saturating_sub(t).max(1));
                    self.ok.set(self.ok.get() + 1);
                    if self.switchboard {
                        let n = serde_json::from_slice::<serde_json::Value>(&r.body)
                            .ok()
                            .and_then(|v| v["recipients"].as_i64())
                            .unwrap_or(-1);
                        self.recipients.set(n);
                    }
                    if !c.closed {
                        conn = Some(c);
                    }
                }
                Ok(r) => {
                    self.fail(format!(
                        "publish: HTTP {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    ));
                    if !c.closed {
                        conn = Some(c);
                    }
                }
                Err(e) => self.fail(format!("publish: {e}")),
            }
        }
    }

    pub(super) fn fail(&self, e: String) {
        self.errors.set(self.errors.get() + 1);
        self.error.borrow_mut().get_or_insert(e);
    }
}
