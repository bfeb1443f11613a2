//! One connection to the memory store, and the faults injected into it.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::store::{Operation, StoreError, StoreResult};

/// A failure to inject into the next operations of one [`MemoryStore`](super::MemoryStore)
/// connection, with [`MemoryStore::fail_next`](super::MemoryStore::fail_next).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// The operation does not happen and fails with [`StoreError::Unavailable`].
    Unavailable,
    /// The operation times out. A write fails with [`StoreError::OutcomeUnknown`], after
    /// having been applied if `applied` is true; a read fails with
    /// [`StoreError::Unavailable`].
    Timeout {
        /// Whether the write took effect before the timeout was reported.
        applied: bool,
    },
}

/// What to do once an operation that passed [`Connection::begin`] has been applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterApply {
    /// Report the operation's own result.
    Report,
    /// Report a timeout instead ([`Fault::Timeout`] with `applied: true`).
    ReportTimeout,
}

impl AfterApply {
    /// The result the caller sees for an operation on `bucket`/`key` that returned `result`.
    pub(super) fn finish<T>(
        self,
        operation: Operation,
        bucket: &str,
        key: &str,
        result: StoreResult<T>,
    ) -> StoreResult<T> {
        match self {
            Self::Report => result,
            Self::ReportTimeout => Err(timeout(operation, bucket, key)),
        }
    }
}

fn timeout(operation: Operation, bucket: &str, key: &str) -> StoreError {
    StoreError::OutcomeUnknown {
        operation,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        message: "timed out (injected fault)".to_owned(),
        source: None,
    }
}

#[derive(Debug, Default)]
struct Injected {
    failures: VecDeque<Fault>,
    latency: Duration,
}

/// The state of one connection: whether it is up, and the faults waiting for it.
#[derive(Debug)]
pub(super) struct Connection {
    connected: watch::Sender<bool>,
    /// Whether the link is black-holed: operations and watches get no answer until it is
    /// lifted (or the connection is cut, which fails them).
    stalled: watch::Sender<bool>,
    injected: Mutex<Injected>,
}

impl Default for Connection {
    fn default() -> Self {
        Self::new()
    }
}

impl Connection {
    pub(super) fn new() -> Self {
        Self {
            connected: watch::Sender::new(true),
            stalled: watch::Sender::new(false),
            injected: Mutex::default(),
        }
    }

    fn injected(&self) -> MutexGuard<'_, Injected> {
        self.injected.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn set_connected(&self, connected: bool) {
        self.connected.send_replace(connected);
    }

    pub(super) fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Waits until the connection is up and not stalled.
    pub(super) async fn wait_connected(&self) {
        let mut connected = self.connected.subscribe();
        // The senders live as long as `self`, so these cannot fail.
        loop {
            let _ = connected.wait_for(|up| *up).await;
            self.wait_unstalled().await;
            if self.is_connected() {
                return;
            }
        }
    }

    pub(super) fn set_stalled(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    /// Waits while the link is stalled, unless the connection is cut meanwhile.
    async fn wait_unstalled(&self) {
        let mut stalled = self.stalled.subscribe();
        let mut connected = self.connected.subscribe();
        tokio::select! {
            biased;
            _ = stalled.wait_for(|stalled| !*stalled) => {}
            _ = connected.wait_for(|up| !*up) => {}
        }
    }

    pub(super) fn fail_next(&self, count: usize, fault: Fault) {
        self.injected()
            .failures
            .extend(std::iter::repeat_n(fault, count));
    }

    pub(super) fn set_latency(&self, latency: Duration) {
        self.injected().latency = latency;
    }

    pub(super) fn clear_faults(&self) {
        *self.injected() = Injected::default();
        self.set_stalled(false);
        self.set_connected(true);
    }

    /// Passes an operation through the injected faults: waits the latency, then fails if the
    /// connection is down or a failure is queued.
    pub(super) async fn begin(
        &self,
        operation: Operation,
        bucket: &str,
        key: &str,
    ) -> StoreResult<AfterApply> {
        let latency = self.injected().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        self.wait_unstalled().await;
        if !self.is_connected() {
            return Err(StoreError::unavailable(
                operation,
                "not connected (injected disconnect)",
            ));
        }
        let fault = self.injected().failures.pop_front();
        match fault {
            None => Ok(AfterApply::Report),
            Some(Fault::Unavailable) => Err(StoreError::unavailable(
                operation,
                "connection failed (injected fault)",
            )),
            Some(Fault::Timeout { applied }) if operation.is_write() => {
                if applied {
                    Ok(AfterApply::ReportTimeout)
                } else {
                    Err(timeout(operation, bucket, key))
                }
            }
            Some(Fault::Timeout { .. }) => Err(StoreError::unavailable(
                operation,
                "timed out (injected fault)",
            )),
        }
    }
}
