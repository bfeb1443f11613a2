//! A TCP proxy in front of a server, which a test can sever (every connection through it is
//! cut, new ones are refused) and restore: one client's network partition, while the
//! server and every other client carry on.

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A severable proxy on a free loopback port; it stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    severed: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port for the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let severed = watch::Sender::new(false);
        let task = tokio::spawn(serve(listener, upstream.to_owned(), severed.subscribe()));
        Self {
            address,
            severed,
            task,
        }
    }

    /// The proxy's address as a NATS url.
    pub fn url(&self) -> String {
        format!("nats://{}", self.address)
    }

    /// Cuts every connection through the proxy and refuses new ones until
    /// [`restore`](Self::restore).
    pub fn sever(&self) {
        self.severed.send_replace(true);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.severed.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, upstream: String, severed: watch::Receiver<bool>) {
    // Dropped with this task: aborting the proxy ends every pipe.
    let mut pipes = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        while pipes.try_join_next().is_some() {}
        if *severed.borrow() {
            drop(client);
            continue;
        }
        pipes.spawn(pipe(client, upstream.clone(), severed.clone()));
    }
}

async fn pipe(mut client: TcpStream, upstream: String, mut severed: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => {}
        _ = severed.wait_for(|severed| *severed) => {}
    }
}
