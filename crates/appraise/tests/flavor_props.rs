//! Properties of the flavor comparison's shortcut: finding no difference between identical
//! event lists gives what the full comparison gives.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use nodetrust_appraise::diff::differences;
use nodetrust_eventlog::diff_measurements;
use nodetrust_eventlog::{Component, ComponentKind};
use nodetrust_tpm_wire::HashAlg;
use proptest::prelude::*;

fn labelled(l: &str) -> Component {
    Component {
        kind: ComponentKind::Unknown,
        name: l.to_string(),
        detail: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

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
