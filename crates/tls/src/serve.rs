//! The one HTTPS accept loop of the workspace, used by the agent's API and the server's.
//!
//! [`serve`] accepts TCP connections and serves each over TLS with HTTP/1.1, within
//! [`ServeLimits`]:
//! - **A connection cap.** At most `max_connections` connections are open at once, from accept
//!   to close (TLS handshake included). A connection beyond the cap is closed at once (counted,
//!   and logged at most once a second), so a flood is bounded in memory whatever it sends and
//!   a client learns at once that it must come back, instead of waiting in the kernel's backlog
//!   behind the flood.
//! - **A handshake timeout.** The TLS handshake must end within `handshake_timeout`.
//! - **An idle timeout.** A connection must bring a complete request head within
//!   `idle_timeout` of its handshake and of the end of each answer; otherwise it is closed.
//!   This closes kept-alive connections left idle as well as clients that dribble their headers
//!   (slowloris). A request being handled, or an answer being streamed, is not idle.
//! - **Graceful shutdown.** When `shutdown` completes the listener is closed, every request
//!   finds a [`Closing`] in its extensions resolve (so endless answers, such as event streams,
//!   end), connections finish the request they are serving and close, and whatever is still
//!   open after `drain` is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The limits of [`serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections open at once; more are closed as they arrive (at least 1).
    pub max_connections: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a connection may go without a complete request head (after the handshake and
    /// between requests).
    pub idle_timeout: Duration,
    /// Time open connections get to finish after shutdown begins.
    pub drain: Duration,
}

impl ServeLimits {
    /// `max_connections` and `idle_timeout`, with a 10 s handshake timeout and 10 s to drain.
    pub fn new(max_connections: usize, idle_timeout: Duration) -> Self {
        Self {
            max_connections,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout,
            drain: DEFAULT_DRAIN,
        }
    }
}

/// Handshake timeout of [`ServeLimits::new`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Drain time of [`ServeLimits::new`].
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

/// Resolves when the server begins a graceful shutdown: [`serve`] puts one in every request's
/// extensions, so that answers that would last forever (event streams) end instead of holding
/// the shutdown until its time limit.
#[derive(Debug, Clone)]
pub struct Closing(tokio::sync::watch::Receiver<bool>);

impl Closing {
    /// Waits for the shutdown to begin (or the server to be gone).
    pub async fn closed(mut self) {
        let _ = self.0.wait_for(|closing| *closing).await;
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves HTTPS on `listener` with the TLS configuration `tls` until `shutdown` completes; see
/// the module documentation. `service` makes the service of one connection from the peer's
/// address (a router that wants the address puts it in the requests itself).
pub async fn serve<M, S, B>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    service: M,
    shutdown: impl Future<Output = ()>,
    limits: ServeLimits,
) where
    M: Fn(SocketAddr) -> S,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let max_connections = limits.max_connections.max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    let mut refused: u64 = 0;
    let mut last_warned: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(tcp);
            refused = refused.saturating_add(1);
            if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                tracing::warn!(%peer, refused, max_connections, "too many connections: closing new ones (--max-connections)");
                last_warned = Some(Instant::now());
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let closing = Closing(closing.clone());
        let shutting_down = closing.clone();
        let service = TowerToHyperService::new(
            tower::ServiceBuilder::new()
                .map_request(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(closing.clone());
                    req
                })
                .service(service(peer)),
        );
        let watcher = graceful.watcher();
        conns.spawn(async move {
            let _slot = slot;
            let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
            let tls = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                // No request started on it yet: nothing to let finish.
                () = shutting_down.closed() => return,
            };
            // hyper runs the header read timer from the moment it waits for a request head:
            // after the handshake and after each answer, so it is also the idle timeout.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.idle_timeout)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let _ = tokio::time::timeout(limits.drain, graceful.shutdown()).await;
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}
