//! The PCR value reader (tpm2-tools YAML and JSON) on arbitrary text: no panic, and what
//! parses survives a JSON round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetrust_tpm_wire::PcrValues;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(p) = PcrValues::parse(&text) {
        let again = PcrValues::parse(&p.to_json().to_string()).unwrap();
        assert_eq!(again, p);
    }
});
