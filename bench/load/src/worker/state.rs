//! What a worker's tasks share ([`State`]: the job, counters, histograms, sessions, attach
//! bookkeeping), all on one thread, hence `Cell`s and no locks; and the reports it writes.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::Notify;

use crate::proto::{Counters, Job, Report, source_ip};

#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) id: String,
    pub(super) token: String,
}

pub(super) struct State {
    pub(super) job: Job,
    pub(super) c: RefCell<Counters>,
    pub(super) counts: Vec<Cell<u64>>,
    pub(super) latency: RefCell<Histogram<u64>>,
    pub(super) rtt: RefCell<Histogram<u64>>,
    pub(super) sessions: RefCell<Vec<Option<Session>>>,
    pub(super) registered: Cell<usize>,
    pub(super) attached: Cell<usize>,
    pub(super) attach_failed: Cell<usize>,
    pub(super) attach_expected: Cell<usize>,
    pub(super) attach_done: Notify,
    pub(super) first_error: RefCell<Option<String>>,
    pub(super) senders_left: Cell<usize>,
    pub(super) live_cycles: Cell<usize>,
}

impl State {
    pub(super) fn error(&self, e: impl std::fmt::Display) {
        let mut slot = self.first_error.borrow_mut();
        if slot.is_none() {
            *slot = Some(e.to_string());
        }
    }

    pub(super) fn attach_result(&self, ok: bool) {
        if ok {
            self.attached.set(self.attached.get() + 1);
        } else {
            self.attach_failed.set(self.attach_failed.get() + 1);
        }
        if self.attached.get() + self.attach_failed.get() >= self.attach_expected.get() {
            self.attach_done.notify_one();
        }
    }

    pub(super) fn control_ip(&self) -> Ipv4Addr {
        source_ip(self.job.first, self.job.conns_per_ip)
    }

    pub(super) fn counters(&self) -> Counters {
        let mut c = self.c.borrow().clone();
        c.min_count = self.counts.iter().map(Cell::get).min().unwrap_or(0);
        c.registered = self.registered.get() as u64;
        c.attached = self.attached.get() as u64;
        c.sending_done = self.senders_left.get() == 0;
        c
    }
}

pub(super) fn emit(r: &Report) {
    let mut out = std::io::stdout().lock();
    let line = serde_json::to_string(r).expect("reports serialize");
    // If the coordinator is gone there is no one to tell: exit.
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(3);
    }
}

pub(super) fn spawn_progress(st: &Rc<State>) {
    let st = st.clone();
    tokio::task::spawn_local(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(st.job.progress_ms.max(5)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            emit(&Report::Progress(st.counters()));
        }
    });
}

/// The path of `s`'s stream, its token in the query.
pub(super) fn events_path(s: &Session) -> String {
    format!("/events/{}?token={}", pct(&s.id), pct(&s.token))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
