//! What the end-to-end tests with real processes share: the accounts they start the server and
//! agents with, the API through `curl`, PCR extends into a swtpm, the server's certificate pin,
//! and a node's own endorsed EK.

use std::path::Path;
use std::process::Command;

use nodetrust_testkit::{tpm2, Swtpm};
use serde_json::{json, Value};

/// The admin account (`user:password`) the tests start the server with.
pub const ADMIN: &str = "admin:admin-pw";
/// The agents' own admin account.
pub const TA_USER: &str = "tagentadmin";
pub const TA_PASSWORD: &str = "ta-pw";

/// `curl -s -k` with `args`, JSON `body` when given: the status and the answer (JSON, or the
/// text as a JSON string when it is not JSON).
pub fn curl(args: &[&str], body: Option<&Value>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-k", "-w", "\n%{http_code}"]).args(args);
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "-d", &b.to_string()]);
    }
    let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string())),
    )
}

/// The server's API on `port`, as the admin.
pub fn api(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("https://127.0.0.1:{port}{path}");
    curl(&["-u", ADMIN, "-X", method, &url], body.as_ref())
}

/// Extends a built event's digests into its PCR of the swtpm.
pub fn extend_event(tpm: &Swtpm, e: &nodetrust_eventlog::build::BuiltEvent) {
    let digests: Vec<String> = e
        .digests
        .iter()
        .map(|(b, d)| format!("{}={}", b.name(), hex::encode(d)))
        .collect();
    tpm2::run(
        tpm,
        "tpm2_pcrextend",
        &[&format!("{}:{}", e.pcr, digests.join(","))],
    )
    .unwrap();
}

/// The pin (SHA-256 fingerprint) of the certificate a server wrote into its state directory.
pub fn server_pin(state_dir: &Path) -> String {
    let pem = std::fs::read(state_dir.join("server.crt")).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    nodetrust_server::tls::fingerprint(der.as_ref())
}

/// Gives a node's swtpm an EK of its own (every testkit swtpm is a copy of one manufactured
/// TPM; a host's identity is its EK): a new endorsement primary seed, so the EK certificate no
/// longer matches; then an admin endorses the new EK for the node's hardware UUID. `work` holds
/// the EK's files.
pub fn endorse_own_ek(tpm: &Swtpm, work: &Path, hardware_uuid: &str, port: u16) {
    let tcti = tpm.tcti();
    let run = |args: &[&str]| {
        let out = Command::new(args[0])
            .args(&args[1..])
            .env("TPM2TOOLS_TCTI", &tcti)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["tpm2_changeeps"]);
    let public = work.join("ek.pub");
    let ctx = work.join("ek.ctx");
    run(&[
        "tpm2_createek",
        "-G",
        "rsa",
        "-u",
        &public.display().to_string(),
        "-c",
        &ctx.display().to_string(),
    ]);
    let _ = Command::new("tpm2_flushcontext")
        .arg("-t")
        .env("TPM2TOOLS_TCTI", &tcti)
        .output();
    let ek = nodetrust_proto::b64::encode(&std::fs::read(&public).unwrap());
    let (s, v) = api(
        port,
        "POST",
        "/mtwilson/v2/tpm-endorsements",
        Some(json!({"ek_public": ek, "hardware_uuid": hardware_uuid})),
    );
    assert_eq!(s, 201, "{v}");
}
