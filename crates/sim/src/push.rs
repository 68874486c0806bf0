//! Push mode for the virtual agents ([`nodetrust_proto::push`]): each push host asks the server
//! for a challenge, quotes it with its software TPM and posts the evidence, then waits as long as
//! the server says. `--push-workers` rounds run at once, each on its own kept-alive connection,
//! over one schedule of every host (the earliest due first).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use hyper::Method;
use nodetrust_proto::push::{PushChallenge, PushChallengeRequest, PushEvidence, PushResult};

use crate::client::{Conn, Credentials, Server};
use crate::fleet::Fleet;

/// Challenge endpoint.
pub const CHALLENGE_PATH: &str = "/mtwilson/v2/push/challenge";
/// Evidence endpoint.
pub const EVIDENCE_PATH: &str = "/mtwilson/v2/push/evidence";

/// Counts of push rounds.
#[derive(Debug, Default)]
pub struct PushStats {
    /// Rounds that got a verdict.
    pub rounds: AtomicU64,
    /// Of which `trusted`.
    pub trusted: AtomicU64,
    /// Rounds that failed (retried a second later).
    pub failures: AtomicU64,
}

/// One round for agent `i`: challenge, quote, evidence. Returns the server's answer.
pub async fn push_once(
    conn: &mut Conn,
    fleet: &Fleet,
    agent: &Credentials,
    i: usize,
) -> Result<PushResult> {
    let name = &fleet
        .agents
        .get(i)
        .ok_or_else(|| anyhow!("no agent {i}"))?
        .host_name;
    let body = serde_json::to_vec(&PushChallengeRequest {
        host_name: name.clone(),
    })?;
    let a = conn
        .call(Method::POST, CHALLENGE_PATH, agent, Some(body))
        .await?;
    let challenge: PushChallenge = a.json(&format!("push challenge of {name}"))?;
    let evidence = fleet.quote(i, &challenge.quote)?;
    let body = serde_json::to_vec(&PushEvidence {
        host_name: name.clone(),
        nonce: challenge.quote.nonce,
        evidence,
    })?;
    let a = conn
        .call(Method::POST, EVIDENCE_PATH, agent, Some(body))
        .await?;
    a.json(&format!("push evidence of {name}"))
}

/// Pushes for agents `hosts` until the task is dropped, `workers` rounds at once.
pub fn start(
    server: &Server,
    fleet: Arc<Fleet>,
    agent: Credentials,
    hosts: impl IntoIterator<Item = usize>,
    workers: usize,
    stats: Arc<PushStats>,
) -> tokio::task::JoinSet<()> {
    let now = Instant::now();
    let schedule: BinaryHeap<Reverse<(Instant, usize)>> =
        hosts.into_iter().map(|i| Reverse((now, i))).collect();
    let schedule = Arc::new(Mutex::new(schedule));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let mut conn = server.conn();
        let fleet = fleet.clone();
        let agent = agent.clone();
        let schedule = schedule.clone();
        let stats = stats.clone();
        set.spawn(async move {
            loop {
                let next = schedule.lock().ok().and_then(|mut s| {
                    let Reverse((due, i)) = *s.peek()?;
                    if due <= Instant::now() {
                        s.pop();
                        Some(Ok(i))
                    } else {
                        Some(Err(due))
                    }
                });
                let i = match next {
                    Some(Ok(i)) => i,
                    Some(Err(due)) => {
                        let wait = due.saturating_duration_since(Instant::now());
                        tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
                        continue;
                    }
                    None => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let wait = match push_once(&mut conn, &fleet, &agent, i).await {
                    Ok(r) => {
                        stats.rounds.fetch_add(1, Ordering::Relaxed);
                        if r.report.verdict == nodetrust_proto::trust::Trust::Trusted {
                            stats.trusted.fetch_add(1, Ordering::Relaxed);
                        }
                        Duration::from_millis(r.next_push_in_ms.max(100))
                    }
                    Err(e) => {
                        if stats.failures.fetch_add(1, Ordering::Relaxed) < 10 {
                            eprintln!("nodetrust-sim: push failed: {e:#}");
                        }
                        Duration::from_secs(1)
                    }
                };
                if let Ok(mut s) = schedule.lock() {
                    s.push(Reverse((Instant::now() + wait, i)));
                }
            }
        });
    }
    set
}
