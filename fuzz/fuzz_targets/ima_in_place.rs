//! IMA logs appraised in place (`RuntimeAppraisal::appraise_log`) against parsing them and
//! appraising the entries: any bytes give the same outcome (or error) and the same state, and
//! never a panic. The quote is the parsed log's own replay, so the appraisal itself is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nodetrust_appraise::runtime::{CompiledPolicy, RuntimeAppraisal, RuntimePolicy};
use nodetrust_eventlog::ima::{BankRule, ImaLog, ImaReplay};
use nodetrust_tpm_wire::{HashAlg, PcrValues};
use std::sync::OnceLock;

fn policy() -> &'static CompiledPolicy {
    static P: OnceLock<CompiledPolicy> = OnceLock::new();
    P.get_or_init(|| {
        let mut p = RuntimePolicy::new();
        p.add_exclude("/tmp/*").expect("glob");
        p.compile().expect("policy")
    })
}

fuzz_target!(|data: &[u8]| {
    let banks = [HashAlg::Sha1, HashAlg::Sha256];
    let mut q = PcrValues::new();
    if let Ok(l) = ImaLog::parse(data) {
        let mut r = ImaReplay::new(&banks, BankRule::Recompute);
        if r.extend(&l.entries).is_ok() {
            for b in banks {
                if let Some(v) = r.value(b, 10) {
                    let _ = q.insert(b, 10, v.to_vec());
                }
            }
        }
    }
    let mut slow = RuntimeAppraisal::new();
    let slow_out = ImaLog::parse(data).map(|l| slow.appraise(policy(), 0, &l.entries, &q));
    let mut fast = RuntimeAppraisal::new();
    let fast_out = fast.appraise_log(policy(), 0, data, &q);
    assert_eq!(fast_out, slow_out);
    assert_eq!(fast, slow);
});
