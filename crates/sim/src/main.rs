//! `nodetrust-sim`: N virtual agents on software TPMs, registered with a running Trust Server
//! and quoted over one HTTPS listener until stopped.
#![forbid(unsafe_code)]

/// mimalloc: the attestation path allocates per request (HTTP, JSON, TLS records, SQL rows)
/// from many threads at once, where glibc's malloc spent a fifth of the server's CPU
/// (docs/PERFORMANCE.md, "Scale").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use nodetrust_proto::push::AgentMode;
use nodetrust_sim::ca::{SimCa, CA_CERT_FILE};
use nodetrust_sim::client::{parse_pin, Credentials, Server, ServerTrust};
use nodetrust_sim::fleet::{self, AkKind, Fleet, FleetSpec};
use nodetrust_sim::push::PushStats;
use nodetrust_sim::register::{self, Accounts, Progress};

#[derive(Debug, Parser)]
#[command(
    name = "nodetrust-sim",
    version,
    about = "Load generator for the Trust Server: virtual agents on software TPMs (never trustworthy)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write the CA certificate of the simulator's software EKs into DIR (give DIR to the
    /// server's --ek-ca-dir); its key is written beside it for `run --ca-dir`.
    Ca {
        /// Directory to write into (created if missing; an existing CA key there is kept).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Register N hosts with a server, import a flavor from the first, and serve their quotes
    /// until stopped (SIGINT / SIGTERM).
    Run(Box<RunArgs>),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Trust Server base URL, e.g. https://127.0.0.1:8443.
    #[arg(long, env = "NODETRUST_SERVER", value_name = "URL")]
    server: String,
    /// Directory written by `nodetrust-sim ca --out DIR`: the EK certificates are issued with
    /// its CA.
    #[arg(long, value_name = "DIR")]
    ca_dir: PathBuf,
    /// How many hosts.
    #[arg(long, value_name = "N")]
    hosts: usize,
    /// The hosts' AK: ECDSA P-256 (one key per host) or RSA-2048 RSASSA (keys shared among
    /// hosts, see --rsa-keys).
    #[arg(long, value_enum, default_value_t = AkKind::Ecc)]
    ak: AkKind,
    /// How many RSA keys the hosts share with --ak rsa (generating one takes about 0.1 s).
    #[arg(long, default_value_t = 16)]
    rsa_keys: usize,
    /// Address of the HTTPS listener serving every host's quotes.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Host name or address the server reaches the listener at [default: the --listen
    /// address; required when that is unspecified, e.g. 0.0.0.0].
    #[arg(long, value_name = "HOST")]
    advertise: Option<String>,
    /// Host names are PREFIX-0 .. PREFIX-(N-1).
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Registrations in flight at once (each on its own connection). A fleet that boots at
    /// once has far more; the server takes the activations that arrive together in one
    /// transaction, so more in flight register faster (100,000 pull hosts on SQLite: 68 s at
    /// 64, 52 s at 128; docs/PERFORMANCE.md, "Scale, thirty-second round").
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// How the server attests the hosts: `pull` (it asks each over the listener) or `push`
    /// (each asks for a challenge and posts its evidence when the server says; the first host
    /// stays a pull host, the gold host the flavor is imported from).
    #[arg(long, value_enum, default_value_t = Mode::Pull)]
    mode: Mode,
    /// Push rounds in flight at once with --mode push (each on its own connection).
    #[arg(long, default_value_t = 32)]
    push_workers: usize,
    /// A binary TCG event log (as `/sys/kernel/security/tpm0/binary_bios_measurements` holds)
    /// that every host measures and sends, instead of the built-in 14-event boot: the cost of
    /// a real machine's log. Its SHA-1 and SHA-256 digests are extended into the software TPMs
    /// (they have no other banks); a log that starts PCR 0 at locality 3 or 4 is refused.
    #[arg(long, value_name = "FILE")]
    boot_log: Option<PathBuf>,
    /// Do not import a flavor (the hosts are then untrusted until one is defined).
    #[arg(long)]
    no_flavor: bool,
    /// Trust the server's certificate when it chains to a CA of this PEM file or is one of
    /// its certificates. [env: NODETRUST_SERVER_CA]
    #[arg(long, value_name = "FILE", conflicts_with_all = ["server_pin", "insecure"])]
    server_ca: Option<PathBuf>,
    /// Trust exactly the server certificate with this SHA-256. [env: NODETRUST_SERVER_PIN]
    #[arg(long, value_name = "SHA256", conflicts_with = "insecure")]
    server_pin: Option<String>,
    /// Do not check the server's certificate at all (like `curl -k`).
    #[arg(long)]
    insecure: bool,
    /// Admin account: the flavor import, and replacing hosts left by an earlier run.
    #[arg(long, env = "NODETRUST_ADMIN_USERNAME", value_name = "NAME")]
    admin_username: Option<String>,
    /// Admin password.
    #[arg(
        long,
        env = "NODETRUST_ADMIN_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    admin_password: Option<String>,
    /// The agent account (registration).
    #[arg(long, env = "MTWILSON_API_USERNAME", value_name = "NAME")]
    agent_username: String,
    /// The agent account's password.
    #[arg(
        long,
        env = "MTWILSON_API_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    agent_password: String,
    /// The account the server presents to agents' APIs: when set, quote requests without it are
    /// refused, as the agent does.
    #[arg(long, env = "TRUSTAGENT_ADMIN_USERNAME", value_name = "NAME")]
    trustagent_username: Option<String>,
    /// Its password.
    #[arg(
        long,
        env = "TRUSTAGENT_ADMIN_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    trustagent_password: Option<String>,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Pull,
    Push,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn trust(args: &RunArgs) -> Result<ServerTrust> {
    if args.insecure {
        eprintln!("nodetrust-sim: warning: --insecure: the server's certificate is not checked");
        return Ok(ServerTrust::Insecure);
    }
    if let Some(p) = &args.server_pin {
        return Ok(ServerTrust::Pin(parse_pin(p)?));
    }
    if let Some(f) = &args.server_ca {
        return Ok(ServerTrust::CaFile(f.clone()));
    }
    if let Some(p) = env_nonempty("NODETRUST_SERVER_PIN") {
        return Ok(ServerTrust::Pin(parse_pin(&p)?));
    }
    if let Some(f) = env_nonempty("NODETRUST_SERVER_CA") {
        return Ok(ServerTrust::CaFile(f.into()));
    }
    bail!("say how to trust the server's certificate: --server-ca FILE, --server-pin SHA256 or --insecure")
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Ca { out } => {
            let ca = SimCa::create(&out)?;
            let _ = ca.cert_der();
            println!("{}", out.join(CA_CERT_FILE).display());
            Ok(())
        }
        Cmd::Run(args) => run(*args),
    }
}

fn run(args: RunArgs) -> Result<()> {
    if args.hosts == 0 {
        bail!("--hosts must be at least 1");
    }
    let ca = SimCa::load(&args.ca_dir)?;
    let trust = trust(&args)?;
    let server = Server::new(&args.server, &trust)?;
    let accounts = Accounts {
        agent: Credentials::basic(&args.agent_username, &args.agent_password),
        admin: match (&args.admin_username, &args.admin_password) {
            (Some(u), Some(p)) => Some(Credentials::basic(u, p)),
            _ => None,
        },
    };
    if accounts.admin.is_none() && !args.no_flavor {
        bail!("the flavor import needs an admin account: set NODETRUST_ADMIN_USERNAME and NODETRUST_ADMIN_PASSWORD, or give --no-flavor");
    }
    let quote_auth: Option<Arc<str>> = match (&args.trustagent_username, &args.trustagent_password)
    {
        (Some(u), Some(p)) => Some(Credentials::basic(u, p).header().into()),
        _ => None,
    };
    let advertise = match (&args.advertise, args.listen.ip()) {
        (Some(h), _) => h.clone(),
        (None, ip) if ip.is_unspecified() => {
            bail!("--listen {} is unspecified: give --advertise HOST, the address the server reaches this machine at", args.listen)
        }
        (None, IpAddr::V6(ip)) => format!("[{ip}]"),
        (None, IpAddr::V4(ip)) => ip.to_string(),
    };
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("listening on {}", args.listen))?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let (acceptor, pin) = fleet::listener_tls(advertise.trim_matches(['[', ']']))?;

    let made = Instant::now();
    let spec = FleetSpec {
        prefix: args.prefix.clone(),
        hosts: args.hosts,
        ak: args.ak,
        rsa_keys: args.rsa_keys,
        boot: match &args.boot_log {
            Some(f) => fleet::Boot::Log(
                std::fs::read(f).with_context(|| format!("reading --boot-log {}", f.display()))?,
            ),
            None => fleet::Boot::Events(fleet::gold_boot("grub 2.06")),
        },
    };
    let (agents, event_log) = fleet::make_agents(&spec, &ca)?;
    let fleet = Arc::new(Fleet {
        agents,
        event_log_sha256: aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &event_log)
            .as_ref()
            .to_vec(),
        event_log,
        base_url: format!("https://{advertise}:{port}"),
        cert_sha256: pin,
        served: Default::default(),
        mode: match args.mode {
            Mode::Pull => AgentMode::Pull,
            Mode::Push => AgentMode::Push,
        },
    });
    println!(
        "made {} virtual agents ({:?} AK) in {:.1} s; serving on {}",
        args.hosts,
        args.ak,
        made.elapsed().as_secs_f64(),
        fleet.base_url
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let serving = tokio::spawn(fleet::serve(listener, acceptor, fleet.clone(), quote_auth));
        let started = Instant::now();
        let progress = Arc::new(Progress::default());
        let printer = register::print_progress(progress.clone(), args.hosts);
        let mut conn = server.conn();
        let first = register::register_one(&mut conn, &fleet, &accounts, 0, &progress).await?;
        progress.done.fetch_add(1, Ordering::Relaxed);
        if let (false, Some(admin)) = (args.no_flavor, &accounts.admin) {
            if register::import_flavor(&mut conn, admin, &first).await? {
                println!("flavor imported from {first}");
            } else {
                println!("the server already has a flavor for software TPMs; none imported");
            }
        }
        register::register_range(
            &server,
            fleet.clone(),
            &accounts,
            1,
            args.concurrency,
            progress.clone(),
        )
        .await?;
        printer.abort();
        let took = started.elapsed().as_secs_f64();
        println!("registered: {}", args.hosts);
        println!(
            "registration took {took:.1} s ({:.0} hosts/s, {} at once)",
            args.hosts as f64 / took.max(0.001),
            args.concurrency
        );
        let stats = Arc::new(PushStats::default());
        let pushers = (args.mode == Mode::Push).then(|| {
            nodetrust_sim::push::start(
                &server,
                fleet.clone(),
                accounts.agent.clone(),
                1..args.hosts,
                args.push_workers,
                stats.clone(),
            )
        });
        let reporter = tokio::spawn({
            let fleet = fleet.clone();
            let stats = stats.clone();
            let push = args.mode == Mode::Push;
            async move {
                let (mut last, mut last_pushed) = (0u64, 0u64);
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let now = fleet.served.load(Ordering::Relaxed);
                    println!("quotes served: {now} ({:.0}/s)", (now - last) as f64 / 10.0);
                    last = now;
                    if push {
                        let pushed = stats.rounds.load(Ordering::Relaxed);
                        println!(
                            "evidence pushed: {pushed} ({:.0}/s), trusted {}, to challenges given ahead {}, failed rounds {}",
                            (pushed - last_pushed) as f64 / 10.0,
                            stats.trusted.load(Ordering::Relaxed),
                            stats.ahead.load(Ordering::Relaxed),
                            stats.failures.load(Ordering::Relaxed)
                        );
                        last_pushed = pushed;
                    }
                }
            }
        });
        shutdown_signal().await;
        reporter.abort();
        if let Some(mut p) = pushers {
            p.abort_all();
        }
        serving.abort();
        println!(
            "stopped; quotes served: {}",
            fleet.served.load(Ordering::Relaxed)
        );
        Ok(())
    })
}

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
