//! The flavors: the one way to read and write them.
//!
//! Appraisal reads the flavors at every attestation, so they are cached for
//! [`FLAVOR_CACHE_TTL`]. Every write goes through [`Flavors::add`] or [`Flavors::delete`], which
//! drop the cache themselves: no caller has to remember to. A write made through another
//! replica is seen within [`FLAVOR_CACHE_TTL`].

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nodetrust_appraise::{quote_selection, Flavor, FlavorPart};
use nodetrust_tpm_wire::HashAlg;

use crate::clock::Clock;
use crate::store::{new_id, FlavorRow, Store, StoreError};

/// How long appraisal reuses the flavors it read.
pub const FLAVOR_CACHE_TTL: Duration = Duration::from_secs(1);

/// The flavors appraisal reads, and which set they are. The generation changes when the
/// stored flavors do, and only then: rows read again and found as they were keep the set
/// (and its generation), so an appraisal made under a generation holds for as long as it is
/// current ([`crate::reuse`]).
#[derive(Debug)]
pub struct FlavorSet {
    generation: u64,
    flavors: Vec<Flavor>,
    /// What a host no flavor names is asked to quote: the same for all of them, made once.
    common: QuoteLists,
    /// The hosts flavors name (`HOST_UNIQUE`, and `RUNTIME` for one host): what they quote
    /// is made for each.
    named: HashSet<String>,
}

/// The PCR indices and bank names a quote request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteLists {
    /// PCR indices, ascending.
    pub pcrs: Vec<u8>,
    /// Bank names (`SHA256`), in the banks' order.
    pub pcrbanks: Vec<String>,
}

impl QuoteLists {
    /// The lists of a selection of PCRs by bank.
    pub fn of(selection: &BTreeMap<HashAlg, BTreeSet<u8>>) -> Self {
        let pcrs: BTreeSet<u8> = selection.values().flatten().copied().collect();
        Self {
            pcrs: pcrs.into_iter().collect(),
            pcrbanks: selection
                .keys()
                .map(|b| b.name().to_ascii_uppercase())
                .collect(),
        }
    }
}

/// Whether a flavor applies to one host only (by its name), not to every host.
fn names_a_host(f: &Flavor) -> bool {
    matches!(f.part, FlavorPart::HostUnique | FlavorPart::Runtime) && f.host_name.is_some()
}

impl FlavorSet {
    fn new(generation: u64, flavors: Vec<Flavor>) -> Self {
        let named = flavors
            .iter()
            .filter(|f| names_a_host(f))
            .filter_map(|f| f.host_name.clone())
            .collect();
        // A flavor that names a host applies to that host only; the others apply to a host
        // that no flavor names whatever its name ([`nodetrust_appraise::policy::applies`]).
        let common = QuoteLists::of(&quote_selection(
            flavors.iter().filter(|f| !names_a_host(f)),
            "",
        ));
        Self {
            generation,
            flavors,
            common,
            named,
        }
    }

    /// Which set this is: equal generations (of one server) are the same flavors.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What `host` is asked to quote: every PCR of the flavors that apply to it
    /// ([`quote_selection`]).
    pub fn quote_lists(&self, host: &str) -> Cow<'_, QuoteLists> {
        if self.named.contains(host) {
            Cow::Owned(QuoteLists::of(&quote_selection(&self.flavors, host)))
        } else {
            Cow::Borrowed(&self.common)
        }
    }
}

impl std::ops::Deref for FlavorSet {
    type Target = [Flavor];

    fn deref(&self) -> &[Flavor] {
        &self.flavors
    }
}

/// The flavors last read: the rows, the set made of them, and when they were read (`None`
/// once a write made them stale).
#[derive(Debug)]
struct Cached {
    read_at: Option<Instant>,
    rows: Vec<FlavorRow>,
    set: Arc<FlavorSet>,
}

/// The stored flavors with a short cache for appraisal.
#[derive(Debug)]
pub struct Flavors {
    store: Store,
    clock: Arc<dyn Clock>,
    cache: Mutex<Option<Cached>>,
    /// The generation of the next set made (each set made gets one of its own).
    next_generation: AtomicU64,
}

impl Flavors {
    /// Flavors kept in `store`; the cache's age is read from `clock`.
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            cache: Mutex::new(None),
            next_generation: AtomicU64::new(1),
        }
    }

    /// Every flavor, from a cache at most [`FLAVOR_CACHE_TTL`] old (for appraisal). Rows read
    /// again and found unchanged give the same set, not parsed again.
    pub async fn current(&self) -> Result<Arc<FlavorSet>, StoreError> {
        if let Ok(cache) = self.cache.lock() {
            if let Some(Cached {
                read_at: Some(at),
                set,
                ..
            }) = cache.as_ref()
            {
                if self.clock.instant().saturating_duration_since(*at) < FLAVOR_CACHE_TTL {
                    return Ok(Arc::clone(set));
                }
            }
        }
        let rows = self.store.flavors().await?;
        let read_at = Some(self.clock.instant());
        let made = |rows: &[FlavorRow]| {
            Arc::new(FlavorSet::new(
                self.next_generation.fetch_add(1, Ordering::Relaxed),
                parse(rows),
            ))
        };
        let Ok(mut cache) = self.cache.lock() else {
            return Ok(made(&rows));
        };
        let set = match cache.take() {
            Some(old) if old.rows == rows => old.set,
            _ => made(&rows),
        };
        *cache = Some(Cached {
            read_at,
            rows,
            set: Arc::clone(&set),
        });
        Ok(set)
    }

    /// Every stored flavor, read now (for lists); a corrupt row is logged and skipped.
    pub async fn all(&self) -> Result<Vec<Flavor>, StoreError> {
        Ok(parse(&self.store.flavors().await?))
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

    /// The cached set is stale: the next appraisal reads the rows again (and keeps the set if
    /// they are as they were).
    fn changed(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            if let Some(c) = cache.as_mut() {
                c.read_at = None;
            }
        }
    }
}

/// The flavors of stored rows; a corrupt row is logged and skipped.
fn parse(rows: &[FlavorRow]) -> Vec<Flavor> {
    rows.iter()
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
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use nodetrust_appraise::FlavorPart;

    fn flavor(label: &str) -> Flavor {
        serde_json::from_value(serde_json::json!({
            "label": label,
            "part": "PLATFORM",
            "pcrs": [{"bank": "sha256", "index": 0, "value": "00".repeat(32)}],
        }))
        .expect("flavor")
    }

    fn part_flavor(part: &str, host: Option<&str>, pcrs: &[(&str, u8)]) -> Flavor {
        let rules: Vec<_> = pcrs
            .iter()
            .map(|(bank, index)| serde_json::json!({"bank": bank, "index": index, "value": "00".repeat(32)}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "label": format!("{part} {host:?}"),
            "part": part,
            "host_name": host,
            "pcrs": rules,
        }))
        .expect("flavor")
    }

    /// What each host is asked to quote is what `quote_selection` says for it, whether it is
    /// made once for every host no flavor names or for a host one names.
    #[test]
    fn quote_lists_are_the_selection_of_the_flavors_that_apply() {
        let sets = [
            vec![],
            vec![part_flavor("PLATFORM", None, &[("sha256", 0), ("sha1", 0)])],
            vec![
                part_flavor("PLATFORM", None, &[("sha256", 0), ("sha256", 7)]),
                part_flavor("OS", None, &[("sha256", 4)]),
                part_flavor("HOST_UNIQUE", Some("a"), &[("sha384", 8), ("sha256", 9)]),
                part_flavor("HOST_UNIQUE", None, &[("sha256", 14)]),
                part_flavor("RUNTIME", Some("b"), &[]),
                // A PLATFORM flavor that says a host name still applies to every host.
                part_flavor("PLATFORM", Some("c"), &[("sha1", 3)]),
            ],
            vec![
                part_flavor("RUNTIME", None, &[]),
                part_flavor("HOST_UNIQUE", Some(""), &[("sha256", 15)]),
            ],
            // Only flavors for one host: the others are asked for every part's PCRs.
            vec![part_flavor("HOST_UNIQUE", Some("a"), &[("sha256", 8)])],
        ];
        for (i, flavors) in sets.into_iter().enumerate() {
            let set = FlavorSet::new(1, flavors.clone());
            for host in ["a", "b", "c", "d", ""] {
                let want = QuoteLists::of(&quote_selection(&flavors, host));
                assert_eq!(*set.quote_lists(host), want, "set {i}, host {host:?}");
            }
        }
        // The named host is asked for its own PCRs beside the common ones; another is not.
        let set = FlavorSet::new(
            1,
            vec![
                part_flavor("PLATFORM", None, &[("sha256", 0)]),
                part_flavor("HOST_UNIQUE", Some("a"), &[("sha256", 8)]),
            ],
        );
        assert_eq!(set.quote_lists("a").pcrs, [0, 8]);
        assert_eq!(set.quote_lists("a").pcrbanks, ["SHA256"]);
        assert_eq!(set.quote_lists("z").pcrs, [0]);
        assert!(matches!(set.quote_lists("z"), Cow::Borrowed(_)));
    }

    #[tokio::test]
    async fn the_set_and_its_generation_change_only_with_the_stored_flavors() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("f.db").display()))
            .await
            .expect("store");
        let clock = Arc::new(ManualClock::default());
        let flavors = Flavors::new(store.clone(), clock.clone());
        let empty = flavors.current().await.expect("read");
        assert!(empty.is_empty());
        let mut one = [flavor("gold")];
        flavors.add(&mut one, 1).await.expect("add");
        let first = flavors.current().await.expect("read");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].part, FlavorPart::Platform);
        assert_ne!(first.generation(), empty.generation());
        // Within the cache's life, and read again after it: the same set.
        assert!(Arc::ptr_eq(&first, &flavors.current().await.expect("read")));
        clock.advance(FLAVOR_CACHE_TTL * 2);
        let again = flavors.current().await.expect("read");
        assert!(Arc::ptr_eq(&first, &again), "unchanged rows keep the set");
        // A write through another server (another `Flavors` on the store): seen once the
        // cache is stale, as a new generation.
        let other = Flavors::new(store.clone(), clock.clone());
        let mut two = [flavor("gold-2")];
        other.add(&mut two, 2).await.expect("add");
        assert!(Arc::ptr_eq(
            &first,
            &flavors.current().await.expect("cached")
        ));
        clock.advance(FLAVOR_CACHE_TTL * 2);
        let second = flavors.current().await.expect("read");
        assert_eq!(second.len(), 2);
        assert_ne!(second.generation(), first.generation());
        // A write through this one is seen at once; deleting what was added gives back the
        // rows of before: a set equal to the first, under a generation of its own.
        assert!(flavors.delete(&two[0].id).await.expect("delete"));
        let third = flavors.current().await.expect("read");
        assert_eq!(third.len(), 1);
        assert_eq!(&third[..], &first[..]);
        assert_ne!(third.generation(), second.generation());
        assert_ne!(third.generation(), first.generation());
    }
}
