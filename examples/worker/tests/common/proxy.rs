//! A loopback TCP proxy that a test can cut and restore, to partition one worker process from
//! DynamoDB Local while the others keep their connections.
//!
//! [`Proxy::cut`] drops every connection being forwarded (both sockets are closed at once) and
//! from then on treats new connections according to the [`CutMode`]: refused (accepted and
//! closed at once, as a host that answers with a reset) or black-holed (accepted and held
//! without a byte forwarded or answered, as a path that silently drops packets). A black-holed
//! connection is held until its client gives up (the proxy notes after how long) or until
//! [`Proxy::restore`], which closes it; after the restore new connections are forwarded again.
//! [`Proxy::stats`] tells what happened to the connections, which is how a test sees whether
//! the client has timeouts at all, and which AWS operations went through (each forwarded
//! request's `X-Amz-Target` and the table, stream or queue it names, read by [`Sniffer`] as the
//! bytes pass): a proxy that is never cut is a counting proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::sniff::{Request, Sniffer};

/// What a cut proxy does with new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CutMode {
    /// Accept and close at once: every request fails fast.
    Refuse,
    /// Accept and hold silently until the client gives up or the proxy is restored.
    Blackhole,
}

/// What happened to the connections, counted since the proxy started.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProxyStats {
    /// Connections accepted.
    pub(crate) accepted: usize,
    /// Connections forwarded to the upstream.
    pub(crate) forwarded: usize,
    /// Forwarded connections closed by a cut.
    pub(crate) dropped_by_cut: usize,
    /// Connections refused while cut.
    pub(crate) refused: usize,
    /// Black-holed connections that their client closed, and after how long.
    pub(crate) blackholed_given_up: Vec<Held>,
    /// Black-holed connections still waiting when the proxy was restored, and for how long.
    pub(crate) blackholed_at_restore: Vec<Held>,
    /// Requests forwarded, by operation and resource.
    pub(crate) requests: BTreeMap<Request, usize>,
    /// Why a forwarded connection's requests could not be read (chunked bodies, bad headers).
    pub(crate) unreadable: Vec<String>,
}

/// A black-holed connection: how long it was held, and the operation its client was waiting
/// for (`None` when no request head arrived).
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) held: Duration,
    pub(crate) target: Option<String>,
}

#[derive(Debug)]
struct State {
    cut: Option<CutMode>,
    /// Cancelled by a cut: closes every connection being forwarded.
    forwarding: CancellationToken,
    /// Cancelled by a restore: closes every black-holed connection.
    holding: CancellationToken,
    stats: ProxyStats,
}

/// A running proxy. Dropping it stops accepting; connections end with their tasks.
#[derive(Debug)]
pub(crate) struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`.
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let listener =
            TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("proxy: bind 127.0.0.1:0: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("proxy: local_addr: {e}"));
        let state = Arc::new(Mutex::new(State {
            cut: None,
            forwarding: CancellationToken::new(),
            holding: CancellationToken::new(),
            stats: ProxyStats::default(),
        }));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let _ = client.set_nodelay(true);
                let (mode, forwarding, holding) = {
                    let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    s.stats.accepted += 1;
                    (s.cut, s.forwarding.clone(), s.holding.clone())
                };
                match mode {
                    None => {
                        tokio::spawn(forward(client, upstream, forwarding, shared.clone()));
                    }
                    Some(CutMode::Refuse) => {
                        shared.lock().unwrap_or_else(PoisonError::into_inner).stats.refused += 1;
                        drop(client);
                    }
                    Some(CutMode::Blackhole) => {
                        tokio::spawn(hold(client, holding, shared.clone()));
                    }
                }
            }
        });
        Self { addr, state, accept }
    }

    /// The proxy's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for `--endpoint-url`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts: drops every forwarded connection; new ones are treated per `mode`.
    pub(crate) fn cut(&self, mode: CutMode) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.cut = Some(mode);
        s.forwarding.cancel();
        s.forwarding = CancellationToken::new();
    }

    /// Restores: closes the black-holed connections and forwards new ones again.
    pub(crate) fn restore(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.cut = None;
        s.holding.cancel();
        s.holding = CancellationToken::new();
    }

    /// What happened so far.
    pub(crate) fn stats(&self) -> ProxyStats {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).stats.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.forwarding.cancel();
        s.holding.cancel();
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, cut: CancellationToken, state: Arc<Mutex<State>>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    let _ = server.set_nodelay(true);
    state.lock().unwrap_or_else(PoisonError::into_inner).stats.forwarded += 1;
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    // Requests: read, noted, forwarded as they are.
    let requests = async {
        let mut sniffer = Sniffer::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let seen = sniffer.feed(&buf[..n]);
            {
                let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                for request in seen {
                    *s.stats.requests.entry(request).or_default() += 1;
                }
                if let Some(why) = sniffer.broken.take() {
                    s.stats.unreadable.push(why);
                }
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let responses = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::select! {
        _ = async { tokio::join!(requests, responses) } => {}
        _ = cut.cancelled() => {
            state.lock().unwrap_or_else(PoisonError::into_inner).stats.dropped_by_cut += 1;
        }
    }
    // Both sockets close here.
}

/// Holds a black-holed connection: reads and discards what the client sends, answers nothing.
async fn hold(mut client: TcpStream, restored: CancellationToken, state: Arc<Mutex<State>>) {
    let since = Instant::now();
    let mut sink = vec![0u8; 16 * 1024];
    let mut sniffer = Sniffer::default();
    let mut target = None;
    let given_up = loop {
        tokio::select! {
            read = client.read(&mut sink) => match read {
                Ok(0) | Err(_) => break true,
                Ok(n) => {
                    let done = sniffer.feed(&sink[..n]);
                    let waiting = done.first().map(|r| r.target.clone()).or(sniffer.pending_target().map(str::to_owned));
                    target = target.or(waiting);
                }
            },
            _ = restored.cancelled() => break false,
        }
    };
    let held = Held { held: since.elapsed(), target };
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if given_up {
        s.stats.blackholed_given_up.push(held);
    } else {
        s.stats.blackholed_at_restore.push(held);
    }
}
