//! `nodetrust-server`: parses flags, opens the store, and serves the API and the attestation
//! engine until SIGINT / SIGTERM.
#![forbid(unsafe_code)]

/// mimalloc: the attestation path allocates per request (HTTP, JSON, TLS records, SQL rows)
/// from many threads at once, where glibc's malloc spent a fifth of the server's CPU
/// (docs/PERFORMANCE.md, "Scale"). Its `override` feature makes it the C allocator too, so
/// SQLite's and aws-lc's allocations (glibc's `malloc` was 4.5 % of the samples, nearly all
/// on SQLite's threads) take the same path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;

use anyhow::Context as _;
use nodetrust_server::agent_client::HttpsAgents;
use nodetrust_server::clock::SystemClock;
use nodetrust_server::config::{redact_url, Config, ConfigError};
use nodetrust_server::store::Store;
use nodetrust_server::{app, retention, run_with_limits, scheduler, tls, AppState};

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = match Config::load_from(std::env::args_os()) {
        Ok(c) => c,
        Err(ConfigError::Clap(e)) => e.exit(),
        Err(e) => return Err(e.into()),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads())
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(config))
}

/// Opens the store and serves the API and the attestation engine until SIGINT / SIGTERM.
async fn serve(config: Config) -> anyhow::Result<()> {
    // Generated state (the self-signed TLS pair) is the owner's alone.
    nodetrust_server::store::create_private_dir(&config.state_dir).with_context(|| {
        format!(
            "creating the state directory {}",
            config.state_dir.display()
        )
    })?;
    let store = Store::connect(&config.db)
        .await
        .with_context(|| format!("opening the database {}", redact_url(&config.db)))?;
    // Held until the process ends.
    let _only_server = store.hold_as_only_server()?;
    let agent_creds = match (&config.trustagent_username, &config.trustagent_password) {
        (Some(u), Some(p)) => Some((u.clone(), p.clone())),
        _ => None,
    };
    let agents = Arc::new(HttpsAgents::new(config.agent_timeout, agent_creds));
    let state = AppState::new(&config, store, Arc::new(SystemClock), agents).await?;
    let (certs, key) = tls::server_identity(
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
        &config.state_dir,
    )?;
    let tls_config = tls::server_config(certs, key)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(listen = %config.listen, db = %redact_url(&config.db), workers = config.worker_threads(), "nodetrust-server started");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // SIGTERM stops everything at once: the scheduler releases this replica's leases while the
    // API drains its connections, so the other replicas take the hosts over without waiting.
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let mut rx = stop_rx.clone();
    let scheduler = tokio::spawn(scheduler::run_scheduler(state.clone(), async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    let mut rx = stop_rx.clone();
    let pruner = tokio::spawn(retention::run_pruner(state.clone(), async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    let labeller = nodetrust_server::labeller::start(&state, &config, stop_rx.clone())
        .await
        .context("starting the Kubernetes labeller")?;
    let mut rx = stop_rx.clone();
    run_with_limits(
        listener,
        tls_config,
        app(state),
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
        nodetrust_tls::serve::ServeLimits::new(config.max_connections, config.idle_timeout),
    )
    .await;
    let _ = scheduler.await;
    let _ = pruner.await;
    for task in labeller.into_iter().flatten() {
        let _ = task.await;
    }
    tracing::info!("nodetrust-server stopped");
    Ok(())
}
