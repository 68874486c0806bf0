//! Explaining a mismatch: which measured events differ between a host's log and a flavor's.
//!
//! The comparison is the event-log crate's ([`nodetrust_eventlog::diff_measurements`]: the
//! longest common subsequence of digests is the same, the rest is paired by name into
//! *changed* or *moved*, or is *added* / *removed*), so a flavor mismatch and `nodetrust
//! eventlog diff` find the same differences with the same stable
//! [`reason`](Difference::reason) labels. Digests decide (what the TPM vouches for); labels
//! only name (what an operator recognises). This module words a [`Difference`] in a flavor's
//! terms: an expected event whose label is still present with another digest "changed"; an
//! expected event that is gone "is missing"; an event the flavor does not know is
//! "unexpected".

use nodetrust_eventlog::component::{Component, ComponentKind};
use nodetrust_eventlog::{diff_measurements, Change, Difference};
use nodetrust_tpm_wire::HashAlg;

fn short(d: &[u8]) -> String {
    let h = hex::encode(d);
    h.get(..16).map(|s| format!("{s}…")).unwrap_or(h)
}

/// An event known by its label only (a flavor keeps labels, not event data): it pairs with
/// the event of the same label.
fn labelled(label: &str) -> Component {
    Component {
        kind: ComponentKind::Unknown,
        name: label.to_string(),
        detail: None,
    }
}

/// How `actual` (label, digest) differs from `expected` on PCR `pcr` of `bank`. Empty when they
/// hold the same digests in the same order.
pub fn differences(
    pcr: u8,
    bank: HashAlg,
    expected: &[(&str, &[u8])],
    actual: &[(&str, &[u8])],
) -> Vec<Difference> {
    // The same digests in the same order: no difference, and nothing to name (the common
    // case of every attestation that matches its flavor).
    if expected.len() == actual.len() && expected.iter().zip(actual).all(|((_, g), (_, h))| g == h)
    {
        return Vec::new();
    }
    fn side<'a>(events: &[(&str, &'a [u8])]) -> Vec<(Component, &'a [u8])> {
        events.iter().map(|(l, d)| (labelled(l), *d)).collect()
    }
    let (g, h) = (side(expected), side(actual));
    diff_measurements(u32::from(pcr), bank, &g, &h)
}

/// One difference as a verdict reason, in a flavor's words:
/// `PCR 4: boot application \EFI\debian\grubx64.efi changed (expected e551c902…, found d4ad0593…)`.
pub fn sentence(d: &Difference) -> String {
    let pcr = d.pcr;
    match &d.change {
        Change::Changed {
            gold,
            host,
            gold_digest,
            host_digest,
            ..
        } if gold.name == host.name => format!(
            "PCR {pcr}: {} changed (expected {}, found {})",
            gold.name,
            short(gold_digest),
            short(host_digest)
        ),
        Change::Changed {
            gold,
            host,
            gold_digest,
            host_digest,
            ..
        } => format!(
            "PCR {pcr}: {} changed to {} (expected {}, found {})",
            gold.name,
            host.name,
            short(gold_digest),
            short(host_digest)
        ),
        Change::Removed {
            component, digest, ..
        } => format!(
            "PCR {pcr}: {} is missing (expected {})",
            component.name,
            short(digest)
        ),
        Change::Added {
            component, digest, ..
        } => format!(
            "PCR {pcr}: unexpected {} ({})",
            component.name,
            short(digest)
        ),
        Change::Moved {
            component, digest, ..
        } => format!(
            "PCR {pcr}: {} was measured in a different order than the flavor's ({})",
            component.name,
            short(digest)
        ),
        Change::NoCommonBank => format!("PCR {pcr}: {d}"),
    }
}

/// Sentences describing how `actual` differs from `expected` (see [`differences`] and
/// [`sentence`]). Empty when they hold the same digests in the same order.
pub fn explain(
    pcr: u8,
    bank: HashAlg,
    expected: &[(&str, &[u8])],
    actual: &[(&str, &[u8])],
) -> Vec<String> {
    differences(pcr, bank, expected, actual)
        .iter()
        .map(sentence)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: HashAlg = HashAlg::Sha256;

    #[test]
    fn identical_logs_have_no_differences() {
        let d = [1u8; 32];
        assert!(explain(4, S, &[("a", &d)], &[("a", &d)]).is_empty());
    }

    #[test]
    fn changed_missing_unexpected_and_reordered() {
        let (d1, d2, d3, d8, d9) = ([1u8; 32], [2u8; 32], [3u8; 32], [8u8; 32], [9u8; 32]);
        let expected = [
            ("boot application grubx64.efi", &d1[..]),
            ("shim", &d2[..]),
            ("separator", &d3[..]),
        ];
        let actual = [
            ("boot application grubx64.efi", &d9[..]),
            ("separator", &d3[..]),
            ("extra", &d8[..]),
        ];
        let d = differences(4, S, &expected, &actual);
        let r: Vec<String> = d.iter().map(sentence).collect();
        assert_eq!(
            r,
            vec![
                "PCR 4: boot application grubx64.efi changed (expected 0101010101010101…, found 0909090909090909…)".to_string(),
                "PCR 4: shim is missing (expected 0202020202020202…)".to_string(),
                "PCR 4: unexpected extra (0808080808080808…)".to_string(),
            ]
        );
        let reasons: Vec<&str> = d.iter().map(Difference::reason).collect();
        assert_eq!(
            reasons,
            ["component_changed", "component_removed", "component_added"]
        );
        let reordered = differences(4, S, &[("a", &d1), ("b", &d2)], &[("b", &d2), ("a", &d1)]);
        assert_eq!(reordered.len(), 1, "{reordered:?}");
        assert_eq!(reordered[0].reason(), "component_moved");
        assert!(
            sentence(&reordered[0]).starts_with("PCR 4: a was measured in a different order"),
            "{reordered:?}"
        );
    }
}
