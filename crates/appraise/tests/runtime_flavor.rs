//! The RUNTIME flavor part: learned from a gold host's quoted IMA log, validated, required
//! when defined, matched through the runtime appraisal's outcome, with reasons that name the
//! file and a log that does not replay counted as a replay mismatch.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use nodetrust_appraise::runtime::RuntimeAppraisal;
use nodetrust_appraise::{
    applies, appraise_with_runtime, flavors_from_evidence, quote_selection, quoted_ima_prefix,
    runtime_flavor_from_ima, Failure, Flavor, FlavorPart, HostContext, ImportError, MatchPolicy,
    RuntimeEvidence, Trust,
};
use nodetrust_testkit::ima::ImaLogBuilder;
use nodetrust_testkit::soft::SoftTpm;
use nodetrust_tpm_wire::{verify_quote, HashAlg, PcrValues, VerifiedQuote};

const NONCE: &[u8] = &[9u8; 32];
const VALIDITY: Duration = Duration::from_secs(600);
const FILES: [(&str, &[u8]); 3] = [
    ("/usr/bin/bash", b"bash 5.2"),
    ("/usr/bin/kubelet", b"kubelet 1.30"),
    ("/usr/lib/libc.so.6", b"glibc"),
];

/// A host: a boot in PCRs 0-9, and an IMA log of `boot_aggregate` and [`FILES`] extended into
/// PCR 10.
fn host() -> (SoftTpm, ImaLogBuilder) {
    let mut tpm = SoftTpm::new().unwrap();
    for (pcr, what) in [
        (0u8, "bios"),
        (4, "grub"),
        (7, "sb on"),
        (8, "cmdline"),
        (9, "vmlinuz"),
    ] {
        tpm.extend(
            HashAlg::Sha256,
            pcr,
            &HashAlg::Sha256.digest(what.as_bytes()),
        );
    }
    let mut boot = PcrValues::new();
    for i in 0..10u8 {
        let v = tpm
            .pcr(HashAlg::Sha256, i)
            .map_or(vec![0; 32], <[u8]>::to_vec);
        boot.insert(HashAlg::Sha256, i, v).unwrap();
    }
    let mut ima = ImaLogBuilder::new();
    ima.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
    for (p, c) in FILES {
        ima.file(p, c);
    }
    extend(&mut tpm, &ima, 0);
    (tpm, ima)
}

fn extend(tpm: &mut SoftTpm, ima: &ImaLogBuilder, from: usize) {
    for d in ima.extend_values(HashAlg::Sha256, from) {
        tpm.extend(HashAlg::Sha256, 10, &d);
    }
}

fn verified(tpm: &mut SoftTpm, flavors: &[Flavor], host: &str) -> VerifiedQuote {
    let q = tpm.quote(NONCE, &quote_selection(flavors, host)).unwrap();
    verify_quote(tpm.ak_public(), &q.attest, &q.signature, &q.pcrs, NONCE).unwrap()
}

fn ctx(host: &str) -> HostContext<'_> {
    HostContext {
        host_name: host,
        software_tpm: true,
    }
}

/// PLATFORM, OS and a RUNTIME flavor learned from a gold host.
fn gold() -> Vec<Flavor> {
    let (mut tpm, mut ima) = host();
    // What a RUNTIME flavor has quoted: SHA-256 PCRs 0-10.
    let runtime_only = [Flavor {
        id: String::new(),
        label: "x".into(),
        part: FlavorPart::Runtime,
        host_name: None,
        source_host: None,
        allow_software_tpm: true,
        pcrs: Vec::new(),
        runtime: Some(Default::default()),
    }];
    let v = verified(&mut tpm, &runtime_only, "gold");
    // Logged after the quote: not learned.
    ima.file("/usr/bin/later", b"later");
    let mut flavors = flavors_from_evidence(
        &v,
        None,
        &[FlavorPart::Platform, FlavorPart::Os],
        "gold",
        true,
    )
    .unwrap();
    flavors.push(runtime_flavor_from_ima(&v, ima.entries(), "gold", true).unwrap());
    for (i, f) in flavors.iter_mut().enumerate() {
        f.id = format!("f{i}");
        f.validate().unwrap();
    }
    flavors
}

/// The runtime evidence of `ima` on `tpm`'s quote under `flavor`'s policy.
fn evidence(flavor: &Flavor, ima: &ImaLogBuilder, v: &VerifiedQuote) -> RuntimeEvidence {
    let policy = flavor.runtime.as_ref().unwrap().compile().unwrap();
    let mut state = RuntimeAppraisal::new();
    let out = state.appraise(&policy, 0, ima.entries(), v.pcrs());
    RuntimeEvidence {
        outcomes: BTreeMap::from([(flavor.id.clone(), Ok(out))]),
        notes: Vec::new(),
    }
}

fn verdict(
    flavors: &[Flavor],
    v: &VerifiedQuote,
    rt: Option<&RuntimeEvidence>,
    host: &str,
) -> nodetrust_appraise::Verdict {
    appraise_with_runtime(
        v,
        None,
        rt,
        flavors,
        &MatchPolicy::default(),
        &ctx(host),
        SystemTime::now(),
        VALIDITY,
    )
}

#[test]
fn learned_from_the_quoted_log_only() {
    let flavors = gold();
    let rt = flavors
        .iter()
        .find(|f| f.part == FlavorPart::Runtime)
        .unwrap();
    assert!(rt.pcrs.is_empty());
    let policy = rt.runtime.as_ref().unwrap();
    let paths: Vec<&str> = policy.digests.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        ["/usr/bin/bash", "/usr/bin/kubelet", "/usr/lib/libc.so.6"]
    );
    // PCR 10 and, for boot_aggregate, 0-9 of SHA-256.
    let needed = rt.needed_pcrs();
    assert!(
        (0..=10).all(|i| needed.contains(&(HashAlg::Sha256, i))),
        "{needed:?}"
    );
}

#[test]
fn a_log_that_does_not_replay_teaches_nothing() {
    let (mut tpm, ima) = host();
    let sel = [gold().pop().unwrap()];
    let v = verified(&mut tpm, &sel, "gold");
    assert_eq!(
        quoted_ima_prefix(&v, ima.entries()).unwrap().len(),
        ima.len()
    );
    // One entry edited: no prefix replays to the quoted PCR 10.
    let mut edited = ima.entries().to_vec();
    // The file digest (the last byte of the d-ng field) changed, in the data the SHA-256 bank
    // binds and in the parsed field.
    let at = 4 + "sha256:\0".len() + 31;
    edited[2].template_data[at] ^= 1;
    edited[2].file_digest[31] ^= 1;
    let err = runtime_flavor_from_ima(&v, &edited, "gold", true).unwrap_err();
    assert!(matches!(err, ImportError::BadImaLog(_)), "{err}");
    assert!(err.to_string().contains("does not replay"), "{err}");
}

#[test]
fn runtime_is_required_when_defined_and_matched_through_the_appraisal() {
    let flavors = gold();
    let rt = flavors
        .iter()
        .find(|f| f.part == FlavorPart::Runtime)
        .unwrap();
    let (mut tpm, mut ima) = host();
    let v = verified(&mut tpm, &flavors, "node-1");

    // The same files: trusted, the RUNTIME match among the reasons.
    let ev = evidence(rt, &ima, &v);
    let ok = verdict(&flavors, &v, Some(&ev), "node-1");
    assert_eq!(ok.verdict(), Trust::Trusted, "{:?}", ok.reasons());
    assert!(ok
        .reasons()
        .iter()
        .any(|r| r.starts_with("RUNTIME: matches flavor")));

    // No runtime evidence: the flavor applies, so the part is required and fails.
    let none = verdict(&flavors, &v, None, "node-1");
    assert_eq!(none.verdict(), Trust::Untrusted);
    assert_eq!(
        none.failure(),
        Some(Failure::FlavorMismatch {
            part: FlavorPart::Runtime
        })
    );

    // An unknown binary: untrusted, its path in the reasons once prefixed.
    let before_curl = ima.clone();
    ima.file("/usr/bin/curl", b"curl");
    extend(&mut tpm, &ima, ima.len() - 1);
    let v = verified(&mut tpm, &flavors, "node-1");
    let ev = evidence(rt, &ima, &v);
    let bad = verdict(&flavors, &v, Some(&ev), "node-1");
    assert_eq!(bad.verdict(), Trust::Untrusted);
    let text = bad.reasons().join("\n");
    assert!(text.contains("RUNTIME: /usr/bin/curl: sha256:"), "{text}");
    assert!(text.contains("not in policy"), "{text}");
    assert!(!text.contains("RUNTIME: RUNTIME"), "{text}");

    // A log that hides it: does not replay, counted as a replay mismatch, notes added.
    let mut ev = evidence(rt, &before_curl, &v);
    ev.notes.push("the agent's IMA log holds 4 entries".into());
    let cut = verdict(&flavors, &v, Some(&ev), "node-1");
    assert_eq!(cut.verdict(), Trust::Untrusted);
    assert_eq!(cut.failure(), Some(Failure::ReplayMismatch));
    let text = cut.reasons().join("\n");
    assert!(
        text.contains("does not replay to the quoted PCR 10"),
        "{text}"
    );
    assert!(
        text.contains("RUNTIME: the agent's IMA log holds 4 entries"),
        "{text}"
    );
}

#[test]
fn a_runtime_flavor_for_another_host_does_not_apply() {
    let mut flavors = gold();
    for f in &mut flavors {
        if f.part == FlavorPart::Runtime {
            f.host_name = Some("node-9".into());
        }
    }
    let rt = flavors
        .iter()
        .find(|f| f.part == FlavorPart::Runtime)
        .unwrap();
    assert!(applies(rt, &ctx("node-9")));
    assert!(!applies(rt, &ctx("node-1")));
    let (mut tpm, _) = host();
    let v = verified(&mut tpm, &flavors, "node-1");
    // node-1 has no RUNTIME flavor: its IMA log is not needed.
    let ok = verdict(&flavors, &v, None, "node-1");
    assert_eq!(ok.verdict(), Trust::Trusted, "{:?}", ok.reasons());
    assert!(!ok.reasons().iter().any(|r| r.contains("RUNTIME")));
}

#[test]
fn a_runtime_policy_belongs_to_runtime_flavors_only() {
    let flavors = gold();
    let rt = flavors
        .iter()
        .find(|f| f.part == FlavorPart::Runtime)
        .unwrap()
        .clone();
    let os = flavors
        .iter()
        .find(|f| f.part == FlavorPart::Os)
        .unwrap()
        .clone();
    let without = Flavor {
        runtime: None,
        ..rt.clone()
    };
    assert!(without
        .validate()
        .unwrap_err()
        .to_string()
        .contains("runtime policy"));
    let with_rules = Flavor {
        pcrs: os.pcrs.clone(),
        ..rt.clone()
    };
    assert!(with_rules.validate().is_err());
    let os_with_policy = Flavor {
        runtime: rt.runtime.clone(),
        ..os
    };
    assert!(os_with_policy.validate().is_err());
    let mut bad_policy = rt.runtime.clone().unwrap();
    bad_policy.version = 99;
    let bad = Flavor {
        runtime: Some(bad_policy),
        ..rt
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("runtime policy"));
    // The JSON of a RUNTIME flavor carries the policy and no PCR rule.
    let json = serde_json::to_value(&flavors[2]).unwrap();
    assert_eq!(json["part"], "RUNTIME");
    assert!(json["runtime"]["digests"].is_object(), "{json}");
    let back: Flavor = serde_json::from_value(json).unwrap();
    assert_eq!(back, flavors[2]);
    assert_eq!(FlavorPart::parse("runtime"), Some(FlavorPart::Runtime));
}
