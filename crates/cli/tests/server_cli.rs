//! The Trust Server commands (`endorsement`, `hosts`, `flavor`, `attest`, `report`) as an
//! operator runs them: the built `nodetrust` binary against a real `nodetrust-server` served
//! over HTTPS from this process, with a software attester (a software TPM with its EK and AK,
//! a measured-boot log) registered through MakeCredential / ActivateCredential.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use nodetrust_eventlog::build::{image_load_event, LogBuilder};
use nodetrust_eventlog::types;
use nodetrust_proto::agent::{HostInfo, QuoteRequest, QuoteResponse};
use nodetrust_proto::registration::{ActivateRequest, RegisterRequest};
use nodetrust_server::agent_client::{AgentConnector, AgentError, AgentTarget, BoxFuture};
use nodetrust_server::clock::SystemClock;
use nodetrust_server::config::Config;
use nodetrust_server::store::Store;
use nodetrust_server::{app, registrar, run, tls, AppState};
use nodetrust_testkit::soft::SoftTpm;
use nodetrust_tpm_wire::HashAlg;
use serde_json::Value;

const ADMIN: (&str, &str) = ("admin", "admin-password");
const AGENT: (&str, &str) = ("agent", "agent-password");

/// A software agent: its TPM and the log of the boot extended into it.
#[derive(Debug)]
struct SoftAgent {
    tpm: SoftTpm,
    event_log: Vec<u8>,
}

impl SoftAgent {
    /// Boots firmware, shim, grub, kernel, initrd and a command line into a new software TPM.
    fn booted() -> Self {
        let mut tpm = SoftTpm::new().unwrap();
        tpm.reboot();
        let mut log = LogBuilder::crypto_agile(&[HashAlg::Sha1, HashAlg::Sha256]);
        log.measured(0, types::EV_POST_CODE, b"firmware v1", b"POST CODE");
        for pcr in 0..8 {
            log.measured(pcr, types::EV_SEPARATOR, &[0; 4], &[0; 4]);
        }
        for (path, image) in [
            ("\\EFI\\BOOT\\shimx64.efi", "shim 15.7"),
            ("\\EFI\\debian\\grubx64.efi", "grub 2.06"),
        ] {
            log.measured(
                4,
                types::EV_EFI_BOOT_SERVICES_APPLICATION,
                image.as_bytes(),
                &image_load_event(path, image.len() as u64),
            );
        }
        for (pcr, text) in [
            (8, "grub_cmd: set root=hd0,gpt2"),
            (8, "kernel_cmdline: /vmlinuz-6.1 root=/dev/sda2 ro"),
            (9, "/boot/vmlinuz-6.1"),
            (9, "/boot/initrd.img-6.1"),
        ] {
            log.measured(pcr, types::EV_IPL, text.as_bytes(), text.as_bytes());
        }
        for e in log.events() {
            for (bank, d) in &e.digests {
                tpm.extend(*bank, e.pcr as u8, d);
            }
        }
        Self {
            tpm,
            event_log: log.bytes(),
        }
    }

    fn answer(&mut self, req: &QuoteRequest) -> Result<QuoteResponse, AgentError> {
        let pcrs: BTreeSet<u8> = req.pcrs.iter().copied().collect();
        let sel: BTreeMap<HashAlg, BTreeSet<u8>> = req
            .pcrbanks
            .iter()
            .map(|b| (HashAlg::from_name(b).unwrap(), pcrs.clone()))
            .collect();
        let q = self
            .tpm
            .quote(&req.nonce, &sel)
            .map_err(AgentError::Malformed)?;
        Ok(QuoteResponse {
            quote: q.attest,
            signature: q.signature,
            aik: Some(self.tpm.ak_public().tpm2b_bytes()),
            pcrs: Some(nodetrust_proto::agent::Pcrs::from_value(q.pcrs.to_json()).unwrap()),
            pcr_digest: None,
            event_log: Some(self.event_log.clone()),
            event_log_sha256: None,
            ima_log: None,
        })
    }
}

/// The server's connector to agents: software agents by URL.
#[derive(Debug, Default)]
struct SoftAgents(Mutex<HashMap<String, Arc<Mutex<SoftAgent>>>>);

impl AgentConnector for SoftAgents {
    fn quote<'a>(
        &'a self,
        target: &'a AgentTarget,
        req: &'a QuoteRequest,
    ) -> BoxFuture<'a, Result<QuoteResponse, AgentError>> {
        let agent = self.0.lock().unwrap().get(&target.url).cloned();
        Box::pin(async move {
            match agent {
                Some(a) => a.lock().unwrap().answer(req),
                None => Err(AgentError::Connect("connection refused".into())),
            }
        })
    }
}

/// A Trust Server on 127.0.0.1 with a self-signed certificate, stopped when dropped.
struct Server {
    dir: tempfile::TempDir,
    url: String,
    pin: String,
    state: AppState,
    agents: Arc<SoftAgents>,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Server {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let agents = Arc::new(SoftAgents::default());
        let (state, addr, pin, stop) = runtime.block_on(async {
            let db = format!("sqlite://{}/server.db", dir.path().display());
            let store = Store::connect(&db).await.unwrap();
            let mut config = Config::for_tests(&db, dir.path().to_path_buf());
            config.admin_username = Some(ADMIN.0.into());
            config.admin_password = Some(ADMIN.1.into());
            config.agent_username = Some(AGENT.0.into());
            config.agent_password = Some(AGENT.1.into());
            let state = AppState::new(&config, store, Arc::new(SystemClock), agents.clone())
                .await
                .unwrap();
            let (certs, key) = tls::server_identity(None, None, dir.path()).unwrap();
            let pin = tls::fingerprint(certs[0].as_ref());
            let tls_config = tls::server_config(certs, key).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(run(listener, tls_config, app(state.clone()), async move {
                let _ = rx.await;
            }));
            (state, addr, pin, tx)
        });
        Self {
            url: format!("https://{addr}"),
            dir,
            pin,
            state,
            agents,
            runtime,
            stop: Some(stop),
        }
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    /// Registers a software agent the way the Trust Agent does: register, then activate the
    /// credential in its TPM.
    fn register(&self, name: &str, uuid: &str, agent: SoftAgent) {
        let url = format!("https://{name}.test:1443");
        let agent = Arc::new(Mutex::new(agent));
        self.agents
            .0
            .lock()
            .unwrap()
            .insert(url.clone(), agent.clone());
        let (ek_public, aik) = {
            let a = agent.lock().unwrap();
            (
                a.tpm.ek_public().tpm2b_bytes(),
                a.tpm.ak_public().tpm2b_bytes(),
            )
        };
        let req = RegisterRequest {
            host: HostInfo {
                host_name: name.into(),
                hardware_uuid: uuid.into(),
                os_name: "Debian GNU/Linux".into(),
                os_version: "12".into(),
                kernel_version: "6.1.0".into(),
                tpm_version: "2.0".into(),
                tpm_manufacturer: "SOFT".into(),
                tpm_firmware_version: "1.0".into(),
                pcr_banks: vec!["SHA1".into(), "SHA256".into()],
                measured_launch: false,
                secure_boot: Some(true),
                software_tpm: false,
                agent_version: "0.1.0".into(),
            },
            connection_url: url,
            tls_cert_sha256: "ab".repeat(32),
            ek_public,
            ek_certificate: None,
            aik,
            mode: Default::default(),
        };
        self.runtime.block_on(async {
            let challenge = registrar::register(&self.state, req).await.unwrap();
            let secret = agent
                .lock()
                .unwrap()
                .tpm
                .activate_credential(&challenge.credential_blob, &challenge.encrypted_secret)
                .unwrap();
            registrar::activate(
                &self.state,
                &challenge.challenge_id,
                ActivateRequest { secret },
            )
            .await
            .unwrap();
        });
    }

    /// `nodetrust ARGS` with the admin account and the server pinned, nothing else from the
    /// environment.
    fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(args, &[("NODETRUST_SERVER_PIN", self.pin.as_str())])
    }

    fn cli_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut c = base_command(args);
        c.env("NODETRUST_SERVER", &self.url)
            .env("NODETRUST_ADMIN_USERNAME", ADMIN.0)
            .env("NODETRUST_ADMIN_PASSWORD", ADMIN.1);
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    }
}

fn base_command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nodetrust"));
    c.args(args).env_clear();
    c
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects exit 0.
fn ok(o: Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    stdout(&o)
}

/// Runs with `--format json`, expects exit 0, parses stdout.
fn json(server: &Server, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    let o = server.cli(&a);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)))
}

fn write(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn an_operator_endorses_registers_imports_attests_and_deletes() {
    let server = Server::start();
    let gold = SoftAgent::booted();
    let ek = write(
        server.dir.path(),
        "ek.pub",
        &gold.tpm.ek_public().tpm2b_bytes(),
    );

    // endorsement add: the EK public area as tpm2_createek -u writes it.
    let out = ok(server.cli(&[
        "endorsement",
        "add",
        "--ek-public",
        &ek,
        "--hardware-uuid",
        "uuid-gold-1",
        "--comment",
        "gold machine",
    ]));
    assert!(out.starts_with("added endorsement "), "{out}");
    let listed = json(&server, &["endorsement", "list"]);
    let endorsements = listed["tpm_endorsements"].as_array().unwrap();
    assert_eq!(endorsements.len(), 1, "{listed}");
    let endorsement_id = endorsements[0]["id"].as_str().unwrap().to_string();
    assert!(out.contains(&endorsement_id), "{out}");
    assert_eq!(endorsements[0]["hardware_uuid"], "uuid-gold-1");
    assert_eq!(endorsements[0]["revoked"], false);
    let table = ok(server.cli(&["endorsement", "list"]));
    let row = table.lines().find(|l| l.contains(&endorsement_id)).unwrap();
    assert!(
        row.contains("uuid-gold-1") && row.contains("active") && row.contains("gold machine"),
        "{table}"
    );
    // The hardware UUID filter reaches the server.
    let other = json(
        &server,
        &["endorsement", "list", "--hardware-uuid", "uuid-other"],
    );
    assert_eq!(other["tpm_endorsements"].as_array().unwrap().len(), 0);
    // A file that is not an EK public area: exit 2, nothing sent.
    let junk = write(server.dir.path(), "junk.pub", b"\x00\x05hello");
    let bad = server.cli(&["endorsement", "add", "--ek-public", &junk]);
    assert_eq!(bad.status.code(), Some(2), "{}", show(&bad));
    assert!(
        stderr(&bad).contains("not a TPM public area"),
        "{}",
        show(&bad)
    );

    // The endorsed host registers (MakeCredential / ActivateCredential with its software TPM).
    server.register("gold-1", "uuid-gold-1", gold);
    let hosts = ok(server.cli(&["hosts", "list"]));
    let mut lines = hosts.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "VERDICT", "STATUS", "EXPIRES", "REASON"]);
    let row = lines.next().unwrap();
    assert!(row.starts_with("gold-1 "), "{hosts}");
    assert!(
        row.contains("unknown") && row.contains("pending"),
        "{hosts}"
    );
    assert!(row.contains("not attested yet"), "{hosts}");
    let listed = json(&server, &["hosts", "list"]);
    assert_eq!(listed["hosts"][0]["name"], "gold-1");
    assert_eq!(listed["hosts"][0]["trust"]["verdict"], "unknown");

    // No report before the first attestation: exit 1, saying so.
    let none = server.cli(&["report", "show", "gold-1"]);
    assert_eq!(none.status.code(), Some(1), "{}", show(&none));
    assert!(stderr(&none).contains("no report yet"), "{}", show(&none));

    // Flavors from the gold host, then it attests trusted.
    let out = ok(server.cli(&[
        "flavor",
        "import",
        "--from-host",
        "gold-1",
        "--parts",
        "platform,OS",
    ]));
    assert!(out.starts_with("imported 2 flavors from gold-1"), "{out}");
    assert!(out.contains("PLATFORM") && out.contains("OS"), "{out}");
    assert!(out.contains("sha256:4,8,9"), "{out}");
    let flavors = json(&server, &["flavor", "list"]);
    let flavors = flavors["flavors"].as_array().unwrap().clone();
    assert_eq!(flavors.len(), 2);
    let parts: BTreeSet<&str> = flavors
        .iter()
        .map(|f| f["part"].as_str().unwrap())
        .collect();
    assert_eq!(parts, BTreeSet::from(["OS", "PLATFORM"]));
    let table = ok(server.cli(&["flavor", "list"]));
    for f in &flavors {
        assert!(table.contains(f["id"].as_str().unwrap()), "{table}");
    }

    let out = ok(server.cli(&["attest", "gold-1", "--require-trusted"]));
    assert!(out.contains("host:           gold-1"), "{out}");
    assert!(out.contains("verdict:        trusted"), "{out}");
    let report = json(&server, &["attest", "gold-1"]);
    assert_eq!(report["verdict"], "trusted");
    assert_eq!(report["host_name"], "gold-1");
    assert!(report["signed_report"].as_str().unwrap().split('.').count() == 3);

    let out = ok(server.cli(&["report", "show", "gold-1"]));
    assert!(out.contains("verdict:        trusted"), "{out}");
    assert!(out.contains("expires:"), "{out}");
    let latest = json(&server, &["report", "show", "gold-1"]);
    let reports = latest["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["verdict"], "trusted");
    let history = json(&server, &["report", "show", "gold-1", "--all"]);
    assert_eq!(history["reports"].as_array().unwrap().len(), 2);
    let table = ok(server.cli(&["report", "show", "gold-1", "--all"]));
    assert_eq!(
        table.lines().filter(|l| l.contains("trusted")).count(),
        2,
        "{table}"
    );

    let out = ok(server.cli(&["hosts", "show", "gold-1"]));
    assert!(out.contains("verdict:        trusted"), "{out}");
    assert!(out.contains("hardware uuid:  uuid-gold-1"), "{out}");
    assert!(out.contains("status:         connected"), "{out}");
    let shown = json(&server, &["hosts", "show", "gold-1"]);
    assert_eq!(shown["trust"]["verdict"], "trusted");
    assert_eq!(shown["hardware_uuid"], "uuid-gold-1");
    let row = ok(server.cli(&["hosts", "list"]));
    assert!(
        row.lines().nth(1).unwrap().contains("trusted"),
        "hosts list after attestation:\n{row}"
    );

    // Without the OS flavor the host is no longer trusted; --require-trusted says so.
    let os = flavors.iter().find(|f| f["part"] == "OS").unwrap();
    let os_id = os["id"].as_str().unwrap();
    ok(server.cli(&["flavor", "delete", os_id]));
    assert_eq!(
        json(&server, &["flavor", "list"])["flavors"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let gone = server.cli(&["flavor", "delete", os_id]);
    assert_eq!(gone.status.code(), Some(1), "{}", show(&gone));
    assert!(stderr(&gone).contains("not_found"), "{}", show(&gone));
    let strict = server.cli(&["attest", "gold-1", "--require-trusted"]);
    assert_eq!(strict.status.code(), Some(1), "{}", show(&strict));
    assert!(
        stderr(&strict).contains("host gold-1 is "),
        "{}",
        show(&strict)
    );
    assert!(
        stdout(&strict).contains("verdict:        untrusted")
            || stdout(&strict).contains("verdict:        unknown"),
        "{}",
        show(&strict)
    );

    // Revoke the endorsement.
    let out = ok(server.cli(&["endorsement", "revoke", &endorsement_id]));
    assert!(out.contains(&endorsement_id), "{out}");
    let listed = json(&server, &["endorsement", "list"]);
    assert_eq!(listed["tpm_endorsements"][0]["revoked"], true);

    // Delete the host: then it is not found, exit 1 with the server's reason.
    ok(server.cli(&["hosts", "delete", "gold-1"]));
    let missing = server.cli(&["hosts", "show", "gold-1"]);
    assert_eq!(missing.status.code(), Some(1), "{}", show(&missing));
    assert!(
        stderr(&missing).contains("not_found") && stderr(&missing).contains("gold-1"),
        "{}",
        show(&missing)
    );
    let missing = server.cli(&["report", "show", "gold-1", "--format", "json"]);
    assert_eq!(missing.status.code(), Some(1), "{}", show(&missing));
    let body: Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert_eq!(body["reason"], "not_found", "{body}");
    let attest = server.cli(&["attest", "gold-1"]);
    assert_eq!(attest.status.code(), Some(1), "{}", show(&attest));
}

#[test]
fn credentials_trust_and_connection_failures_give_their_exit_codes() {
    let server = Server::start();
    let pin = server.pin.as_str();

    // The runbook's variables: a wrong password is the server's 401, exit 1.
    let o = server.cli_env(
        &["hosts", "list"],
        &[
            ("NODETRUST_SERVER_PIN", pin),
            ("NODETRUST_ADMIN_PASSWORD", "wrong"),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("unauthorized"), "{}", show(&o));
    assert!(
        !stderr(&o).contains("wrong"),
        "the password is printed: {}",
        show(&o)
    );
    let o = server.cli_env(
        &["hosts", "list", "--format", "json"],
        &[
            ("NODETRUST_SERVER_PIN", pin),
            ("NODETRUST_ADMIN_PASSWORD", "wrong"),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let body: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(body["reason"], "unauthorized");
    assert_eq!(body["status"], 401);

    // The agent account from MTWILSON_API_* (the ConfigMap and Secret): it may list
    // endorsements, as the runbook's probe does, but not hosts.
    let agent_env = |args: &[&str]| {
        let mut c = base_command(args);
        c.env("NODETRUST_SERVER", &server.url)
            .env("NODETRUST_SERVER_PIN", pin)
            .env("MTWILSON_API_USERNAME", AGENT.0)
            .env("MTWILSON_API_PASSWORD", AGENT.1);
        c.output().unwrap()
    };
    let o = agent_env(&["endorsement", "list", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let o = agent_env(&["hosts", "list"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("forbidden"), "{}", show(&o));
    // --user with the password from a file.
    let pw = write(server.dir.path(), "pw", format!("{}\n", ADMIN.1).as_bytes());
    let mut c = base_command(&["hosts", "list", "--user", ADMIN.0, "--password-file", &pw]);
    c.env("NODETRUST_SERVER", &server.url)
        .env("NODETRUST_SERVER_PIN", pin);
    ok(c.output().unwrap());
    // No account at all: exit 2 before any request.
    let mut c = base_command(&["hosts", "list"]);
    c.env("NODETRUST_SERVER", &server.url)
        .env("NODETRUST_SERVER_PIN", pin);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        stderr(&o).contains("NODETRUST_ADMIN_USERNAME"),
        "{}",
        show(&o)
    );

    // Where the server is: the runbook's MTWILSON_SERVER and MTWILSON_SERVER_PORT.
    let port = server.url.rsplit(':').next().unwrap();
    let mut c = base_command(&["hosts", "list", "--pin", pin]);
    c.env("MTWILSON_SERVER", "127.0.0.1")
        .env("MTWILSON_SERVER_PORT", port)
        .env("NODETRUST_ADMIN_USERNAME", ADMIN.0)
        .env("NODETRUST_ADMIN_PASSWORD", ADMIN.1);
    ok(c.output().unwrap());
    // ... and none: exit 2.
    let mut c = base_command(&["hosts", "list", "--pin", pin]);
    c.env("NODETRUST_ADMIN_USERNAME", ADMIN.0)
        .env("NODETRUST_ADMIN_PASSWORD", ADMIN.1);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains("no Trust Server given"), "{}", show(&o));

    // Trust: another pin is a TLS failure, exit 2, naming the certificate it saw.
    let wrong_pin = "00".repeat(32);
    let o = server.cli_env(&["hosts", "list", "--pin", &wrong_pin], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        stderr(&o).contains("TLS failure") && stderr(&o).contains(pin),
        "{}",
        show(&o)
    );
    // The server's certificate as the CA, by a name in it.
    let cert = server.cert_path();
    let localhost = server.url.replace("127.0.0.1", "localhost");
    let o = server.cli_env(
        &[
            "hosts",
            "list",
            "--server",
            &localhost,
            "--ca",
            cert.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    // A CA that did not issue it: exit 2.
    let other_dir = tempfile::tempdir().unwrap();
    tls::server_identity(None, None, other_dir.path()).unwrap();
    let other_ca = other_dir.path().join("server.crt");
    let o = server.cli_env(&["hosts", "list", "--ca", other_ca.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains("TLS failure"), "{}", show(&o));
    // No trust option and no system bundle holding it: exit 2.
    let o = server.cli_env(&["hosts", "list"], &[("SSL_CERT_FILE", "/nonexistent")]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    // --insecure works, with a warning.
    let o = server.cli_env(&["hosts", "list", "--insecure"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(stderr(&o).contains("warning: --insecure"), "{}", show(&o));

    // Nothing listening: unreachable, exit 2.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let o = server.cli_env(
        &["hosts", "list", "--server", &format!("https://{addr}")],
        &[("NODETRUST_SERVER_PIN", pin)],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains("server unreachable"), "{}", show(&o));
    // A bad URL and a bad pin are bad arguments.
    let o = server.cli_env(
        &["hosts", "list", "--server", "http://x:1", "--insecure"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = server.cli_env(&["hosts", "list", "--pin", "abc"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = server.cli_env(&["hosts", "list", "--pin", pin, "--insecure"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

#[test]
fn help_explains_the_server_commands() {
    let o = base_command(&["--help"]).output().unwrap();
    let top = ok(o);
    for cmd in ["hosts", "flavor", "report", "attest", "endorsement"] {
        assert!(top.contains(cmd), "{top}");
    }
    let o = base_command(&["endorsement", "add", "--help"])
        .output()
        .unwrap();
    let help = ok(o);
    for opt in [
        "--ek-public",
        "--certificate",
        "--hardware-uuid",
        "--comment",
        "--server",
        "--ca",
        "--pin",
        "--insecure",
        "--format",
        "NODETRUST_ADMIN_USERNAME",
        "MTWILSON_SERVER",
    ] {
        assert!(help.contains(opt), "{opt} missing from:\n{help}");
    }
    // Either --ek-public or --certificate is required.
    let o = base_command(&["endorsement", "add"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}
