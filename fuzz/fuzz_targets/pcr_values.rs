//! The PCR value readers on arbitrary text: the tpm2-tools YAML and JSON reader, and an
//! agent's wire form (bank name → index → hex, what the server reads from an answer's
//! `pcrs`). No panic, and what parses survives a JSON round trip.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use nodetrust_tpm_wire::PcrValues;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(p) = PcrValues::parse(&text) {
        let again = PcrValues::parse(&p.to_json().to_string()).unwrap();
        assert_eq!(again, p);
    }
    let wire = serde_json::from_slice::<BTreeMap<String, BTreeMap<String, String>>>(data);
    if let Ok(Ok(p)) = wire.as_ref().map(PcrValues::try_from) {
        let again = PcrValues::from_json_value(&p.to_json()).unwrap();
        assert_eq!(again, p);
    }
});
