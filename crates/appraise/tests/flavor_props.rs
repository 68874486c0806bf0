//! Properties of the flavor comparison's shortcuts: naming a host-unique event and finding no
//! difference between identical event lists give what the plain definitions give.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use nodetrust_appraise::diff::differences;
use nodetrust_appraise::flavor::is_host_unique;
use nodetrust_eventlog::diff_measurements;
use nodetrust_eventlog::{Component, ComponentKind};
use nodetrust_tpm_wire::HashAlg;
use proptest::prelude::*;

/// The definition: the lowercased label contains one of the keys.
fn host_unique_by_lowercasing(label: &str) -> bool {
    let l = label.to_ascii_lowercase();
    [
        "cmdline",
        "command line",
        "initrd",
        "grub_cmd: linux",
        "grub command: linux",
    ]
    .iter()
    .any(|k| l.contains(k))
}

/// Labels made of pieces of the keys, in any case, with other text and non-ASCII between.
fn label() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("cmdline".to_string()),
        Just("CmdLine".to_string()),
        Just("command".to_string()),
        Just(" line".to_string()),
        Just("INITRD".to_string()),
        Just("initr".to_string()),
        Just("grub_cmd: ".to_string()),
        Just("GRUB Command: Linux".to_string()),
        Just("linux".to_string()),
        Just("İ".to_string()),
        "[a-zA-Z :_é]{0,6}",
    ];
    prop::collection::vec(piece, 0..6).prop_map(|v| v.concat())
}

fn labelled(l: &str) -> Component {
    Component {
        kind: ComponentKind::Unknown,
        name: l.to_string(),
        detail: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn host_unique_is_a_case_insensitive_search(l in label()) {
        prop_assert_eq!(is_host_unique(&l), host_unique_by_lowercasing(&l));
    }

    /// `differences` skips the comparison when both sides hold the same digests in the same
    /// order; the comparison itself must then find nothing either, and otherwise both agree.
    #[test]
    fn differences_agree_with_the_comparison(
        expected in prop::collection::vec(("[ab]{1,2}", 0u8..4), 0..6),
        actual in prop::collection::vec(("[ab]{1,2}", 0u8..4), 0..6),
        same in any::<bool>(),
    ) {
        let actual = if same { expected.clone() } else { actual };
        let digest = |n: u8| vec![n; 32];
        let e: Vec<(String, Vec<u8>)> = expected.iter().map(|(l, d)| (l.clone(), digest(*d))).collect();
        let a: Vec<(String, Vec<u8>)> = actual.iter().map(|(l, d)| (l.clone(), digest(*d))).collect();
        let e_ref: Vec<(&str, &[u8])> = e.iter().map(|(l, d)| (l.as_str(), d.as_slice())).collect();
        let a_ref: Vec<(&str, &[u8])> = a.iter().map(|(l, d)| (l.as_str(), d.as_slice())).collect();
        let g: Vec<(Component, &[u8])> = e.iter().map(|(l, d)| (labelled(l), d.as_slice())).collect();
        let h: Vec<(Component, &[u8])> = a.iter().map(|(l, d)| (labelled(l), d.as_slice())).collect();
        let full = diff_measurements(4, HashAlg::Sha256, &g, &h);
        let got = differences(4, HashAlg::Sha256, &e_ref, &a_ref);
        prop_assert_eq!(&got, &full);
        if e.iter().map(|(_, d)| d).eq(a.iter().map(|(_, d)| d)) {
            prop_assert!(got.is_empty());
        }
    }
}
