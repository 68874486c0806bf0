//! The host list kept in memory: what the fleet view and `GET /mtwilson/v2/hosts` list, without
//! reading and decoding every host row for every request.
//!
//! The table stays the truth. Before each answer the list catches up with it, in this order:
//! 1. **The change feed** ([`Store::change_events_since`], from the list's position): every host
//!    registered, deleted, or whose verdict or status changed, in this replica or another, is
//!    read again by name (or dropped when it is gone). A position older than what retention kept
//!    is a resync: the whole list is read again.
//! 2. **Renewals**, which the feed does not carry (an attestation that confirms the verdict
//!    writes new times and reasons): one statement reads, in one snapshot, the number of hosts,
//!    the sum of their row versions (every write of a host row increments its version) and the
//!    rows written since the last catch-up (less [`OVERLAP_MS`], for writes that commit a little
//!    after the moment they stamp, and for clocks of replicas a little apart): the rows whose
//!    `updated` is that recent, and the hosts with a report made since, for an attestation
//!    leaves `updated` as it was.
//! 3. **The check**: the list's own count and version sum must then equal the table's. When
//!    they do not (a write stamped further back than the overlap, a change the feed skipped),
//!    the list catches up once more, and failing that is read whole again. So a missed write
//!    costs time, never a wrong answer.
//!
//! Nothing runs between requests: a list unused for a while catches up with more rows at its
//! next use (at worst, every row: the cost of reading the table).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nodetrust_proto::trust::EffectiveTrust;

use crate::store::{HostRow, ListedRow, Store, StoreError};

/// How far before the last catch-up the next one reads rows again (milliseconds).
pub const OVERLAP_MS: i64 = 5_000;
/// Changes read from the feed per query.
const FEED_PAGE: i64 = 512;

/// One host of the list: its row (no keys, facts or certificate pin) and its stored trust, read
/// once.
#[derive(Debug, Clone)]
pub struct ListedHost {
    /// The host row.
    pub row: HostRow,
    /// `row.effective()`.
    pub trust: EffectiveTrust,
    version: i64,
}

impl ListedHost {
    /// A host as listed (its trust read from the row).
    pub fn new(row: HostRow) -> Self {
        Self::with_version(row, 0)
    }

    fn with_version(row: HostRow, version: i64) -> Self {
        let trust = row.effective();
        Self {
            row,
            trust,
            version,
        }
    }
}

impl From<ListedRow> for ListedHost {
    fn from(r: ListedRow) -> Self {
        Self::with_version(r.row, r.version)
    }
}

#[derive(Debug, Default)]
struct Cache {
    loaded: bool,
    /// The change feed's position.
    cursor: i64,
    /// When the last catch-up began (the reader's clock, Unix ms).
    synced_at: i64,
    hosts: BTreeMap<String, Arc<ListedHost>>,
    version_sum: i64,
}

impl Cache {
    fn put(&mut self, h: ListedHost) {
        let version = h.version;
        let name = h.row.name.clone();
        if let Some(old) = self.hosts.insert(name, Arc::new(h)) {
            self.version_sum = self.version_sum.wrapping_sub(old.version);
        }
        self.version_sum = self.version_sum.wrapping_add(version);
    }

    fn remove(&mut self, name: &str) {
        if let Some(old) = self.hosts.remove(name) {
            self.version_sum = self.version_sum.wrapping_sub(old.version);
        }
    }
}

/// How the list caught up, counted (see [`HostList::stats`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HostListStats {
    /// Whole reads of the table (the first, resyncs, failed checks).
    pub reloads: u64,
    /// Catch-ups from the feed and the renewals.
    pub catch_ups: u64,
    /// Rows read by catch-ups.
    pub rows_read: u64,
}

/// The host list (see the module documentation). Shared by the handlers through the state.
#[derive(Debug, Default)]
pub struct HostList {
    cache: tokio::sync::Mutex<Cache>,
    reloads: AtomicU64,
    catch_ups: AtomicU64,
    rows_read: AtomicU64,
}

impl HostList {
    /// An empty list (read at its first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Every host, by name, as the table is now; `now_ms` is the reader's clock.
    pub async fn current(
        &self,
        store: &Store,
        now_ms: i64,
    ) -> Result<Vec<Arc<ListedHost>>, StoreError> {
        let mut cache = self.cache.lock().await;
        let fresh = cache.loaded
            && (self.catch_up(&mut cache, store, now_ms).await?
                || self.catch_up(&mut cache, store, now_ms).await?);
        if !fresh {
            self.reload(&mut cache, store, now_ms).await?;
        }
        Ok(cache.hosts.values().cloned().collect())
    }

    /// How the list has caught up so far.
    pub fn stats(&self) -> HostListStats {
        HostListStats {
            reloads: self.reloads.load(Ordering::Relaxed),
            catch_ups: self.catch_ups.load(Ordering::Relaxed),
            rows_read: self.rows_read.load(Ordering::Relaxed),
        }
    }

    async fn reload(
        &self,
        cache: &mut Cache,
        store: &Store,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.reloads.fetch_add(1, Ordering::Relaxed);
        // The position first, then the rows: a change in between is applied twice, never missed.
        let head = store.changes_head().await?;
        let all = store.listed_hosts_all().await?;
        let mut fresh = Cache {
            loaded: true,
            cursor: head,
            synced_at: now_ms,
            ..Cache::default()
        };
        for r in all.rows {
            fresh.put(r.into());
        }
        *cache = fresh;
        Ok(())
    }

    /// One catch-up; whether the list then agrees with the table (false: a resync is due, or
    /// the check failed).
    async fn catch_up(
        &self,
        cache: &mut Cache,
        store: &Store,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.catch_ups.fetch_add(1, Ordering::Relaxed);
        if cache.cursor < store.changes_pruned_through().await? {
            tracing::info!(
                position = cache.cursor,
                "host list fell behind the change feed's retention: reading every host"
            );
            return Ok(false);
        }
        let mut names = BTreeSet::new();
        loop {
            let page = store.change_events_since(cache.cursor, FEED_PAGE).await?;
            let full = i64::try_from(page.len()).unwrap_or(i64::MAX) >= FEED_PAGE;
            for ev in page {
                cache.cursor = cache.cursor.max(ev.seq);
                names.insert(ev.host);
            }
            if !full {
                break;
            }
        }
        let since = cache.synced_at.min(now_ms).saturating_sub(OVERLAP_MS);
        if !names.is_empty() {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let rows = store.listed_hosts_named(&names).await?;
            self.rows_read
                .fetch_add(u64::try_from(rows.len()).unwrap_or(0), Ordering::Relaxed);
            let found: BTreeSet<String> = rows.iter().map(|r| r.row.name.clone()).collect();
            for n in names.iter().filter(|n| !found.contains(**n)) {
                cache.remove(n);
            }
            for r in rows {
                cache.put(r.into());
            }
        }
        let snapshot = store.listed_hosts_since(since).await?;
        self.rows_read.fetch_add(
            u64::try_from(snapshot.rows.len()).unwrap_or(0),
            Ordering::Relaxed,
        );
        for r in snapshot.rows {
            cache.put(r.into());
        }
        cache.synced_at = now_ms;
        let count = i64::try_from(cache.hosts.len()).unwrap_or(i64::MAX);
        Ok(count == snapshot.count && cache.version_sum == snapshot.version_sum)
    }
}
