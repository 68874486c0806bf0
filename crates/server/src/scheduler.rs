//! The scheduler: attests every host once per `--attest-interval`, shares the hosts between
//! replicas on one PostgreSQL database, and hands them over when replicas come and go.
//!
//! - **Membership.** Each replica upserts a row of the `replicas` table every
//!   [`heartbeat_period`] and reads which replicas are live (a heartbeat within
//!   [`dead_after`]). A graceful stop deletes the row and releases every lease at once
//!   ([`Store::leave`]); a replica killed outright leaves a stale row, and the others take its
//!   hosts, when due, as soon as that row is older than [`dead_after`], without waiting for any
//!   lease. A host leased to a replica with no live row is never stuck waiting for its lease.
//! - **Leases.** Claiming a due host ([`Store::claim_due`]) takes its lease for
//!   [`lease_length`] (three intervals) and moves its next attestation to its due time plus one
//!   interval plus a jitter, so the schedule keeps its phase whatever the claim's latency.
//! - **Fair share.** Each host belongs to the live replica with the highest rendezvous hash of
//!   (replica id, host name): stable, the same in every replica, and only about 1/N of the hosts
//!   move when a replica joins or leaves. Right after attesting a host, a replica that is not
//!   its rendezvous owner hands its lease over to that owner, keeping the next attestation
//!   ([`Store::hand_over`]): the host is attested once per interval across the move, by the
//!   old owner up to now and by the new one from its next due time.
//! - **One server on SQLite.** A server on a SQLite file is the only one on its database: its
//!   claims ([`Store::claim_scheduled`]) take the due hosts from a schedule it keeps in
//!   memory and write no lease (the store's `local_schedule` module says how that copy
//!   follows registrations and restarts).
//! - **On time.** The loop claims every [`tick`] (a fiftieth of the interval, 10–500 ms) or at
//!   once when woken; the jitter is drawn below a tenth of the interval minus a tick, so the
//!   period between two attestations of a host stays within the interval plus 10 %.
//!
//! [`Store::leave`]: crate::store::Store::leave
//! [`Store::claim_due`]: crate::store::Store::claim_due
//! [`Store::claim_scheduled`]: crate::store::Store::claim_scheduled
//! [`Store::hand_over`]: crate::store::Store::hand_over

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::engine::attest_row;
use crate::state::AppState;

pub use crate::timing::{
    dead_after, heartbeat_period, jitter, lease_length, tick, worst_takeover_gap,
};

/// A stable 64-bit hash (FNV-1a) of a replica id and a host name.
fn score(replica: &str, host: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in replica
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0u8))
        .chain(host.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short keys: finish with a 64-bit avalanche (splitmix64).
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The live replica a host belongs to (rendezvous hashing); `None` when there is none.
pub fn rendezvous_owner<'a>(host: &str, live: &'a [String]) -> Option<&'a str> {
    live.iter()
        .max_by_key(|r| (score(r, host), r.as_str()))
        .map(String::as_str)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Aborts a task when dropped (the heartbeat stops with the scheduler, even when the
/// scheduler's own task is aborted).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews this replica's heartbeat and refreshes the live set, forever.
async fn heartbeat_loop(state: AppState, live: Arc<Mutex<Vec<String>>>) {
    let interval = state.settings.attest_interval;
    let me = state.settings.replica.clone();
    let mut beats: u64 = 0;
    loop {
        if let Err(e) = state.store.heartbeat(&me).await {
            tracing::warn!(error = %e, "renewing this replica's heartbeat failed");
        }
        match state.store.live_replicas(ms(dead_after(interval))).await {
            Ok(mut ids) => {
                if !ids.contains(&me) {
                    ids.push(me.clone());
                    ids.sort();
                }
                if let Ok(mut l) = live.lock() {
                    if *l != ids {
                        tracing::info!(replicas = ?ids, "live replicas changed");
                    }
                    *l = ids;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the live replicas failed"),
        }
        // Now and then, forget replicas gone for an hour that hold nothing.
        if beats.is_multiple_of(600) {
            let _ = state.store.forget_replicas(3_600_000).await;
        }
        beats = beats.wrapping_add(1);
        tokio::time::sleep(heartbeat_period(interval)).await;
    }
}

/// Attests due hosts until `shutdown` resolves; then releases this replica's leases and
/// heartbeat row, so the other replicas take its hosts at their next due time.
pub async fn run_scheduler(state: AppState, shutdown: impl Future<Output = ()> + Send) {
    let permits = Arc::new(Semaphore::new(state.settings.attest_concurrency));
    let interval = state.settings.attest_interval;
    let me = state.settings.replica.clone();
    let live = Arc::new(Mutex::new(vec![me.clone()]));
    // The first heartbeat before the first claim, so others see this replica at once.
    if let Err(e) = state.store.heartbeat(&me).await {
        tracing::warn!(error = %e, "recording this replica's heartbeat failed");
    }
    let mut heartbeat = AbortOnDrop(tokio::spawn(heartbeat_loop(state.clone(), live.clone())));
    let lease_ms = ms(lease_length(interval));
    let tick = tick(interval);
    tokio::pin!(shutdown);
    let batch = claim_batch(state.settings.attest_concurrency);
    loop {
        // The permits first: a batch of them at least (waiting while attestations are in
        // flight), and every other one free now. A claim takes as many hosts as permits are
        // held, so none of its hosts waits; with every permit in use, claiming a host each time
        // one frees made each claim a statement (on SQLite a transaction) for a host or two.
        let mut held = tokio::select! {
            biased;
            () = &mut shutdown => return stop(&state, &mut heartbeat).await,
            p = permits_for_claim(&permits, batch) => match p {
                Some(p) => p,
                None => return,
            },
        };
        let now = state.now_ms();
        let limit = i64::try_from(held.num_permits()).unwrap_or(1);
        let period = ms(interval + jitter(interval));
        let dead_ms = ms(dead_after(interval));
        let mut more = false;
        let mut started = 0usize;
        match state
            .store
            .claim_scheduled(&me, now, now + lease_ms, period, dead_ms, limit)
            .await
        {
            Ok(claimed) => {
                // A full batch means more hosts may be due: look again without sleeping.
                more = i64::try_from(claimed.len()).unwrap_or(0) >= limit;
                for host in claimed {
                    let name = host.name.clone();
                    if !state.queue.start(&name) {
                        // Made due again (an agent restart) while being attested: once more
                        // when the attestation in flight ends.
                        continue;
                    }
                    started += 1;
                    // A claimed host is always attested (its next due time has moved on), even
                    // when a stop comes meanwhile: at most as many are claimed as permits are
                    // held, so this does not wait.
                    let permit = match held.split(1) {
                        Some(p) => p,
                        None => match permits.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                    };
                    let st = state.clone();
                    let live = live.clone();
                    tokio::spawn(async move {
                        match attest_row(&st, host).await {
                            Ok(r) => {
                                tracing::debug!(host = %name, verdict = %r.verdict, "attested")
                            }
                            // Counted and recorded (status `unreachable`) by `attest_row`.
                            Err(e) if e.is_unreachable() => {}
                            Err(e) => {
                                tracing::warn!(host = %name, reason = e.reason(), error = %e, "attestation failed")
                            }
                        }
                        drop(permit);
                        if st.queue.finish(&name) {
                            if st.store.schedule(&name, 0).await.is_ok() {
                                st.queue.wake();
                            }
                        } else {
                            hand_over_if_not_mine(&st, &name, &live).await;
                        }
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "claiming due hosts failed"),
        }
        // The permits no claimed host took go back before waiting.
        drop(held);
        if more && started > 0 {
            tokio::select! {
                biased;
                () = &mut shutdown => return stop(&state, &mut heartbeat).await,
                () = tokio::task::yield_now() => continue,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = state.queue.woken() => {}
            () = &mut shutdown => return stop(&state, &mut heartbeat).await,
        }
    }
}

/// The fewest permits the scheduler holds before it claims: a quarter of the attestations
/// allowed in flight (at least one), so claims take hosts in batches when every permit is in
/// use.
fn claim_batch(concurrency: usize) -> u32 {
    u32::try_from((concurrency / 4).max(1)).unwrap_or(u32::MAX)
}

/// Waits until at least `batch` permits are free, then takes every free one (`None`: the
/// semaphore was closed).
async fn permits_for_claim(permits: &Arc<Semaphore>, batch: u32) -> Option<OwnedSemaphorePermit> {
    let mut held = permits.clone().acquire_many_owned(batch).await.ok()?;
    let rest = u32::try_from(permits.available_permits()).unwrap_or(0);
    if rest > 0 {
        if let Ok(more) = permits.clone().try_acquire_many_owned(rest) {
            held.merge(more);
        }
    }
    Some(held)
}

/// After attesting `name`: when another live replica is its rendezvous owner, hands it over
/// (its next attestation kept) so every replica carries its share.
async fn hand_over_if_not_mine(state: &AppState, name: &str, live: &Mutex<Vec<String>>) {
    let me = &state.settings.replica;
    let owner = {
        let Ok(l) = live.lock() else { return };
        match rendezvous_owner(name, &l) {
            Some(o) if o != me => o.to_string(),
            _ => return,
        }
    };
    let until = state.now_ms() + ms(lease_length(state.settings.attest_interval));
    match state.store.hand_over(name, me, &owner, until).await {
        Ok(true) => tracing::debug!(host = %name, to = %owner, "host handed over"),
        Ok(false) => {}
        Err(e) => tracing::warn!(host = %name, error = %e, "handing a host over failed"),
    }
}

/// A graceful stop: the heartbeat ended (so it cannot write its row again), then every lease
/// released and the heartbeat row deleted.
async fn stop(state: &AppState, heartbeat: &mut AbortOnDrop) {
    heartbeat.0.abort();
    let _ = (&mut heartbeat.0).await;
    match state.store.leave(&state.settings.replica).await {
        Ok(n) => tracing::info!(released = n, "scheduler stopped; leases released"),
        Err(e) => {
            tracing::warn!(error = %e, "releasing this replica's leases failed; they expire by themselves")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_is_stable_and_moves_only_the_leavers_hosts() {
        let three: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let two: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..3000 {
            let host = format!("node-{i}");
            let o3 = rendezvous_owner(&host, &three).unwrap();
            let o2 = rendezvous_owner(&host, &two).unwrap();
            *counts.entry(o3).or_insert(0) += 1;
            if o3 != "c" {
                assert_eq!(o3, o2, "{host} moved though its owner stayed");
            }
        }
        for (r, n) in counts {
            assert!((800..1200).contains(&n), "{r} owns {n} of 3000");
        }
        assert_eq!(rendezvous_owner("x", &[]), None);
    }

    #[test]
    fn jitter_and_tick_keep_the_period_within_ten_percent() {
        for secs in [1u64, 2, 5, 60, 600] {
            let i = Duration::from_secs(secs);
            for _ in 0..200 {
                assert!(jitter(i) + tick(i) <= i / 10, "{i:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_claim_waits_for_a_batch_of_permits_then_takes_every_free_one() {
        assert_eq!(claim_batch(64), 16);
        assert_eq!(claim_batch(3), 1);
        assert_eq!(claim_batch(1), 1);
        let permits = Arc::new(Semaphore::new(8));
        // Seven attestations in flight: one permit free, a batch is two.
        let mut in_flight = permits.clone().acquire_many_owned(7).await.unwrap();
        let claim = tokio::spawn({
            let permits = permits.clone();
            async move { permits_for_claim(&permits, claim_batch(8)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!claim.is_finished(), "one free permit is no batch");
        // Three attestations end: the claim takes all four free permits.
        drop(in_flight.split(3).unwrap());
        let held = tokio::time::timeout(Duration::from_secs(5), claim)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(held.num_permits(), 4);
        assert_eq!(permits.available_permits(), 0);
        drop(held);
        assert_eq!(permits.available_permits(), 4);
        permits.close();
        assert!(permits_for_claim(&permits, 1).await.is_none());
    }
}
