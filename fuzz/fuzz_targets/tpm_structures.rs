//! Every TPM structure parser on arbitrary bytes: no panic, and whatever parses re-marshals to
//! the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetrust_tpm_wire::{Attest, Public, Signature};

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Attest::parse_quote(data) {
        // Quote selections are re-marshalled with 3-byte bitmaps, so compare semantically.
        let again = Attest::parse_quote(&a.to_bytes().unwrap()).unwrap();
        assert_eq!(again, a);
    }
    if let Ok(s) = Signature::parse(data) {
        assert_eq!(s.to_bytes().unwrap(), data);
    }
    if let Ok(p) = Public::from_tpmt(data) {
        assert_eq!(p.tpmt_bytes(), data);
        let _ = p.name();
        let _ = nodetrust_tpm_wire::der::spki(&p.key);
    }
    let _ = Public::from_either(data);
    let _ = nodetrust_tpm_wire::der::parse_spki(data);
});
