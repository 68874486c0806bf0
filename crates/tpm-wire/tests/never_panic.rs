//! Property tests: attacker bytes never panic a parser, and a mutated quote never verifies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use common::*;
use nodetrust_tpm_wire::{verify_quote, Attest, HashAlg, PcrValues, Public, Signature};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Attest::parse_quote(&bytes);
        let _ = Signature::parse(&bytes);
        let _ = Public::from_either(&bytes);
        let _ = Public::from_tpm2b(&bytes);
        let _ = nodetrust_tpm_wire::der::parse_spki(&bytes);
        let _ = PcrValues::parse(&String::from_utf8_lossy(&bytes));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// The agent's PCR map (bank → index → hex) reads exactly as its JSON form does, with the
    /// same refusals, for arbitrary banks, indices and values.
    #[test]
    fn agent_pcr_map_reads_as_its_json(
        map in proptest::collection::btree_map(
            prop_oneof![Just("sha1".to_string()), Just("sha256".to_string()), Just("SHA384".to_string()), "[a-z0-9]{0,6}"],
            proptest::collection::btree_map("[0-9]{1,3}|x", "([0-9a-f]{2}){0,48}|zz", 0..4),
            0..4,
        )
    ) {
        let direct = PcrValues::try_from(&map);
        let via_json = PcrValues::from_json_value(&serde_json::to_value(&map).unwrap());
        prop_assert_eq!(direct, via_json);
    }
}

/// Valid structures with a few bytes changed, truncated or extended.
fn mutate(base: &[u8], edits: &[(usize, u8)], cut: Option<usize>, extra: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for (i, b) in edits {
        if !v.is_empty() {
            let i = i % v.len();
            v[i] ^= b | 1;
        }
    }
    if let Some(c) = cut {
        v.truncate(c % (v.len() + 1));
    }
    v.extend_from_slice(extra);
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn mutated_evidence_never_panics_and_never_verifies(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<usize>()),
        extra in proptest::collection::vec(any::<u8>(), 0..3),
        target in 0..3u8,
    ) {
        let ak = soft_ak(AK_ATTRS);
        let pcrs = sample_pcrs();
        let sel = selection(&[(HashAlg::Sha256, &[0, 1, 2, 3, 7]), (HashAlg::Sha1, &[0])]);
        let (attest, sig) = quote(&ak, b"fresh", &sel, &pcrs);
        let ak_bytes = ak.public.tpm2b_bytes();
        let (m_attest, m_sig, m_ak) = match target {
            0 => (mutate(&attest, &edits, cut, &extra), sig.clone(), ak_bytes.clone()),
            1 => (attest.clone(), mutate(&sig, &edits, cut, &extra), ak_bytes.clone()),
            _ => (attest.clone(), sig.clone(), mutate(&ak_bytes, &edits, cut, &extra)),
        };
        let changed = m_attest != attest || m_sig != sig || m_ak != ak_bytes;
        prop_assume!(changed);
        let Ok(parsed_ak) = Public::from_either(&m_ak) else { return Ok(()) };
        let r = verify_quote(&parsed_ak, &m_attest, &m_sig, &pcrs, b"fresh");
        if target == 2 {
            // An AK mutation may touch bits that do not matter (nameAlg, unused attributes), but
            // a quote verifies only with the very same key.
            if r.is_ok() {
                prop_assert_eq!(&parsed_ak.key, &ak.public.key);
            }
        } else {
            prop_assert!(r.is_err(), "a mutated quote verified (target {})", target);
        }
    }
}

/// The hash names as `HashAlg::from_name` read them before it stopped allocating: '-' and
/// '_' ignored, any case.
fn hash_name_reference(s: &str) -> Option<HashAlg> {
    let lower = s
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    match lower.as_str() {
        "sha1" => Some(HashAlg::Sha1),
        "sha256" => Some(HashAlg::Sha256),
        "sha384" => Some(HashAlg::Sha384),
        "sha512" => Some(HashAlg::Sha512),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Bank names read as they always have, long and non-ASCII ones included.
    #[test]
    fn hash_names_read_as_before(
        s in prop_oneof![
            Just("SHA-256".to_string()),
            Just("sha_1".to_string()),
            Just("Sha-3-8-4".to_string()),
            "[-_sShHaA0-9]{0,12}",
            "\\PC{0,8}",
        ]
    ) {
        prop_assert_eq!(HashAlg::from_name(&s), hash_name_reference(&s));
    }

    /// PCR values are written as the `hex` crate writes them (lowercase), and read back in
    /// either case; odd lengths and non-hex are refused.
    #[test]
    fn pcr_values_write_and_read_hex_as_the_hex_crate_does(
        values in proptest::collection::btree_map(0u8..24, any::<[u8; 32]>(), 0..24),
        upper in any::<bool>(),
    ) {
        let mut p = PcrValues::new();
        for (i, v) in &values {
            p.insert(HashAlg::Sha256, *i, v.to_vec()).unwrap();
        }
        let json = p.to_json();
        prop_assert_eq!(serde_json::to_value(p.json()).unwrap(), json.clone());
        for (i, v) in &values {
            let expected = hex::encode(v);
            prop_assert_eq!(json["sha256"][i.to_string()].as_str(), Some(expected.as_str()));
        }
        let text = if upper { json.to_string().to_uppercase().replace("SHA256", "sha256") } else { json.to_string() };
        prop_assert_eq!(PcrValues::parse(&text).unwrap(), p);
        if let Some(i) = values.keys().next() {
            let odd = format!(r#"{{"sha256": {{"{i}": "{}"}}}}"#, "a".repeat(63));
            prop_assert!(PcrValues::parse(&odd).is_err());
            let not_hex = format!(r#"{{"sha256": {{"{i}": "{}"}}}}"#, "g".repeat(64));
            prop_assert!(PcrValues::parse(&not_hex).is_err());
        }
    }
}
