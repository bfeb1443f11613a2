//! A TCP proxy in front of a server, which a test can sever (every connection through it is
//! cut, new ones are refused), black-hole (nothing is forwarded, but every socket stays open
//! — a link that stops delivering without closing), and restore: one client's network
//! fault, while the server and every other client carry on.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// What the proxy does with its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards.
    Open,
    /// Forwards nothing and holds what it read; connections stay open. Restored, it goes on
    /// where it stopped (like TCP over a link that dropped packets for a while).
    BlackHole,
    /// Closes every connection and refuses new ones.
    Severed,
}

/// A proxy on a free loopback port; it stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port for the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let mode = watch::Sender::new(Mode::Open);
        let task = tokio::spawn(serve(listener, upstream.to_owned(), mode.subscribe()));
        Self {
            address,
            mode,
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
        self.mode.send_replace(Mode::Severed);
    }

    /// Stops forwarding in both directions, keeping every connection open, until
    /// [`restore`](Self::restore): requests get no answer and nothing reports an error.
    pub fn black_hole(&self) {
        self.mode.send_replace(Mode::BlackHole);
    }

    /// Lets connections through again (a black-holed one resumes where it stopped).
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Open);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, upstream: String, mode: watch::Receiver<Mode>) {
    // Dropped with this task: aborting the proxy ends every pipe.
    let mut pipes = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        while pipes.try_join_next().is_some() {}
        if *mode.borrow() == Mode::Severed {
            drop(client);
            continue;
        }
        pipes.spawn(pipe(client, upstream.clone(), mode.clone()));
    }
}

async fn pipe(client: TcpStream, upstream: String, mode: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Either direction ending closes both.
    tokio::select! {
        () = pump(client_read, server_write, mode.clone()) => {}
        () = pump(server_read, client_write, mode) => {}
    }
}

/// Copies `from` to `to` while the proxy is open; holds the bytes read while it is
/// black-holed; returns when severed or when either side closes.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        if !wait_open(&mut mode).await {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = mode.wait_for(|mode| *mode == Mode::Severed) => return,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !wait_open(&mut mode).await || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits while black-holed; `false` once severed.
async fn wait_open(mode: &mut watch::Receiver<Mode>) -> bool {
    match mode.wait_for(|mode| *mode != Mode::BlackHole).await {
        Ok(mode) => *mode == Mode::Open,
        Err(_) => false,
    }
}
