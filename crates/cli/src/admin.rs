//! The Trust Server administration commands: `hosts`, `flavor`, `report`, `attest`,
//! `endorsement`. Each makes one or two calls to the server's `/mtwilson/v2` API
//! ([`crate::client`]) and prints the answer: with `--format json` the server's JSON as it sent
//! it, otherwise tables and lines for a human.
//!
//! Exit codes: 0 the server did it; 1 the server answered with an error (its `reason` and
//! sentence are printed) or has nothing to show; 2 bad arguments, no connection, a TLS failure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use nodetrust_appraise::{Flavor, FlavorPart};
use nodetrust_proto::trust::{rfc3339, Trust};
use nodetrust_proto::views::{
    self, EndorsementView, FlavorList, HostDetail, HostList, ReportList, ReportView,
};
use nodetrust_tpm_wire::Public;
use serde::de::DeserializeOwned;
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

/// A flavor part of `--parts` (case-insensitive).
fn parse_part(s: &str) -> Result<FlavorPart, String> {
    FlavorPart::parse(s).ok_or_else(|| {
        format!(
            "unknown flavor part {:?}: PLATFORM, OS, HOST_UNIQUE or RUNTIME",
            printable(&truncate(s, 64), false)
        )
    })
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
    /// Parts to import, comma-separated (case-insensitive): PLATFORM (firmware, Secure Boot,
    /// measured-launch ACM: PCRs 0-3, 5-7, 17), OS (boot loader and kernel: PCRs 4, 8, 9, 18,
    /// 19), HOST_UNIQUE (what differs per host: PCRs 8, 9, for that host only), RUNTIME
    /// (runtime integrity, PCR 10: a runtime policy learned from the host's IMA log, every file
    /// it measured up to the quote). [default: PLATFORM,OS, the server's default]
    #[arg(long, value_parser = parse_part, value_delimiter = ',', value_name = "PARTS")]
    parts: Vec<FlavorPart>,
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
            let list: HostList = decode(&answer)?;
            let mut rows = vec![row(["NAME", "VERDICT", "STATUS", "EXPIRES", "REASON"])];
            for h in &list.hosts {
                rows.push(vec![
                    line(&h.name),
                    h.trust.verdict.to_string(),
                    h.status.to_string(),
                    or_dash(h.trust.expires_at.as_deref()),
                    first_reason(&h.trust.reasons),
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
            print_host(&decode(&answer)?);
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
                let mut parts: Vec<&str> = a.parts.iter().map(|p| p.as_str()).collect();
                parts.dedup();
                body.insert("parts".into(), json!(parts));
            }
            let answer = client.post(&format!("{API}/flavors"), &Value::Object(body))?;
            if a.server.json() {
                answer.print_raw();
                return Ok(());
            }
            let FlavorList { flavors } = decode::<FlavorList<Flavor>>(&answer)?;
            outln!(
                "imported {} flavor{} from {}",
                flavors.len(),
                if flavors.len() == 1 { "" } else { "s" },
                a.from_host
            );
            print_flavors(&flavors);
            Ok(())
        }
        FlavorCommand::List(a) => {
            let client = Client::new(&a.server)?;
            let answer = client.get(&format!("{API}/flavors"))?;
            if a.server.json() {
                answer.print_raw();
                return Ok(());
            }
            print_flavors(&decode::<FlavorList<Flavor>>(&answer)?.flavors);
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
    let ReportList { reports } = decode(&answer)?;
    if reports.is_empty() {
        // Unknown host (the server's 404 says so) or a host not attested yet.
        let host: HostDetail = decode(&client.get(&format!("{API}/hosts/{name}"))?)?;
        return Err(CliError::Server {
            status: 404,
            reason: "no_report".into(),
            message: format!(
                "host {} has no report yet (status {}); `nodetrust attest {}` attests it now",
                a.name, host.status, a.name
            ),
            hint: None,
            json: a.server.json(),
        });
    }
    if a.server.json() {
        answer.print_raw();
    } else if a.all {
        let mut rows = vec![row(["CREATED", "VERDICT", "EXPIRES", "REASON"])];
        for r in &reports {
            rows.push(vec![
                line(&r.created),
                r.verdict.to_string(),
                line(&r.expires),
                first_reason(&r.reasons),
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
    let v: ReportView = decode(&answer)?;
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
            let e: EndorsementView = decode(&answer)?;
            outln!("added endorsement {}", line(&e.id));
            outln!("  ek sha256:     {}", line(&e.ek_sha256));
            outln!("  hardware uuid: {}", or_any(e.hardware_uuid.as_deref()));
            if let Some(c) = &e.comment {
                outln!("  comment:       {}", line(c));
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
            let list: views::EndorsementList = decode(&answer)?;
            let mut rows = vec![row([
                "ID",
                "HARDWARE-UUID",
                "EK-SHA256",
                "STATE",
                "CREATED",
                "COMMENT",
            ])];
            for e in &list.tpm_endorsements {
                rows.push(vec![
                    line(&e.id),
                    or_any(e.hardware_uuid.as_deref()),
                    line(&e.ek_sha256),
                    if e.revoked { "revoked" } else { "active" }.into(),
                    rfc3339(e.created),
                    e.comment
                        .as_deref()
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
fn require_trusted(report: &ReportView) -> Result<(), CliError> {
    if report.verdict == Trust::Trusted {
        return Ok(());
    }
    Err(CliError::Rejected {
        reason: report.verdict.as_str(),
        message: format!(
            "host {} is {}: {}",
            line(&report.host_name),
            report.verdict,
            first_reason(&report.reasons)
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

/// The answer as the typed view `T` ([`nodetrust_proto::views`]); an answer of another shape
/// is the server's error (exit 1).
fn decode<T: DeserializeOwned>(answer: &Answer) -> Result<T, CliError> {
    serde_json::from_slice(&answer.body).map_err(|e| CliError::Server {
        status: answer.status,
        reason: "unexpected_answer".into(),
        message: format!(
            "the server's answer is not the JSON expected ({e}); is the URL that of a nodetrust \
             Trust Server of this version?"
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

/// A string from the server as text for a human: control characters replaced, bounded.
fn line(s: &str) -> String {
    printable(&truncate(s, MAX_LINE), true)
}

/// [`line`], `-` when absent.
fn or_dash(s: Option<&str>) -> String {
    s.map_or_else(|| "-".into(), line)
}

/// [`line`], `any` when absent.
fn or_any(s: Option<&str>) -> String {
    s.map_or_else(|| "any".into(), line)
}

fn first_reason(reasons: &[String]) -> String {
    let first = reasons
        .first()
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

fn print_reasons(reasons: &[String]) {
    if reasons.is_empty() {
        outln!("reasons:        -");
        return;
    }
    outln!("reasons:");
    for r in reasons {
        let s = line(r);
        let mut lines = s.lines();
        outln!("  - {}", lines.next().unwrap_or_default());
        for l in lines {
            outln!("    {l}");
        }
    }
}

fn print_report(r: &ReportView) {
    outln!("host:           {}", line(&r.host_name));
    outln!("verdict:        {}", r.verdict);
    outln!("created:        {}", line(&r.created));
    outln!("expires:        {}", line(&r.expires));
    print_reasons(&r.reasons);
}

fn print_host(h: &HostDetail) {
    outln!("name:           {}", line(&h.name));
    outln!("hardware uuid:  {}", line(&h.hardware_uuid));
    outln!("agent url:      {}", line(&h.connection_url));
    match &h.status_detail {
        None => outln!("status:         {}", h.status),
        Some(d) => outln!("status:         {} ({})", h.status, line(d)),
    }
    outln!("verdict:        {}", h.trust.verdict);
    outln!(
        "attested at:    {}",
        or_dash(h.trust.attested_at.as_deref())
    );
    outln!("expires at:     {}", or_dash(h.trust.expires_at.as_deref()));
    print_reasons(&h.trust.reasons);
    outln!("registered:     {}", line(&h.registered));
    outln!("agent tls cert: sha256 {}", line(&h.tls_cert_sha256));
    let info = &h.host_info;
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
    if h.software_tpm {
        outln!("software tpm:   yes (its evidence matches only flavors that allow it)");
    }
}

/// `sha256:0,4,7 sha1:0` from a flavor's rules.
fn flavor_pcrs(f: &Flavor) -> String {
    let mut banks: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for rule in &f.pcrs {
        banks.entry(rule.bank.name()).or_default().push(rule.index);
    }
    banks
        .into_iter()
        .map(|(b, mut v)| {
            v.sort_unstable();
            v.dedup();
            let list: Vec<String> = v.iter().map(u8::to_string).collect();
            format!("{b}:{}", list.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_flavors(flavors: &[Flavor]) {
    if flavors.is_empty() {
        outln!("no flavors");
        return;
    }
    let mut rows = vec![row(["ID", "PART", "LABEL", "SOURCE", "PCRS"])];
    for f in flavors {
        let source = match (f.source_host.as_deref(), f.host_name.as_deref()) {
            (Some(s), Some(h)) if s != h => format!("{s} (for {h})"),
            (Some(s), _) => s.to_string(),
            (None, Some(h)) => format!("(for {h})"),
            (None, None) => "-".into(),
        };
        rows.push(vec![
            line(&f.id),
            f.part.to_string(),
            line(&f.label),
            source,
            flavor_pcrs(f),
        ]);
    }
    print_table(&rows);
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
        let f: Flavor = serde_json::from_value(json!({"label": "l", "part": "PLATFORM", "pcrs": [
            {"bank": "sha256", "index": 7}, {"bank": "sha256", "index": 0},
            {"bank": "sha1", "index": 4}
        ]}))
        .unwrap();
        assert_eq!(flavor_pcrs(&f), "sha1:4 sha256:0,7");
    }

    #[test]
    fn parts_parse_case_insensitively_and_unknown_ones_are_refused() {
        assert_eq!(parse_part("platform"), Ok(FlavorPart::Platform));
        assert_eq!(parse_part("HOST_UNIQUE"), Ok(FlavorPart::HostUnique));
        assert_eq!(parse_part("runtime"), Ok(FlavorPart::Runtime));
        assert!(parse_part("kernel")
            .unwrap_err()
            .contains("PLATFORM, OS, HOST_UNIQUE or RUNTIME"));
    }
}
