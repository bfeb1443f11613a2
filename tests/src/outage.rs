//! [`Outage`]: cutting a fleet off from its store and restoring it, for the scenarios that
//! need an outage of the whole store on every backend.

use parti_core::store::MemoryStore;

use crate::nats::{NatsFixture, Servers};

/// A store connection that can be cut off from the store and restored. Cutting an already
/// cut store, or restoring a reachable one, does nothing.
pub trait Outage {
    /// Cuts this connection off (on a real server: stops the server).
    fn cut(&self);
    /// Restores it (on a real server: starts it again on the same port, with its data).
    fn restore(&self);
}

impl Outage for MemoryStore {
    fn cut(&self) {
        self.disconnect();
    }

    fn restore(&self) {
        self.reconnect();
    }
}

impl Outage for NatsFixture {
    fn cut(&self) {
        self.with_servers(|servers| match servers {
            Servers::Single(server) => server.stop(),
            Servers::Cluster(cluster) => cluster.nodes().iter_mut().for_each(|n| n.stop()),
        });
    }

    fn restore(&self) {
        self.with_servers(|servers| match servers {
            Servers::Single(server) => server.resume(),
            Servers::Cluster(cluster) => cluster.nodes().iter_mut().for_each(|n| n.resume()),
        });
    }
}
