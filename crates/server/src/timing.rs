//! The scheduler's timing, as pure functions of `--attest-interval`: heartbeat, liveness,
//! lease length, tick, jitter, and the worst gap a crashed replica's hosts can go without a
//! verdict (which [`crate::config`] checks `--report-validity` against). The scheduler
//! ([`crate::scheduler`]) re-exports them.

use std::time::Duration;

/// How often a replica renews its heartbeat row: a quarter of the interval, between 100 ms
/// and 2 s.
pub fn heartbeat_period(interval: Duration) -> Duration {
    (interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(2))
}

/// A replica whose heartbeat is older than this is dead: four heartbeat periods, at least 1 s.
pub fn dead_after(interval: Duration) -> Duration {
    (heartbeat_period(interval) * 4).max(Duration::from_secs(1))
}

/// How long a claimed lease runs: three intervals (renewed at every claim; the heartbeat, not
/// the lease, decides a takeover after a crash).
pub fn lease_length(interval: Duration) -> Duration {
    interval * 3
}

/// The scheduler's tick: a fiftieth of the interval, between 10 and 500 ms.
pub fn tick(interval: Duration) -> Duration {
    (interval / 50).clamp(Duration::from_millis(10), Duration::from_millis(500))
}

/// The longest a host of a crashed replica can go without a new verdict: its period (the
/// interval plus 10 %), plus the time for the crash to be noticed ([`dead_after`] and one
/// heartbeat period, in which the survivors read the membership) and for the survivor to
/// claim it (one tick), plus one second for the attestation itself. `--report-validity` must
/// be longer (checked at start with PostgreSQL).
pub fn worst_takeover_gap(interval: Duration) -> Duration {
    interval
        + interval / 10
        + dead_after(interval)
        + heartbeat_period(interval)
        + tick(interval)
        + Duration::from_secs(1)
}

/// The jitter added to one period: uniform below a tenth of the interval minus a tick (so
/// that the period, tick latency included, is at most the interval plus 10 %).
pub fn jitter(interval: Duration) -> Duration {
    let mut b = [0u8; 4];
    let _ = crate::clock::fill_random(&mut b);
    let bound = (interval / 10).saturating_sub(tick(interval)).as_millis();
    if bound == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(u64::try_from(u128::from(u32::from_be_bytes(b)) % bound).unwrap_or(0))
}
