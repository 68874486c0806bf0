//! The pinned AKs of attested hosts, kept prepared for quote verification.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nodetrust_proto::b64;
use nodetrust_tpm_wire::verify::PreparedAk;
use nodetrust_tpm_wire::Public;

/// Most pinned AKs kept prepared ([`AkCache`]): room for every host of a 100,000-host
/// server, with a margin for hosts registered again with new AKs. A cached RSA-2048 AK holds
/// about 3.2 kB (`cargo bench -p nodetrust-server --bench ak_cache`), so a full cache about
/// 400 MiB; a miss costs about 3 µs more than a hit (the key decoded, parsed and its
/// Montgomery constants built again). With 16,384 entries a 100,000-host server missed at
/// five attestations in six.
pub const AK_CACHE_MAX: usize = 131_072;

/// The pinned AKs of the hosts attested lately, each decoded, attribute-checked and parsed
/// once ([`PreparedAk`]) instead of at every quote. Keyed by the pinned `TPM2B_PUBLIC` text
/// itself, so a host that registers again with another AK finds no stale entry (its new key is
/// another key), and nothing needs invalidating. At most [`AK_CACHE_MAX`] entries (the
/// capacity given to [`AkCache::with_capacity`]); when full, one entry is dropped for each new
/// one. The map hashes with foldhash (seeded at random for each process) instead of the
/// standard library's SipHash: a key is the AK's base64 text (376 characters for RSA-2048),
/// which SipHash took about a microsecond to hash at every attestation.
#[derive(Debug)]
pub struct AkCache {
    keys: Mutex<HashMap<String, Arc<PreparedAk>, foldhash::quality::RandomState>>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Default for AkCache {
    fn default() -> Self {
        Self::with_capacity(AK_CACHE_MAX)
    }
}

impl AkCache {
    /// A cache of at most `capacity` AKs (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            keys: Mutex::new(HashMap::default()),
            capacity: capacity.max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The prepared AK of `ak_public` (a pinned `TPM2B_PUBLIC`/`TPMT_PUBLIC`, base64); `None`
    /// when it does not decode (nothing is kept then).
    pub fn get(&self, ak_public: &str) -> Option<Arc<PreparedAk>> {
        if let Some(p) = self
            .keys
            .lock()
            .ok()
            .and_then(|m| m.get(ak_public).cloned())
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some(p);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let public = b64::decode(ak_public)
            .ok()
            .and_then(|b| Public::from_either(&b).ok())?;
        let prepared = Arc::new(PreparedAk::new(public));
        if let Ok(mut m) = self.keys.lock() {
            if m.len() >= self.capacity {
                if let Some(old) = m.keys().next().cloned() {
                    m.remove(&old);
                }
            }
            m.insert(ak_public.to_string(), Arc::clone(&prepared));
        }
        Some(prepared)
    }

    /// How many AKs are kept.
    pub fn len(&self) -> usize {
        self.keys.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Look-ups answered from the cache, and those that decoded the key.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pinned AK as the store keeps it: an ECDSA P-256 restricted signing key, base64.
    fn pinned_ak() -> String {
        let soft = nodetrust_testkit::soft::SoftTpm::new().expect("software TPM");
        b64::encode(&soft.ak_public().tpm2b_bytes())
    }

    #[test]
    fn a_pinned_ak_is_decoded_once_and_then_served_from_the_cache() {
        let cache = AkCache::with_capacity(4);
        let ak = pinned_ak();
        let first = cache.get(&ak).expect("decodes");
        assert_eq!(cache.stats(), (0, 1));
        for _ in 0..5 {
            let again = cache.get(&ak).expect("cached");
            assert!(Arc::ptr_eq(&first, &again), "the same prepared key");
        }
        assert_eq!(cache.stats(), (5, 1));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_nothing_unreadable() {
        let cache = AkCache::with_capacity(3);
        let aks: Vec<String> = (0..10).map(|_| pinned_ak()).collect();
        for ak in &aks {
            assert!(cache.get(ak).is_some());
            assert!(cache.len() <= 3, "{} kept", cache.len());
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.stats(), (0, 10));
        // The newest stays.
        let last = aks.last().expect("ten");
        cache.get(last);
        assert_eq!(cache.stats(), (1, 10));
        // An unreadable key is refused and not kept.
        assert!(cache.get("not base64 !").is_none());
        assert!(cache.get(&b64::encode(b"\x00\x01garbage")).is_none());
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn another_ak_of_the_same_host_is_another_entry() {
        // The key is the pinned AK itself: a host registered again with a new AK never gets
        // the old one back.
        let cache = AkCache::default();
        let (old, new) = (pinned_ak(), pinned_ak());
        let a = cache.get(&old).expect("old");
        let b = cache.get(&new).expect("new");
        assert_ne!(a.public().tpmt_bytes(), b.public().tpmt_bytes());
        assert_eq!(cache.len(), 2);
    }
}
