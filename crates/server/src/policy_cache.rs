//! The compiled runtime (IMA) policies and the per-host appraisal locks of this process
//! ([`PolicyCache`], held in the shared state and used by [`crate::runtime`], which
//! re-exports it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nodetrust_appraise::runtime::CompiledPolicy;
use nodetrust_appraise::Flavor;

/// What the server keeps in memory for runtime integrity: compiled runtime policies by flavor
/// id (a flavor's contents never change), and one lock per host being attested, so that two
/// attestations of one host in this process (the scheduler's and one asked through the API)
/// appraise its new entries once, one after the other.
#[derive(Debug, Default)]
pub struct PolicyCache {
    compiled: Mutex<HashMap<String, Arc<CompiledPolicy>>>,
    hosts: Mutex<HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>>,
}

impl PolicyCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the host's runtime appraisal to be this caller's alone.
    pub(crate) async fn lock_host(&self, host: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let Ok(mut m) = self.hosts.lock() else {
                // A poisoned map: no sharing, still correct (the store's write is conditional).
                return Arc::new(tokio::sync::Mutex::new(())).lock_owned().await;
            };
            if let Some(l) = m.get(host).and_then(std::sync::Weak::upgrade) {
                l
            } else {
                if m.len() >= 1024 {
                    m.retain(|_, w| w.strong_count() > 0);
                }
                let l = Arc::new(tokio::sync::Mutex::new(()));
                m.insert(host.to_string(), Arc::downgrade(&l));
                l
            }
        };
        lock.lock_owned().await
    }

    /// Policies compiled so far (for tests).
    pub fn len(&self) -> usize {
        self.compiled.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether nothing is compiled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The compiled policy of `flavor` (compiled on a blocking thread the first time).
    pub(crate) async fn get(&self, flavor: &Flavor) -> Result<Arc<CompiledPolicy>, String> {
        if let Some(c) = self
            .compiled
            .lock()
            .ok()
            .and_then(|m| m.get(&flavor.id).cloned())
        {
            return Ok(c);
        }
        let Some(policy) = flavor.runtime.clone() else {
            return Err(format!(
                "flavor {:?} ({}) holds no runtime policy",
                flavor.label, flavor.id
            ));
        };
        let compiled = tokio::task::spawn_blocking(move || policy.compile())
            .await
            .map_err(|e| format!("compiling the runtime policy failed: {e}"))?
            .map_err(|e| format!("the runtime policy does not compile: {e}"))?;
        let compiled = Arc::new(compiled);
        if let Ok(mut m) = self.compiled.lock() {
            m.insert(flavor.id.clone(), compiled.clone());
        }
        Ok(compiled)
    }

    /// Forgets the policies of flavors not in `ids`.
    pub(crate) fn retain(&self, ids: &[&str]) {
        if let Ok(mut m) = self.compiled.lock() {
            m.retain(|k, _| ids.contains(&k.as_str()));
        }
    }
}
