//! The pages, as maud templates (every `(value)` is HTML-escaped).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use maud::{html, Markup, DOCTYPE};
use nodetrust_appraise::Flavor;
use nodetrust_proto::agent::HostInfo;
use nodetrust_proto::trust::{rfc3339, HostStatus, Trust, TrustAt};
use serde::Deserialize;

use crate::hostlist::ListedHost;
use crate::store::{HostRow, ReportRow};

/// Rows on one page of the fleet table.
pub const PAGE_SIZE: usize = 500;
/// Longest reason shown in the fleet table (the host page shows every reason in full).
const REASON_CHARS: usize = 200;

/// The fleet page's query string: `verdict`, `q` (a part of the name), `page` (from 1).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetQuery {
    /// Only hosts with this verdict (`trusted`, `untrusted`, `unknown`; empty: all).
    #[serde(default)]
    pub verdict: Option<String>,
    /// Only hosts whose name contains this (case-insensitive).
    #[serde(default)]
    pub q: Option<String>,
    /// The page, from 1.
    #[serde(default)]
    pub page: Option<usize>,
}

const VERDICTS: [Trust; 3] = [Trust::Untrusted, Trust::Unknown, Trust::Trusted];
const STATUSES: [HostStatus; 3] = [
    HostStatus::Connected,
    HostStatus::Unreachable,
    HostStatus::Pending,
];

fn rank(t: Trust) -> u8 {
    match t {
        Trust::Untrusted => 0,
        Trust::Unknown => 1,
        Trust::Trusted => 2,
    }
}

/// Percent-encodes one URL component (everything but unreserved characters).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn host_href(name: &str) -> String {
    format!("/ui/hosts/{}", enc(name))
}

fn time(ms: Option<i64>) -> String {
    ms.map(rfc3339).unwrap_or_else(|| "—".into())
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

fn layout(title: &str, nav: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · nodetrust" }
                link rel="stylesheet" href="/ui/assets/ui.css";
                script src="/ui/assets/ui.js" defer {}
            }
            body {
                header {
                    span.brand { "nodetrust" }
                    nav {
                        a href="/ui/" class=[(nav == "fleet").then_some("here")] { "Fleet" }
                        a href="/ui/flavors" class=[(nav == "flavors").then_some("here")] { "Flavors" }
                    }
                    span #live .live hidden { "live" }
                }
                main { (main) }
            }
        }
    }
}

fn badge(t: Trust) -> Markup {
    html! { span class={ "verdict v-" (t.as_str()) } { (t.as_str()) } }
}

/// Renders the fleet page for `hosts` at `now_ms` (a pure function: the benchmark times it).
/// With `labels` (the policy the embedded labeller runs with), a LABEL column shows the label
/// the labeller wants on each host's node.
pub fn fleet_page(
    hosts: &[Arc<ListedHost>],
    now_ms: i64,
    q: &FleetQuery,
    labels: Option<&nodetrust_labeller::Policy>,
) -> Markup {
    let want = q
        .verdict
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(|v| Trust::parse(v).ok_or(v));
    let needle =
        q.q.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase);
    let mut by_verdict: BTreeMap<u8, usize> = BTreeMap::new();
    let mut by_status: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut rows: Vec<(&HostRow, TrustAt)> = Vec::new();
    for listed in hosts {
        let h = &listed.row;
        let at = listed.trust.at(now_ms);
        *by_verdict.entry(rank(at.verdict)).or_default() += 1;
        *by_status.entry(h.status.as_str()).or_default() += 1;
        let keep = match want {
            None => true,
            Some(Ok(v)) => at.verdict == v,
            Some(Err(_)) => false,
        };
        if keep
            && needle
                .as_ref()
                .is_none_or(|n| h.name.to_lowercase().contains(n.as_str()))
        {
            rows.push((h, at));
        }
    }
    rows.sort_by(|a, b| {
        rank(a.1.verdict)
            .cmp(&rank(b.1.verdict))
            .then_with(|| a.0.name.cmp(&b.0.name))
    });
    let total = rows.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let shown = rows
        .get((page - 1) * PAGE_SIZE..total.min(page * PAGE_SIZE))
        .unwrap_or_default();
    let verdict_q = q.verdict.clone().unwrap_or_default();
    let name_q = q.q.clone().unwrap_or_default();
    let page_href = |p: usize| {
        format!(
            "/ui/?verdict={}&q={}&page={p}",
            enc(&verdict_q),
            enc(&name_q)
        )
    };
    let main = html! {
        h1 { "Fleet" }
        section.counts aria-label="hosts by verdict" {
            @for v in VERDICTS {
                a class={ "count v-" (v.as_str()) } href={ "/ui/?verdict=" (v.as_str()) } {
                    span.n { (by_verdict.get(&rank(v)).copied().unwrap_or(0)) }
                    " " (v.as_str())
                }
            }
            @for s in STATUSES {
                span class={ "count s-" (s.as_str()) } {
                    span.n { (by_status.get(s.as_str()).copied().unwrap_or(0)) }
                    " " (s.as_str())
                }
            }
            span.count { span.n { (hosts.len()) } " hosts" }
        }
        form.filter method="get" action="/ui/" {
            label { "Verdict "
                select name="verdict" {
                    option value="" selected[verdict_q.is_empty()] { "any" }
                    @for v in VERDICTS {
                        option value=(v.as_str()) selected[verdict_q == v.as_str()] { (v.as_str()) }
                    }
                }
            }
            label { " Name contains "
                input type="search" name="q" value=(name_q) maxlength="253";
            }
            " "
            button type="submit" { "Filter" }
            @if !verdict_q.is_empty() || !name_q.is_empty() {
                " " a href="/ui/" { "clear" }
            }
        }
        @if let Some(Err(bad)) = want {
            p.notice { "Unknown verdict " q { (bad) } ": use trusted, untrusted or unknown." }
        }
        p.summary {
            (total) " of " (hosts.len()) " hosts"
            @if pages > 1 { ", page " (page) " of " (pages) }
            " · as of " (rfc3339(now_ms))
        }
        table.fleet {
            thead { tr {
                th { "NODE" } th { "VERDICT" } th { "STATUS" }
                @if labels.is_some() {
                    th title="The trust label the labeller wants on the Kubernetes node now, by its policy (—: left as it is)" { "LABEL" }
                }
                th { "ATTESTED" } th { "EXPIRES" } th { "REASON" }
            } }
            tbody {
                @for (h, at) in shown {
                    tr class={ "r-" (at.verdict.as_str()) } {
                        td { a href=(host_href(&h.name)) { (h.name) } }
                        td { (badge(at.verdict)) }
                        td class={ "s-" (h.status.as_str()) } { (h.status.as_str()) }
                        @if let Some(policy) = labels {
                            td.label { (nodetrust_labeller::desired(Some(at), None, policy).label.unwrap_or("—")) }
                        }
                        td { (time(at.attested_at)) }
                        td { (time(at.expires_at)) }
                        td.reason {
                            @if let Some(r) = at.reasons.first() { (shorten(r, REASON_CHARS)) }
                            @if at.reasons.len() > 1 { " " span.more { "(+" (at.reasons.len() - 1) " more)" } }
                        }
                    }
                }
            }
        }
        @if pages > 1 {
            nav.pages aria-label="pages" {
                @if page > 1 { a href=(page_href(page - 1)) rel="prev" { "← previous" } " " }
                "page " (page) " of " (pages)
                @if page < pages { " " a href=(page_href(page + 1)) rel="next" { "next →" } }
            }
        }
    };
    layout("Fleet", "fleet", main)
}

/// What the host page shows.
#[derive(Debug)]
pub struct HostFacts<'a> {
    /// The host.
    pub host: &'a HostRow,
    /// Now.
    pub now_ms: i64,
    /// Its retained reports (any order).
    pub reports: &'a [ReportRow],
    /// Every flavor.
    pub flavors: &'a [Flavor],
    /// Its EK certificate's issuer and its last verified quote's PCR values.
    pub facts: &'a crate::store::HostFacts,
}

/// Whether `reasons` say that flavor `f` matched (appraisal's "PART: matches flavor "L" (ID)").
fn matched(reasons: &[String], f: &Flavor) -> bool {
    let id = format!("({})", f.id);
    reasons
        .iter()
        .any(|r| r.contains(": matches flavor ") && r.ends_with(&id))
}

/// What the current reasons say about flavor `f`: matched; not matched (a reason about its
/// part says why); or not reported (an untrusted verdict lists only what failed).
fn flavor_result(reasons: &[String], f: &Flavor) -> (&'static str, &'static str) {
    let part = format!("{}: ", f.part);
    if matched(reasons, f) {
        ("v-trusted", "matched")
    } else if reasons.iter().any(|r| r.starts_with(&part)) {
        ("v-untrusted", "not matched")
    } else {
        ("v-unknown", "not reported by the last verdict")
    }
}

fn pcr_list(f: &Flavor) -> String {
    let mut out = String::new();
    for r in &f.pcrs {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "{}:{}", r.bank.name(), r.index);
    }
    out
}

fn ak_name(h: &HostRow) -> Option<String> {
    let bytes = nodetrust_proto::b64::decode(&h.ak_public).ok()?;
    let public = nodetrust_tpm_wire::Public::from_either(&bytes).ok()?;
    Some(hex::encode(public.name()))
}

/// The host page.
pub fn host_page(f: &HostFacts<'_>) -> Markup {
    let h = f.host;
    let at = h.effective().at(f.now_ms);
    let info: Option<HostInfo> = serde_json::from_str(&h.host_info).ok();
    let relevant: Vec<&Flavor> = f
        .flavors
        .iter()
        .filter(|fl| {
            nodetrust_appraise::applies(
                fl,
                &nodetrust_appraise::HostContext {
                    host_name: &h.name,
                    software_tpm: h.software_tpm,
                },
            )
        })
        .collect();
    let main = html! {
        h1 { (h.name) " " (badge(at.verdict)) }
        p.summary {
            "Status " span class={ "s-" (h.status.as_str()) } { (h.status.as_str()) }
            " · attested " (time(at.attested_at)) " · expires " (time(at.expires_at))
            " · as of " (rfc3339(f.now_ms))
        }
        section {
            h2 { "Why" }
            ul.reasons {
                @for r in &at.reasons { li { (r) } }
            }
            @if let Some(d) = &h.status_detail { p { "Last agent error: " (d) } }
        }
        section {
            h2 { "Timeline" }
            (timeline(f.reports, f.now_ms))
        }
        section {
            h2 { "Flavors" }
            @if relevant.is_empty() {
                p { "No flavor applies to this host: it cannot be trusted until one is imported." }
            } @else {
                table {
                    thead { tr { th { "FLAVOR" } th { "PART" } th { "PCRS" } th { "RESULT" } } }
                    tbody {
                        @for fl in &relevant {
                            @let (class, result) = flavor_result(&at.reasons, fl);
                            tr {
                                td { (fl.label) }
                                td { (fl.part.to_string()) }
                                td { (pcr_list(fl)) }
                                td class=(class) { (result) }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "PCR values" }
            (pcr_values(f.facts.quoted_pcrs.as_ref()))
            @if let Some(i) = info.as_ref().filter(|i| !i.pcr_banks.is_empty()) {
                p.summary { "Banks allocated in the TPM: " (i.pcr_banks.join(", ")) "." }
            }
        }
        section {
            h2 { "Registration" }
            dl.facts {
                dt { "Registered" } dd { (rfc3339(h.created)) }
                dt { "Hardware UUID" } dd { (h.hardware_uuid) }
                dt { "Agent" } dd { (h.connection_url) }
                dt { "Agent TLS certificate (SHA-256)" } dd.mono { (h.tls_cert_sha256) }
                dt { "AK Name" } dd.mono { (ak_name(h).unwrap_or_else(|| "unreadable".into())) }
                dt { "EK certificate issuer" } dd.ek-issuer { (f.facts.ek_issuer.as_deref().unwrap_or("no EK certificate (endorsed by its public key)")) }
                @if let Some(i) = &info {
                    dt { "TPM vendor" } dd { (i.tpm_manufacturer) }
                    dt { "TPM firmware" } dd { (i.tpm_firmware_version) }
                    dt { "OS" } dd { (i.os_name) " " (i.os_version) " · kernel " (i.kernel_version) }
                    dt { "Secure Boot" } dd { (match i.secure_boot { Some(true) => "on", Some(false) => "off", None => "unknown" }) }
                }
                dt { "Software TPM" } dd { (if h.software_tpm { "yes (never trusted unless a flavor allows it)" } else { "no" }) }
            }
        }
    };
    layout(&h.name, "", main)
}

/// The last verified quote's PCR values, one table per bank.
fn pcr_values(quoted: Option<&crate::store::QuotedPcrs>) -> Markup {
    let Some(q) = quoted else {
        return html! { p { "No verified quote yet: PCR values are shown from a quote whose signature, nonce and AK were checked." } };
    };
    let Ok(values) = nodetrust_tpm_wire::PcrValues::from_json_value(&q.pcrs) else {
        return html! { p.notice { "The stored PCR values of the last verified quote are unreadable." } };
    };
    html! {
        p { "From the last verified quote, " (rfc3339(q.quoted_at)) " (the PCRs the flavors ask for; where one differs from a flavor, the reasons above say how)." }
        @if values.is_empty() {
            p { "That quote covered no PCR: no flavor asks for one." }
        }
        @for bank in values.banks() {
            table.pcrs data-bank=(bank.name()) {
                thead { tr { th { (bank.name()) " PCR" } th { "VALUE" } } }
                tbody {
                    @for (index, value) in values.bank(bank) {
                        tr { td.n { (index) } td.mono { (hex::encode(value)) } }
                    }
                }
            }
        }
    }
}

const SVG_W: f64 = 1000.0;
const SVG_H: f64 = 36.0;

/// The verdicts of `reports` over time, as SVG bands (an expired verdict is `unknown` from its
/// expiry to the next report).
fn timeline(reports: &[ReportRow], now_ms: i64) -> Markup {
    let mut rs: Vec<&ReportRow> = reports.iter().collect();
    rs.sort_by_key(|r| r.created);
    let Some(first) = rs.first() else {
        return html! { p.timeline-empty { "No reports retained." } };
    };
    let t0 = first.created;
    let span = (now_ms - t0).max(1) as f64;
    let x = |t: i64| (t.clamp(t0, now_ms) - t0) as f64 / span * SVG_W;
    let mut bands: Vec<(Trust, i64, i64)> = Vec::new();
    for (i, r) in rs.iter().enumerate() {
        let end = rs.get(i + 1).map_or(now_ms, |n| n.created).min(now_ms);
        let valid_to = if r.verdict == Trust::Unknown {
            end
        } else {
            r.expires.min(end)
        };
        if valid_to > r.created {
            bands.push((r.verdict, r.created, valid_to));
        }
        if end > valid_to.max(r.created) {
            bands.push((Trust::Unknown, valid_to.max(r.created), end));
        }
    }
    html! {
        svg.timeline role="img" viewBox={ "0 0 " (SVG_W) " " (SVG_H) } preserveAspectRatio="none"
            aria-label={ "verdicts from " (rfc3339(t0)) " to " (rfc3339(now_ms)) } {
            @for (v, a, b) in &bands {
                rect class={ "band b-" (v.as_str()) } x=(format!("{:.2}", x(*a)))  y="0"
                    width=(format!("{:.2}", (x(*b) - x(*a)).max(0.5))) height=(SVG_H) {
                    title { (v.as_str()) " from " (rfc3339(*a)) " to " (rfc3339(*b)) }
                }
            }
        }
        p.axis { span { (rfc3339(t0)) } span { (rs.len()) " reports" } span { (rfc3339(now_ms)) } }
        p.legend {
            span.key.b-trusted { "trusted" } " " span.key.b-untrusted { "untrusted" } " " span.key.b-unknown { "unknown" }
        }
    }
}

/// The flavors page: each flavor, and how many hosts its current verdict says match it.
pub fn flavors_page(flavors: &[Flavor], hosts: &[Arc<ListedHost>], now_ms: i64) -> Markup {
    let reasons: Vec<Vec<String>> = hosts.iter().map(|h| h.trust.at(now_ms).reasons).collect();
    let main = html! {
        h1 { "Flavors" }
        @if flavors.is_empty() {
            p { "No flavors yet: import them from a known-good host (nodetrust flavors import)." }
        } @else {
            table {
                thead { tr {
                    th { "LABEL" } th { "PART" } th { "PCRS" } th { "SOURCE HOST" } th { "FOR HOST" }
                    th title="Hosts whose current verdict matched this flavor" { "HOSTS MATCHING" }
                } }
                tbody {
                    @for f in flavors {
                        tr {
                            td { (f.label) }
                            td { (f.part.to_string()) }
                            td { (pcr_list(f)) }
                            td { (f.source_host.as_deref().unwrap_or("—")) }
                            td { (f.host_name.as_deref().unwrap_or("any")) }
                            td.n { (reasons.iter().filter(|r| matched(r, f)).count()) }
                        }
                    }
                }
            }
        }
    };
    layout("Flavors", "flavors", main)
}

/// The page for a host name that is not registered.
pub fn not_found(name: &str) -> Markup {
    layout(
        "No such host",
        "",
        html! {
            h1 { "No such host" }
            p { "No host named " q { (name) } " is registered. " a href="/ui/" { "Back to the fleet" } }
        },
    )
}
