//! The labeller's Prometheus metrics, rendered into the server's `/metrics` (or printed by the
//! standalone poller's log).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Label-latency histogram bounds, in seconds.
const BUCKETS: [f64; 9] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    patches: AtomicU64,
    conflicts: AtomicU64,
    leader: AtomicBool,
    unmatched: AtomicU64,
    nodes: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Hosts whose change is not on their node yet, with the change's commit time (Unix ms).
    pending: Mutex<BTreeMap<String, i64>>,
    latency: Mutex<([u64; BUCKETS.len()], u64, f64)>,
}

impl Metrics {
    /// A node was patched.
    pub fn patch_applied(&self) {
        self.patches.fetch_add(1, Ordering::Relaxed);
    }

    /// A patch met a 409.
    pub fn conflict(&self) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
    }

    /// An API call failed (`None`: no HTTP answer).
    pub fn api_error(&self, code: Option<u16>) {
        let key = code.map_or_else(|| "network".to_string(), |c| c.to_string());
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(key).or_default() += 1;
        }
    }

    /// Whether this process holds the labeller lease.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    /// Whether this process holds the labeller lease.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Nodes in scope, and how many of them match no host.
    pub fn set_nodes(&self, nodes: u64, unmatched: u64) {
        self.nodes.store(nodes, Ordering::Relaxed);
        self.unmatched.store(unmatched, Ordering::Relaxed);
    }

    /// A host's trust changed at `at_ms` (commit time).
    pub fn change_pending(&self, host: &str, at_ms: i64) {
        if let Ok(mut p) = self.pending.lock() {
            p.entry(host.to_string()).or_insert(at_ms);
        }
    }

    /// A host's change is on its node (or needs nothing): the latency is recorded.
    pub fn change_applied(&self, host: &str, now_ms: i64) {
        let Some(at) = self.pending.lock().ok().and_then(|mut p| p.remove(host)) else {
            return;
        };
        #[allow(clippy::cast_precision_loss)]
        let secs = (now_ms.saturating_sub(at)).max(0) as f64 / 1000.0;
        if let Ok(mut l) = self.latency.lock() {
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    if let Some(c) = l.0.get_mut(i) {
                        *c += 1;
                    }
                }
            }
            l.1 += 1;
            l.2 += secs;
        }
    }

    /// Forgets a pending change (its host has no node).
    pub fn change_dropped(&self, host: &str) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(host);
        }
    }

    /// Age of the oldest change not yet on its node, in seconds.
    pub fn oldest_pending_secs(&self, now_ms: i64) -> f64 {
        let oldest = self
            .pending
            .lock()
            .ok()
            .and_then(|p| p.values().min().copied());
        #[allow(clippy::cast_precision_loss)]
        oldest.map_or(0.0, |at| (now_ms.saturating_sub(at)).max(0) as f64 / 1000.0)
    }

    /// Patches applied so far.
    pub fn patches(&self) -> u64 {
        self.patches.load(Ordering::Relaxed)
    }

    /// Conflicts met so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// Appends the Prometheus text.
    pub fn render(&self, out: &mut String, now_ms: i64) {
        let g = |out: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        g(
            out,
            "nodetrust_labeller_patches_total",
            "Node patches applied (labels, annotations, taints).",
            "counter",
        );
        let _ = writeln!(out, "nodetrust_labeller_patches_total {}", self.patches());
        g(
            out,
            "nodetrust_labeller_conflicts_total",
            "Node patches refused with 409 (re-read and retried).",
            "counter",
        );
        let _ = writeln!(
            out,
            "nodetrust_labeller_conflicts_total {}",
            self.conflicts()
        );
        g(
            out,
            "nodetrust_labeller_api_errors_total",
            "Kubernetes API errors by HTTP status.",
            "counter",
        );
        if let Ok(m) = self.errors.lock() {
            for (code, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "nodetrust_labeller_api_errors_total{{code=\"{code}\"}} {n}"
                );
            }
        }
        g(
            out,
            "nodetrust_labeller_leader",
            "1 when this process holds the labeller lease.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "nodetrust_labeller_leader {}",
            u8::from(self.is_leader())
        );
        g(
            out,
            "nodetrust_labeller_nodes",
            "Nodes in scope (--node-selector).",
            "gauge",
        );
        let _ = writeln!(
            out,
            "nodetrust_labeller_nodes {}",
            self.nodes.load(Ordering::Relaxed)
        );
        g(
            out,
            "nodetrust_labeller_unmatched_nodes",
            "Nodes in scope that match no registered host.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "nodetrust_labeller_unmatched_nodes {}",
            self.unmatched.load(Ordering::Relaxed)
        );
        g(
            out,
            "nodetrust_labeller_oldest_unapplied_change_seconds",
            "Age of the oldest trust change not yet on its node.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "nodetrust_labeller_oldest_unapplied_change_seconds {:.3}",
            self.oldest_pending_secs(now_ms)
        );
        g(
            out,
            "nodetrust_labeller_latency_seconds",
            "From a verdict's commit to its node's patch.",
            "histogram",
        );
        if let Ok(l) = self.latency.lock() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "nodetrust_labeller_latency_seconds_bucket{{le=\"{b}\"}} {}",
                    l.0.get(i).copied().unwrap_or(0)
                );
            }
            let _ = writeln!(
                out,
                "nodetrust_labeller_latency_seconds_bucket{{le=\"+Inf\"}} {}",
                l.1
            );
            let _ = writeln!(out, "nodetrust_labeller_latency_seconds_sum {:.6}", l.2);
            let _ = writeln!(out, "nodetrust_labeller_latency_seconds_count {}", l.1);
        }
    }
}
