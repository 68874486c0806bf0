//! Registration of the fleet through the server's API, as agents register: the EK with its
//! certificate and the AK, then the MakeCredential challenge answered by each agent's software
//! TPM. Many at once (`--concurrency` workers, each on one kept-alive connection).
//!
//! A host left on the server by an earlier run (same name or hardware UUID, another EK) is
//! deleted with the admin account and registered again. A busy server (429 / 503) is waited
//! for as its `Retry-After` says.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use hyper::Method;
use nodetrust_proto::registration::{ActivateRequest, RegisterChallenge, RegisterResult};
use nodetrust_tpm::Attester as _;

use crate::client::{Conn, Credentials, Server};
use crate::fleet::Fleet;

/// Registration endpoint.
pub const REGISTER_PATH: &str = "/mtwilson/v2/hosts/register";
/// Most attempts for one host (busy answers, a stale host deleted).
const MAX_ATTEMPTS: u32 = 30;

/// The accounts the simulator uses.
#[derive(Debug, Clone)]
pub struct Accounts {
    /// The agent account (`MTWILSON_API_*`): registration.
    pub agent: Credentials,
    /// An admin account (`NODETRUST_ADMIN_*`): the flavor import, deleting stale hosts.
    pub admin: Option<Credentials>,
}

/// Registers agent `i`; returns its host name. The server's answers' times go to `progress`.
pub async fn register_one(
    conn: &mut Conn,
    fleet: &Fleet,
    accounts: &Accounts,
    i: usize,
    progress: &Progress,
) -> Result<String> {
    let request = serde_json::to_vec(&fleet.register_request(i)?)?;
    let agent = fleet.agents.get(i).ok_or_else(|| anyhow!("no agent {i}"))?;
    let mut deleted = false;
    for _ in 0..MAX_ATTEMPTS {
        let asked = Instant::now();
        let a = conn
            .call(
                Method::POST,
                REGISTER_PATH,
                &accounts.agent,
                Some(request.clone()),
            )
            .await?;
        progress.register.add(asked.elapsed());
        if matches!(a.status, 429 | 503) {
            tokio::time::sleep(Duration::from_secs(a.retry_after.unwrap_or(1).min(30))).await;
            continue;
        }
        if a.status == 409 && !deleted {
            deleted = delete_stale(conn, accounts, &agent.host_name).await?;
            continue;
        }
        let challenge: RegisterChallenge = a.json(&format!("registering {}", agent.host_name))?;
        let secret = agent
            .attester
            .activate_credential(&challenge.credential_blob, &challenge.encrypted_secret)?;
        let body = serde_json::to_vec(&ActivateRequest { secret })?;
        let path = format!("{REGISTER_PATH}/{}/activate", challenge.challenge_id);
        let asked = Instant::now();
        let a = conn
            .call(Method::POST, &path, &accounts.agent, Some(body))
            .await?;
        progress.activate.add(asked.elapsed());
        if matches!(a.status, 429 | 503) {
            tokio::time::sleep(Duration::from_secs(a.retry_after.unwrap_or(1).min(30))).await;
            continue;
        }
        if a.status == 409 && !deleted {
            deleted = delete_stale(conn, accounts, &agent.host_name).await?;
            continue;
        }
        let done: RegisterResult = a.json(&format!("activating {}", agent.host_name))?;
        return Ok(done.host_name);
    }
    bail!(
        "registering {}: the server stayed busy for {MAX_ATTEMPTS} attempts",
        agent.host_name
    )
}

/// Deletes a host of an earlier run that holds this name; true when one was deleted.
async fn delete_stale(conn: &mut Conn, accounts: &Accounts, name: &str) -> Result<bool> {
    let Some(admin) = &accounts.admin else {
        bail!(
            "host {name} is registered with another TPM (an earlier run?); give an admin \
             account (NODETRUST_ADMIN_USERNAME / NODETRUST_ADMIN_PASSWORD) to replace it, or \
             another --prefix"
        );
    };
    let a = conn
        .call(
            Method::DELETE,
            &format!("/mtwilson/v2/hosts/{name}"),
            admin,
            None,
        )
        .await?;
    if !matches!(a.status, 204 | 200 | 404) {
        bail!(
            "deleting the stale host {name}: HTTP {}: {}",
            a.status,
            a.text()
        );
    }
    Ok(true)
}

/// Imports flavors from `host` unless the server already has one that allows software TPMs.
/// Returns whether it imported.
pub async fn import_flavor(conn: &mut Conn, admin: &Credentials, host: &str) -> Result<bool> {
    let a = conn
        .call(Method::GET, "/mtwilson/v2/flavors", admin, None)
        .await?;
    let list: serde_json::Value = a.json("listing flavors")?;
    let have = list
        .get("flavors")
        .and_then(|f| f.as_array())
        .is_some_and(|f| {
            f.iter()
                .any(|f| f.get("allow_software_tpm") == Some(&serde_json::Value::Bool(true)))
        });
    if have {
        return Ok(false);
    }
    let body = serde_json::to_vec(&serde_json::json!({ "from_host": host }))?;
    let a = conn
        .call(Method::POST, "/mtwilson/v2/flavors", admin, Some(body))
        .await?;
    let _: serde_json::Value = a.json(&format!("importing flavors from {host}"))?;
    Ok(true)
}

/// Progress of a registration run.
#[derive(Debug, Default)]
pub struct Progress {
    /// Hosts registered.
    pub done: AtomicUsize,
    /// The server's answers to registrations (the challenge).
    pub register: Answers,
    /// The server's answers to activations (the host stored).
    pub activate: Answers,
}

/// How many answers of one kind came, and how long they took in all.
#[derive(Debug, Default)]
pub struct Answers {
    count: AtomicU64,
    micros: AtomicU64,
}

impl Answers {
    fn add(&self, took: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Their mean time so far, in milliseconds (0 before the first).
    pub fn mean_ms(&self) -> f64 {
        let n = self.count.load(Ordering::Relaxed);
        if n == 0 {
            return 0.0;
        }
        self.micros.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0
    }
}

/// Registers every agent of `fleet` from `first` on with `concurrency` workers.
pub async fn register_range(
    server: &Server,
    fleet: Arc<Fleet>,
    accounts: &Accounts,
    first: usize,
    concurrency: usize,
    progress: Arc<Progress>,
) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(first));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let mut conn = server.conn();
        let fleet = fleet.clone();
        let accounts = accounts.clone();
        let next = next.clone();
        let progress = progress.clone();
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= fleet.agents.len() {
                    return Ok::<(), anyhow::Error>(());
                }
                register_one(&mut conn, &fleet, &accounts, i, &progress).await?;
                progress.done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.map_err(|e| anyhow!("registration worker failed: {e}"))??;
    }
    Ok(())
}

/// Prints `registering: done/total (rate/s, ...)` every second until dropped, with the mean
/// time the server took to answer each of a registration's two calls (a load test's latency).
pub fn print_progress(progress: Arc<Progress>, total: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let done = progress.done.load(Ordering::Relaxed);
            let rate = done as f64 / start.elapsed().as_secs_f64().max(0.001);
            println!(
                "registering: {done}/{total} ({rate:.0}/s, answers in {:.1} ms to register, {:.1} ms to activate on average)",
                progress.register.mean_ms(),
                progress.activate.mean_ms()
            );
        }
    })
}
