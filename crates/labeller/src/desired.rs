//! The desired state of a node: a pure function of (effective trust, now, policy) → label,
//! annotations, taint ([`desired`]), and the patch that gets a node there ([`patch_for`]).
//!
//! The runbook's rule: `trusted` → `"true"`; `untrusted` → `"false"`; `unknown` (or no
//! verdict at all) → the label is left as it is. With `--stale-after`, a verdict that has been
//! expired for that long turns the label `"false"` (fail closed). The labeller owns exactly the
//! keys it lists in the [`OWNED_KEYS`] annotation and never touches any other label,
//! annotation or taint.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Taint};
use nodetrust_proto::trust::{rfc3339, Trust, TrustAt};
use serde_json::{json, Map, Value};

/// The label workloads select on (the runbook's).
pub const DEFAULT_LABEL_KEY: &str = "ibm-cloud.kubernetes.io/is-trusted";
/// The nodes the labeller looks after (the runbook's).
pub const DEFAULT_NODE_SELECTOR: &str = "ibm-cloud.kubernetes.io/tpm-enabled=true";
/// The effective verdict.
pub const VERDICT: &str = "nodetrust.io/verdict";
/// When the last verdict was reached (RFC 3339).
pub const ATTESTED_AT: &str = "nodetrust.io/attested-at";
/// When it expires (RFC 3339).
pub const EXPIRES_AT: &str = "nodetrust.io/expires-at";
/// Its reasons, one per line, shortened to [`MAX_REASONS_BYTES`].
pub const REASONS: &str = "nodetrust.io/reasons";
/// The signed report's id.
pub const REPORT_ID: &str = "nodetrust.io/report-id";
/// The keys the labeller owns on this node: `label:KEY`, `annotation:KEY`,
/// `taint:KEY:EFFECT`, comma-separated.
pub const OWNED_KEYS: &str = "nodetrust.io/owned-keys";
/// The taint of untrusted nodes (`--taint-untrusted`).
pub const TAINT_KEY: &str = "nodetrust.io/untrusted";
/// Its effect.
pub const TAINT_EFFECT: &str = "NoExecute";
/// The most bytes of reasons an annotation carries.
pub const MAX_REASONS_BYTES: usize = 4096;

/// What the operator chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The label's key (`--label-key`).
    pub label_key: String,
    /// Turn the label `"false"` once the last verdict has been expired this long
    /// (`--stale-after`); off by default.
    pub stale_after: Option<Duration>,
    /// Taint untrusted nodes `NoExecute` (`--taint-untrusted`).
    pub taint_untrusted: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            label_key: DEFAULT_LABEL_KEY.into(),
            stale_after: None,
            taint_untrusted: false,
        }
    }
}

/// What the labeller wants on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The label's value; `None`: leave it as it is.
    pub label: Option<&'static str>,
    /// Annotations to set (owned).
    pub annotations: BTreeMap<String, String>,
    /// Whether the taint should be there; `None`: leave it as it is.
    pub taint: Option<bool>,
}

/// The desired state of a node whose host has `trust` (`None`: no host or never attested
/// and nothing known), with `report_id` the id of the report behind it.
pub fn desired(trust: Option<&TrustAt>, report_id: Option<&str>, policy: &Policy) -> Desired {
    let Some(t) = trust else {
        return Desired {
            label: None,
            annotations: BTreeMap::new(),
            taint: None,
        };
    };
    let stale = match (policy.stale_after, t.expired_for) {
        (Some(limit), Some(expired)) => t.verdict != Trust::Trusted && expired >= limit,
        _ => false,
    };
    let (label, untrusted) = match t.verdict {
        Trust::Trusted => (Some("true"), Some(false)),
        Trust::Untrusted => (Some("false"), Some(true)),
        Trust::Unknown if stale => (Some("false"), Some(true)),
        Trust::Unknown => (None, None),
    };
    let mut annotations = BTreeMap::new();
    let mut verdict = t.verdict.as_str().to_string();
    let mut reasons = t.reasons.clone();
    if stale {
        verdict = "unknown (stale: labelled false)".into();
        reasons.insert(
            0,
            format!(
                "no valid verdict for {} or more (--stale-after): failing closed",
                humantime::format_duration(policy.stale_after.unwrap_or_default())
            ),
        );
    }
    annotations.insert(VERDICT.to_string(), verdict);
    if let Some(a) = t.attested_at {
        annotations.insert(ATTESTED_AT.to_string(), rfc3339(a));
    }
    if let Some(e) = t.expires_at {
        annotations.insert(EXPIRES_AT.to_string(), rfc3339(e));
    }
    annotations.insert(REASONS.to_string(), shorten(&reasons, MAX_REASONS_BYTES));
    if let Some(id) = report_id {
        annotations.insert(REPORT_ID.to_string(), id.to_string());
    }
    Desired {
        label,
        annotations,
        taint: if policy.taint_untrusted {
            untrusted
        } else {
            Some(false)
        },
    }
}

/// Reasons one per line, at most `max` bytes, cut at a character boundary and saying how many
/// were left out.
pub fn shorten(reasons: &[String], max: usize) -> String {
    // Room kept for the " … (N more)" suffix.
    const SUFFIX: usize = 32;
    let mut out = String::new();
    for (i, r) in reasons.iter().enumerate() {
        let line = if i == 0 { r.clone() } else { format!("\n{r}") };
        let last = i + 1 == reasons.len();
        let reserve = if last { 0 } else { SUFFIX };
        if out.len() + line.len() + reserve <= max {
            out.push_str(&line);
            continue;
        }
        let more = format!(" … ({} more)", reasons.len() - i);
        let room = max.saturating_sub(out.len() + more.len());
        let mut cut = room.min(line.len());
        while cut > 0 && !line.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(line.get(..cut).unwrap_or_default());
        out.push_str(&more);
        break;
    }
    out
}

/// One key the labeller owns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Owned {
    Label(String),
    Annotation(String),
    Taint(String, String),
}

fn parse_owned(text: &str) -> BTreeSet<Owned> {
    text.split(',')
        .filter_map(|item| {
            let (kind, rest) = item.trim().split_once(':')?;
            match kind {
                "label" => Some(Owned::Label(rest.to_string())),
                "annotation" => Some(Owned::Annotation(rest.to_string())),
                "taint" => {
                    let (k, e) = rest.rsplit_once(':')?;
                    Some(Owned::Taint(k.to_string(), e.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

fn render_owned(owned: &BTreeSet<Owned>) -> String {
    owned
        .iter()
        .map(|o| match o {
            Owned::Label(k) => format!("label:{k}"),
            Owned::Annotation(k) => format!("annotation:{k}"),
            Owned::Taint(k, e) => format!("taint:{k}:{e}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn is_our_taint(t: &Taint) -> bool {
    t.key == TAINT_KEY && t.effect == TAINT_EFFECT
}

/// The merge patch that takes `node` to `desired`, carrying the node's `resourceVersion` (so a
/// concurrent change makes it fail with 409 instead of overwriting); `None` when the node is
/// already there. Only owned keys are set or removed.
pub fn patch_for(node: &Node, desired: &Desired, policy: &Policy) -> Option<Value> {
    let meta = &node.metadata;
    let labels = meta.labels.clone().unwrap_or_default();
    let annotations = meta.annotations.clone().unwrap_or_default();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let owned_before = annotations
        .get(OWNED_KEYS)
        .map(|t| parse_owned(t))
        .unwrap_or_default();

    let mut owned = BTreeSet::new();
    let mut label_patch = Map::new();
    let mut annotation_patch = Map::new();

    // The label.
    match desired.label {
        Some(v) => {
            owned.insert(Owned::Label(policy.label_key.clone()));
            if labels.get(&policy.label_key).map(String::as_str) != Some(v) {
                label_patch.insert(policy.label_key.clone(), json!(v));
            }
        }
        None => {
            if labels.contains_key(&policy.label_key)
                && owned_before.contains(&Owned::Label(policy.label_key.clone()))
            {
                owned.insert(Owned::Label(policy.label_key.clone()));
            }
        }
    }
    // Labels owned before under another key (`--label-key` changed): removed.
    for o in &owned_before {
        if let Owned::Label(k) = o {
            if k != &policy.label_key && labels.contains_key(k) {
                label_patch.insert(k.clone(), Value::Null);
            }
        }
    }

    // Annotations.
    for (k, v) in &desired.annotations {
        owned.insert(Owned::Annotation(k.clone()));
        if annotations.get(k) != Some(v) {
            annotation_patch.insert(k.clone(), json!(v));
        }
    }
    for o in &owned_before {
        if let Owned::Annotation(k) = o {
            if !desired.annotations.contains_key(k) && annotations.contains_key(k) {
                if desired.label.is_none() && desired.annotations.is_empty() {
                    // Nothing known now: keep what was said before.
                    owned.insert(o.clone());
                } else {
                    annotation_patch.insert(k.clone(), Value::Null);
                }
            }
        }
    }

    // The taint.
    let has_taint = taints.iter().any(is_our_taint);
    let taint_owned_before =
        owned_before.contains(&Owned::Taint(TAINT_KEY.into(), TAINT_EFFECT.into()));
    let new_taints = match desired.taint {
        Some(true) => {
            owned.insert(Owned::Taint(TAINT_KEY.into(), TAINT_EFFECT.into()));
            (!has_taint).then(|| {
                let mut t = taints.clone();
                t.push(Taint {
                    key: TAINT_KEY.into(),
                    value: Some("true".into()),
                    effect: TAINT_EFFECT.into(),
                    time_added: None,
                });
                t
            })
        }
        Some(false) if has_taint && taint_owned_before => Some(
            taints
                .iter()
                .filter(|t| !is_our_taint(t))
                .cloned()
                .collect::<Vec<_>>(),
        ),
        Some(false) => None,
        None => {
            if has_taint && taint_owned_before {
                owned.insert(Owned::Taint(TAINT_KEY.into(), TAINT_EFFECT.into()));
            }
            None
        }
    };

    if owned.is_empty() && owned_before.is_empty() {
        return None;
    }
    let owned_text = render_owned(&owned);
    if annotations.get(OWNED_KEYS) != Some(&owned_text) {
        if owned.is_empty() {
            annotation_patch.insert(OWNED_KEYS.into(), Value::Null);
        } else {
            annotation_patch.insert(OWNED_KEYS.into(), json!(owned_text));
        }
    }
    if label_patch.is_empty() && annotation_patch.is_empty() && new_taints.is_none() {
        return None;
    }
    let mut metadata = Map::new();
    if let Some(rv) = &meta.resource_version {
        metadata.insert("resourceVersion".into(), json!(rv));
    }
    if !label_patch.is_empty() {
        metadata.insert("labels".into(), Value::Object(label_patch));
    }
    if !annotation_patch.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotation_patch));
    }
    let mut patch = Map::new();
    patch.insert("metadata".into(), Value::Object(metadata));
    if let Some(t) = new_taints {
        patch.insert("spec".into(), json!({ "taints": t }));
    }
    Some(Value::Object(patch))
}

/// The label value a node carries now.
pub fn current_label<'a>(node: &'a Node, policy: &Policy) -> Option<&'a str> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(&policy.label_key))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodetrust_proto::trust::{EffectiveTrust, HostStatus};

    fn at(verdict: Trust, now: i64) -> TrustAt {
        EffectiveTrust {
            verdict: Some(verdict),
            reasons: vec![format!("because {verdict}")],
            attested_at: Some(1_000),
            expires_at: Some(61_000),
            status: HostStatus::Connected,
            status_detail: None,
        }
        .at(now)
    }

    fn node(labels: &[(&str, &str)], annotations: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("worker-1".into());
        n.metadata.resource_version = Some("42".into());
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        n.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            taints: Some(taints),
            ..Default::default()
        });
        n
    }

    /// Applies a merge patch to a node the way the API server does (for these tests).
    fn apply(n: &Node, patch: &Value) -> Node {
        fn merge(target: &mut Value, patch: &Value) {
            if let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else if v.is_object() {
                        merge(t.entry(k.clone()).or_insert(json!({})), v);
                    } else {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let mut v = serde_json::to_value(n).unwrap();
        merge(&mut v, patch);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_runbook_rule() {
        let p = Policy::default();
        assert_eq!(
            desired(Some(&at(Trust::Trusted, 2_000)), None, &p).label,
            Some("true")
        );
        assert_eq!(
            desired(Some(&at(Trust::Untrusted, 2_000)), None, &p).label,
            Some("false")
        );
        // Expired: unknown keeps the label.
        assert_eq!(
            desired(Some(&at(Trust::Trusted, 70_000)), None, &p).label,
            None
        );
        assert_eq!(
            desired(Some(&at(Trust::Unknown, 2_000)), None, &p).label,
            None
        );
        assert_eq!(
            desired(None, None, &p),
            Desired {
                label: None,
                annotations: BTreeMap::new(),
                taint: None
            }
        );
    }

    #[test]
    fn stale_after_fails_closed_only_after_that_long() {
        let p = Policy {
            stale_after: Some(Duration::from_secs(30)),
            ..Policy::default()
        };
        // Expired 29 s ago: unchanged; 30 s ago: false.
        assert_eq!(
            desired(Some(&at(Trust::Trusted, 90_000)), None, &p).label,
            None
        );
        let d = desired(Some(&at(Trust::Trusted, 91_000)), None, &p);
        assert_eq!(d.label, Some("false"));
        assert!(
            d.annotations[REASONS].contains("--stale-after"),
            "{:?}",
            d.annotations
        );
    }

    #[test]
    fn annotations_carry_the_verdict_and_reasons() {
        let d = desired(
            Some(&at(Trust::Untrusted, 2_000)),
            Some("r1"),
            &Policy::default(),
        );
        assert_eq!(d.annotations[VERDICT], "untrusted");
        assert_eq!(d.annotations[REASONS], "because untrusted");
        assert_eq!(d.annotations[REPORT_ID], "r1");
        assert_eq!(d.annotations[ATTESTED_AT], "1970-01-01T00:00:01.000Z");
        assert_eq!(d.annotations[EXPIRES_AT], "1970-01-01T00:01:01.000Z");
    }

    #[test]
    fn reasons_are_shortened_on_a_char_boundary() {
        let reasons: Vec<String> = (0..100)
            .map(|i| format!("réason {i} {}", "é".repeat(50)))
            .collect();
        let s = shorten(&reasons, 1000);
        assert!(s.len() <= 1000, "{}", s.len());
        assert!(s.ends_with("more)"), "{s}");
        assert_eq!(shorten(&["a".into(), "b".into()], 100), "a\nb");
    }

    #[test]
    fn patch_sets_only_owned_keys_and_carries_the_resource_version() {
        let p = Policy::default();
        let n = node(
            &[
                ("team", "x"),
                ("ibm-cloud.kubernetes.io/tpm-enabled", "true"),
            ],
            &[("other", "1")],
            vec![],
        );
        let d = desired(Some(&at(Trust::Trusted, 2_000)), None, &p);
        let patch = patch_for(&n, &d, &p).unwrap();
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(
            patch["metadata"]["labels"],
            json!({DEFAULT_LABEL_KEY: "true"})
        );
        assert!(patch["metadata"]["annotations"].get("other").is_none());
        assert!(patch.get("spec").is_none(), "no taint change: {patch}");
        let after = apply(&n, &patch);
        assert_eq!(after.metadata.labels.as_ref().unwrap()["team"], "x");
        assert_eq!(after.metadata.annotations.as_ref().unwrap()["other"], "1");
        // Applied: nothing more to do (no patch loop on our own watch event).
        assert_eq!(patch_for(&after, &d, &p), None);
    }

    #[test]
    fn unknown_leaves_the_label_and_keeps_ownership() {
        let p = Policy::default();
        let n = node(&[], &[], vec![]);
        let trusted = apply(
            &n,
            &patch_for(
                &n,
                &desired(Some(&at(Trust::Untrusted, 2_000)), None, &p),
                &p,
            )
            .unwrap(),
        );
        let unknown = desired(Some(&at(Trust::Untrusted, 70_000)), None, &p);
        let patch = patch_for(&trusted, &unknown, &p).unwrap();
        assert!(patch["metadata"].get("labels").is_none(), "{patch}");
        let after = apply(&trusted, &patch);
        assert_eq!(
            after.metadata.labels.as_ref().unwrap()[DEFAULT_LABEL_KEY],
            "false"
        );
        assert!(after.metadata.annotations.as_ref().unwrap()[OWNED_KEYS]
            .contains(&format!("label:{DEFAULT_LABEL_KEY}")));
        // Nothing known at all: nothing touched.
        assert_eq!(patch_for(&after, &desired(None, None, &p), &p), None);
    }

    #[test]
    fn taint_added_when_untrusted_removed_when_trusted_and_others_kept() {
        let p = Policy {
            taint_untrusted: true,
            ..Policy::default()
        };
        let theirs = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let n = node(&[], &[], vec![theirs.clone()]);
        let bad = apply(
            &n,
            &patch_for(
                &n,
                &desired(Some(&at(Trust::Untrusted, 2_000)), None, &p),
                &p,
            )
            .unwrap(),
        );
        let taints = bad.spec.as_ref().unwrap().taints.clone().unwrap();
        assert_eq!(taints.len(), 2);
        assert!(taints
            .iter()
            .any(|t| t.key == TAINT_KEY && t.effect == "NoExecute"));
        let good = apply(
            &bad,
            &patch_for(
                &bad,
                &desired(Some(&at(Trust::Trusted, 2_000)), None, &p),
                &p,
            )
            .unwrap(),
        );
        assert_eq!(
            good.spec.as_ref().unwrap().taints.clone().unwrap(),
            vec![theirs]
        );
    }

    #[test]
    fn someone_elses_taint_with_our_key_is_not_removed() {
        let p = Policy::default();
        let t = Taint {
            key: TAINT_KEY.into(),
            value: None,
            effect: TAINT_EFFECT.into(),
            time_added: None,
        };
        let n = node(&[], &[], vec![t]);
        let patch =
            patch_for(&n, &desired(Some(&at(Trust::Trusted, 2_000)), None, &p), &p).unwrap();
        assert!(patch.get("spec").is_none(), "{patch}");
    }

    #[test]
    fn a_changed_label_key_removes_the_old_owned_label() {
        let old = Policy::default();
        let n = node(&[], &[], vec![]);
        let d = desired(Some(&at(Trust::Trusted, 2_000)), None, &old);
        let labelled = apply(&n, &patch_for(&n, &d, &old).unwrap());
        let new = Policy {
            label_key: "example.com/trusted".into(),
            ..Policy::default()
        };
        let patch = patch_for(
            &labelled,
            &desired(Some(&at(Trust::Trusted, 2_000)), None, &new),
            &new,
        )
        .unwrap();
        let after = apply(&labelled, &patch);
        let labels = after.metadata.labels.unwrap();
        assert_eq!(
            labels.get("example.com/trusted").map(String::as_str),
            Some("true")
        );
        assert!(!labels.contains_key(DEFAULT_LABEL_KEY));
    }
}
