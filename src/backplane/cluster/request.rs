//! Request/reply over the bus: publish a request carrying an id, wait (bounded) for the answer
//! that comes back on the bus with the same id.
//!
//! Every asker goes through [`Requests::open`] and [`Request::ask`]; the [`Request`] is the guard
//! that removes its pending entry when dropped, whether the answer came, the publish failed, the
//! wait timed out, or the asking task was cancelled. So no path can leak a waiter.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::registry::RegistryError;

/// Pending requests of one kind, by request id; answers of type `T`.
pub(super) struct Requests<T> {
    next: AtomicU64,
    /// Waiters by request id. Innermost lock: taken last, held only to insert or remove.
    waiting: Mutex<HashMap<u64, oneshot::Sender<T>>>,
}

/// Why a request got no answer.
#[derive(Debug)]
pub(super) enum Unanswered {
    /// The request could not be published.
    Unpublished(RegistryError),
    /// Nothing came back within the timeout.
    TimedOut,
    /// The bus withdrew it ([`Requests::withdraw`]): there will be no answer.
    Withdrawn,
}

/// One open request; dropping it forgets the waiter.
pub(super) struct Request<'a, T> {
    requests: &'a Requests<T>,
    id: u64,
    answer: oneshot::Receiver<T>,
}

impl<T> Default for Requests<T> {
    fn default() -> Self {
        Requests {
            next: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Requests<T> {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<T>>> {
        self.waiting.lock().expect("requests lock poisoned")
    }

    /// A fresh request id with a waiter for its answer.
    pub(super) fn open(&self) -> Request<'_, T> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (sender, answer) = oneshot::channel();
        self.lock().insert(id, sender);
        Request {
            requests: self,
            id,
            answer,
        }
    }

    /// Hands `answer` to the waiter of request `id`; false when it no longer waits.
    pub(super) fn answer(&self, id: u64, answer: T) -> bool {
        match self.lock().remove(&id) {
            Some(waiter) => waiter.send(answer).is_ok(),
            None => false,
        }
    }

    /// Ends request `id` without an answer: its waiter sees [`Unanswered::Withdrawn`].
    pub(super) fn withdraw(&self, id: u64) {
        self.lock().remove(&id);
    }
}

impl<T> Request<'_, T> {
    /// The id the request message must carry.
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// Publishes the request (`publish` must carry [`Request::id`]) and waits up to `timeout`
    /// for its answer.
    ///
    /// # Errors
    /// [`Unanswered`]: why no answer came.
    pub(super) async fn ask(
        mut self,
        publish: impl Future<Output = Result<(), RegistryError>>,
        timeout: Duration,
    ) -> Result<T, Unanswered> {
        publish.await.map_err(Unanswered::Unpublished)?;
        match tokio::time::timeout(timeout, &mut self.answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(Unanswered::Withdrawn),
            Err(_) => Err(Unanswered::TimedOut),
        }
    }
}

impl<T> Drop for Request<'_, T> {
    fn drop(&mut self) {
        self.requests.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn answers_reach_their_request_and_every_outcome_cleans_up() {
        let requests = Requests::<&str>::default();

        let request = requests.open();
        let id = request.id();
        let answered = request.ask(async { Ok(()) }, Duration::from_secs(1));
        requests.answer(id, "hello");
        assert_eq!(answered.await.unwrap(), "hello");

        let timed_out = requests
            .open()
            .ask(async { Ok(()) }, Duration::from_secs(1));
        assert!(matches!(timed_out.await, Err(Unanswered::TimedOut)));

        let request = requests.open();
        requests.withdraw(request.id());
        let withdrawn = request.ask(async { Ok(()) }, Duration::from_secs(1));
        assert!(matches!(withdrawn.await, Err(Unanswered::Withdrawn)));

        let failed = requests.open().ask(
            async { Err(RegistryError::Unavailable("down".into())) },
            Duration::from_secs(1),
        );
        assert!(matches!(failed.await, Err(Unanswered::Unpublished(_))));

        // A request dropped before it was asked (its task cancelled) leaves nothing behind.
        drop(requests.open());
        assert!(requests.lock().is_empty());
        // An answer for a forgotten request goes nowhere.
        requests.answer(id, "late");
    }
}
