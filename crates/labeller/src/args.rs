//! The labelling flags shared by `nodetrust-server` and `nodetrust label`.

use std::time::Duration;

use crate::desired::{Policy, DEFAULT_LABEL_KEY, DEFAULT_NODE_SELECTOR};

/// The one parser of duration flags (`60s`, `10m`, `1h 30m`), shared by `nodetrust-server` and
/// `nodetrust`, with the error message both print.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 60s or 10m: {e}"))
}

/// Labelling options.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct LabelArgs {
    /// The node label that says whether the node is trusted ("true" / "false").
    #[arg(long, env = "NODETRUST_LABEL_KEY", default_value = DEFAULT_LABEL_KEY)]
    pub label_key: String,
    /// Label selector of the nodes to label; nodes outside it are never touched.
    #[arg(long, env = "NODETRUST_NODE_SELECTOR", default_value = DEFAULT_NODE_SELECTOR)]
    pub node_selector: String,
    /// Set the label "false" once a node's last verdict has been expired this long (fail
    /// closed). Off by default: an unknown verdict leaves the label as it is.
    #[arg(long, env = "NODETRUST_STALE_AFTER", value_parser = parse_duration)]
    pub stale_after: Option<Duration>,
    /// Taint untrusted nodes with nodetrust.io/untrusted:NoExecute (removed when trusted again).
    #[arg(long, env = "NODETRUST_TAINT_UNTRUSTED")]
    pub taint_untrusted: bool,
    /// Kubernetes API calls per second (client-side rate limit).
    #[arg(long, env = "NODETRUST_KUBE_QPS", default_value_t = 5.0)]
    pub kube_qps: f32,
    /// Kubernetes API calls allowed in a burst.
    #[arg(long, env = "NODETRUST_KUBE_BURST", default_value_t = 10)]
    pub kube_burst: u32,
}

impl LabelArgs {
    /// The desired-state policy.
    pub fn policy(&self) -> Policy {
        Policy {
            label_key: self.label_key.clone(),
            stale_after: self.stale_after,
            taint_untrusted: self.taint_untrusted,
        }
    }

    /// Controller settings from these flags (leader election and resync left to the caller).
    pub fn settings(&self) -> crate::Settings {
        let mut s = crate::Settings::new(self.policy());
        s.node_selector = self.node_selector.clone();
        s.kube_qps = self.kube_qps;
        s.kube_burst = self.kube_burst;
        if let Some(stale) = self.stale_after {
            // Look often enough for --stale-after to act within a tenth of it.
            s.resync = s.resync.min((stale / 10).max(Duration::from_millis(500)));
        }
        s
    }

    /// Checks the values (a label key Kubernetes accepts, a positive rate).
    pub fn validate(&self) -> Result<(), String> {
        if !valid_label_key(&self.label_key) {
            return Err(format!(
                "--label-key {:?} is not a valid Kubernetes label key ([prefix/]name, name 1-63 alphanumerics, '-', '_', '.')",
                self.label_key
            ));
        }
        if !self.kube_qps.is_finite() || self.kube_qps <= 0.0 || self.kube_burst == 0 {
            return Err("--kube-qps and --kube-burst must be positive".into());
        }
        Ok(())
    }
}

/// Whether `key` is a valid Kubernetes label key.
pub fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && l.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    name_ok && prefix_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys() {
        assert!(valid_label_key(DEFAULT_LABEL_KEY));
        assert!(valid_label_key("trusted"));
        assert!(!valid_label_key("Bad_Prefix/x"));
        assert!(!valid_label_key("a/-x"));
        assert!(!valid_label_key(""));
        assert!(!valid_label_key(&"x".repeat(64)));
    }
}
