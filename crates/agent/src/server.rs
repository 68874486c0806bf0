//! The HTTPS accept loop: `run(listener, tls, app, shutdown)`, the workspace's one loop
//! ([`nodetrust_tls::serve`]) with the agent's limits.
//!
//! Each connection gets a TLS handshake (bounded in time), then HTTP/1.1 that must bring a
//! complete request head within the idle timeout (after the handshake and between requests).
//! At most `--max-connections` connections ([`MAX_CONNECTIONS`] by default) are served at
//! once; more are closed as they arrive. When `shutdown` completes the loop stops accepting and
//! gives open connections [`DRAIN`] to finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use nodetrust_tls::serve::{serve, ServeLimits};
use rustls::ServerConfig;
use tokio::net::TcpListener;

/// Most connections served at once by default (`--max-connections`).
pub const MAX_CONNECTIONS: usize = 256;
/// Time a connection may go without a complete request head by default (`--idle-timeout`):
/// longer than the server's default attestation interval (60 s), so the connection the server
/// keeps between two quotes is still open for the next.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Time allowed for a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time open connections get to finish after shutdown.
pub const DRAIN: Duration = Duration::from_secs(5);

/// The agent's default limits.
pub fn default_limits() -> ServeLimits {
    limits(MAX_CONNECTIONS, IDLE_TIMEOUT)
}

/// The agent's limits with `max_connections` and `idle_timeout`.
pub fn limits(max_connections: usize, idle_timeout: Duration) -> ServeLimits {
    ServeLimits {
        max_connections,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        idle_timeout,
        drain: DRAIN,
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` completes, with the default limits.
pub async fn run(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run_with(listener, tls, app, shutdown, default_limits()).await
}

/// [`run`] with `limits`.
pub async fn run_with(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
    limits: ServeLimits,
) -> std::io::Result<()> {
    serve(listener, tls, move |_peer| app.clone(), shutdown, limits).await;
    Ok(())
}
