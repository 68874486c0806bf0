//! Calls to the Kubernetes API: a client-side rate limit shared by every call, and a node
//! patch that carries the node's `resourceVersion`, re-reads on 409, and backs off with
//! jitter on 429 and 5xx. A transient API error never changes a label: the patch is always
//! recomputed from the desired state and the node as it is now.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::metrics::Metrics;

/// A token bucket: at most `burst` calls at once, refilled at `qps` per second (client-go's
/// defaults are 5 and 10).
#[derive(Debug)]
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(qps: f32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps: f64::from(qps).max(0.01),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                let refill = now.duration_since(s.1).as_secs_f64() * self.qps;
                s.0 = (s.0 + refill).min(self.burst);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.0) / self.qps)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A random duration in `[0, max)`.
pub fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut b);
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(u64::from(u32::from_be_bytes(b)) % ms)
}

/// The HTTP status of a Kubernetes API error, if it is one.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Whether an error is worth retrying soon (throttling, server errors, the network).
pub fn is_transient(e: &kube::Error) -> bool {
    match status_code(e) {
        Some(code) => code == 429 || code >= 500,
        None => true,
    }
}

/// What became of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Already as desired.
    Unchanged,
    /// Patched; the node as the API returned it.
    Patched(Box<Node>),
    /// The node is gone.
    Gone,
}

/// Most attempts of one node's patch before it is left to the next resync.
const ATTEMPTS: u32 = 6;

/// Brings one node to what `make_patch` computes from it: patch with its `resourceVersion`;
/// on 409 re-read it and compute again; on 429 / 5xx / network errors back off (with
/// jitter) and try again.
pub async fn apply_node(
    api: &Api<Node>,
    limiter: &RateLimiter,
    metrics: &Metrics,
    mut node: Node,
    make_patch: impl Fn(&Node) -> Option<Value>,
) -> Result<Applied, kube::Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut backoff = Duration::from_millis(200);
    let mut last_err = None;
    for attempt in 0..ATTEMPTS {
        let Some(patch) = make_patch(&node) else {
            return Ok(Applied::Unchanged);
        };
        limiter.acquire().await;
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(n) => {
                metrics.patch_applied();
                return Ok(Applied::Patched(Box::new(n)));
            }
            Err(e) => {
                let code = status_code(&e);
                metrics.api_error(code);
                match code {
                    Some(409) => {
                        metrics.conflict();
                        tracing::debug!(node = %name, attempt, "conflict: re-reading the node");
                    }
                    Some(404) => return Ok(Applied::Gone),
                    _ if is_transient(&e) => {
                        tracing::debug!(node = %name, attempt, error = %e, "transient API error: backing off");
                        tokio::time::sleep(backoff + jitter(backoff)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                    _ => return Err(e),
                }
                last_err = Some(e);
                // Re-read the node (a conflict means it changed; after an error it may have).
                limiter.acquire().await;
                match api.get_opt(&name).await {
                    Ok(Some(n)) => node = n,
                    Ok(None) => return Ok(Applied::Gone),
                    Err(e) => {
                        metrics.api_error(status_code(&e));
                        if !is_transient(&e) {
                            return Err(e);
                        }
                        tokio::time::sleep(backoff + jitter(backoff)).await;
                        last_err = Some(e);
                    }
                }
            }
        }
    }
    Err(last_err.unwrap_or_else(|| {
        kube::Error::Api(Box::new(kube::core::Status::failure(
            "gave up after repeated conflicts",
            "Conflict",
        )))
    }))
}
