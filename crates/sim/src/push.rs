//! Push mode for the virtual agents ([`nodetrust_proto::push`]): each push host asks the server
//! for a challenge, quotes it with its software TPM and posts the evidence, then waits as long as
//! the server says; when the result carries the next challenge, the next round quotes that one
//! and posts its evidence at once (asking for a challenge only when it is refused, 409). `--push-workers` rounds run at once, each on its own kept-alive connection,
//! over one schedule of every host (the earliest due first).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
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
    /// Rounds that answered a challenge given ahead (one request).
    pub ahead: AtomicU64,
}

/// One round for agent `i`: challenge, quote, evidence. Returns the server's answer.
pub async fn push_once(
    conn: &mut Conn,
    fleet: &Fleet,
    agent: &Credentials,
    i: usize,
) -> Result<PushResult> {
    let name = host_name(fleet, i)?;
    let mut asked = 0;
    loop {
        let body = serde_json::to_vec(&PushChallengeRequest {
            host_name: name.to_string(),
        })?;
        let a = conn
            .call(Method::POST, CHALLENGE_PATH, agent, Some(body))
            .await?;
        let challenge: PushChallenge = a.json(&format!("push challenge of {name}"))?;
        let a = evidence(conn, fleet, agent, i, challenge).await?;
        asked += 1;
        // The log or the PCR values were left out when the server needed them: the next
        // challenge names none.
        let text = a.text();
        let needed =
            text.contains("\"event_log_needed\"") || text.contains("\"pcr_values_needed\"");
        if asked == 1 && a.status == 409 && needed {
            continue;
        }
        return a.json(&format!("push evidence of {name}"));
    }
}

fn host_name(fleet: &Fleet, i: usize) -> Result<&str> {
    Ok(&fleet
        .agents
        .get(i)
        .ok_or_else(|| anyhow!("no agent {i}"))?
        .host_name)
}

/// Quotes `challenge` for agent `i` and posts the evidence.
async fn evidence(
    conn: &mut Conn,
    fleet: &Fleet,
    agent: &Credentials,
    i: usize,
    challenge: PushChallenge,
) -> Result<crate::client::Answer> {
    let evidence = fleet.quote(i, &challenge.quote)?;
    let body = serde_json::to_vec(&PushEvidence {
        host_name: host_name(fleet, i)?.to_string(),
        nonce: challenge.quote.nonce,
        evidence,
    })?;
    conn.call(Method::POST, EVIDENCE_PATH, agent, Some(body))
        .await
}

/// One round for agent `i` with the challenge given ahead, if any (its evidence posted at once;
/// refused with 409, a round that asks, [`push_once`]). Also says whether the challenge given
/// ahead was taken.
pub async fn push_round(
    conn: &mut Conn,
    fleet: &Fleet,
    agent: &Credentials,
    i: usize,
    ahead: Option<PushChallenge>,
) -> Result<(PushResult, bool)> {
    if let Some(challenge) = ahead {
        let a = evidence(conn, fleet, agent, i, challenge).await?;
        if a.status != 409 {
            let name = host_name(fleet, i)?;
            return Ok((a.json(&format!("push evidence of {name}"))?, true));
        }
    }
    Ok((push_once(conn, fleet, agent, i).await?, false))
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
    // The challenge each agent was given ahead, by agent index.
    let given: Arc<Mutex<HashMap<usize, PushChallenge>>> = Arc::default();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let mut conn = server.conn();
        let fleet = fleet.clone();
        let agent = agent.clone();
        let schedule = schedule.clone();
        let stats = stats.clone();
        let given = given.clone();
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
                let ahead = given.lock().ok().and_then(|mut g| g.remove(&i));
                let wait = match push_round(&mut conn, &fleet, &agent, i, ahead).await {
                    Ok((r, took_ahead)) => {
                        stats.rounds.fetch_add(1, Ordering::Relaxed);
                        if took_ahead {
                            stats.ahead.fetch_add(1, Ordering::Relaxed);
                        }
                        if let (Some(next), Ok(mut g)) = (r.next.clone(), given.lock()) {
                            g.insert(i, next);
                        }
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
