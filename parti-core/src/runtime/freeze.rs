//! Pausing every task of one manager at once, as `SIGSTOP` or a VM migration pauses a
//! process: the simulation's "frozen worker" fault. The runtime spawns each of a manager's
//! tasks through [`Freezer::gate`]; a gated task is simply not polled while the freezer is
//! frozen (its timers run out meanwhile, its I/O waits), and goes on where it stopped when
//! thawed.

// Only the `testing` feature lets users hand a freezer to a manager.
#![cfg_attr(not(feature = "testing"), allow(dead_code, unreachable_pub))]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

/// A switch that pauses and resumes every task of the managers it was given to (tests only:
/// see `ManagerBuilder::freezer`).
#[derive(Clone, Default)]
pub struct Freezer(Arc<Inner>);

#[derive(Default)]
struct Inner {
    frozen: AtomicBool,
    /// The tasks polled while frozen, to wake at the thaw.
    waiting: Mutex<Vec<Waker>>,
}

impl fmt::Debug for Freezer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Freezer")
            .field("frozen", &self.is_frozen())
            .finish()
    }
}

impl Freezer {
    /// Stops polling the tasks: none of them runs again until [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        self.0.frozen.store(true, Ordering::SeqCst);
    }

    /// Lets the tasks run again, from where they stopped.
    pub fn thaw(&self) {
        self.0.frozen.store(false, Ordering::SeqCst);
        let waiting = std::mem::take(&mut *self.lock());
        for waker in waiting {
            waker.wake();
        }
    }

    /// Whether the tasks are paused now.
    pub fn is_frozen(&self) -> bool {
        self.0.frozen.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        self.0
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `future`, polled only while not frozen.
    pub(crate) fn gate<F: Future>(&self, future: F) -> Gated<F> {
        Gated {
            freezer: self.clone(),
            future: Box::pin(future),
        }
    }
}

/// A future that is not polled while its freezer is frozen.
pub(crate) struct Gated<F> {
    freezer: Freezer,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if self.freezer.is_frozen() {
            let mut waiting = self.freezer.lock();
            // Checked again under the lock: a thaw in between has taken the list already.
            if self.freezer.is_frozen() {
                waiting.push(cx.waker().clone());
                return Poll::Pending;
            }
        }
        self.future.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_frozen_task_is_not_polled_until_thawed() {
        let freezer = Freezer::default();
        let ticks = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(freezer.gate({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
        tokio::time::sleep(Duration::from_millis(550)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 5);
        freezer.freeze();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 5, "ran while frozen");
        freezer.thaw();
        // Its timer ran out while frozen: it goes on at once, then at its pace.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 8);
        task.abort();
    }
}
