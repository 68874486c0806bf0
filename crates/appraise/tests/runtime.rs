//! Runtime integrity: IMA logs from the testkit's generator appraised against runtime
//! policies, incrementally, with the quote's PCR values.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use nodetrust_appraise::runtime::{
    diff_policies, parse_ima_signature, BootAggregateRule, CompiledPolicy, EntryDecision,
    FailureKind, FileDigest, KeyId, PolicyDifference, PolicyError, RuntimeAppraisal, RuntimePolicy,
    RuntimeProblem, TrustedKey, ViolationRule, MAX_LISTED_FAILURES,
};
use nodetrust_eventlog::ima::{ImaEntry, ImaLog};
use nodetrust_testkit::ima::{fake_boot_pcrs, ImaLogBuilder, TestKeyKind, TestSigningKey};
use nodetrust_tpm_wire::{HashAlg, PcrValues};

/// The quote a TPM would give after `b`'s entries: boot PCRs 0-9 and PCR 10, in `banks`.
fn quote(b: &ImaLogBuilder, boot: &PcrValues, banks: &[HashAlg]) -> PcrValues {
    let mut q = PcrValues::new();
    for (bank, i, v) in boot.iter() {
        if banks.contains(&bank) {
            q.insert(bank, i, v.to_vec()).unwrap();
        }
    }
    for bank in banks {
        q.insert(*bank, 10, b.pcr10(*bank)).unwrap();
    }
    q
}

const BANKS: [HashAlg; 2] = [HashAlg::Sha1, HashAlg::Sha256];

/// A gold host: boot aggregate and a few files.
fn gold() -> (ImaLogBuilder, PcrValues) {
    let boot = fake_boot_pcrs(&BANKS);
    let mut b = ImaLogBuilder::new();
    b.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
    for i in 0..20 {
        b.file(&format!("/usr/bin/tool{i}"), format!("tool {i}").as_bytes());
    }
    b.file_alg("/usr/lib/libsha1.so", HashAlg::Sha1, b"sha1 file");
    b.file_ima("/sbin/init", b"init");
    (b, boot)
}

fn learned(b: &ImaLogBuilder) -> RuntimePolicy {
    let mut p = RuntimePolicy::new();
    p.learn(b.entries()).unwrap();
    p
}

fn parse(text: &str) -> Vec<ImaEntry> {
    ImaLog::parse(text.as_bytes()).unwrap().entries
}

#[test]
fn a_host_running_only_allowed_files_is_trusted() {
    let (b, boot) = gold();
    let policy = learned(&b).compile().unwrap();
    assert_eq!(policy.paths(), 22, "boot_aggregate is not listed");
    for bytes in [b.ascii().into_bytes(), b.binary()] {
        let entries = ImaLog::parse(&bytes).unwrap().entries;
        let mut state = RuntimeAppraisal::new();
        let out = state.appraise(&policy, 0, &entries, &quote(&b, &boot, &BANKS));
        assert!(out.is_trusted(), "{:?}", out.reasons());
        assert_eq!(out.appraised, 23);
        assert_eq!(out.entries, 23);
        assert_eq!(out.allowed.boot_aggregate, 1);
        assert_eq!(out.allowed.digest, 22);
        assert!(out.reasons().is_empty());
        assert_eq!(out.label(), None);
    }
}

#[test]
fn an_unknown_binary_is_named_in_the_reason() {
    let (mut b, boot) = gold();
    let policy = learned(&b).compile().unwrap();
    let curl = b.file("/usr/bin/curl", b"curl").file_digest.clone();
    // A listed path with another digest fails the same way.
    b.file("/usr/bin/tool3", b"trojaned tool 3");
    let mut state = RuntimeAppraisal::new();
    let out = state.appraise(&policy, 0, &parse(&b.ascii()), &quote(&b, &boot, &BANKS));
    assert!(!out.is_trusted());
    assert_eq!(out.failures_total, 2);
    assert_eq!(out.label(), Some("runtime_policy"));
    let reasons = out.reasons();
    assert_eq!(
        reasons[0],
        format!(
            "RUNTIME: /usr/bin/curl: sha256:{} not in policy",
            hex::encode(curl)
        )
    );
    assert!(reasons[1].starts_with("RUNTIME: /usr/bin/tool3: sha256:"));
    assert_eq!(out.failures[0].entry, 23);
    assert_eq!(out.failures[0].kind.label(), "not_in_policy");
}

#[test]
fn signatures_by_trusted_keys_allow_files_without_a_line() {
    for kind in [
        TestKeyKind::Rsa2048,
        TestKeyKind::EcdsaP256,
        TestKeyKind::EcdsaP384,
    ] {
        let key = TestSigningKey::generate(kind).unwrap();
        let stranger = TestSigningKey::generate(kind).unwrap();
        let alg = if kind == TestKeyKind::EcdsaP384 {
            HashAlg::Sha384
        } else {
            HashAlg::Sha256
        };
        let (mut b, boot) = gold();
        let mut policy = learned(&b);
        policy
            .add_key(
                TrustedKey::from_pem_or_der(key.public_key_pem().as_bytes(), "vendor").unwrap(),
            )
            .unwrap();
        assert_eq!(policy.keys[0].key_id(), KeyId(key.key_id()));
        let policy = policy.compile().unwrap();
        b.signed_file("/usr/lib/vendor.so", alg, b"vendor lib", &key)
            .unwrap();
        let mut state = RuntimeAppraisal::new();
        let out = state.appraise(&policy, 0, &parse(&b.ascii()), &quote(&b, &boot, &BANKS));
        assert!(out.is_trusted(), "{kind:?}: {:?}", out.reasons());
        assert_eq!(out.allowed.signature, 1);

        // Signed by a key the policy does not trust.
        let from = b.len();
        b.signed_file("/usr/lib/evil.so", alg, b"evil", &stranger)
            .unwrap();
        let out = state.appraise(
            &policy,
            from as u64,
            &parse(&b.ascii_from(from)),
            &quote(&b, &boot, &BANKS),
        );
        assert_eq!(
            out.reasons(),
            vec![format!(
                "RUNTIME: /usr/lib/evil.so: signature by unknown key 0x{:08x}",
                stranger.key_id()
            )]
        );

        // The trusted key's signature over another file's digest.
        let mut forged = key.ima_signature(alg, &alg.digest(b"other")).unwrap();
        let from = b.len();
        b.sig_file(
            "/usr/lib/forged.so",
            alg,
            b"forged",
            std::mem::take(&mut forged),
        );
        let out = state.appraise(
            &policy,
            from as u64,
            &parse(&b.ascii_from(from)),
            &quote(&b, &boot, &BANKS),
        );
        assert_eq!(out.failures_total, 2);
        assert_eq!(
            out.failures[1].to_string(),
            format!(
                "RUNTIME: /usr/lib/forged.so: signature by key 0x{:08x} is not valid: it does not verify",
                key.key_id()
            )
        );
    }
}

#[test]
fn a_certificate_names_its_key_by_the_subject_key_identifier() {
    let key = TestSigningKey::generate(TestKeyKind::Rsa2048).unwrap();
    let pem = key.certificate_pem().unwrap();
    let t = TrustedKey::from_pem_or_der(pem.as_bytes(), "cert").unwrap();
    assert_eq!(t.key_id(), KeyId(key.key_id()));
    assert_eq!(t.kind(), "RSA 2048");
    // DER forms too.
    let spki = TrustedKey::from_pem_or_der(&key.public_key_der(), "der").unwrap();
    assert_eq!(spki.key_id(), KeyId(key.key_id()));
    assert_eq!(spki.public_key(), t.public_key());
    assert!(TrustedKey::from_pem_or_der(b"not a key", "x").is_err());
    assert!(TrustedKey::from_pem_or_der(&[0x30, 0x82, 0xff], "x").is_err());
}

#[test]
fn excluded_paths_are_ignored() {
    let (mut b, boot) = gold();
    let mut policy = learned(&b);
    policy.add_exclude("/tmp/*").unwrap();
    policy.add_exclude("/var/log/*").unwrap();
    policy.add_exclude("/opt/*/cache/?").unwrap();
    policy.exclude_regexes.push(r"/srv/[a-z]+\.bin".to_string());
    let policy = policy.compile().unwrap();
    b.file("/tmp/build/a.out", b"scratch");
    b.file("/var/log/x/helper", b"helper");
    b.file("/opt/app/cache/1", b"c");
    b.file("/srv/job.bin", b"job");
    b.file("/tmpfoo", b"not excluded");
    let mut state = RuntimeAppraisal::new();
    let out = state.appraise(&policy, 0, &parse(&b.ascii()), &quote(&b, &boot, &BANKS));
    assert_eq!(out.allowed.excluded, 4);
    assert_eq!(out.failures_total, 1);
    assert!(out.reasons()[0].starts_with("RUNTIME: /tmpfoo: sha256:"));
}

#[test]
fn an_edited_or_truncated_log_does_not_replay_and_changes_nothing() {
    let (mut b, boot) = gold();
    let policy = learned(&b).compile().unwrap();
    b.file("/usr/bin/curl", b"curl");
    let q = quote(&b, &boot, &[HashAlg::Sha256]);
    let full = parse(&b.ascii());

    // The unknown entry removed from the middle.
    let mut hidden = full.clone();
    hidden.remove(10);
    let mut state = RuntimeAppraisal::new();
    let before = state.clone();
    let out = state.appraise(&policy, 0, &hidden, &q);
    assert!(!out.is_trusted());
    assert!(matches!(
        out.problem,
        Some(RuntimeProblem::NotReplayed {
            bank: HashAlg::Sha256,
            ..
        })
    ));
    assert_eq!(out.label(), Some("replay_mismatch"));
    assert!(out.reasons()[0]
        .starts_with("RUNTIME: the IMA log does not replay to the quoted PCR 10 (sha256"));
    assert_eq!(out.appraised, 0);

    // The last entry (the unknown one) cut off: the quote still covers it.
    let truncated = &full[..full.len() - 1];
    let out = state.appraise(&policy, 0, truncated, &q);
    assert!(matches!(
        out.problem,
        Some(RuntimeProblem::NotReplayed { .. })
    ));

    // An entry's path edited, its template hash kept: the SHA-256 bank recomputes the
    // template data, so the log no longer replays.
    let text = b.ascii().replace("/usr/bin/curl", "/usr/bin/tool1");
    let out = state.appraise(&policy, 0, &parse(&text), &q);
    assert!(matches!(
        out.problem,
        Some(RuntimeProblem::NotReplayed { .. })
    ));
    assert_eq!(state.entries(), 0);
    assert_eq!(state.failures_total(), before.failures_total());

    // With only the SHA-1 bank quoted the logged template hashes replay, so the edit is
    // caught by checking each template hash against the entry.
    let mut q1 = quote(&b, &boot, &[HashAlg::Sha1]);
    for (i, v) in boot.bank(HashAlg::Sha256) {
        q1.insert(HashAlg::Sha256, i, v.to_vec()).unwrap();
    }
    let out = state.appraise(&policy, 0, &parse(&text), &q1);
    assert!(out.problem.is_none());
    assert_eq!(out.failures_total, 1);
    assert_eq!(out.failures[0].kind, FailureKind::TemplateHash);
    assert_eq!(out.failures[0].path, "/usr/bin/tool1");
}

#[test]
fn entries_logged_after_the_quote_wait_for_the_next_one() {
    let (mut b, boot) = gold();
    let policy = learned(&b).compile().unwrap();
    let q = quote(&b, &boot, &BANKS);
    b.file("/usr/bin/curl", b"curl");
    b.file("/usr/bin/wget", b"wget");
    let mut state = RuntimeAppraisal::new();
    let out = state.appraise(&policy, 0, &parse(&b.ascii()), &q);
    assert!(out.is_trusted(), "{:?}", out.reasons());
    assert_eq!((out.appraised, out.unquoted, out.entries), (23, 2, 23));
    // The next quote covers them: asked from 23, they are appraised now.
    let q = quote(&b, &boot, &BANKS);
    let out = state.appraise(
        &policy,
        state.next_offset(&policy),
        &parse(&b.ascii_from(23)),
        &q,
    );
    assert_eq!((out.appraised, out.unquoted, out.entries), (2, 0, 25));
    assert_eq!(out.failures_total, 2);
    // Nothing new: still untrusted, failures are kept until a reboot.
    let out = state.appraise(&policy, 25, &[], &q);
    assert_eq!(out.appraised, 0);
    assert!(!out.is_trusted());
    assert_eq!(out.failures_total, 2);
}

#[test]
fn a_reboot_starts_over_from_entry_zero() {
    let (mut b, boot) = gold();
    let policy = learned(&b).compile().unwrap();
    b.file("/usr/bin/curl", b"curl");
    let mut state = RuntimeAppraisal::new();
    let out = state.appraise(&policy, 0, &parse(&b.ascii()), &quote(&b, &boot, &BANKS));
    assert!(!out.is_trusted());
    // After the reboot the node runs only allowed files.
    let (b2, boot2) = gold();
    let out = state.appraise(&policy, 0, &parse(&b2.ascii()), &quote(&b2, &boot2, &BANKS));
    assert!(out.is_trusted(), "{:?}", out.reasons());
    assert_eq!(state.entries(), 23);
    assert_eq!(state.failures_total(), 0);
}

#[test]
fn gaps_and_policy_changes_are_refused_without_changing_the_state() {
    let (mut b, boot) = gold();
    let p1 = learned(&b);
    let policy = p1.compile().unwrap();
    let mut state = RuntimeAppraisal::new();
    state.appraise(&policy, 0, &parse(&b.ascii()), &quote(&b, &boot, &BANKS));
    b.file("/usr/bin/tool1", b"tool 1");
    let q = quote(&b, &boot, &BANKS);
    let out = state.appraise(&policy, 20, &parse(&b.ascii_from(20)), &q);
    assert_eq!(
        out.problem,
        Some(RuntimeProblem::Gap {
            have: 23,
            start: 20
        })
    );
    assert_eq!(state.entries(), 23);

    let mut p2 = p1.clone();
    p2.add_exclude("/tmp/*").unwrap();
    let policy2 = p2.compile().unwrap();
    assert_ne!(policy.fingerprint(), policy2.fingerprint());
    assert_eq!(state.next_offset(&policy), 23);
    assert_eq!(state.next_offset(&policy2), 0);
    let out = state.appraise(&policy2, 23, &parse(&b.ascii_from(23)), &q);
    assert_eq!(out.problem, Some(RuntimeProblem::PolicyChanged));
    let out = state.appraise(&policy2, 0, &parse(&b.ascii()), &q);
    assert!(out.is_trusted(), "{:?}", out.reasons());
    assert_eq!(out.entries, 24);
}

#[test]
fn pcr10_must_be_quoted() {
    let (b, boot) = gold();
    let policy = learned(&b).compile().unwrap();
    let mut q = PcrValues::new();
    for (bank, i, v) in boot.iter() {
        q.insert(bank, i, v.to_vec()).unwrap();
    }
    let mut state = RuntimeAppraisal::new();
    let out = state.appraise(&policy, 0, &parse(&b.ascii()), &q);
    assert_eq!(out.problem, Some(RuntimeProblem::PcrNotQuoted));
    assert!(!out.is_trusted());
}

#[test]
fn violations_fail_unless_allowed_and_are_always_counted() {
    let (mut b, boot) = gold();
    let mut p = learned(&b);
    b.violation("/var/lib/db/file");
    let q = quote(&b, &boot, &BANKS);
    let entries = parse(&b.ascii());
    let mut state = RuntimeAppraisal::new();
    let out = state.appraise(&p.compile().unwrap(), 0, &entries, &q);
    assert_eq!(out.violations, 1);
    assert_eq!(out.failures[0].kind, FailureKind::Violation);
    assert!(out.reasons()[0].starts_with("RUNTIME: /var/lib/db/file: IMA violation"));
    p.violations = ViolationRule::Allow;
    let mut state = RuntimeAppraisal::new();
    let out = state.appraise(&p.compile().unwrap(), 0, &entries, &q);
    assert!(out.is_trusted());
    assert_eq!((out.violations, out.allowed.violation), (1, 1));
}

#[test]
fn the_boot_aggregate_must_match_the_quoted_boot_pcrs() {
    let (b, boot) = gold();
    let mut p = learned(&b);
    let entries = parse(&b.ascii());
    // Another boot's PCRs 0-9.
    let mut q = quote(&b, &boot, &BANKS);
    q.insert(HashAlg::Sha256, 4, vec![9; 32]).unwrap();
    let out = RuntimeAppraisal::new().appraise(&p.compile().unwrap(), 0, &entries, &q);
    assert_eq!(out.failures_total, 1);
    assert!(out.reasons()[0].starts_with("RUNTIME: boot_aggregate: sha256:"));
    assert!(out.reasons()[0].contains("is not the hash of the quoted PCRs 0-9"));
    // PCRs 0-9 of the SHA-256 bank not quoted.
    let q = b.pcr10_values(&BANKS);
    let out = RuntimeAppraisal::new().appraise(&p.compile().unwrap(), 0, &entries, &q);
    assert!(out.reasons()[0].contains("PCRs 0-9 of the sha256 bank were not quoted"));
    // Ignored by the rule.
    p.boot_aggregate = BootAggregateRule::Ignore;
    let out = RuntimeAppraisal::new().appraise(&p.compile().unwrap(), 0, &entries, &q);
    assert!(out.is_trusted(), "{:?}", out.reasons());
    // A log that does not start with it.
    p.boot_aggregate = BootAggregateRule::Require;
    let mut nb = ImaLogBuilder::new();
    nb.file("/usr/bin/tool1", b"tool 1");
    let out = RuntimeAppraisal::new().appraise(
        &p.compile().unwrap(),
        0,
        &parse(&nb.ascii()),
        &quote(&nb, &boot, &BANKS),
    );
    assert_eq!(
        out.reasons(),
        vec!["RUNTIME: boot_aggregate: the IMA log does not start with boot_aggregate"]
    );
}

#[test]
fn a_hundred_thousand_entries_are_appraised_incrementally_each_once() {
    let boot = fake_boot_pcrs(&BANKS);
    let mut b = ImaLogBuilder::new();
    b.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
    for i in 0..100_000u32 {
        b.file(
            &format!("/usr/lib/f{}", i % 5000),
            &(i % 5000).to_le_bytes(),
        );
    }
    let policy = learned(&b).compile().unwrap();
    assert_eq!(policy.paths(), 5000);
    // Attest every 15,000 entries; the log is read a few entries past the quote each time.
    let all = ImaLog::parse(&b.binary()).unwrap().entries;
    let mut state = RuntimeAppraisal::new();
    let mut appraised = 0;
    let mut calls = 0;
    let mut replay = ImaLogBuilder::new();
    let mut quoted_upto = 0usize;
    while quoted_upto < all.len() {
        quoted_upto = (quoted_upto + 15_000).min(all.len());
        // The quote after `quoted_upto` entries.
        while replay.len() < quoted_upto {
            let e = &all[replay.len()];
            if e.path == "boot_aggregate" {
                replay.boot_aggregate(&boot, HashAlg::Sha256).unwrap();
            } else {
                replay.file_digest(&e.path, &e.file_alg, e.file_digest.clone());
            }
        }
        let q = quote(&replay, &boot, &BANKS);
        let from = state.next_offset(&policy) as usize;
        let sent_to = (quoted_upto + 7).min(all.len());
        let out = state.appraise(&policy, from as u64, &all[from..sent_to], &q);
        assert!(out.is_trusted(), "{:?}", out.reasons());
        assert_eq!(out.entries as usize, quoted_upto);
        assert_eq!(out.unquoted as usize, sent_to - quoted_upto);
        appraised += out.appraised;
        calls += 1;
    }
    assert_eq!(appraised, 100_001, "every entry appraised exactly once");
    assert_eq!(calls, 7);
    // The state a server keeps per host stays small.
    let json = serde_json::to_string(&state).unwrap();
    assert!(json.len() < 400, "{} bytes: {json}", json.len());
}

#[test]
fn the_state_round_trips_through_json() {
    let (mut b, boot) = gold();
    let policy = learned(&b).compile().unwrap();
    for i in 0..(MAX_LISTED_FAILURES + 5) {
        b.file(&format!("/usr/bin/new{i}"), b"new");
    }
    let mut state = RuntimeAppraisal::new();
    let out = state.appraise(&policy, 0, &parse(&b.ascii()), &quote(&b, &boot, &BANKS));
    assert_eq!(out.failures.len(), MAX_LISTED_FAILURES);
    assert_eq!(out.failures_total, MAX_LISTED_FAILURES as u64 + 5);
    assert_eq!(
        out.reasons().last().unwrap(),
        "RUNTIME: 5 more entries not allowed (25 in all)"
    );
    let json = serde_json::to_string(&state).unwrap();
    let back: RuntimeAppraisal = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    assert_eq!(
        back.pcr(HashAlg::Sha256, 10).unwrap(),
        b.pcr10(HashAlg::Sha256)
    );
    // A corrupt state is refused, not trusted.
    let bad = json.replace("\"sha256\":{\"10\":\"", "\"sha256\":{\"10\":\"zz");
    assert!(serde_json::from_str::<RuntimeAppraisal>(&bad).is_err());
}

#[test]
fn policies_read_back_what_they_write_and_refuse_mistakes() {
    let (b, _) = gold();
    let key = TestSigningKey::generate(TestKeyKind::EcdsaP256).unwrap();
    let mut p = learned(&b);
    p.label = "gold".to_string();
    p.add_exclude("/tmp/*").unwrap();
    p.add_key(TrustedKey::from_pem_or_der(key.public_key_pem().as_bytes(), "k").unwrap())
        .unwrap();
    let json = p.to_json();
    let back = RuntimePolicy::from_json(json.as_bytes()).unwrap();
    assert_eq!(back, p);
    assert_eq!(back.fingerprint(), p.fingerprint());
    assert!(json.contains("\"key_id\": \"0x"));
    assert!(json.contains("\"/usr/bin/tool1\": [\n      \"sha256:"));

    let err = |s: &str| RuntimePolicy::from_json(s.as_bytes()).unwrap_err();
    assert_eq!(err(r#"{"version": 2}"#), PolicyError::Version(2));
    assert!(matches!(
        err(r#"{"version": 1, "exlcudes": []}"#),
        PolicyError::Json(_)
    ));
    assert!(matches!(
        err(r#"{"version": 1, "digests": {"/a": ["sha256:00"]}}"#),
        PolicyError::Json(m) if m.contains("bad file digest")
    ));
    assert!(matches!(
        err(r#"{"version": 1, "digests": {"/a": []}}"#),
        PolicyError::NoDigest(_)
    ));
    assert!(matches!(
        err(r#"{"version": 1, "excludes": [""]}"#),
        PolicyError::Json(_)
    ));
    assert!(matches!(err("[1,2"), PolicyError::Json(_)));
    let bad_regex = RuntimePolicy {
        exclude_regexes: vec!["(".to_string()],
        ..RuntimePolicy::new()
    };
    assert!(matches!(
        bad_regex.compile(),
        Err(PolicyError::Regex { .. })
    ));
    // Any algorithm IMA names, several digests per path.
    let p = RuntimePolicy::from_json(
        br#"{"version": 1, "digests": {"/a": ["sm3:0000000000000000000000000000000000000000000000000000000000000000", "sha512:00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"]}}"#,
    )
    .unwrap();
    let c = p.compile().unwrap();
    assert!(c.is_listed("/a", "sm3", &[0; 32]));
    assert!(!c.is_listed("/a", "sha256", &[0; 32]));
}

#[test]
fn diff_says_what_changed() {
    let (b, _) = gold();
    let old = learned(&b);
    let mut new = old.clone();
    new.digests.remove("/usr/bin/tool0");
    new.add_digest("/usr/bin/tool1", FileDigest::of(HashAlg::Sha256, b"v2"))
        .unwrap();
    new.add_digest("/usr/bin/zz", FileDigest::of(HashAlg::Sha256, b"zz"))
        .unwrap();
    new.add_exclude("/tmp/*").unwrap();
    new.boot_aggregate = BootAggregateRule::Ignore;
    let d = diff_policies(&old, &new);
    let text: Vec<String> = d.iter().map(ToString::to_string).collect();
    assert_eq!(text[0], "~ boot_aggregate: require -> ignore");
    assert_eq!(text[1], "+ exclude glob /tmp/*");
    assert!(text[2].starts_with("- /usr/bin/tool0 sha256:"));
    assert!(text[3].starts_with("~ /usr/bin/tool1 + sha256:"));
    assert!(text[4].starts_with("+ /usr/bin/zz sha256:"));
    assert_eq!(d.len(), 5);
    assert!(matches!(d[2], PolicyDifference::PathRemoved { .. }));
    assert!(diff_policies(&old, &old).is_empty());
}

#[test]
fn keylime_policies_are_brought_over() {
    let key = TestSigningKey::generate(TestKeyKind::Rsa2048).unwrap();
    use base64::Engine as _;
    let ring = serde_json::json!({
        "pubkeys": [base64::engine::general_purpose::STANDARD.encode(key.public_key_der())],
        "keyids": [key.key_id()],
    });
    let vk = serde_json::json!({ "tenant_keyring": ring.to_string() }).to_string();
    let sha1 = "a".repeat(40);
    let sha256 = "b".repeat(64);
    let kl = serde_json::json!({
        "meta": {"version": 1, "generator": 3, "timestamp": "2025-01-01"},
        "release": 0,
        "digests": {
            "/usr/bin/bash": [sha256.clone(), sha1.clone()],
            "boot_aggregate": [sha1.clone()],
        },
        "excludes": ["/tmp/.*", "^/var/log/", "/(proc|sys)/.*", "(?<=x)y"],
        "keyrings": {".ima": [sha256.clone()]},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": vk,
    });
    let imp = RuntimePolicy::from_keylime(kl.to_string().as_bytes()).unwrap();
    let p = &imp.policy;
    assert_eq!(p.digests.len(), 1);
    assert_eq!(
        p.digests["/usr/bin/bash"],
        vec![
            format!("sha256:{sha256}").parse::<FileDigest>().unwrap(),
            format!("sha1:{sha1}").parse::<FileDigest>().unwrap()
        ]
    );
    let globs: Vec<&str> = p.excludes.iter().map(|g| g.as_str()).collect();
    assert_eq!(globs, ["/tmp/*", "/var/log/*"]);
    assert_eq!(p.exclude_regexes, ["/(proc|sys)/.*"]);
    assert_eq!(p.keys.len(), 1);
    assert_eq!(p.keys[0].key_id(), KeyId(key.key_id()));
    assert_eq!(imp.notes.len(), 3, "{:?}", imp.notes);
    assert!(imp.notes.iter().any(|n| n.contains("(?<=x)y")));
    assert!(imp.notes.iter().any(|n| n.contains("boot_aggregate")));
    assert!(imp.notes.iter().any(|n| n.starts_with("keyrings: 1")));
    let c = p.compile().unwrap();
    assert!(c.is_excluded("/proc/1/exe"));
    assert!(c.is_excluded("/var/log/a"));
    assert!(!c.is_excluded("/usr/proc/1"));

    assert!(matches!(
        RuntimePolicy::from_keylime(br#"{"meta": {"version": 2}, "digests": {}}"#),
        Err(PolicyError::Keylime(_))
    ));
    assert!(RuntimePolicy::from_keylime(br#"{"version": 1}"#).is_err());
}

#[test]
fn check_entry_decides_one_entry_alone() {
    let (b, _) = gold();
    let policy: CompiledPolicy = learned(&b).compile().unwrap();
    let e = &b.entries()[1];
    assert_eq!(
        policy.check_entry(e),
        EntryDecision::Allowed(nodetrust_appraise::runtime::AllowedBy::Digest)
    );
    let sig = parse_ima_signature(&[3, 2, 4, 0, 0, 0, 1, 0, 1, 9]).unwrap();
    assert_eq!(sig.key_id, KeyId(1));
}
