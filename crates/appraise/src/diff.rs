//! Explaining a mismatch: which measured events differ between a host's log and a flavor's.
//!
//! The comparison is by digest (what the TPM vouches for) and explained by label (what an
//! operator recognises): an expected event whose label is still present with another digest
//! "changed"; an expected digest that is gone "is missing"; a digest the flavor does not know
//! is "unexpected".

use crate::flavor::EventRule;

fn short(d: &[u8]) -> String {
    let h = hex::encode(d);
    h.get(..16).map(|s| format!("{s}…")).unwrap_or(h)
}

/// Sentences describing how `actual` (label, digest) differs from `expected`, for PCR `pcr`.
/// Empty when they hold the same digests in the same order.
pub fn explain(pcr: u8, expected: &[EventRule], actual: &[(&str, &[u8])]) -> Vec<String> {
    let same = expected.len() == actual.len()
        && expected
            .iter()
            .zip(actual)
            .all(|(e, (_, d))| e.digest.as_slice() == *d);
    if same {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut used = vec![false; actual.len()];
    let mut matched_expected = vec![false; expected.len()];
    // Exact digest matches first (in order, each actual event used once).
    for (ei, e) in expected.iter().enumerate() {
        if let Some(ai) = actual.iter().enumerate().position(|(ai, (_, d))| {
            !used.get(ai).copied().unwrap_or(true) && e.digest.as_slice() == *d
        }) {
            if let Some(u) = used.get_mut(ai) {
                *u = true;
            }
            if let Some(m) = matched_expected.get_mut(ei) {
                *m = true;
            }
        }
    }
    for (ei, e) in expected.iter().enumerate() {
        if matched_expected.get(ei).copied().unwrap_or(false) {
            continue;
        }
        let same_label = actual
            .iter()
            .enumerate()
            .position(|(ai, (l, _))| !used.get(ai).copied().unwrap_or(true) && *l == e.label);
        match same_label {
            Some(ai) => {
                if let Some(u) = used.get_mut(ai) {
                    *u = true;
                }
                let new = actual.get(ai).map(|(_, d)| short(d)).unwrap_or_default();
                out.push(format!(
                    "PCR {pcr}: {} changed (expected {}, found {new})",
                    e.label,
                    short(&e.digest)
                ));
            }
            None => out.push(format!(
                "PCR {pcr}: {} is missing (expected {})",
                e.label,
                short(&e.digest)
            )),
        }
    }
    for (ai, (label, d)) in actual.iter().enumerate() {
        if !used.get(ai).copied().unwrap_or(true) {
            out.push(format!("PCR {pcr}: unexpected {label} ({})", short(d)));
        }
    }
    if out.is_empty() {
        out.push(format!(
            "PCR {pcr}: the expected events were measured in a different order"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(label: &str, d: u8) -> EventRule {
        EventRule {
            label: label.to_string(),
            digest: vec![d; 32],
        }
    }

    #[test]
    fn identical_logs_have_no_differences() {
        let d = [1u8; 32];
        assert!(explain(4, &[rule("a", 1)], &[("a", &d)]).is_empty());
    }

    #[test]
    fn changed_missing_unexpected_and_reordered() {
        let (d1, d2, d3, d8, d9) = ([1u8; 32], [2u8; 32], [3u8; 32], [8u8; 32], [9u8; 32]);
        let expected = [
            rule("boot application grubx64.efi", 1),
            rule("shim", 2),
            rule("separator", 3),
        ];
        let actual = [
            ("boot application grubx64.efi", &d9[..]),
            ("separator", &d3[..]),
            ("extra", &d8[..]),
        ];
        let r = explain(4, &expected, &actual);
        assert!(
            r.iter()
                .any(|s| s.starts_with("PCR 4: boot application grubx64.efi changed")),
            "{r:?}"
        );
        assert!(
            r.iter().any(|s| s.starts_with("PCR 4: shim is missing")),
            "{r:?}"
        );
        assert!(
            r.iter().any(|s| s.starts_with("PCR 4: unexpected extra")),
            "{r:?}"
        );
        let reordered = explain(
            4,
            &[rule("a", 1), rule("b", 2)],
            &[("b", &d2[..]), ("a", &d1[..])],
        );
        assert_eq!(
            reordered,
            vec!["PCR 4: the expected events were measured in a different order".to_string()]
        );
    }
}
