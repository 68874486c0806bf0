//! The Trust Server administration commands: `hosts`, `flavor`, `report`, `attest`,
//! `endorsement`. Each makes one or two calls to the server's `/mtwilson/v2` API
//! ([`crate::client`]) and prints the answer: with `--format json` the server's JSON as it sent
//! it, otherwise tables and lines for a human.
//!
//! Exit codes: 0 the server did it; 1 the server answered with an error (its `reason` and
//! sentence are printed) or has nothing to show; 2 bad arguments, no connection, a TLS failure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use nodetrust_tpm_wire::Public;
use serde_json::{json, Value};

use crate::client::{encode, Answer, Client, ServerArgs};
use crate::output::{outln, printable, truncate};
use crate::CliError;

const API: &str = "/mtwilson/v2";

/// `nodetrust hosts ...`
#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// List registered hosts: NAME, VERDICT (trusted, untrusted, unknown), STATUS (pending,
    /// connected, unreachable), EXPIRES (when the verdict lapses to unknown), REASON (the first
    /// line of the first reason). Needs an admin or reader account.
    List(ServerOnly),
    /// Show one host: identity, agent URL, status, verdict with every reason, host facts.
    /// Needs an admin or reader account.
    Show(HostName),
    /// Delete a host (it must register again to be attested). Needs an admin account.
    Delete(HostName),
}

/// Only the connection options.
#[derive(Debug, Args)]
pub struct ServerOnly {
    #[command(flatten)]
    server: ServerArgs,
}

/// A host name and the connection options.
#[derive(Debug, Args)]
pub struct HostName {
    /// The host's name (the agent's --host-name, normally the Kubernetes node name).
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// A flavor part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Part {
    /// Firmware, Secure Boot, measured-launch ACM: PCRs 0-3, 5-7, 17.
    Platform,
    /// Boot loader and kernel: PCRs 4, 8, 9, 18, 19.
    Os,
    /// What differs per host (kernel command line, initrd): PCRs 8, 9, for that host only.
    HostUnique,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Self::Platform => "PLATFORM",
            Self::Os => "OS",
            Self::HostUnique => "HOST_UNIQUE",
        }
    }
}

/// `nodetrust flavor ...`
#[derive(Debug, Subcommand)]
pub enum FlavorCommand {
    /// Import flavors (the gold standard) from a registered host: the server asks its agent for
    /// a fresh quote and event log, verifies them, and stores one flavor per part with the PCR
    /// values and named event digests. Needs an admin account.
    Import(FlavorImport),
    /// List flavors: ID, PART, LABEL, SOURCE (the host it was imported from), PCRS. Needs an
    /// admin or reader account.
    List(ServerOnly),
    /// Delete a flavor by its ID. Needs an admin account.
    Delete(FlavorId),
}

/// `flavor import` arguments.
#[derive(Debug, Args)]
pub struct FlavorImport {
    /// The gold host's name.
    #[arg(long, value_name = "NAME")]
    from_host: String,
    /// Parts to import, comma-separated (case-insensitive). [default: PLATFORM,OS, the
    /// server's default]
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        ignore_case = true,
        value_name = "PARTS"
    )]
    parts: Vec<Part>,
    #[command(flatten)]
    server: ServerArgs,
}

/// A flavor ID and the connection options.
#[derive(Debug, Args)]
pub struct FlavorId {
    /// The flavor's ID (from `flavor list`).
    #[arg(value_name = "ID")]
    id: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// `nodetrust report ...`
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Show a host's latest trust report: verdict, reasons, when it was made and when it
    /// expires. With --all, its history, newest first. Exit 1 when the host is unknown or has
    /// no report yet. Needs an admin or reader account.
    Show(ReportShow),
}

/// `report show` arguments.
#[derive(Debug, Args)]
pub struct ReportShow {
    /// The host's name.
    #[arg(value_name = "NAME")]
    name: String,
    /// Show the report history instead of the latest report.
    #[arg(long)]
    all: bool,
    /// With --all: how many reports, newest first (the server allows 1-1000).
    #[arg(long, value_name = "N", default_value_t = 20, requires = "all")]
    limit: u32,
    /// Exit 1 unless the latest verdict is `trusted` (for scripts).
    #[arg(long, conflicts_with = "all")]
    require_trusted: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `attest` arguments.
#[derive(Debug, Args)]
pub struct AttestArgs {
    /// The host's name.
    #[arg(value_name = "NAME")]
    name: String,
    /// Exit 1 unless the new verdict is `trusted` (for scripts). Without it, any verdict is
    /// exit 0: read it from the output.
    #[arg(long)]
    require_trusted: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `nodetrust endorsement ...`
#[derive(Debug, Subcommand)]
pub enum EndorsementCommand {
    /// Accept an EK for registration: its public area, its certificate, or both (then they
    /// must be of the same key). Needs an admin account.
    Add(EndorsementAdd),
    /// List endorsements: ID, HARDWARE-UUID, EK-SHA256 (of the EK's SubjectPublicKeyInfo),
    /// STATE, CREATED, COMMENT. Any account may list (the agent account too).
    List(EndorsementList),
    /// Revoke an endorsement by its ID: hosts with that EK can no longer register. Needs an
    /// admin account.
    Revoke(EndorsementId),
}

/// `endorsement add` arguments.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("ek").required(true).multiple(true).args(["ek_public", "certificate"]))]
pub struct EndorsementAdd {
    /// The EK public area: TPM2B_PUBLIC or TPMT_PUBLIC bytes (`tpm2_createek -u`,
    /// `tpm2_readpublic -o`), or that as base64 text.
    #[arg(long, value_name = "FILE")]
    ek_public: Option<PathBuf>,
    /// The EK certificate: PEM or DER (`tpm2_getekcertificate -o`).
    #[arg(long, value_name = "FILE")]
    certificate: Option<PathBuf>,
    /// Accept the EK only for the host with this hardware UUID. [default: any host]
    #[arg(long, value_name = "UUID")]
    hardware_uuid: Option<String>,
    /// Free text kept with the endorsement (at most 1024 bytes).
    #[arg(long, value_name = "TEXT")]
    comment: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

/// `endorsement list` arguments.
#[derive(Debug, Args)]
pub struct EndorsementList {
    /// Only endorsements for this hardware UUID.
    #[arg(long, value_name = "UUID")]
    hardware_uuid: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

/// An endorsement ID and the connection options.
#[derive(Debug, Args)]
pub struct EndorsementId {
    /// The endorsement's ID (from `endorsement list`).
    #[arg(value_name = "ID")]
    id: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs `nodetrust hosts ...`.
pub fn run_hosts(c: HostsCommand) -> Result<(), CliError> {
    match c {
        HostsCommand::List(a) => {
            let client = Client::new(&a.server)?;
            let answer = client.get(&format!("{API}/hosts"))?;
            if a.server.json() {
                answer.print_raw();
                return Ok(());
            }
            let v = answer.json()?;
            let mut rows = vec![row(["NAME", "VERDICT", "STATUS", "EXPIRES", "REASON"])];
            for h in list(&v, "hosts")? {
                let trust = at(h, "trust");
                rows.push(vec![
                    text(at(h, "name")),
                    text(at(trust, "verdict")),
                    text(at(h, "status")),
                    text(at(trust, "expires_at")),
                    first_reason(at(trust, "reasons")),
                ]);
            }
            if rows.len() == 1 {
                outln!("no hosts registered");
            } else {
                print_table(&rows);
            }
            Ok(())
        }
        HostsCommand::Show(a) => {
            let client = Client::new(&a.server)?;
            let answer = client.get(&format!("{API}/hosts/{}", encode(&a.name)))?;
            if a.server.json() {
                answer.print_raw();
                return Ok(());
            }
            print_host(&answer.json()?);
            Ok(())
        }
        HostsCommand::Delete(a) => {
            let client = Client::new(&a.server)?;
            let answer = client.delete(&format!("{API}/hosts/{}", encode(&a.name)))?;
            if a.server.json() {
                print_or(&answer, json!({"name": a.name, "deleted": true}));
            } else {
                outln!("deleted host {}", a.name);
            }
            Ok(())
        }
    }
}

/// Runs `nodetrust flavor ...`.
pub fn run_flavor(c: FlavorCommand) -> Result<(), CliError> {
    match c {
        FlavorCommand::Import(a) => {
            let client = Client::new(&a.server)?;
            let mut body = serde_json::Map::new();
            body.insert("from_host".into(), json!(a.from_host));
            if !a.parts.is_empty() {
                let mut parts: Vec<&str> = a.parts.iter().map(|p| p.name()).collect();
                parts.dedup();
                body.insert("parts".into(), json!(parts));
            }
            let answer = client.post(&format!("{API}/flavors"), &Value::Object(body))?;
            if a.server.json() {
                answer.print_raw();
                return Ok(());
            }
            let v = answer.json()?;
            let flavors = list(&v, "flavors")?;
            outln!(
                "imported {} flavor{} from {}",
                flavors.len(),
                if flavors.len() == 1 { "" } else { "s" },
                a.from_host
            );
            print_flavors(flavors);
            Ok(())
        }
        FlavorCommand::List(a) => {
            let client = Client::new(&a.server)?;
            let answer = client.get(&format!("{API}/flavors"))?;
            if a.server.json() {
                answer.print_raw();
                return Ok(());
            }
            print_flavors(list(&answer.json()?, "flavors")?);
            Ok(())
        }
        FlavorCommand::Delete(a) => {
            let client = Client::new(&a.server)?;
            let answer = client.delete(&format!("{API}/flavors/{}", encode(&a.id)))?;
            if a.server.json() {
                print_or(&answer, json!({"id": a.id, "deleted": true}));
            } else {
                outln!("deleted flavor {}", a.id);
            }
            Ok(())
        }
    }
}

/// Runs `nodetrust report ...`.
pub fn run_report(c: ReportCommand) -> Result<(), CliError> {
    let ReportCommand::Show(a) = c;
    let client = Client::new(&a.server)?;
    let name = encode(&a.name);
    let query = if a.all {
        format!("{API}/reports?host_name={name}&limit={}", a.limit.max(1))
    } else {
        format!("{API}/reports?host_name={name}&latest=true")
    };
    let answer = client.get(&query)?;
    let v = answer.json()?;
    let reports = list(&v, "reports")?;
    if reports.is_empty() {
        // Unknown host (the server's 404 says so) or a host not attested yet.
        let host = client.get(&format!("{API}/hosts/{name}"))?.json()?;
        return Err(CliError::Server {
            status: 404,
            reason: "no_report".into(),
            message: format!(
                "host {} has no report yet (status {}); `nodetrust attest {}` attests it now",
                a.name,
                text(at(&host, "status")),
                a.name
            ),
            hint: None,
            json: a.server.json(),
        });
    }
    if a.server.json() {
        answer.print_raw();
    } else if a.all {
        let mut rows = vec![row(["CREATED", "VERDICT", "EXPIRES", "REASON"])];
        for r in reports {
            rows.push(vec![
                text(at(r, "created")),
                text(at(r, "verdict")),
                text(at(r, "expires")),
                first_reason(at(r, "reasons")),
            ]);
        }
        outln!("reports of {}, newest first:", a.name);
        print_table(&rows);
    } else if let Some(r) = reports.first() {
        print_report(r);
    }
    match reports.first() {
        Some(r) if a.require_trusted => require_trusted(r),
        _ => Ok(()),
    }
}

/// Runs `nodetrust attest NAME`.
pub fn run_attest(a: AttestArgs) -> Result<(), CliError> {
    let client = Client::new(&a.server)?;
    let answer = client.post(
        &format!("{API}/host-attestations"),
        &json!({"host_name": a.name}),
    )?;
    let v = answer.json()?;
    if a.server.json() {
        answer.print_raw();
    } else {
        print_report(&v);
    }
    if a.require_trusted {
        require_trusted(&v)
    } else {
        Ok(())
    }
}

/// Runs `nodetrust endorsement ...`.
pub fn run_endorsement(c: EndorsementCommand) -> Result<(), CliError> {
    match c {
        EndorsementCommand::Add(a) => {
            let mut body = serde_json::Map::new();
            if let Some(path) = &a.ek_public {
                body.insert("ek_public".into(), json!(read_ek_public(path)?));
            }
            if let Some(path) = &a.certificate {
                body.insert("certificate".into(), json!(read_certificate(path)?));
            }
            if let Some(u) = &a.hardware_uuid {
                body.insert("hardware_uuid".into(), json!(u));
            }
            if let Some(c) = &a.comment {
                body.insert("comment".into(), json!(c));
            }
            let client = Client::new(&a.server)?;
            let answer = client.post(&format!("{API}/tpm-endorsements"), &Value::Object(body))?;
            if a.server.json() {
                answer.print_raw();
                return Ok(());
            }
            let e = answer.json()?;
            outln!("added endorsement {}", text(at(&e, "id")));
            outln!("  ek sha256:     {}", text(at(&e, "ek_sha256")));
            outln!("  hardware uuid: {}", or_any(at(&e, "hardware_uuid")));
            if at(&e, "comment").is_string() {
                outln!("  comment:       {}", text(at(&e, "comment")));
            }
            Ok(())
        }
        EndorsementCommand::List(a) => {
            let client = Client::new(&a.server)?;
            let path = match &a.hardware_uuid {
                Some(u) => format!("{API}/tpm-endorsements?hardwareUuidEqualTo={}", encode(u)),
                None => format!("{API}/tpm-endorsements"),
            };
            let answer = client.get(&path)?;
            if a.server.json() {
                answer.print_raw();
                return Ok(());
            }
            let v = answer.json()?;
            let mut rows = vec![row([
                "ID",
                "HARDWARE-UUID",
                "EK-SHA256",
                "STATE",
                "CREATED",
                "COMMENT",
            ])];
            for e in list(&v, "tpm_endorsements")? {
                rows.push(vec![
                    text(at(e, "id")),
                    or_any(at(e, "hardware_uuid")),
                    text(at(e, "ek_sha256")),
                    if at(e, "revoked").as_bool().unwrap_or(false) {
                        "revoked".into()
                    } else {
                        "active".into()
                    },
                    at(e, "created")
                        .as_i64()
                        .map(rfc3339)
                        .unwrap_or_else(|| text(at(e, "created"))),
                    at(e, "comment")
                        .as_str()
                        .map(|c| c.lines().next().unwrap_or_default().to_string())
                        .unwrap_or_default(),
                ]);
            }
            if rows.len() == 1 {
                outln!("no endorsements");
            } else {
                print_table(&rows);
            }
            Ok(())
        }
        EndorsementCommand::Revoke(a) => {
            let client = Client::new(&a.server)?;
            let answer = client.delete(&format!("{API}/tpm-endorsements/{}", encode(&a.id)))?;
            if a.server.json() {
                print_or(&answer, json!({"id": a.id, "revoked": true}));
            } else {
                outln!("revoked endorsement {}", a.id);
            }
            Ok(())
        }
    }
}

fn read_file(path: &std::path::Path, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("cannot read {what} {}: {e}", path.display())))
}

/// The EK public area as base64, checked to be a TPM public area.
fn read_ek_public(path: &std::path::Path) -> Result<String, CliError> {
    let raw = read_file(path, "EK public area")?;
    let text = String::from_utf8_lossy(&raw);
    let bytes = if !raw.is_empty()
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=\r\n ".contains(b))
    {
        nodetrust_proto::b64::decode(text.split_whitespace().collect::<String>().as_str())
            .unwrap_or(raw.clone())
    } else {
        raw
    };
    Public::from_either(&bytes).map_err(|e| {
        CliError::Usage(format!(
            "{}: not a TPM public area (TPM2B_PUBLIC or TPMT_PUBLIC): {e}",
            path.display()
        ))
    })?;
    Ok(nodetrust_proto::b64::encode(&bytes))
}

/// The certificate as PEM text, or base64 of its DER.
fn read_certificate(path: &std::path::Path) -> Result<String, CliError> {
    let raw = read_file(path, "EK certificate")?;
    if raw.starts_with(b"-----BEGIN") || raw.windows(10).any(|w| w == b"-----BEGIN") {
        return String::from_utf8(raw)
            .map_err(|_| CliError::Usage(format!("{}: PEM that is not text", path.display())));
    }
    if raw.first() != Some(&0x30) {
        return Err(CliError::Usage(format!(
            "{}: neither a PEM nor a DER certificate",
            path.display()
        )));
    }
    Ok(nodetrust_proto::b64::encode(&raw))
}

/// Exit 1 (one line on stderr; stdout keeps the report alone) unless `report` is `trusted`.
fn require_trusted(report: &Value) -> Result<(), CliError> {
    let verdict = text(at(report, "verdict"));
    let reason = match verdict.as_str() {
        "trusted" => return Ok(()),
        "untrusted" => "untrusted",
        "unknown" => "unknown",
        _ => "not_trusted",
    };
    Err(CliError::Rejected {
        reason,
        message: format!(
            "host {} is {verdict}: {}",
            text(at(report, "host_name")),
            first_reason(at(report, "reasons"))
        ),
        json: false,
    })
}

/// The server's body when it sent one, else `fallback`.
fn print_or(answer: &Answer, fallback: Value) {
    if answer.body.is_empty() {
        outln!("{fallback}");
    } else {
        answer.print_raw();
    }
}

/// A member of a JSON object, `null` when absent.
fn at<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

/// The list `key` of an answer; an answer without it is the server's error (exit 1).
fn list<'a>(v: &'a Value, key: &str) -> Result<&'a [Value], CliError> {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| CliError::Server {
            status: 200,
            reason: "unexpected_answer".into(),
            message: format!(
                "the server's answer has no {key:?} list; is the URL that of a nodetrust Trust \
                 Server of this version?"
            ),
            hint: None,
            json: false,
        })
}

/// Longest value printed on a line of its own, in characters.
const MAX_LINE: usize = 4096;
/// Widest table cell, in characters (a SHA-256 in hex is 64).
const MAX_CELL: usize = 96;

/// A JSON value as text for a human: strings bare, absent as `-`, control characters replaced,
/// bounded in length.
fn text(v: &Value) -> String {
    let s = match v {
        Value::Null => "-".into(),
        Value::String(s) => truncate(s, MAX_LINE),
        other => truncate(&other.to_string(), MAX_LINE),
    };
    printable(&s, true)
}

fn or_any(v: &Value) -> String {
    if v.is_null() {
        "any".into()
    } else {
        text(v)
    }
}

fn first_reason(reasons: &Value) -> String {
    let first = reasons
        .as_array()
        .and_then(|r| r.first())
        .and_then(Value::as_str)
        .and_then(|s| s.lines().next())
        .unwrap_or("-");
    printable(&truncate(first, MAX_LINE), false)
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_string()).collect()
}

/// Prints rows as left-aligned columns; the last column is not padded. Every cell is shown on
/// one line and cut to [`MAX_CELL`] characters with an ellipsis, so a long field from the
/// server cannot break the table.
pub fn print_table(rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| truncate(&printable(c, false), MAX_CELL))
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = Vec::new();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            let w = c.chars().count();
            match widths.get_mut(i) {
                Some(x) => *x = (*x).max(w),
                None => widths.push(w),
            }
        }
    }
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                let w = widths.get(i).copied().unwrap_or(0);
                let pad = w.saturating_sub(c.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        outln!("{}", line.trim_end());
    }
}

fn print_reasons(reasons: &Value) {
    let list = reasons.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        outln!("reasons:        -");
        return;
    }
    outln!("reasons:");
    for r in list {
        let s = text(r);
        let mut lines = s.lines();
        outln!("  - {}", lines.next().unwrap_or_default());
        for l in lines {
            outln!("    {l}");
        }
    }
}

fn print_report(r: &Value) {
    outln!("host:           {}", text(at(r, "host_name")));
    outln!("verdict:        {}", text(at(r, "verdict")));
    outln!("created:        {}", text(at(r, "created")));
    outln!("expires:        {}", text(at(r, "expires")));
    print_reasons(at(r, "reasons"));
}

fn print_host(h: &Value) {
    let trust = at(h, "trust");
    outln!("name:           {}", text(at(h, "name")));
    outln!("hardware uuid:  {}", text(at(h, "hardware_uuid")));
    outln!("agent url:      {}", text(at(h, "connection_url")));
    match at(h, "status_detail") {
        Value::Null => outln!("status:         {}", text(at(h, "status"))),
        d => outln!("status:         {} ({})", text(at(h, "status")), text(d)),
    }
    outln!("verdict:        {}", text(at(trust, "verdict")));
    outln!("attested at:    {}", text(at(trust, "attested_at")));
    outln!("expires at:     {}", text(at(trust, "expires_at")));
    print_reasons(at(trust, "reasons"));
    outln!("registered:     {}", text(at(h, "registered")));
    outln!("agent tls cert: sha256 {}", text(at(h, "tls_cert_sha256")));
    let info = at(h, "host_info");
    if info.is_object() {
        outln!(
            "os:             {} {}, kernel {}",
            text(at(info, "os_name")),
            text(at(info, "os_version")),
            text(at(info, "kernel_version"))
        );
        outln!(
            "tpm:            {} {}, firmware {}, banks {}",
            text(at(info, "tpm_manufacturer")),
            text(at(info, "tpm_version")),
            text(at(info, "tpm_firmware_version")),
            at(info, "pcr_banks")
                .as_array()
                .map(|b| b.iter().map(text).collect::<Vec<_>>().join(","))
                .unwrap_or_else(|| "-".into())
        );
        outln!("agent version:  {}", text(at(info, "agent_version")));
    }
    if at(h, "software_tpm").as_bool() == Some(true) {
        outln!("software tpm:   yes (its evidence matches only flavors that allow it)");
    }
}

/// `sha256:0,4,7 sha1:0` from a flavor's rules.
fn flavor_pcrs(f: &Value) -> String {
    let mut banks: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for rule in at(f, "pcrs")
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if let (Some(bank), Some(i)) = (at(rule, "bank").as_str(), at(rule, "index").as_u64()) {
            banks.entry(bank.to_string()).or_default().push(i);
        }
    }
    banks
        .into_iter()
        .map(|(b, mut v)| {
            v.sort_unstable();
            v.dedup();
            let list: Vec<String> = v.iter().map(u64::to_string).collect();
            format!("{b}:{}", list.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_flavors(flavors: &[Value]) {
    if flavors.is_empty() {
        outln!("no flavors");
        return;
    }
    let mut rows = vec![row(["ID", "PART", "LABEL", "SOURCE", "PCRS"])];
    for f in flavors {
        let source = match (at(f, "source_host").as_str(), at(f, "host_name").as_str()) {
            (Some(s), Some(h)) if s != h => format!("{s} (for {h})"),
            (Some(s), _) => s.to_string(),
            (None, Some(h)) => format!("(for {h})"),
            (None, None) => "-".into(),
        };
        rows.push(vec![
            text(at(f, "id")),
            text(at(f, "part")),
            text(at(f, "label")),
            source,
            flavor_pcrs(f),
        ]);
    }
    print_table(&rows);
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds.
fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_083_200_000), "2026-12-01T00:00:00.000Z");
    }

    #[test]
    fn pcr_summary() {
        let f = json!({"pcrs": [
            {"bank": "sha256", "index": 7}, {"bank": "sha256", "index": 0},
            {"bank": "sha1", "index": 4}
        ]});
        assert_eq!(flavor_pcrs(&f), "sha1:4 sha256:0,7");
    }
}
