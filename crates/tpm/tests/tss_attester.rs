//! [`TssAttester`] against a per-test swtpm: quotes verify, PCR reads beyond 8 PCRs, the AK
//! survives reopening and a TPM reboot, credential activation, and the plain-language errors
//! (wrong owner secret, missing TPM, disabled endorsement hierarchy, unallocated bank).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use nodetrust_testkit::{tpm2, Swtpm};
use nodetrust_tpm::auth::Secret;
use nodetrust_tpm::{AkAlgorithm, Attester, TpmError, TssAttester, TssConfig};
use nodetrust_tpm_wire::pcr::BankSelection;
use nodetrust_tpm_wire::{
    credential::make_credential, verify_quote, HashAlg, PcrSelection, Public,
};

fn config(tpm: &Swtpm, state: &std::path::Path) -> TssConfig {
    let mut c = TssConfig::new(tpm.tcti(), state);
    c.ak_algorithm = AkAlgorithm::EccP256;
    c
}

fn all_pcrs() -> PcrSelection {
    PcrSelection {
        banks: vec![
            BankSelection {
                hash: HashAlg::Sha256,
                pcrs: (0..24).collect(),
            },
            BankSelection {
                hash: HashAlg::Sha1,
                pcrs: vec![0, 1, 7, 17],
            },
        ],
    }
}

#[test]
fn quote_pcrs_activation_and_persistence() {
    let mut tpm = Swtpm::start().unwrap();
    tpm2::run(
        &tpm,
        "tpm2_pcrextend",
        &["7:sha256=0101010101010101010101010101010101010101010101010101010101010101"],
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let att = TssAttester::open(config(&tpm, state.path())).unwrap();

    let facts = att.facts().unwrap();
    assert!(facts.software, "swtpm is a software TPM");
    assert_eq!(facts.manufacturer, "IBM");
    assert_eq!(facts.pcr_banks, vec![HashAlg::Sha1, HashAlg::Sha256]);
    assert!(!facts.measured_launch, "PCR 17 is all-ones without a DRTM");

    // 24 + 4 PCRs: several PCR_Read commands of at most 8.
    let pcrs = att.pcr_read(&all_pcrs()).unwrap();
    assert_eq!(pcrs.len(), 28);
    assert_eq!(pcrs.get(HashAlg::Sha256, 17).unwrap(), &[0xff; 32][..]);
    assert_ne!(pcrs.get(HashAlg::Sha256, 7).unwrap(), &[0u8; 32][..]);

    let ak_bytes = att.ak_public().unwrap();
    let ak = Public::from_tpm2b(&ak_bytes).unwrap();
    let q = att.quote(b"fresh nonce", &all_pcrs()).unwrap();
    let v = verify_quote(&ak, &q.attest, &q.signature, &q.pcrs, b"fresh nonce").unwrap();
    assert_eq!(v.pcrs().len(), 28);
    assert_eq!(q.pcrs, pcrs);

    // Credential activation through the attester (policy session for the EK).
    let ek = att.ek().unwrap();
    assert!(
        ek.certificate
            .as_ref()
            .is_some_and(|c| c.first() == Some(&0x30)),
        "EK certificate from NV"
    );
    let ek_pub = Public::from_tpm2b(&ek.public).unwrap();
    let c = make_credential(&ek_pub, &ak.name(), b"registration secret").unwrap();
    assert_eq!(
        att.activate_credential(&c.blob, &c.encrypted_secret)
            .unwrap(),
        b"registration secret"
    );
    let wrong = make_credential(&ek_pub, &ek_pub.name(), b"x").unwrap();
    assert!(matches!(
        att.activate_credential(&wrong.blob, &wrong.encrypted_secret),
        Err(TpmError::CredentialRejected { .. })
    ));

    // Unallocated bank.
    let sha384 = PcrSelection {
        banks: vec![BankSelection {
            hash: HashAlg::Sha384,
            pcrs: vec![0],
        }],
    };
    assert!(matches!(
        att.pcr_read(&sha384),
        Err(TpmError::BankNotAllocated(_))
    ));

    // The AK survives closing and reopening, and a TPM reboot.
    drop(att);
    let att = TssAttester::open(config(&tpm, state.path())).unwrap();
    assert_eq!(att.ak_public().unwrap(), ak_bytes);
    drop(att);
    tpm.reboot().unwrap();
    let att = TssAttester::open(config(&tpm, state.path())).unwrap();
    assert_eq!(att.ak_public().unwrap(), ak_bytes);
    let q2 = att.quote(b"after reboot", &all_pcrs()).unwrap();
    let v2 = verify_quote(&ak, &q2.attest, &q2.signature, &q2.pcrs, b"after reboot").unwrap();
    assert_eq!(
        v2.attest().clock_info.reset_count,
        v.attest().clock_info.reset_count + 1
    );
    assert_eq!(
        q2.pcrs.get(HashAlg::Sha256, 7).unwrap(),
        &[0u8; 32][..],
        "PCRs reset by the reboot"
    );
}

#[test]
fn owner_secret() {
    let tpm = Swtpm::start().unwrap();
    tpm2::run(&tpm, "tpm2_changeauth", &["-c", "e", "hex:c0ffee"]).unwrap();
    tpm2::run(&tpm, "tpm2_changeauth", &["-c", "o", "hex:c0ffee"]).unwrap();
    let state = tempfile::tempdir().unwrap();

    let missing = TssAttester::open(config(&tpm, state.path())).unwrap_err();
    assert!(
        matches!(missing, TpmError::WrongOwnerSecret { .. }),
        "{missing}"
    );
    assert!(missing.to_string().contains("TPM_OWNER_SECRET"));

    let mut wrong = config(&tpm, state.path());
    wrong.owner_secret = Secret::parse("hex:badbad").unwrap();
    let e = TssAttester::open(wrong).unwrap_err();
    assert!(matches!(e, TpmError::WrongOwnerSecret { .. }), "{e}");
    assert_eq!(e.reason(), "tpm_wrong_owner_secret");

    let mut right = config(&tpm, state.path());
    right.owner_secret = Secret::parse("hex:c0ffee").unwrap();
    let att = TssAttester::open(right).unwrap();
    let ek = Public::from_tpm2b(&att.ek().unwrap().public).unwrap();
    let ak = Public::from_tpm2b(&att.ak_public().unwrap()).unwrap();
    let c = make_credential(&ek, &ak.name(), b"s").unwrap();
    assert_eq!(
        att.activate_credential(&c.blob, &c.encrypted_secret)
            .unwrap(),
        b"s"
    );
}

#[test]
fn owner_secret_is_ignored_when_the_tpm_has_none() {
    // The runbook's Secret always carries TPM_OWNER_SECRET; a TPM with cleared ownership has no
    // hierarchy auth, and the agent must still work.
    let tpm = Swtpm::start().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = config(&tpm, state.path());
    cfg.owner_secret = Secret::parse("77CDA6FA17733A236B8714CA2A1E51DFEBF894BF").unwrap();
    let att = TssAttester::open(cfg).unwrap();
    let ek = Public::from_tpm2b(&att.ek().unwrap().public).unwrap();
    let ak = Public::from_tpm2b(&att.ak_public().unwrap()).unwrap();
    let c = make_credential(&ek, &ak.name(), b"s").unwrap();
    assert_eq!(
        att.activate_credential(&c.blob, &c.encrypted_secret)
            .unwrap(),
        b"s"
    );
}

#[test]
fn missing_tpm() {
    let state = tempfile::tempdir().unwrap();
    for tcti in [
        "device:/dev/nodetrust-no-such-tpm",
        "swtpm:host=127.0.0.1,port=1",
    ] {
        let e = TssAttester::open(TssConfig::new(tcti, state.path())).unwrap_err();
        assert!(matches!(e, TpmError::NoDevice { .. }), "{tcti}: {e}");
        assert!(e.to_string().contains("Remedy"), "{e}");
    }
    let e = TssAttester::open(TssConfig::new("nonsense:", state.path())).unwrap_err();
    assert!(
        matches!(e, TpmError::InvalidInput(_) | TpmError::NoDevice { .. }),
        "{e}"
    );
}

#[test]
fn disabled_endorsement_hierarchy() {
    let tpm = Swtpm::start().unwrap();
    tpm2::run(
        &tpm,
        "tpm2_hierarchycontrol",
        &["-C", "p", "ehEnable", "clear"],
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let e = TssAttester::open(config(&tpm, state.path())).unwrap_err();
    assert!(matches!(e, TpmError::Disabled { .. }), "{e}");
}

#[test]
fn dictionary_attack_lockout() {
    let tpm = Swtpm::start().unwrap();
    tpm2::lock_out(&tpm).unwrap();
    let state = tempfile::tempdir().unwrap();
    let e = TssAttester::open(config(&tpm, state.path())).unwrap_err();
    assert!(matches!(e, TpmError::Lockout { .. }), "{e}");
    assert_eq!(e.reason(), "tpm_lockout");
    assert!(e.to_string().contains("tpm2_dictionarylockout"), "{e}");
}

/// swtpm on a fixed port, so a restart keeps the TCTI the running attester uses.
struct FixedPortTpm {
    child: std::process::Child,
    state: std::path::PathBuf,
    port: u16,
}

impl FixedPortTpm {
    fn start(state: &std::path::Path) -> Self {
        for _ in 0..20 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            if port >= 65000 || std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_err() {
                continue;
            }
            let mut t = Self {
                child: Self::spawn(state, port),
                state: state.to_path_buf(),
                port,
            };
            if t.wait_ready() {
                return t;
            }
            let _ = t.child.kill();
            let _ = t.child.wait();
        }
        panic!("cannot start swtpm on a free port pair");
    }

    fn spawn(state: &std::path::Path, port: u16) -> std::process::Child {
        std::process::Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .args([
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            ])
            .args([
                "--ctrl",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
            ])
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                std::thread::sleep(std::time::Duration::from_millis(100));
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    fn reboot(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.state, self.port);
        assert!(
            self.wait_ready(),
            "swtpm did not come back on port {}",
            self.port
        );
    }

    fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

impl Drop for FixedPortTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn running_attester_reconnects_after_a_tpm_reboot() {
    let manufactured = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tpm_state = dir.path().join("tpm");
    std::fs::create_dir_all(&tpm_state).unwrap();
    for entry in std::fs::read_dir(&manufactured.template().state).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tpm_state.join(entry.file_name())).unwrap();
    }
    let mut tpm = FixedPortTpm::start(&tpm_state);
    let mut cfg = TssConfig::new(tpm.tcti(), dir.path().join("agent"));
    cfg.ak_algorithm = AkAlgorithm::EccP256;
    let att = TssAttester::open(cfg).unwrap();
    let ak_bytes = att.ak_public().unwrap();
    let ak = Public::from_tpm2b(&ak_bytes).unwrap();
    let sel = PcrSelection {
        banks: vec![BankSelection {
            hash: HashAlg::Sha256,
            pcrs: vec![0, 7],
        }],
    };
    let before = att.quote(b"1", &sel).unwrap();
    let before = verify_quote(&ak, &before.attest, &before.signature, &before.pcrs, b"1").unwrap();

    tpm.reboot();
    let after = att.quote(b"2", &sel).unwrap();
    let after = verify_quote(&ak, &after.attest, &after.signature, &after.pcrs, b"2").unwrap();
    assert_eq!(
        att.ak_public().unwrap(),
        ak_bytes,
        "same AK after the reconnect"
    );
    assert_eq!(
        after.attest().clock_info.reset_count,
        before.attest().clock_info.reset_count + 1
    );
}

#[test]
fn ecc_endorsement_key() {
    let tpm = Swtpm::start().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = config(&tpm, state.path());
    cfg.ek_algorithm = Some(nodetrust_tpm::EkAlgorithm::EccP256);
    let att = TssAttester::open(cfg).unwrap();
    let ek = att.ek().unwrap();
    let ek_pub = Public::from_tpm2b(&ek.public).unwrap();
    assert_eq!(ek_pub.describe(), "ECC P-256");
    assert!(
        ek.certificate.is_none(),
        "swtpm stores no P-256 EK certificate"
    );
    let ak = Public::from_tpm2b(&att.ak_public().unwrap()).unwrap();
    let c = make_credential(&ek_pub, &ak.name(), b"ecc").unwrap();
    assert_eq!(
        att.activate_credential(&c.blob, &c.encrypted_secret)
            .unwrap(),
        b"ecc"
    );
    let sel = PcrSelection {
        banks: vec![BankSelection {
            hash: HashAlg::Sha1,
            pcrs: vec![0],
        }],
    };
    let q = att.quote(b"e", &sel).unwrap();
    verify_quote(&ak, &q.attest, &q.signature, &q.pcrs, b"e").unwrap();
}
