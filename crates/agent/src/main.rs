//! `nodetrust-agent`: wires configuration, the TPM, TLS, the API and registration together.
//! See the library crate for the parts.
#![forbid(unsafe_code)]

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use nodetrust_agent::api::{app, AppState};
use nodetrust_agent::client::Client;
use nodetrust_agent::config::{Cli, Command, Settings};
use nodetrust_agent::register::{self, Backoff, Registration};
use nodetrust_agent::{host, push, server, tls};
use nodetrust_tpm::tss::is_software_tcti;
use nodetrust_tpm::{Attester, TssAttester, TssConfig};

const SOFTWARE_TPM_WARNING: &str =
    "!!! SOFTWARE TPM: this agent is NOT backed by a hardware TPM. Its evidence proves \
     nothing about this machine and must NEVER be trusted in production !!!";

fn main() -> std::process::ExitCode {
    // tpm2-tss logs its own errors to stderr; the agent explains them itself.
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+none");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if cli.command == Some(Command::Check) {
        return nodetrust_agent::check::main(&cli);
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("nodetrust-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::resolve(cli, &|k| std::env::var(k).ok())?;
    if is_software_tcti(&settings.tcti) {
        tracing::warn!(tcti = %settings.tcti, "{SOFTWARE_TPM_WARNING}");
    }

    let mut tpm_config = TssConfig::new(settings.tcti.clone(), settings.state_dir.clone());
    tpm_config.owner_secret = settings.owner_secret.clone();
    tpm_config.ak_algorithm = settings.ak_algorithm;
    let attester = TssAttester::open(tpm_config)?;
    let facts = attester.facts()?;
    if facts.software {
        tracing::warn!(manufacturer = %facts.manufacturer, vendor = %facts.vendor, "{SOFTWARE_TPM_WARNING}");
    }
    let attester: Arc<dyn Attester> = Arc::new(attester);
    let host = host::gather(
        settings.host_name.as_deref(),
        settings.hardware_uuid.as_deref(),
        &facts,
    );
    tracing::info!(
        host = %host.host_name,
        hardware_uuid = %host.hardware_uuid,
        tpm = %format!("{} {}", host.tpm_manufacturer, host.tpm_firmware_version),
        banks = ?host.pcr_banks,
        measured_launch = host.measured_launch,
        "host facts"
    );

    let mut names = vec![host.host_name.clone(), "localhost".to_string()];
    if !settings.listen.ip().is_unspecified() {
        names.push(settings.listen.ip().to_string());
    }
    let identity = tls::server_identity(
        settings.tls_cert.as_deref(),
        settings.tls_key.as_deref(),
        &settings.state_dir,
        &names,
    )?;
    tracing::info!(
        sha256 = %identity.fingerprint,
        generated = identity.generated,
        "API TLS certificate (pin this SHA-256 fingerprint to trust the agent)"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let local = listener.local_addr()?;
        tracing::info!(address = %local, "serving the Trust Agent API over HTTPS");

        let state = AppState::new(attester.clone(), host.clone(), settings.admin.clone(), settings.eventlog.clone(), settings.ima_log.clone());
        let registration = match &settings.server {
            None => {
                tracing::info!("no Trust Server configured (server_url / MTWILSON_SERVER unset): serving the API without registering");
                None
            }
            Some(server) => {
                let (config, verifier) = tls::client_trust(&server.trust)?;
                let client = Client::new(&server.url, config, &server.credentials)?.with_verifier(verifier);
                let connection_url = settings
                    .advertise_url
                    .clone()
                    .unwrap_or_else(|| format!("https://{}:{}", host.host_name, local.port()));
                let mode = settings.mode;
                let reg = Registration { host: host.clone(), connection_url, tls_cert_sha256: identity.fingerprint.clone(), mode };
                let attester = Arc::clone(&attester);
                let router = app(state.clone());
                let admin = settings.admin.clone();
                Some(tokio::spawn(async move {
                    let registered = register::run(client.clone(), attester, reg, Backoff::default()).await;
                    if mode == nodetrust_proto::push::AgentMode::Push {
                        tracing::info!("push mode: this agent sends its evidence on the Trust Server's schedule");
                        push::run(client, router, admin, registered.host_name, Backoff::default()).await;
                    }
                }))
            }
        };

        let limits = server::limits(settings.max_connections, settings.idle_timeout);
        server::run_with(listener, Arc::clone(&identity.config), app(state), shutdown_signal(), limits).await?;
        if let Some(task) = registration {
            task.abort();
        }
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}
