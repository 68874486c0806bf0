//! Quote checks (inspect_quote, which verify_quote shares) on arbitrary (AK, attest, signature) triples: no panic, and garbage never verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetrust_tpm_wire::{inspect_quote, PcrValues, Public};

fuzz_target!(|data: &[u8]| {
    // Split the input in three with two length bytes.
    let [a, b, rest @ ..] = data else { return };
    let (ak, rest) = rest.split_at((*a as usize).min(rest.len()));
    let (attest, sig) = rest.split_at((*b as usize).min(rest.len()));
    if let Ok(ak) = Public::from_either(ak) {
        let r = inspect_quote(&ak, attest, sig, &PcrValues::new(), None);
        assert!(r.is_err(), "random bytes verified as a quote");
    }
});
