//! `nodetrust user add|list|passwd|delete` as an operator runs them: the built binary against
//! a real `nodetrust-server` served over HTTPS from this process (SQLite store). The new
//! password comes from a file or stdin, never from a command-line value, and never shows in
//! any output; the accounts it makes really authenticate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use nodetrust_proto::agent::{QuoteRequest, QuoteResponse};
use nodetrust_server::agent_client::{AgentConnector, AgentError, AgentTarget, BoxFuture};
use nodetrust_server::clock::SystemClock;
use nodetrust_server::config::Config;
use nodetrust_server::store::Store;
use nodetrust_server::{app, run, tls, AppState};
use serde_json::Value;

const ADMIN: (&str, &str) = ("admin", "admin-password");

#[derive(Debug)]
struct NoAgents;

impl AgentConnector for NoAgents {
    fn quote<'a>(
        &'a self,
        _: &'a AgentTarget,
        _: &'a QuoteRequest,
    ) -> BoxFuture<'a, Result<QuoteResponse, AgentError>> {
        Box::pin(async { Err(AgentError::Connect("no agents in this test".into())) })
    }
}

struct Server {
    dir: tempfile::TempDir,
    url: String,
    pin: String,
    _runtime: tokio::runtime::Runtime,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (addr, pin, stop) = runtime.block_on(async {
            let db = format!("sqlite://{}/server.db", dir.path().display());
            let store = Store::connect(&db).await.unwrap();
            let mut config = Config::for_tests(&db, dir.path().to_path_buf());
            config.admin_username = Some(ADMIN.0.into());
            config.admin_password = Some(ADMIN.1.into());
            let state = AppState::new(&config, store, Arc::new(SystemClock), Arc::new(NoAgents))
                .await
                .unwrap();
            let (certs, key) = tls::server_identity(None, None, dir.path()).unwrap();
            let pin = tls::fingerprint(certs[0].as_ref());
            let tls_config = tls::server_config(certs, key).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(run(listener, tls_config, app(state), async move {
                let _ = rx.await;
            }));
            (addr, pin, tx)
        });
        Self {
            url: format!("https://{addr}"),
            pin,
            dir,
            _runtime: runtime,
            _stop: stop,
        }
    }

    /// `nodetrust ARGS` as `user` (password from the environment), this server pinned.
    fn cli_as(&self, user: (&str, &str), args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nodetrust"));
        c.args(args)
            .env_clear()
            .env("NODETRUST_SERVER", &self.url)
            .env("NODETRUST_SERVER_PIN", &self.pin)
            .env("NODETRUST_ADMIN_USERNAME", user.0)
            .env("NODETRUST_ADMIN_PASSWORD", user.1);
        c
    }

    fn cli(&self, args: &[&str]) -> Command {
        self.cli_as(ADMIN, args)
    }
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs with `input` on stdin (a pipe, not a terminal).
fn with_stdin(mut c: Command, input: &str) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may refuse before reading stdin (a bad name): a closed pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

fn no_secret(o: &Output, secret: &str) {
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains(secret)
            && !String::from_utf8_lossy(&o.stderr).contains(secret),
        "a password was printed: {}",
        show(o)
    );
}

#[test]
fn admin_manages_accounts_with_passwords_never_on_the_command_line() {
    let server = Server::start();
    let reader_pw = "labeller-password-1";

    // add: the password from stdin (first line).
    let o = with_stdin(
        server.cli(&["user", "add", "labeller", "--role", "reader"]),
        &format!("{reader_pw}\nignored second line\n"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "added user labeller (role reader)"
    );
    no_secret(&o, reader_pw);
    // The account authenticates with exactly that password and has the reader role.
    let o = server
        .cli_as(("labeller", reader_pw), &["hosts", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let o = server
        .cli_as(("labeller", reader_pw), &["user", "list"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "a reader may not list accounts: {}",
        show(&o)
    );

    // add: the password from --new-password-file.
    let file = server.dir.path().join("agent.pw");
    std::fs::write(&file, "agent-account-password\n").unwrap();
    let o = server
        .cli(&[
            "user",
            "add",
            "node-agent",
            "--role",
            "agent",
            "--new-password-file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));

    // list: NAME ROLE CREATED, and the server's JSON.
    let o = server.cli(&["user", "list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "ROLE", "CREATED"], "{text}");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert!(
        rows.iter().any(|r| r[..2] == ["labeller", "reader"]),
        "{text}"
    );
    assert!(
        rows.iter().any(|r| r[..2] == ["node-agent", "agent"]),
        "{text}"
    );
    assert!(rows.iter().any(|r| r[..2] == ["admin", "admin"]), "{text}");
    no_secret(&o, reader_pw);
    let o = server
        .cli(&["user", "list", "--format", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["name"] == "labeller" && u["role"] == "reader"));

    // passwd: the old password stops working, the new one works.
    let new_pw = "labeller-password-2";
    let o = with_stdin(server.cli(&["user", "passwd", "labeller"]), new_pw);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    no_secret(&o, new_pw);
    let o = server
        .cli_as(("labeller", reader_pw), &["hosts", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("401"),
        "{}",
        show(&o)
    );
    let o = server
        .cli_as(("labeller", new_pw), &["hosts", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));

    // Server refusals: exit 1 with the server's reason.
    let o = with_stdin(
        server.cli(&["user", "add", "labeller", "--role", "admin"]),
        "another-long-password",
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("user_exists"),
        "{}",
        show(&o)
    );
    let o = server.cli(&["user", "delete", "admin"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("last_admin"),
        "{}",
        show(&o)
    );

    // delete, then again: not found.
    let o = server
        .cli(&["user", "delete", "labeller"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "deleted user labeller"
    );
    let o = server
        .cli_as(("labeller", new_pw), &["hosts", "list"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "a deleted account is refused: {}",
        show(&o)
    );
    let o = server
        .cli(&["user", "delete", "labeller"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not_found"),
        "{}",
        show(&o)
    );
}

#[test]
fn user_add_refuses_bad_passwords_and_names_before_sending() {
    // A server that records every request: nothing may reach it.
    let fake = common::FakeServer::start(|_| (201, b"{}".to_vec()));
    for (args, input) in [
        (vec!["user", "add", "bob", "--role", "reader"], "short\n"),
        (vec!["user", "add", "bob", "--role", "reader"], ""),
        (
            vec!["user", "add", "bad name!", "--role", "reader"],
            "a-long-enough-password\n",
        ),
        (vec!["user", "passwd", "bob"], "short"),
    ] {
        let o = with_stdin(fake.cli(&args), input);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", show(&o));
        no_secret(&o, "a-long-enough-password");
    }
    // There is no flag taking the password itself.
    let o = fake
        .cli(&[
            "user",
            "add",
            "bob",
            "--role",
            "reader",
            "--password",
            "a-long-enough-password",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    // What is sent: the contract of nodetrust_proto::users.
    let o = with_stdin(
        fake.cli(&["user", "add", "bob", "--role", "agent"]),
        "a-long-enough-password\r\n",
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let sent = fake.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].method.as_str(), sent[0].path.as_str()),
        ("POST", "/mtwilson/v2/users")
    );
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"name": "bob", "role": "agent", "password": "a-long-enough-password"})
    );
}
