//! Retention: deletes attestation reports and change-feed rows older than
//! `--report-retention` / `--change-retention`, so the database does not grow without bound.
//!
//! [`run_pruner`] prunes every [`prune_period`] (at start, then periodically). Each cycle
//! deletes in batches of at most [`PRUNE_BATCH`] rows, each batch its own short statement, so
//! SQLite's single writer and PostgreSQL's row locks are held briefly. Every registered
//! host's latest report is kept whatever its age (`GET /mtwilson/v2/reports?latest=true`
//! serves it). Replicas sharing a PostgreSQL database may prune at the same time: each batch
//! takes rows no other replica holds, and deleting is idempotent.

use std::future::Future;
use std::time::Duration;

use crate::state::AppState;
use crate::store::{millis, StoreError};

/// Most rows one delete statement removes.
pub const PRUNE_BATCH: i64 = 5000;

/// Rows deleted by one cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// From `reports`.
    pub reports: u64,
    /// From `changes`.
    pub changes: u64,
}

/// Time between cycles: a tenth of the shorter retention, between 1 and 10 minutes.
pub fn prune_period(report_retention: Duration, change_retention: Duration) -> Duration {
    (report_retention.min(change_retention) / 10)
        .clamp(Duration::from_secs(60), Duration::from_secs(600))
}

/// The cutoff (Unix ms) for `retention` at `now_ms`: rows created before it are old.
fn cutoff(now_ms: i64, retention: Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX))
}

/// One cycle at the state's clock, in batches of at most `batch` rows: deletes old reports
/// and changes, counts them in the metrics and logs what was deleted.
pub async fn prune_once(state: &AppState, batch: i64) -> Result<Pruned, StoreError> {
    let now = millis(state.clock.now());
    let settings = &state.settings;
    let reports = state
        .store
        .prune_reports(cutoff(now, settings.report_retention), batch)
        .await;
    // Counted even when the other table fails.
    if let Ok(n) = &reports {
        state.metrics.pruned("reports", *n);
    }
    let changes = state
        .store
        .prune_changes(cutoff(now, settings.change_retention), batch)
        .await;
    if let Ok(n) = &changes {
        state.metrics.pruned("changes", *n);
    }
    let pruned = Pruned {
        reports: reports?,
        changes: changes?,
    };
    if pruned != Pruned::default() {
        tracing::info!(
            reports = pruned.reports,
            changes = pruned.changes,
            "retention: old rows deleted"
        );
    }
    Ok(pruned)
}

/// Prunes at start and then every [`prune_period`] until `shutdown` resolves.
pub async fn run_pruner(state: AppState, shutdown: impl Future<Output = ()> + Send) {
    let period = prune_period(
        state.settings.report_retention,
        state.settings.change_retention,
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            r = prune_once(&state, PRUNE_BATCH) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "retention: pruning failed; retried next cycle");
                }
            }
            () = &mut shutdown => return,
        }
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = &mut shutdown => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_is_a_tenth_of_the_shorter_retention_within_one_to_ten_minutes() {
        let day = Duration::from_secs(86_400);
        let min = Duration::from_secs(60);
        assert_eq!(prune_period(7 * day, 7 * day), 10 * min);
        assert_eq!(prune_period(7 * day, 30 * min), 3 * min);
        assert_eq!(prune_period(50 * min, 7 * day), 5 * min);
        assert_eq!(prune_period(Duration::from_secs(30), 7 * day), min);
    }

    #[test]
    fn cutoff_is_now_minus_retention() {
        assert_eq!(cutoff(10_000, Duration::from_secs(4)), 6_000);
        assert_eq!(cutoff(0, Duration::MAX), -i64::MAX);
    }
}
