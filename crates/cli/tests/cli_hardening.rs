//! The CLI never panics: not on a closed stdout (`| head -1`), not on any answer a server
//! sends (huge fields, wrong types, deep nesting, not JSON), and it tells a TLS trust failure
//! as what it is. The server here is a real HTTPS server on 127.0.0.1 answering what each test
//! makes it answer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::io::Read;
use std::process::{Command, Output, Stdio};

use common::FakeServer;
use nodetrust_eventlog::build::LogBuilder;
use nodetrust_eventlog::types;
use nodetrust_tpm_wire::HashAlg;
use serde_json::json;

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout ({} bytes):\n{}\nstderr:\n{}",
        o.status.code(),
        o.stdout.len(),
        String::from_utf8_lossy(&o.stdout)
            .chars()
            .take(2000)
            .collect::<String>(),
        String::from_utf8_lossy(&o.stderr)
            .chars()
            .take(4000)
            .collect::<String>()
    )
}

/// Runs `c` with stdout a pipe that is closed after the first bytes; returns (status, stderr).
fn run_with_closed_pipe(mut c: Command) -> (Option<i32>, String) {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    (status.code(), stderr)
}

#[test]
fn cli_closed_pipe_exits_quietly() {
    // `eventlog show` of a long log: megabytes of output.
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogBuilder::crypto_agile(&[HashAlg::Sha1, HashAlg::Sha256]);
    for i in 0..20_000u32 {
        let text = format!("event {i} of a long log");
        log.measured(8, types::EV_IPL, text.as_bytes(), text.as_bytes());
    }
    let path = dir.path().join("long.log");
    std::fs::write(&path, log.bytes()).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_nodetrust"));
    c.args(["eventlog", "show"]).arg(&path).env_clear();
    let (code, stderr) = run_with_closed_pipe(c);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(code, Some(101), "{stderr}");
    assert_eq!(
        code,
        Some(141),
        "a closed stdout ends quietly with 141: {stderr}"
    );
    assert!(
        stderr.is_empty(),
        "nothing is said about a closed pipe: {stderr}"
    );

    // A server command whose table is long (line by line output).
    let flavors: Vec<_> = (0..20_000)
        .map(|i| {
            json!({"id": format!("f-{i}"), "part": "OS", "label": format!("label {i}"),
                        "source_host": "gold", "pcrs": [{"bank": "sha256", "index": 4}]})
        })
        .collect();
    let body = serde_json::to_vec(&json!({ "flavors": flavors })).unwrap();
    let server = FakeServer::start(move |_| (200, body.clone()));
    let (code, stderr) = run_with_closed_pipe(server.cli(&["flavor", "list"]));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, Some(141), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// Runs `args` against a server answering `status` and `body`; the CLI must exit 0 or 1 and
/// never panic. Returns its output.
fn against(status: u16, body: Vec<u8>, args: &[&str]) -> Output {
    let server = FakeServer::start(move |_| (status, body.clone()));
    let o = server.cli(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{args:?}: {}", show(&o));
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "{args:?} {status}: {}",
        show(&o)
    );
    o
}

fn nested(depth: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(depth * 2 + 16);
    v.extend(b"{\"flavors\":");
    v.extend(std::iter::repeat_n(b'[', depth));
    v.extend(std::iter::repeat_n(b']', depth));
    v.push(b'}');
    v
}

#[test]
fn cli_survives_hostile_server_answers() {
    // A flavor label longer than 65,535 characters (the formatter's width limit): cut, with
    // an ellipsis, exit 0.
    let long = "L".repeat(70_000);
    let body = serde_json::to_vec(&json!({"flavors": [
        {"id": "f-1", "part": "OS", "label": long, "source_host": "gold",
         "pcrs": [{"bank": "sha256", "index": 4}]},
        {"id": "f-2", "part": "PLATFORM", "label": "short", "source_host": "gold", "pcrs": []}
    ]}))
    .unwrap();
    let o = against(200, body, &["flavor", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains('…'), "{}", show(&o));
    assert!(
        out.lines().all(|l| l.chars().count() < 1000),
        "{}",
        show(&o)
    );
    assert!(out.contains("f-2"), "{}", show(&o));

    // Terminal escapes in a field are not passed through.
    let body = serde_json::to_vec(&json!({"hosts": [
        {"name": "evil\u{1b}]0;owned\u{7}\u{1b}[2J", "hardware_uuid": "u\u{1b}[2J",
         "connection_url": "https://evil:1443", "status": "connected",
         "trust": {"verdict": "trusted", "reasons": ["a\nb"], "attested_at": null, "expires_at": null}}
    ]}))
    .unwrap();
    let o = against(200, body, &["hosts", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(!o.stdout.contains(&0x1b), "{}", show(&o));

    // Wrong types everywhere: no panic; the answer is refused as not what was expected.
    let body = serde_json::to_vec(&json!({"hosts": [
        1, "x", null, [], {"name": {"deep": [1, 2]}, "trust": "no", "status": 7}
    ]}))
    .unwrap();
    let o = against(200, body, &["hosts", "list"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not the JSON expected"),
        "{}",
        show(&o)
    );
    let body = serde_json::to_vec(&json!({"name": [], "trust": {"reasons": "r"},
        "host_info": {"pcr_banks": "x"}, "status_detail": {"a": 1}}))
    .unwrap();
    against(200, body, &["hosts", "show", "h"]);
    let body = serde_json::to_vec(&json!({"tpm_endorsements": [
        {"id": 1, "created": i64::MIN, "revoked": "yes", "comment": 5},
        {"created": i64::MAX, "comment": "x\n".repeat(100_000)}
    ]}))
    .unwrap();
    let o = against(200, body, &["endorsement", "list"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let body = serde_json::to_vec(&json!({"reports": [{"verdict": [], "reasons": {}}]})).unwrap();
    against(200, body, &["report", "show", "h"]);
    against(
        200,
        b"{\"verdict\": 5}".to_vec(),
        &["attest", "h", "--require-trusted"],
    );

    // An answer of the wrong shape: an error message, exit 1.
    for body in [
        b"{\"hosts\": \"nope\"}".to_vec(),
        b"[]".to_vec(),
        b"<html>gateway</html>".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x80],
        nested(100_000),
    ] {
        let o = against(200, body, &["hosts", "list"]);
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("the server"),
            "{}",
            show(&o)
        );
    }
    let o = against(200, nested(100_000), &["flavor", "list"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));

    // Errors: huge, not JSON, wrong types, control characters: exit 1 with a bounded line.
    for (status, body) in [
        (500, "E".repeat(3_000_000).into_bytes()),
        (503, b"<html>down</html>".to_vec()),
        (400, b"{\"error\": 5, \"reason\": []}".to_vec()),
        (
            409,
            serde_json::to_vec(
                &json!({"error": "x\u{1b}[31m".repeat(100_000), "reason": "r".repeat(100_000)}),
            )
            .unwrap(),
        ),
    ] {
        let o = against(status, body, &["hosts", "list"]);
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        assert!(o.stderr.len() < 10_000, "{}", show(&o));
        assert!(!o.stderr.contains(&0x1b), "{}", show(&o));
    }
}

#[test]
fn cli_reports_untrusted_server_cert_as_trust_failure() {
    let server = FakeServer::start(|_| (200, b"{\"hosts\": []}".to_vec()));
    // The server's own self-signed certificate as --ca is trusted.
    let o = server
        .cli(&["hosts", "list", "--ca", server.cert.to_str().unwrap()])
        .env_remove("NODETRUST_SERVER_PIN")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    // Another server's certificate: a trust failure, said as such, exit 2.
    let other = FakeServer::start(|_| (200, Vec::new()));
    let o = server
        .cli(&["hosts", "list", "--ca", other.cert.to_str().unwrap()])
        .env_remove("NODETRUST_SERVER_PIN")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("server certificate not trusted: "), "{err}");
    assert!(err.contains("remedy: give --ca"), "{err}");
    assert!(err.contains(&server.pin), "names what it saw: {err}");
    assert!(
        !err.contains("not answering") && !err.contains("unreachable"),
        "{err}"
    );
}
