//! IMA log parsers (ascii and binary): any bytes either parse or give an error; a log that
//! parses is checked and replayed, and its binary form parses back to the same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetrust_eventlog::ima::{to_binary, BankRule, ImaLog, ImaReplay};
use nodetrust_tpm_wire::HashAlg;

fuzz_target!(|data: &[u8]| {
    for parsed in [
        ImaLog::parse(data),
        ImaLog::parse_binary(data),
        ImaLog::parse_ascii(&String::from_utf8_lossy(data)),
    ] {
        let Ok(log) = parsed else { continue };
        let _ = log.check();
        let mut r = ImaReplay::new(&[HashAlg::Sha1, HashAlg::Sha256], BankRule::Recompute);
        let _ = r.extend(&log.entries);
        let _ = r.values();
        let binary = to_binary(&log.entries);
        if log
            .entries
            .iter()
            .all(|e| e.template_hash.len() == 20 && e.path.len() < 256)
        {
            let again = ImaLog::parse_binary(&binary).expect("our binary form parses");
            assert_eq!(again.entries.len(), log.entries.len());
        }
    }
});
