//! The flavors: the one way to read and write them.
//!
//! Appraisal reads the flavors at every attestation, so they are cached for
//! [`FLAVOR_CACHE_TTL`]. Every write goes through [`Flavors::add`] or [`Flavors::delete`], which
//! drop the cache themselves: no caller has to remember to. A write made through another
//! replica is seen within [`FLAVOR_CACHE_TTL`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodetrust_appraise::Flavor;

use crate::clock::Clock;
use crate::store::{new_id, FlavorRow, Store, StoreError};

/// How long appraisal reuses the flavors it read.
pub const FLAVOR_CACHE_TTL: Duration = Duration::from_secs(1);

/// Flavors read recently, and when.
type Cached = Option<(Instant, Arc<Vec<Flavor>>)>;

/// The stored flavors with a short cache for appraisal.
#[derive(Debug)]
pub struct Flavors {
    store: Store,
    clock: Arc<dyn Clock>,
    cache: Mutex<Cached>,
}

impl Flavors {
    /// Flavors kept in `store`; the cache's age is read from `clock`.
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            cache: Mutex::new(None),
        }
    }

    /// Every flavor, from a cache at most [`FLAVOR_CACHE_TTL`] old (for appraisal).
    pub async fn current(&self) -> Result<Arc<Vec<Flavor>>, StoreError> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, flavors)) = cache.as_ref() {
                if self.clock.instant().saturating_duration_since(*at) < FLAVOR_CACHE_TTL {
                    return Ok(Arc::clone(flavors));
                }
            }
        }
        let flavors = Arc::new(self.all().await?);
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((self.clock.instant(), Arc::clone(&flavors)));
        }
        Ok(flavors)
    }

    /// Every stored flavor, read now (for lists); a corrupt row is logged and skipped.
    pub async fn all(&self) -> Result<Vec<Flavor>, StoreError> {
        let rows = self.store.flavors().await?;
        Ok(rows
            .iter()
            .filter_map(|r| match serde_json::from_str::<Flavor>(&r.body) {
                Ok(mut f) => {
                    f.id = r.id.clone();
                    Some(f)
                }
                Err(e) => {
                    tracing::error!(id = %r.id, error = %e, "unreadable flavor skipped");
                    None
                }
            })
            .collect())
    }

    /// Stores `flavors`, each under a new id (written into it), created at `now_ms`.
    pub async fn add(&self, flavors: &mut [Flavor], now_ms: i64) -> Result<(), StoreError> {
        let result = self.add_all(flavors, now_ms).await;
        // Also after a partial failure: some flavors may have been written.
        self.changed();
        result
    }

    async fn add_all(&self, flavors: &mut [Flavor], now_ms: i64) -> Result<(), StoreError> {
        for f in flavors {
            f.id = new_id();
            let body = serde_json::to_string(&*f).map_err(|e| StoreError::Corrupt {
                table: "flavors",
                detail: format!("flavor {} does not serialise: {e}", f.id),
            })?;
            self.store
                .put_flavor(&FlavorRow {
                    id: f.id.clone(),
                    body,
                    created: now_ms,
                })
                .await?;
        }
        Ok(())
    }

    /// Deletes flavor `id`; false when there is none.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let deleted = self.store.delete_flavor(id).await;
        self.changed();
        deleted
    }

    fn changed(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            *cache = None;
        }
    }
}
