//! Test harness: the server's router over a temporary SQLite store (or PostgreSQL), a clock the
//! test moves, and software agents (real quotes from a software TPM, real event logs) behind
//! the agent connector.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test; not every test uses every helper"
)]

pub mod e2e;
pub mod processes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt;
use nodetrust_eventlog::build::{image_load_event, LogBuilder};
use nodetrust_eventlog::types;
use nodetrust_proto::agent::{HostInfo, QuoteRequest, QuoteResponse};
use nodetrust_proto::b64;
use nodetrust_proto::registration::RegisterRequest;
use nodetrust_server::agent_client::{AgentConnector, AgentError, AgentTarget, BoxFuture};
use nodetrust_server::clock::ManualClock;
use nodetrust_server::config::Config;
use nodetrust_server::store::Store;
use nodetrust_server::{app, AppState};
use nodetrust_testkit::soft::SoftTpm;
use nodetrust_tpm_wire::{Attest, HashAlg};
use serde_json::{json, Value};
use tower::ServiceExt as _;

pub const ADMIN: (&str, &str) = ("admin", "admin-password");
pub const AGENT: (&str, &str) = ("agent", "agent-password");

/// One measured-boot event: PCR, type, what was measured, event data.
#[derive(Debug, Clone)]
pub struct BootEvent {
    pub pcr: u32,
    pub event_type: u32,
    pub measured: Vec<u8>,
    pub data: Vec<u8>,
}

pub fn app_event(pcr: u32, path: &str, image: &str) -> BootEvent {
    BootEvent {
        pcr,
        event_type: types::EV_EFI_BOOT_SERVICES_APPLICATION,
        measured: image.as_bytes().to_vec(),
        data: image_load_event(path, image.len() as u64),
    }
}

pub fn ipl(pcr: u32, text: &str) -> BootEvent {
    BootEvent {
        pcr,
        event_type: types::EV_IPL,
        measured: text.as_bytes().to_vec(),
        data: text.as_bytes().to_vec(),
    }
}

pub fn separator(pcr: u32) -> BootEvent {
    BootEvent {
        pcr,
        event_type: types::EV_SEPARATOR,
        measured: vec![0; 4],
        data: vec![0; 4],
    }
}

/// A gold boot: firmware, shim and grub, kernel and initrd, command line.
pub fn gold_boot(grub: &str) -> Vec<BootEvent> {
    let mut v = vec![BootEvent {
        pcr: 0,
        event_type: types::EV_POST_CODE,
        measured: b"firmware v1".to_vec(),
        data: b"POST CODE".to_vec(),
    }];
    for pcr in 0..8 {
        v.push(separator(pcr));
    }
    v.push(app_event(4, "\\EFI\\BOOT\\shimx64.efi", "shim 15.7"));
    v.push(app_event(4, "\\EFI\\debian\\grubx64.efi", grub));
    v.push(ipl(8, "grub_cmd: set root=hd0,gpt2"));
    v.push(ipl(8, "kernel_cmdline: /vmlinuz-6.1 root=/dev/sda2 ro"));
    v.push(ipl(9, "/boot/vmlinuz-6.1"));
    v.push(ipl(9, "/boot/initrd.img-6.1"));
    v
}

/// A software agent: a software TPM, its boot log, and switches for failure cases.
#[derive(Debug)]
pub struct SoftAgent {
    pub tpm: SoftTpm,
    pub host_name: String,
    pub hardware_uuid: String,
    pub url: String,
    pub event_log: Option<Vec<u8>>,
    pub down: bool,
    /// When set, answer with this (an old, captured answer) instead of quoting.
    pub replay: Option<QuoteResponse>,
    pub last: Option<QuoteResponse>,
    pub quotes: usize,
    /// When set, rewrites each answer before it is sent (a compromised agent).
    pub tamper: Option<Tamper>,
    /// Whether it answers as an agent that predates leaving out a log, PCR values and an AK
    /// the server holds (no `event_log_sha256`, no `pcr_digest`, all always sent); by default
    /// it leaves them out as the agent does.
    pub older_agent: bool,
    /// Quote requests that named a known event log.
    pub hinted: usize,
    /// Quote requests that named known PCR values.
    pub pcrs_hinted: usize,
}

/// A rewrite of a quote answer by a compromised agent: its TPM (to quote again), the request,
/// the honest answer; returns what is sent.
pub struct Tamper(pub Box<TamperFn>);

/// The function of a [`Tamper`].
pub type TamperFn = dyn FnMut(&mut SoftTpm, &QuoteRequest, QuoteResponse) -> QuoteResponse + Send;

impl Tamper {
    pub fn new(
        f: impl FnMut(&mut SoftTpm, &QuoteRequest, QuoteResponse) -> QuoteResponse + Send + 'static,
    ) -> Self {
        Self(Box::new(f))
    }
}

impl std::fmt::Debug for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tamper")
    }
}

impl SoftAgent {
    pub fn new(host_name: &str, hardware_uuid: &str) -> Self {
        Self {
            tpm: SoftTpm::new().unwrap(),
            host_name: host_name.into(),
            hardware_uuid: hardware_uuid.into(),
            url: format!("https://{host_name}.test:1443"),
            event_log: None,
            down: false,
            replay: None,
            last: None,
            quotes: 0,
            tamper: None,
            older_agent: false,
            hinted: 0,
            pcrs_hinted: 0,
        }
    }

    /// Reboots into `events`: PCRs reset, every event extended, the log recorded.
    pub fn boot(&mut self, events: &[BootEvent]) {
        self.tpm.reboot();
        let mut log = LogBuilder::crypto_agile(&[HashAlg::Sha1, HashAlg::Sha256]);
        for e in events {
            log.measured(e.pcr, e.event_type, &e.measured, &e.data);
        }
        for e in log.events() {
            for (bank, d) in &e.digests {
                self.tpm.extend(*bank, e.pcr as u8, d);
            }
        }
        self.event_log = Some(log.bytes());
    }

    pub fn host_info(&self) -> HostInfo {
        HostInfo {
            host_name: self.host_name.clone(),
            hardware_uuid: self.hardware_uuid.clone(),
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
        }
    }

    pub fn register_request(&self) -> RegisterRequest {
        RegisterRequest {
            host: self.host_info(),
            connection_url: self.url.clone(),
            tls_cert_sha256: "ab".repeat(32),
            ek_public: self.tpm.ek_public().tpm2b_bytes(),
            ek_certificate: None,
            aik: self.tpm.ak_public().tpm2b_bytes(),
            mode: Default::default(),
        }
    }

    fn answer(&mut self, req: &QuoteRequest) -> Result<QuoteResponse, AgentError> {
        if self.down {
            return Err(AgentError::Connect("connection refused".into()));
        }
        if let Some(r) = &self.replay {
            return Ok(r.clone());
        }
        let banks: Vec<HashAlg> = req
            .pcrbanks
            .iter()
            .map(|b| HashAlg::from_name(b).unwrap())
            .collect();
        let pcrs: BTreeSet<u8> = req.pcrs.iter().copied().collect();
        let sel: BTreeMap<HashAlg, BTreeSet<u8>> =
            banks.into_iter().map(|b| (b, pcrs.clone())).collect();
        let q = self
            .tpm
            .quote(&req.nonce, &sel)
            .map_err(AgentError::Malformed)?;
        let resp = QuoteResponse {
            quote: q.attest,
            signature: q.signature,
            aik: Some(self.tpm.ak_public().tpm2b_bytes()),
            pcrs: Some(nodetrust_proto::agent::Pcrs::from_value(q.pcrs.to_json()).unwrap()),
            pcr_digest: None,
            event_log: self.event_log.clone(),
            event_log_sha256: None,
            ima_log: None,
        };
        if req.known_event_log_sha256.is_some() {
            self.hinted += 1;
        }
        if req.known_pcr_digest.is_some() {
            self.pcrs_hinted += 1;
        }
        // As the agent does: the log's digest, and no log when the server holds it; the
        // quote's digest of the PCR values, and no values when the server holds them.
        let resp = match (&self.event_log, self.older_agent) {
            (Some(log), false) => {
                let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, log)
                    .as_ref()
                    .to_vec();
                QuoteResponse {
                    event_log: (!req.holds_event_log(&sha256)).then(|| log.clone()),
                    event_log_sha256: Some(sha256),
                    ..resp
                }
            }
            _ => resp,
        };
        let resp = if self.older_agent {
            resp
        } else {
            let digest = Attest::parse_quote(&resp.quote).unwrap().pcr_digest;
            let aik_name = self.tpm.ak_public().name();
            QuoteResponse {
                pcrs: resp.pcrs.filter(|_| !req.holds_pcrs(&digest)),
                pcr_digest: Some(digest),
                aik: resp.aik.filter(|_| !req.holds_aik(&aik_name)),
                ..resp
            }
        };
        let resp = match self.tamper.as_mut() {
            Some(t) => (t.0)(&mut self.tpm, req, resp),
            None => resp,
        };
        self.quotes += 1;
        self.last = Some(resp.clone());
        Ok(resp)
    }
}

/// Software agents by URL.
#[derive(Debug, Default)]
pub struct SoftAgents {
    agents: Mutex<HashMap<String, Arc<Mutex<SoftAgent>>>>,
}

impl SoftAgents {
    /// The agent of `host_name` (added with [`SoftAgents::add`]).
    pub fn get(&self, host_name: &str) -> Arc<Mutex<SoftAgent>> {
        self.agents
            .lock()
            .unwrap()
            .values()
            .find(|a| a.lock().unwrap().host_name == host_name)
            .cloned()
            .unwrap_or_else(|| panic!("no agent {host_name}"))
    }

    pub fn add(&self, agent: SoftAgent) -> Arc<Mutex<SoftAgent>> {
        let a = Arc::new(Mutex::new(agent));
        let url = a.lock().unwrap().url.clone();
        self.agents.lock().unwrap().insert(url, a.clone());
        a
    }
}

impl AgentConnector for SoftAgents {
    fn quote<'a>(
        &'a self,
        target: &'a AgentTarget,
        req: &'a QuoteRequest,
    ) -> BoxFuture<'a, Result<QuoteResponse, AgentError>> {
        let agent = self.agents.lock().unwrap().get(&target.url).cloned();
        Box::pin(async move {
            match agent {
                Some(a) => a.lock().unwrap().answer(req),
                None => Err(AgentError::Connect("no route to host".into())),
            }
        })
    }
}

/// Who calls.
#[derive(Debug, Clone, Copy)]
pub enum Auth {
    Admin,
    Agent,
    None,
    Basic(&'static str, &'static str),
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub db: String,
    pub state: AppState,
    pub app: Router,
    pub clock: Arc<ManualClock>,
    pub agents: Arc<SoftAgents>,
}

pub fn test_config(db: &str, dir: &std::path::Path) -> Config {
    let mut c = Config::for_tests(db, dir.to_path_buf());
    c.admin_username = Some(ADMIN.0.into());
    c.admin_password = Some(ADMIN.1.into());
    c.agent_username = Some(AGENT.0.into());
    c.agent_password = Some(AGENT.1.into());
    c.max_body = 64 * 1024;
    c
}

impl Harness {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/server.db", dir.path().display());
        Self::with_db(dir, db).await
    }

    pub async fn with_db(dir: tempfile::TempDir, db: String) -> Self {
        Self::with_config(dir, db, |_| {}).await
    }

    pub async fn with_config(
        dir: tempfile::TempDir,
        db: String,
        edit: impl FnOnce(&mut Config),
    ) -> Self {
        let clock = Arc::new(ManualClock::default());
        let agents = Arc::new(SoftAgents::default());
        let store = Store::connect(&db).await.unwrap();
        let mut config = test_config(&db, dir.path());
        edit(&mut config);
        let state = AppState::new(&config, store, clock.clone(), agents.clone())
            .await
            .unwrap();
        Self {
            app: app(state.clone()),
            dir,
            db,
            state,
            clock,
            agents,
        }
    }

    /// A new server process on the same database (agents and clock kept).
    pub async fn restart(&mut self) {
        let store = Store::connect(&self.db).await.unwrap();
        let state = AppState::new(
            &test_config(&self.db, self.dir.path()),
            store,
            self.clock.clone(),
            self.agents.clone(),
        )
        .await
        .unwrap();
        self.app = app(state.clone());
        self.state = state;
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        auth: Auth,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(path);
        let creds = match auth {
            Auth::Admin => Some(ADMIN),
            Auth::Agent => Some(AGENT),
            Auth::Basic(u, p) => Some((u, p)),
            Auth::None => None,
        };
        if let Some((u, p)) = creds {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            b = b.header("authorization", format!("Basic {token}"));
        }
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        let resp = self
            .app
            .clone()
            .oneshot(b.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Auth,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        match body {
            Some(v) => {
                self.raw(
                    method,
                    path,
                    auth,
                    Some("application/json"),
                    serde_json::to_vec(&v).unwrap(),
                )
                .await
            }
            None => self.raw(method, path, auth, None, Vec::new()).await,
        }
    }

    pub async fn endorse(&self, agent: &Arc<Mutex<SoftAgent>>) {
        let (ek, uuid) = {
            let a = agent.lock().unwrap();
            (
                b64::encode(&a.tpm.ek_public().tpm2b_bytes()),
                a.hardware_uuid.clone(),
            )
        };
        let (s, v) = self
            .call(
                "POST",
                "/mtwilson/v2/tpm-endorsements",
                Auth::Admin,
                Some(json!({"ek_public": ek, "hardware_uuid": uuid})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    /// Registration's first step: the agent's request; returns the answer (the challenge).
    pub async fn challenge(&self, agent: &Arc<Mutex<SoftAgent>>) -> (StatusCode, Value) {
        let req = agent.lock().unwrap().register_request();
        self.call(
            "POST",
            "/mtwilson/v2/hosts/register",
            Auth::Agent,
            Some(serde_json::to_value(&req).unwrap()),
        )
        .await
    }

    /// Registers an agent through both steps; returns the activation answer.
    pub async fn register(&self, agent: &Arc<Mutex<SoftAgent>>) -> (StatusCode, Value) {
        let (s, challenge) = self.challenge(agent).await;
        if s != StatusCode::OK {
            return (s, challenge);
        }
        let (path, body) = activation(agent, &challenge);
        self.call("POST", &path, Auth::Agent, Some(body)).await
    }

    /// Adds, endorses, boots and registers a software agent.
    pub async fn enrol(&self, name: &str, uuid: &str, boot: &[BootEvent]) -> Arc<Mutex<SoftAgent>> {
        let mut a = SoftAgent::new(name, uuid);
        a.boot(boot);
        let agent = self.agents.add(a);
        self.endorse(&agent).await;
        let (s, v) = self.register(&agent).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        agent
    }

    pub async fn attest(&self, name: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            "/mtwilson/v2/host-attestations",
            Auth::Admin,
            Some(json!({"host_name": name})),
        )
        .await
    }

    /// Imports flavors from the registered host `from_host` (every part it has); asserts the
    /// import was made.
    pub async fn import_flavors(&self, from_host: &str) {
        let (s, v) = self
            .call(
                "POST",
                "/mtwilson/v2/flavors",
                Auth::Admin,
                Some(json!({"from_host": from_host})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    /// Deletes flavor `id`; the answer's status.
    pub async fn delete_flavor(&self, id: &str) -> StatusCode {
        self.call(
            "DELETE",
            &format!("/mtwilson/v2/flavors/{id}"),
            Auth::Admin,
            None,
        )
        .await
        .0
    }

    pub async fn host(&self, name: &str) -> Value {
        let (s, v) = self
            .call(
                "GET",
                &format!("/mtwilson/v2/hosts/{name}"),
                Auth::Admin,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

/// Fills `challenges` of the database at `url` to its bound in all
/// (`store::MAX_CHALLENGES` open challenges, each of a hardware UUID of its own, open until
/// `expires`), as many machines registering at once, or another replica, would.
pub async fn fill_challenges(url: &str, expires: i64) {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(url).await.unwrap();
    let fill = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {}) \
         INSERT INTO challenges (id, secret_sha256, request, expires, hardware_uuid) \
         SELECT 'fill-' || i, '00', '{{}}', {expires}, 'flood-' || i FROM n",
        nodetrust_server::store::MAX_CHALLENGES,
    );
    sqlx::query(sqlx::AssertSqlSafe(fill))
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
}

/// A new empty database on the `NODETRUST_TEST_PG_URL` cluster (`make test` starts one), or
/// `None` when no cluster is configured.
pub async fn pg_database() -> Option<String> {
    use sqlx::Connection as _;
    let base = std::env::var("NODETRUST_TEST_PG_URL").ok()?;
    sqlx::any::install_default_drivers();
    let name = format!("nt_{}", nodetrust_server::store::new_id());
    let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    Some(format!("{prefix}/{name}"))
}

/// A private PostgreSQL cluster (initdb + pg_ctl, as user postgres when run as root) on a free
/// port, that a test can stop and start again under a running server. Stopped and removed on
/// drop.
pub struct PgCluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bindir: std::path::PathBuf,
}

impl PgCluster {
    /// Starts a new cluster; `None` when PostgreSQL is not installed.
    pub fn start() -> Option<Self> {
        let mut bindirs: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .collect();
        bindirs.sort_by_key(|b| {
            b.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        let bindir = bindirs.pop()?;
        let dir = tempfile::Builder::new()
            .prefix("nodetrust-pg-fault.")
            .tempdir()
            .unwrap();
        if is_root() {
            let ok = std::process::Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown postgres {}", dir.path().display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Self { dir, port, bindir };
        let data = c.data();
        c.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        c.start_again();
        Some(c)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let bin = self.bindir.join(tool);
        let mut cmd = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bin);
            c
        } else {
            std::process::Command::new(&bin)
        };
        let out = cmd.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the (stopped) cluster on the same data directory and port; waits until it
    /// accepts connections.
    pub fn start_again(&self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log, "-w", "-o", &opts, "start"],
        );
    }

    /// Stops the cluster at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop_immediate(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    /// A new empty database on the cluster; its URL.
    pub async fn new_database(&self) -> String {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        let name = format!("nt_{}", nodetrust_server::store::new_id());
        let base = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data();
        let bin = self.bindir.join("pg_ctl");
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if is_root() {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&bin)
                .args(args)
                .output()
        } else {
            std::process::Command::new(&bin).args(args).output()
        };
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Registration's second step for `agent`'s TPM: the activation's path and body answering
/// `challenge` (the first step's answer), the secret recovered by ActivateCredential.
pub fn activation(agent: &Arc<Mutex<SoftAgent>>, challenge: &Value) -> (String, Value) {
    let blob = b64::decode(challenge["credential_blob"].as_str().unwrap()).unwrap();
    let secret = b64::decode(challenge["encrypted_secret"].as_str().unwrap()).unwrap();
    let recovered = agent
        .lock()
        .unwrap()
        .tpm
        .activate_credential(&blob, &secret)
        .unwrap();
    let id = challenge["challenge_id"].as_str().unwrap();
    (
        format!("/mtwilson/v2/hosts/register/{id}/activate"),
        json!({"secret": b64::encode(&recovered)}),
    )
}

/// The payload of a report as an endpoint gives it (`signed_report`), which must verify with
/// `jwk` (the signing key's).
pub fn signed_payload(report: &Value, jwk: &Value) -> Value {
    let jws = report["signed_report"]
        .as_str()
        .expect("the report is signed");
    nodetrust_server::jws::verify(jws, jwk).expect("the report verifies with the signing key")
}

/// The reports of a `GET /mtwilson/v2/reports` answer without their signatures, each of which
/// must verify with `jwk` ([`signed_payload`]): the report endpoints sign a report as they give
/// it, and ES256 signatures are randomized, so two reads of one report differ only there.
pub fn unsigned_reports(list: &Value, jwk: &Value) -> Vec<Value> {
    let mut reports = list["reports"].as_array().unwrap().clone();
    for r in &mut reports {
        let payload = signed_payload(r, jwk);
        assert_eq!(payload["verdict"], r["verdict"], "{payload}");
        assert_eq!(payload["created"], r["created"], "{payload}");
        r.as_object_mut().unwrap().remove("signed_report");
    }
    reports
}

/// A pending host as registration stores it (made-up keys), for tests that fill the store
/// directly.
pub fn host_row(name: &str, uuid: &str, created: i64) -> nodetrust_server::store::HostRow {
    nodetrust_server::store::HostRow {
        name: name.into(),
        hardware_uuid: uuid.into(),
        connection_url: format!("https://{name}:1443"),
        tls_cert_sha256: "ab".repeat(32),
        ek_public: "ZWs=".into(),
        ak_public: "YWs=".into(),
        host_info: "{}".into(),
        software_tpm: true,
        status: nodetrust_proto::trust::HostStatus::Pending,
        status_detail: None,
        reset_count: None,
        restart_count: None,
        verdict: None,
        reasons: None,
        attested_at: None,
        expires_at: None,
        created,
    }
}
