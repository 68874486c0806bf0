//! nodetrust-server: the Trust Server (the runbook's "CIT Trust Server", Intel's Mt. Wilson).
//!
//! It knows every host, holds the gold-standard measurements (flavors), attests hosts
//! continuously, and answers "is this node trusted?" with a verdict it can justify.
//!
//! Every edge is injected: the listener and the shutdown future ([`run`]), the clock
//! ([`clock::Clock`]), the agents ([`agent_client::AgentConnector`]) and the store. [`app`]
//! builds the router alone, so the API is tested with `tower::ServiceExt::oneshot` and no
//! socket.
//!
//! # Layout
//! - [`config`]: flags and environment.
//! - [`state`]: [`AppState`], shared by handlers and the engine.
//! - [`api`]: the `/mtwilson/v2` routes, health, readiness and metrics.
//! - [`auth`]: accounts, roles, basic auth, argon2 (bounded), login back-off.
//! - [`users`]: the accounts API.
//! - [`registrar`]: registration with MakeCredential / ActivateCredential, endorsements.
//! - [`ekca`]: the manufacturer CA bundle EK certificates chain to.
//! - [`engine`]: attestation (quote, verification, appraisal, reports) and its scheduler.
//! - [`scheduler`]: attests every host each interval; replica membership, leases, hand-over.
//! - [`retention`]: deletes old reports and change-feed rows.
//! - [`evidence`]: the agent's event log, parsed and replayed for appraisal.
//! - [`agent_client`]: HTTPS to agents with the certificate pinned.
//! - [`store`]: SQLite / PostgreSQL, leases, the change feed.
//! - [`labeller`]: feeds the embedded Kubernetes labeller from the store and the change feed.
//! - [`feed`]: the typed, resumable change feed ([`feed::ChangeFeed`]) the labeller follows.
//! - [`jws`]: signed reports. [`metrics`]: Prometheus text. [`tls`]: rustls set-up.
//! - [`openapi`]: the OpenAPI document, from the route table.
//! - [`ui`]: the fleet view, HTML pages under `/ui/`.
//! - [`clock`], [`error`].
#![forbid(unsafe_code)]

pub mod agent_client;
pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod ekca;
pub mod engine;
pub mod error;
pub mod evidence;
pub mod feed;
pub mod jws;
pub mod labeller;
pub mod metrics;
pub mod openapi;
pub mod registrar;
pub mod retention;
pub mod scheduler;
pub mod state;
pub mod store;
pub mod tls;
pub mod ui;
pub mod users;

use std::future::Future;
use std::sync::Arc;

pub use api::app;
pub use state::AppState;

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then stops accepting and
/// lets connections in flight finish their current request.
pub async fn run(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
) {
    run_with(listener, tls, app, shutdown, DEFAULT_MAX_CONNECTIONS).await;
}

/// Connections served at once by default (`--max-connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// [`run`] with at most `max_connections` connections open at once: a connection beyond that
/// is closed at once (counted and logged, at most once a second), so a flood of connections is
/// bounded in memory whatever it sends. A TLS handshake must end within 10 s and a request head
/// within 30 s.
pub async fn run_with(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
    max_connections: usize,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let mut refused: u64 = 0;
    let mut last_warned: Option<std::time::Instant> = None;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    drop(tcp);
                    refused += 1;
                    if last_warned.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)) {
                        tracing::warn!(%peer, refused, max_connections, "too many connections: closing new ones (--max-connections)");
                        last_warned = Some(std::time::Instant::now());
                    }
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                // Handlers (the login limiter) see the client address as `ConnectInfo`.
                let service = hyper_util::service::TowerToHyperService::new(
                    tower::ServiceBuilder::new()
                        .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                            req
                        })
                        .service(app.clone()),
                );
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _slot = slot;
                    let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    // A client that never finishes its request head is dropped.
                    builder
                        .http1()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(std::time::Duration::from_secs(30));
                    let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service);
                    let conn = watcher.watch(conn.into_owned());
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown()).await;
}
