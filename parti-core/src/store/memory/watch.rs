//! The stream behind a memory bucket's watch.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::connection::Connection;
use super::state::{BucketCore, WatchMessage};
use crate::store::{StoreError, WatchEvent, WatchStream};

/// The state a watch stream carries between events.
struct WatchLoop {
    core: Arc<BucketCore>,
    connection: Arc<Connection>,
    rx: mpsc::UnboundedReceiver<WatchMessage>,
}

enum Next {
    Event(WatchEvent),
    BucketDeleted,
    Closed,
}

impl WatchLoop {
    /// Waits for the next event. While the connection is down, events wait in the channel and
    /// are delivered, in order, once it is back — a watch over a lost connection resumes with
    /// nothing lost. The watcher also wakes at each TTL deadline to make the expiry happen,
    /// so expiries reach it without any other operation on the bucket.
    async fn next(&mut self) -> Next {
        loop {
            self.connection.wait_connected().await;
            let message = match self.core.next_deadline() {
                Some(deadline) => tokio::select! {
                    biased;
                    message = self.rx.recv() => message,
                    () = tokio::time::sleep_until(deadline) => {
                        self.core.expire_due();
                        continue;
                    }
                },
                None => self.rx.recv().await,
            };
            return match message {
                Some(WatchMessage::Event(event)) => {
                    self.connection.wait_connected().await;
                    Next::Event(event)
                }
                Some(WatchMessage::BucketDeleted) => Next::BucketDeleted,
                None => Next::Closed,
            };
        }
    }
}

pub(super) fn watch_stream(
    core: Arc<BucketCore>,
    connection: Arc<Connection>,
    rx: mpsc::UnboundedReceiver<WatchMessage>,
) -> WatchStream {
    let start = Some(WatchLoop {
        core,
        connection,
        rx,
    });
    WatchStream::new(futures_util::stream::unfold(start, |state| async move {
        let mut watch = state?;
        match watch.next().await {
            Next::Event(event) => Some((Ok(event), Some(watch))),
            Next::BucketDeleted => {
                let bucket = watch.core.name.clone();
                Some((Err(StoreError::NotFound { bucket }), None))
            }
            Next::Closed => None,
        }
    }))
}
