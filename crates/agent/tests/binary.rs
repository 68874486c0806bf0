//! The `nodetrust-agent` binary with the interface the acceptance checks use: flags and
//! environment names, `--help`, HTTPS with the generated certificate, the software-TPM warning,
//! restart after a crash (stale TPM objects flushed), and the documented startup errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nodetrust_agent::client::Client;
use nodetrust_agent::config::{parse_pin, Credentials, ServerTrust};
use nodetrust_agent::tls;
use nodetrust_proto::agent::{AikInfo, HostInfo, QuoteRequest, QuoteResponse, VersionInfo};
use nodetrust_testkit::{tpm2, Swtpm};

fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nodetrust-agent"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TRUSTAGENT_CONFIG", "/dev/null")
        .env("TRUSTAGENT_ADMIN_USERNAME", common::USER)
        .env("TRUSTAGENT_ADMIN_PASSWORD", common::PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Runs to completion (at most 60 s); returns (success, stderr).
fn finish(mut cmd: Command) -> (bool, String) {
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.success(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port below the kernel's ephemeral range ([`nodetrust_testkit::free_port`]).
fn free_port() -> u16 {
    nodetrust_testkit::free_port().unwrap()
}

async fn wait_for(client: &Client) -> VersionInfo {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.get::<VersionInfo>("/version").await {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("the agent never answered: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[test]
fn help_documents_every_setting() {
    let out = agent()
        .arg("--help")
        .stderr(Stdio::null())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for name in [
        "--tcti",
        "--listen",
        "--state-dir",
        "--eventlog",
        "--host-name",
        "--hardware-uuid",
        "--advertise-url",
        "--server-url",
        "--server-ca",
        "--tls-cert",
        "--tls-key",
        "TRUSTAGENT_ADMIN_USERNAME",
        "TRUSTAGENT_ADMIN_PASSWORD",
        "MTWILSON_API_USERNAME",
        "MTWILSON_API_PASSWORD",
        "MTWILSON_SERVER",
        "MTWILSON_SERVER_PORT",
        "server_url",
        "TPM_OWNER_SECRET",
        "0.0.0.0:1443",
        "/var/lib/nodetrust",
        "device:/dev/tpmrm0",
        "binary_bios_measurements",
    ] {
        assert!(help.contains(name), "--help does not mention {name}");
    }
}

#[test]
fn missing_tpm_and_missing_credentials_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = agent();
    cmd.args([
        "--tcti",
        "device:/dev/nodetrust-no-such-tpm",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
    ])
    .arg(dir.path());
    let (ok, err) = finish(cmd);
    assert!(!ok);
    assert!(
        err.contains("no TPM reachable") && err.contains("Remedy"),
        "{err}"
    );

    let mut cmd = agent();
    cmd.env_remove("TRUSTAGENT_ADMIN_PASSWORD")
        .args(["--tcti", "device:/dev/nodetrust-no-such-tpm"]);
    let (ok, err) = finish(cmd);
    assert!(!ok);
    assert!(err.contains("TRUSTAGENT_ADMIN_PASSWORD"), "{err}");
}

#[test]
fn wrong_owner_secret_is_explained() {
    let tpm = Swtpm::start().unwrap();
    tpm2::run(&tpm, "tpm2_changeauth", &["-c", "e", "hex:77cda6fa"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = agent();
    cmd.env("TPM_OWNER_SECRET", "hex:0badbad0")
        .env("TRUSTAGENT_TCTI", tpm.tcti())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--ak-algorithm",
            "ecc-p256",
            "--state-dir",
        ])
        .arg(dir.path());
    let (ok, err) = finish(cmd);
    assert!(!ok);
    assert!(err.contains("TPM_OWNER_SECRET is wrong"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_and_survives_a_crash() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    let start = || {
        let mut cmd = agent();
        cmd.env("TRUSTAGENT_TCTI", tpm.tcti())
            .env("TRUSTAGENT_STATE_DIR", &state)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--ak-algorithm",
                "ecc-p256",
                "--host-name",
                "worker-3",
            ])
            .args(["--hardware-uuid", "8c1e2a7e-0000-4000-8000-000000000003"]);
        Running(cmd.spawn().unwrap())
    };

    let mut first = start();
    let deadline = Instant::now() + Duration::from_secs(60);
    let cert = state.join("tls-cert.pem");
    while !cert.exists() {
        assert!(Instant::now() < deadline, "no certificate generated");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let der = rustls::pki_types::CertificateDer::from_pem_file(&cert).unwrap();
    use rustls::pki_types::pem::PemObject as _;
    let pin = parse_pin(&tls::fingerprint(der.as_ref())).unwrap();
    let admin = Credentials {
        username: common::USER.into(),
        password: common::PASSWORD.into(),
    };
    let client = Client::new(
        &format!("https://127.0.0.1:{port}"),
        tls::client_config(&ServerTrust::Pin(pin)).unwrap(),
        &admin,
    )
    .unwrap();

    assert_eq!(wait_for(&client).await.name, "nodetrust-agent");
    let host: HostInfo = client.get("/v2/host").await.unwrap();
    assert_eq!(host.host_name, "worker-3");
    assert_eq!(host.hardware_uuid, "8c1e2a7e-0000-4000-8000-000000000003");
    assert!(host.software_tpm);
    let aik: AikInfo = client.get("/v2/aik").await.unwrap();
    let q: QuoteResponse = client
        .post(
            "/v2/tpm/quote",
            &QuoteRequest {
                nonce: b"abc".to_vec(),
                pcrs: vec![0, 1, 2, 3],
                pcrbanks: vec!["SHA256".into()],
                ima_offset: None,
                known_event_log_sha256: None,
                known_pcr_digest: None,
                known_aik_name: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(q.aik, Some(aik.aik.clone()));

    // Crash (SIGKILL): the EK and AK stay loaded in swtpm, which has no resource manager. The
    // restarted agent flushes them and comes back with the same AK.
    first.0.kill().unwrap();
    let _ = first.0.wait();
    let mut err = String::new();
    first
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("SOFTWARE TPM"),
        "the software-TPM warning is logged: {err}"
    );
    assert!(
        err.contains(&tls::fingerprint(der.as_ref())),
        "the certificate fingerprint is logged"
    );
    assert!(!err.contains(common::PASSWORD), "no secret in the log");
    drop(first);

    let _second = start();
    wait_for(&client).await;
    let again: AikInfo = client.get("/v2/aik").await.unwrap();
    assert_eq!(
        again, aik,
        "same AK after a restart, same certificate (pin still matches)"
    );
}

#[test]
fn sigterm_stops_cleanly_and_frees_the_tpm() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let start = || {
        let mut cmd = agent();
        cmd.env("TRUSTAGENT_TCTI", tpm.tcti())
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--ak-algorithm",
                "ecc-p256",
                "--state-dir",
            ])
            .arg(dir.path());
        cmd.spawn().unwrap()
    };
    let wait_listening = || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut child = start();
    wait_listening();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("stopped"), "{err}");
    // The EK and AK were flushed: tpm2-tools sees no transient object left behind.
    let handles = tpm2::run(&tpm, "tpm2_getcap", &["handles-transient"]).unwrap();
    assert!(
        String::from_utf8_lossy(&handles.stdout).trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&handles.stdout)
    );
}

/// Fault: the TPM service restarts under a running agent (swtpm killed and started again on the
/// same state and port: PCRs reset, the agent's loaded EK and AK gone). The agent reconnects by
/// itself and answers quotes again with the same AK; no restart of the agent is needed.
#[tokio::test]
async fn swtpm_restarting_under_the_agent() {
    let mut tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    let mut cmd = agent();
    cmd.env("TRUSTAGENT_TCTI", tpm.tcti())
        .env("TRUSTAGENT_STATE_DIR", &state)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--host-name",
            "worker-9",
        ])
        .args(["--hardware-uuid", "8c1e2a7e-0000-4000-8000-000000000009"]);
    let _agent = Running(cmd.spawn().unwrap());
    let cert = state.join("tls-cert.pem");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cert.exists() {
        assert!(Instant::now() < deadline, "no certificate generated");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::from_pem_file(&cert).unwrap();
    let pin = parse_pin(&tls::fingerprint(der.as_ref())).unwrap();
    let admin = Credentials {
        username: common::USER.into(),
        password: common::PASSWORD.into(),
    };
    let client = Client::new(
        &format!("https://127.0.0.1:{port}"),
        tls::client_config(&ServerTrust::Pin(pin)).unwrap(),
        &admin,
    )
    .unwrap();
    wait_for(&client).await;
    let quote = || async {
        client
            .post::<_, QuoteResponse>(
                "/v2/tpm/quote",
                &QuoteRequest {
                    nonce: b"restart".to_vec(),
                    pcrs: vec![0, 1, 2, 3],
                    pcrbanks: vec!["SHA256".into()],
                    ima_offset: None,
                    known_event_log_sha256: None,
                    known_pcr_digest: None,
                    known_aik_name: None,
                },
            )
            .await
    };
    let before = quote().await.unwrap();

    tpm.restart_in_place().unwrap();
    // The first quote after the restart may fail while the agent notices and reconnects; it
    // must answer again by itself within a few tries.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        match quote().await {
            Ok(q) => break q,
            Err(e) => {
                assert!(Instant::now() < deadline, "the agent never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(
        after.aik, before.aik,
        "the same AK, reloaded from the state directory"
    );
    let reset = |q: &QuoteResponse| {
        nodetrust_tpm_wire::Attest::parse_quote(&q.quote)
            .unwrap()
            .clock_info
            .reset_count
    };
    assert!(
        reset(&after) > reset(&before),
        "the TPM really restarted (resetCount went up)"
    );
}
