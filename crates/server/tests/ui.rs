//! The fleet view (`/ui/`), in process: authentication, what the served HTML says (before any
//! script runs), escaping of hostile values, the Content-Security-Policy, paging, the PCR
//! values and EK certificate issuer of the host page, the LABEL column under the labeller's
//! policy, event streams ended by a graceful shutdown, the host list kept in memory across
//! replicas, and the benchmarks (ignored; see docs/PERFORMANCE.md "Fleet view").
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine as _;
use common::{app_event, gold_boot, Auth, Harness};
use http_body_util::BodyExt as _;
use nodetrust_proto::trust::{HostStatus, Trust};
use nodetrust_server::hostlist::ListedHost;
use nodetrust_server::store::{new_id, HostRow, ReportRow};
use nodetrust_server::ui::{fleet_page, FleetQuery};
use serde_json::json;
use tower::ServiceExt as _;

const READER: (&str, &str) = ("viewer", "viewer-password-1");
const HOSTILE_SCRIPT: &str = "<script>alert(1)</script>";
const HOSTILE_IMG: &str = "\"><img src=x onerror=alert(2)>";

async fn add_reader(h: &Harness) {
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/users",
            Auth::Admin,
            Some(json!({"name": READER.0, "password": READER.1, "role": "reader"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

async fn get(
    h: &Harness,
    path: &str,
    creds: Option<(&str, &str)>,
) -> (StatusCode, HeaderMap, String) {
    let mut b = Request::builder().method("GET").uri(path);
    if let Some((u, p)) = creds {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        b = b.header("authorization", format!("Basic {token}"));
    }
    let resp = h
        .app
        .clone()
        .oneshot(b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn page(h: &Harness, path: &str) -> String {
    let (s, headers, body) = get(h, path, Some(READER)).await;
    assert_eq!(s, StatusCode::OK, "{path}: {body}");
    assert_strict_page(path, &headers, &body);
    body
}

/// The CSP is strict and the page has no inline script, no inline style, no event handler
/// attribute, and nothing loaded from elsewhere.
fn assert_strict_page(path: &str, headers: &HeaderMap, body: &str) {
    let csp = headers
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{path}: no CSP"))
        .to_str()
        .unwrap();
    for d in [
        "default-src 'none'",
        "style-src 'self'",
        "script-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(d), "{path}: CSP {csp:?} lacks {d:?}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff");
    assert!(headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let lower = body.to_ascii_lowercase();
    // Every <script has a src (the embedded file) and nothing inside.
    let mut rest = lower.as_str();
    while let Some(i) = rest.find("<script") {
        let tag_end = rest[i..].find('>').unwrap() + i;
        let tag = &rest[i..=tag_end];
        assert!(
            tag.contains("src=\"/ui/assets/ui.js\""),
            "{path}: inline script {tag}"
        );
        assert!(
            rest[tag_end + 1..].starts_with("</script>"),
            "{path}: script with a body"
        );
        rest = &rest[tag_end..];
    }
    assert!(!lower.contains("<style"), "{path}: a style element");
    // Inside every tag (escaped text has no raw '<'): no style or event handler attribute.
    for (i, _) in lower.match_indices('<') {
        let tag = &lower[i..i + lower[i..].find('>').unwrap()];
        assert!(
            !tag.contains(" style="),
            "{path}: a style attribute in {tag}"
        );
        let handler = tag
            .split_whitespace()
            .any(|a| a.starts_with("on") && a.contains('='));
        assert!(!handler, "{path}: an event handler attribute in {tag}");
    }
    for attr in ["src=\"", "href=\"", "action=\""] {
        for (i, _) in lower.match_indices(attr) {
            let url = &lower[i + attr.len()..];
            assert!(
                url.starts_with('/') && !url.starts_with("//"),
                "{path}: an external resource {}",
                &url[..url.len().min(40)]
            );
        }
    }
}

fn row(name: &str, uuid: &str, verdict: Option<Trust>, reasons: &[&str], now: i64) -> HostRow {
    HostRow {
        name: name.into(),
        hardware_uuid: uuid.into(),
        connection_url: format!("https://{uuid}.invalid:9443"),
        tls_cert_sha256: "00".repeat(32),
        ek_public: String::new(),
        ak_public: String::new(),
        host_info: "{}".into(),
        software_tpm: true,
        status: if verdict.is_some() {
            HostStatus::Connected
        } else {
            HostStatus::Pending
        },
        status_detail: None,
        reset_count: None,
        restart_count: None,
        verdict,
        reasons: verdict.map(|_| serde_json::to_string(reasons).unwrap()),
        attested_at: verdict.map(|_| now - 1_000),
        expires_at: verdict.map(|_| now + 3_600_000),
        created: now - 10_000,
    }
}

/// A fleet of real hosts: `gold` (its flavors imported), `node-ok` (same boot: trusted),
/// `node-bad` (a boot application named like a script: untrusted), `node-new` (never attested).
async fn fleet() -> Harness {
    let h = Harness::new().await;
    add_reader(&h).await;
    h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/flavors",
            Auth::Admin,
            Some(json!({"from_host": "gold", "parts": ["PLATFORM", "OS"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    h.enrol("node-ok", "uuid-ok", &gold_boot("grub 2.06")).await;
    let mut bad = gold_boot("grub 2.06");
    bad.push(app_event(4, HOSTILE_SCRIPT, HOSTILE_IMG));
    h.enrol("node-bad", "uuid-bad", &bad).await;
    h.enrol("node-new", "uuid-new", &gold_boot("grub 2.06"))
        .await;
    for n in ["gold", "node-ok", "node-bad"] {
        let (s, v) = h.attest(n).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    h
}

#[tokio::test]
async fn ui_refuses_anonymous_and_admits_a_reader() {
    let h = Harness::new().await;
    add_reader(&h).await;
    for path in ["/ui/", "/ui/flavors", "/ui/hosts/x", "/ui/events"] {
        let (s, headers, _) = get(&h, path, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        assert!(headers.get("www-authenticate").is_some(), "{path}");
        assert!(headers.get("content-security-policy").is_some(), "{path}");
        let (s, _, _) = get(&h, path, Some((READER.0, "wrong-password-1"))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
    // The agent account is not a reader.
    let (s, _, _) = get(&h, "/ui/", Some(common::AGENT)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    page(&h, "/ui/").await;
    let (s, _, _) = get(&h, "/ui/", Some(common::ADMIN)).await;
    assert_eq!(s, StatusCode::OK);
    // No write actions: the UI answers GET only.
    let req = Request::builder()
        .method("POST")
        .uri("/ui/")
        .body(Body::empty())
        .unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn fleet_page_lists_every_host_and_verdict_untrusted_first() {
    let h = fleet().await;
    let body = page(&h, "/ui/").await;
    for (name, verdict) in [
        ("gold", "trusted"),
        ("node-ok", "trusted"),
        ("node-bad", "untrusted"),
        ("node-new", "unknown"),
    ] {
        let row_start = body
            .find(&format!(">{name}</a>"))
            .unwrap_or_else(|| panic!("{name} not listed:\n{body}"));
        let row = &body[row_start..row_start + body[row_start..].find("</tr>").unwrap()];
        assert!(row.contains(&format!(">{verdict}</span>")), "{name}: {row}");
    }
    let pos = |n: &str| body.find(&format!(">{n}</a>")).unwrap();
    assert!(
        pos("node-bad") < pos("node-new"),
        "untrusted before unknown"
    );
    assert!(pos("node-new") < pos("gold"), "unknown before trusted");
    assert!(pos("gold") < pos("node-ok"), "then by name");
    // Counts by verdict and status.
    assert!(
        body.contains("<span class=\"n\">2</span> trusted"),
        "{body}"
    );
    assert!(
        body.contains("<span class=\"n\">1</span> untrusted"),
        "{body}"
    );
    assert!(
        body.contains("<span class=\"n\">1</span> pending"),
        "{body}"
    );
    // The labeller does not run here: no LABEL column.
    assert!(!body.contains(">LABEL<"));
}

#[tokio::test]
async fn fleet_page_filters_by_verdict_and_name() {
    let h = fleet().await;
    let body = page(&h, "/ui/?verdict=untrusted").await;
    assert!(body.contains(">node-bad</a>"));
    assert!(!body.contains(">node-ok</a>") && !body.contains(">gold</a>"));
    let body = page(&h, "/ui/?q=NODE-").await;
    assert!(body.contains(">node-bad</a>") && body.contains(">node-ok</a>"));
    assert!(!body.contains(">gold</a>"));
    let body = page(&h, "/ui/?verdict=trusted&q=ok").await;
    assert!(body.contains(">node-ok</a>"));
    assert!(!body.contains(">node-bad</a>") && !body.contains(">gold</a>"));
    // A hostile filter value is shown as text.
    let body = page(&h, "/ui/?verdict=%3Cscript%3Ealert(1)%3C/script%3E").await;
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!body.contains(">node-ok</a>"));
    let (s, _, _) = get(&h, "/ui/?page=many", Some(READER)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn host_page_shows_every_reason_flavors_facts_and_timeline() {
    let h = fleet().await;
    h.clock.advance(std::time::Duration::from_secs(60));
    let (s, v) = h.attest("node-ok").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let body = page(&h, "/ui/hosts/node-ok").await;
    let api = h.host("node-ok").await;
    let reasons = api["trust"]["reasons"].as_array().unwrap();
    assert!(!reasons.is_empty());
    for r in reasons {
        let text = maud::html! { (r.as_str().unwrap()) }.into_string();
        assert!(
            body.contains(&format!("<li>{text}</li>")),
            "{text} missing:\n{body}"
        );
    }
    assert!(body.contains("<svg class=\"timeline\""), "{body}");
    assert!(body.contains("class=\"band b-trusted\""), "{body}");
    assert!(body.contains("2 reports"), "{body}");
    assert!(body.contains(">matched</td>"), "{body}");
    assert!(body.contains("AK Name"));
    assert!(body.contains("TPM vendor"));
    let body = page(&h, "/ui/hosts/node-bad").await;
    assert!(body.contains("class=\"band b-untrusted\""));
    assert!(body.contains(">not matched</td>"), "{body}");
    let (s, headers, body) = get(&h, "/ui/hosts/nobody", Some(READER)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_strict_page("/ui/hosts/nobody", &headers, &body);
}

/// A host's page lists the flavors that apply to it, by the appraiser's own rule: a RUNTIME
/// flavor made for one host is not listed on another's.
#[tokio::test]
async fn host_page_lists_only_the_flavors_that_apply_to_the_host() {
    let h = fleet().await;
    let policy = serde_json::to_value(nodetrust_appraise::runtime::RuntimePolicy::new()).unwrap();
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/flavors",
            Auth::Admin,
            Some(
                json!({"label": "runtime-of-node-bad", "part": "RUNTIME", "host_name": "node-bad",
                        "allow_software_tpm": true, "runtime": policy}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let own = page(&h, "/ui/hosts/node-bad").await;
    assert!(own.contains("runtime-of-node-bad"), "{own}");
    let other = page(&h, "/ui/hosts/node-ok").await;
    assert!(!other.contains("runtime-of-node-bad"), "{other}");
}

#[tokio::test]
async fn hostile_names_reasons_and_labels_are_shown_as_text() {
    let h = fleet().await;
    let now = h.state.now_ms();
    // A host name and reasons that no registration would accept, as a compromised or older
    // writer could have stored them.
    let hostile_name = format!("{HOSTILE_SCRIPT}{HOSTILE_IMG}");
    let r = row(
        &hostile_name,
        "uuid-hostile",
        Some(Trust::Untrusted),
        &[HOSTILE_SCRIPT, HOSTILE_IMG],
        now,
    );
    h.state.store.register_host(&r, now).await.unwrap();
    h.state
        .store
        .save_report(
            &ReportRow {
                id: new_id(),
                host_name: hostile_name.clone(),
                verdict: Trust::Untrusted,
                reasons: serde_json::to_string(&[HOSTILE_SCRIPT, HOSTILE_IMG]).unwrap(),
                created: now - 1000,
                expires: now + 3_600_000,
                hardware_uuid: String::new(),
                signed_report: String::new(),
            },
            true,
            None,
        )
        .await
        .unwrap();
    // A flavor whose label is a script.
    let (s, v) = h
        .call("GET", "/mtwilson/v2/flavors", Auth::Admin, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let mut f = v["flavors"][0].clone();
    f["label"] = json!(format!("{HOSTILE_SCRIPT}{HOSTILE_IMG}"));
    f.as_object_mut().unwrap().remove("id");
    let (s, v) = h
        .call("POST", "/mtwilson/v2/flavors", Auth::Admin, Some(f))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let encoded: String = hostile_name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let pages = [
        page(&h, "/ui/").await,
        page(&h, &format!("/ui/hosts/{encoded}")).await,
        page(&h, "/ui/hosts/node-bad").await,
        page(&h, "/ui/flavors").await,
    ];
    for (i, body) in pages.iter().enumerate() {
        assert!(
            !body.contains("<script>alert"),
            "page {i}: raw script\n{body}"
        );
        assert!(!body.contains("<img"), "page {i}: raw img\n{body}");
        assert!(
            body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "page {i}:\n{body}"
        );
    }
    // The hostile name is a link to its own page, percent-encoded.
    assert!(pages[0].contains(&format!("href=\"/ui/hosts/{encoded}\"")));
    // The boot application named like a script shows as text in node-bad's reasons.
    assert!(pages[2].contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(pages[3].contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"));
}

#[tokio::test]
async fn flavors_page_counts_matching_hosts() {
    let h = fleet().await;
    let body = page(&h, "/ui/flavors").await;
    let (_, v) = h
        .call("GET", "/mtwilson/v2/flavors", Auth::Admin, None)
        .await;
    let flavors = v["flavors"].as_array().unwrap();
    assert_eq!(flavors.len(), 2);
    for f in flavors {
        let label = f["label"].as_str().unwrap();
        let start = body.find(&format!("<td>{label}</td>")).unwrap();
        let row = &body[start..start + body[start..].find("</tr>").unwrap()];
        // gold and node-ok match; node-bad's OS part does not; node-new was never attested.
        let want = 2;
        assert!(
            row.contains(&format!("<td class=\"n\">{want}</td>")),
            "{label}: {row}"
        );
        assert!(row.contains(">gold</td>"), "{row}");
    }
}

/// A harness with a reader and 10,000 hosts: one in ten untrusted, one in ten never attested.
async fn ten_thousand() -> Harness {
    let h = Harness::new().await;
    add_reader(&h).await;
    let now = h.state.now_ms();
    let rows: Vec<HostRow> = (0..10_000)
        .map(|i| {
            let verdict = match i % 10 {
                0 => Some(Trust::Untrusted),
                1 => None,
                _ => Some(Trust::Trusted),
            };
            row(
                &format!("n{i:05}"),
                &format!("u{i:05}"),
                verdict,
                &["ok"],
                now,
            )
        })
        .collect();
    for r in &rows {
        h.state.store.register_host(r, now).await.unwrap();
    }
    // Verdicts, saved concurrently (the store batches them).
    for chunk in rows.chunks(1000) {
        futures_util::future::join_all(chunk.iter().filter_map(|r| {
            let verdict = r.verdict?;
            let report = ReportRow {
                id: new_id(),
                host_name: r.name.clone(),
                verdict,
                reasons: r.reasons.clone().unwrap(),
                created: now - 1000,
                expires: now + 3_600_000,
                hardware_uuid: String::new(),
                signed_report: String::new(),
            };
            let store = h.state.store.clone();
            Some(async move { store.save_report(&report, true, None).await.unwrap() })
        }))
        .await;
    }
    h
}

#[tokio::test]
async fn fleet_of_ten_thousand_is_paged() {
    let h = ten_thousand().await;
    let body = page(&h, "/ui/").await;
    let t = body.find("<tbody>").unwrap();
    assert_eq!(
        body.matches("<tr class=\"r-").count(),
        500,
        "{}",
        &body[t..t + 2000]
    );
    assert!(body.contains("page 1 of 20"));
    assert!(body.contains("<span class=\"n\">10000</span> hosts"));
    assert!(body.contains(">n00000</a>"), "untrusted first");
    let last = page(&h, "/ui/?page=20").await;
    assert_eq!(last.matches("<tr class=\"r-").count(), 500);
    assert!(last.contains(">n09999</a>"));
    let filtered = page(&h, "/ui/?verdict=untrusted&page=2").await;
    assert_eq!(filtered.matches("<tr class=\"r-untrusted\"").count(), 500);
    assert!(filtered.contains("page 2 of 2"));
}

/// The CPU cost of rendering the fleet page for 10,000 hosts (rows read, verdicts computed,
/// sorted, 500 rendered). Run with
/// `cargo test --release -p nodetrust-server --test ui -- --ignored --nocapture fleet_page_render_cost`.
#[test]
#[ignore = "benchmark: prints a figure"]
fn fleet_page_render_cost() {
    let now = 1_800_000_000_000;
    let hosts: Vec<Arc<ListedHost>> = (0..10_000)
        .map(|i| {
            let verdict = match i % 10 {
                0 => Some(Trust::Untrusted),
                1 => None,
                _ => Some(Trust::Trusted),
            };
            Arc::new(ListedHost::new(row(
                &format!("node-{i:05}.rack-{}.example", i % 40),
                &format!("u{i:05}"),
                verdict,
                &[
                    "PLATFORM: matches flavor \"gold PLATFORM\" (0123456789abcdef)",
                    "OS: matches flavor \"gold OS\" (fedcba9876543210)",
                ],
                now,
            )))
        })
        .collect();
    let q = FleetQuery::default();
    let policy = nodetrust_labeller::Policy::default();
    for _ in 0..3 {
        std::hint::black_box(fleet_page(&hosts, now, &q, Some(&policy)).into_string());
    }
    let runs = 20u32;
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..runs {
        bytes =
            std::hint::black_box(fleet_page(&hosts, now, &q, Some(&policy)).into_string()).len();
    }
    let per = started.elapsed() / runs;
    println!(
        "fleet page, 10000 hosts, 500 rows shown, labeller column on: {:.1} ms per render on one thread, {bytes} bytes",
        per.as_secs_f64() * 1000.0
    );
}

/// Process CPU time (user and system, every thread) so far, from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    // utime and stime (fields 14 and 15), in clock ticks of 1/100 s.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Renews `n` hosts of [`ten_thousand`] from `from` (same verdict, new times: no change-feed
/// row), as attestations that confirm a verdict do.
async fn renew(h: &Harness, from: usize, n: usize) {
    let now = h.state.now_ms();
    futures_util::future::join_all((from..from + n).filter_map(|i| {
        let i = i % 10_000;
        let verdict = match i % 10 {
            0 => Trust::Untrusted,
            1 => return None,
            _ => Trust::Trusted,
        };
        let report = ReportRow {
            id: new_id(),
            host_name: format!("n{i:05}"),
            verdict,
            reasons: "[\"ok\"]".into(),
            created: now,
            expires: now + 3_600_000,
            hardware_uuid: String::new(),
            signed_report: String::new(),
        };
        let store = h.state.store.clone();
        Some(async move { store.save_report(&report, true, None).await.unwrap() })
    }))
    .await;
}

/// The whole request for the fleet page (and the hosts API) of 10,000 hosts on SQLite, from
/// the host list kept in memory: authentication cached, the list caught up with the table
/// (change feed, renewals, check), verdicts computed, sorted, 500 rows rendered. Wall time
/// and process CPU time per request. Run with
/// `cargo test --release -p nodetrust-server --test ui -- --ignored --nocapture fleet_page_request_cost`.
#[tokio::test]
#[ignore = "benchmark: prints a figure"]
async fn fleet_page_request_cost() {
    let h = ten_thousand().await;
    let started = Instant::now();
    page(&h, "/ui/").await;
    let cold = started.elapsed();
    let runs = 20u32;
    let (mut wall, mut cpu) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..runs {
        let (w, c) = (Instant::now(), cpu_time());
        let (s, _, body) = get(&h, "/ui/", Some(READER)).await;
        (wall, cpu) = (wall + w.elapsed(), cpu + (cpu_time() - c));
        assert_eq!(s, StatusCode::OK);
        std::hint::black_box(body);
    }
    let (idle_wall, idle_cpu) = (wall / runs, cpu / runs);
    // One request a second while 10,000 hosts are attested every 60 s (167 a second): the
    // clock moves a second between requests, and 167 hosts are renewed.
    let (mut wall, mut cpu) = (Duration::ZERO, Duration::ZERO);
    let rows_before = h.state.host_list.stats().rows_read;
    for i in 0..runs as usize {
        h.clock.advance(Duration::from_secs(1));
        renew(&h, i * 167, 167).await;
        let (w, c) = (Instant::now(), cpu_time());
        let (s, _, body) = get(&h, "/ui/", Some(READER)).await;
        (wall, cpu) = (wall + w.elapsed(), cpu + (cpu_time() - c));
        assert_eq!(s, StatusCode::OK);
        std::hint::black_box(body);
    }
    let rows_per = (h.state.host_list.stats().rows_read - rows_before) / u64::from(runs);
    let (busy_wall, busy_cpu) = (wall / runs, cpu / runs);
    let (mut wall, mut cpu) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..runs {
        let (w, c) = (Instant::now(), cpu_time());
        let (s, v) = h.call("GET", "/mtwilson/v2/hosts", Auth::Admin, None).await;
        (wall, cpu) = (wall + w.elapsed(), cpu + (cpu_time() - c));
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["hosts"].as_array().unwrap().len(), 10_000);
    }
    let (api_wall, api_cpu) = (wall / runs, cpu / runs);
    let started = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(h.state.store.host_summaries().await.unwrap());
    }
    let read = started.elapsed() / runs;
    let stats = h.state.host_list.stats();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("GET /ui/, 10000 hosts on SQLite, 500 rows shown, from the host list kept in memory:");
    println!("  first request (reads every host): {:.1} ms", ms(cold));
    println!(
        "  nothing written since the last request: {:.1} ms wall, {:.1} ms CPU per request",
        ms(idle_wall),
        ms(idle_cpu)
    );
    println!(
        "  one request a second while 167 hosts a second are renewed: {:.1} ms wall, {:.1} ms CPU per request ({rows_per} rows read per request)",
        ms(busy_wall),
        ms(busy_cpu)
    );
    println!(
        "GET /mtwilson/v2/hosts, 10000 hosts: {:.1} ms wall, {:.1} ms CPU per request",
        ms(api_wall),
        ms(api_cpu)
    );
    println!(
        "for comparison, reading every host row (Store::host_summaries): {:.1} ms; host list: {} whole reads, {} catch-ups",
        ms(read),
        stats.reloads,
        stats.catch_ups
    );
    assert_eq!(stats.reloads, 1, "every request after the first caught up");
}

/// The row of `name` in a fleet page.
fn fleet_row<'a>(body: &'a str, name: &str) -> &'a str {
    let start = body
        .find(&format!(">{name}</a>"))
        .unwrap_or_else(|| panic!("{name} not listed:\n{body}"));
    &body[start..start + body[start..].find("</tr>").unwrap()]
}

/// The PCR values a host page shows: bank → index → hex.
fn shown_pcrs(
    body: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<u8, String>> {
    let mut out = std::collections::BTreeMap::new();
    for part in body.split("<table class=\"pcrs\" data-bank=\"").skip(1) {
        let bank = part[..part.find('"').unwrap()].to_string();
        let table = &part[..part.find("</table>").unwrap()];
        let mut values = std::collections::BTreeMap::new();
        for r in table.split("<td class=\"n\">").skip(1) {
            let index: u8 = r[..r.find('<').unwrap()].parse().unwrap();
            let v = r.split("<td class=\"mono\">").nth(1).unwrap();
            values.insert(index, v[..v.find('<').unwrap()].to_string());
        }
        out.insert(bank, values);
    }
    out
}

#[tokio::test]
async fn host_page_shows_the_last_verified_quotes_pcr_values_by_bank() {
    let h = fleet().await;
    let agent = h.agents.get("node-ok");
    let quoted = serde_json::to_value(&agent.lock().unwrap().last.as_ref().unwrap().pcrs).unwrap();
    let body = page(&h, "/ui/hosts/node-ok").await;
    let shown = shown_pcrs(&body);
    let want: std::collections::BTreeMap<String, std::collections::BTreeMap<u8, String>> =
        serde_json::from_value(quoted.clone()).unwrap();
    assert!(
        !want.is_empty() && want.values().all(|b| !b.is_empty()),
        "{quoted}"
    );
    assert_eq!(
        shown, want,
        "the page shows exactly the quoted values:\n{body}"
    );
    let attested = h.host("node-ok").await["trust"]["attested_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        body.contains(&format!("From the last verified quote, {attested}")),
        "{body}"
    );

    // A quote that does not verify (an old answer, with other PCR values) keeps the values of
    // the last verified one.
    h.clock.advance(Duration::from_secs(5));
    let mut forged = agent.lock().unwrap().last.clone().unwrap();
    let mut pcrs = serde_json::to_value(&forged.pcrs).unwrap();
    for values in pcrs.as_object_mut().unwrap().values_mut() {
        for v in values.as_object_mut().unwrap().values_mut() {
            *v = json!("ab".repeat(v.as_str().unwrap().len() / 2));
        }
    }
    forged.pcrs = serde_json::from_value(pcrs).unwrap();
    agent.lock().unwrap().replay = Some(forged);
    let (s, v) = h.attest("node-ok").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["verdict"], "untrusted", "{v}");
    let body = page(&h, "/ui/hosts/node-ok").await;
    assert_eq!(shown_pcrs(&body), want, "{body}");
    let section = &body[body.find("PCR values</h2>").unwrap()..];
    let section = &section[..section.find("</section>").unwrap()];
    assert!(!section.contains(&"ab".repeat(32)), "{section}");
    assert!(section.contains(&format!("From the last verified quote, {attested}")));

    // Never attested: no values.
    let body = page(&h, "/ui/hosts/node-new").await;
    assert!(shown_pcrs(&body).is_empty());
    assert!(body.contains("No verified quote yet"), "{body}");
}

/// An EC P-256 EK certificate for `ek`, issued by a new CA named `ca_name`: (CA PEM, EK
/// certificate DER).
fn ek_certificate(ek: &nodetrust_tpm_wire::Public, ca_name: &str) -> (String, Vec<u8>) {
    use x509_parser::prelude::FromDer as _;
    struct EkKey(Vec<u8>);
    impl rcgen::PublicKeyData for EkKey {
        fn der_bytes(&self) -> &[u8] {
            &self.0
        }
        fn algorithm(&self) -> &rcgen::SignatureAlgorithm {
            &rcgen::PKCS_ECDSA_P256_SHA256
        }
    }
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::OrganizationName, "Test TPM Vendor");
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let spki = nodetrust_tpm_wire::der::spki(&ek.key);
    let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).unwrap();
    let key = EkKey(parsed.subject_public_key.data.to_vec());
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.der().to_vec())
}

/// Registers `agent` with `ek_certificate` in its request (both steps); the activation answer.
async fn register_with_certificate(
    h: &Harness,
    agent: &std::sync::Arc<std::sync::Mutex<common::SoftAgent>>,
    ek_certificate: Option<Vec<u8>>,
) -> (StatusCode, serde_json::Value) {
    let mut req = agent.lock().unwrap().register_request();
    req.ek_certificate = ek_certificate;
    let (s, challenge) = h
        .call(
            "POST",
            "/mtwilson/v2/hosts/register",
            Auth::Agent,
            Some(serde_json::to_value(&req).unwrap()),
        )
        .await;
    if s != StatusCode::OK {
        return (s, challenge);
    }
    let b64 = |v: &serde_json::Value| nodetrust_proto::b64::decode(v.as_str().unwrap()).unwrap();
    let secret = agent
        .lock()
        .unwrap()
        .tpm
        .activate_credential(
            &b64(&challenge["credential_blob"]),
            &b64(&challenge["encrypted_secret"]),
        )
        .unwrap();
    let id = challenge["challenge_id"].as_str().unwrap();
    h.call(
        "POST",
        &format!("/mtwilson/v2/hosts/register/{id}/activate"),
        Auth::Agent,
        Some(json!({"secret": nodetrust_proto::b64::encode(&secret)})),
    )
    .await
}

fn ek_issuer_shown(body: &str) -> &str {
    let start = body.find("<dd class=\"ek-issuer\">").unwrap() + "<dd class=\"ek-issuer\">".len();
    &body[start..start + body[start..].find("</dd>").unwrap()]
}

#[tokio::test]
async fn host_page_shows_the_ek_certificate_issuer_kept_at_registration() {
    // Through the manufacturer CA bundle (--ek-ca-dir): no endorsement at all.
    let mut agent = common::SoftAgent::new("node-ca", "uuid-ca");
    agent.boot(&gold_boot("grub 2.06"));
    let (ca_pem, cert) = ek_certificate(agent.tpm.ek_public(), "Bundle EK CA 7");
    let cas = tempfile::tempdir().unwrap();
    std::fs::write(cas.path().join("vendor.pem"), ca_pem).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/server.db", dir.path().display());
    let ca_dir = cas.path().to_path_buf();
    let h = Harness::with_config(dir, db, |c| c.ek_ca_dir = Some(ca_dir)).await;
    add_reader(&h).await;
    let agent = h.agents.add(agent);
    let (s, v) = register_with_certificate(&h, &agent, Some(cert)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let body = page(&h, "/ui/hosts/node-ca").await;
    assert_eq!(
        ek_issuer_shown(&body),
        "O=Test TPM Vendor, CN=Bundle EK CA 7",
        "{body}"
    );

    // Listed in tpm-endorsements by its certificate (for any hardware UUID).
    let mut agent = common::SoftAgent::new("node-listed", "uuid-listed");
    agent.boot(&gold_boot("grub 2.06"));
    let (_, cert) = ek_certificate(agent.tpm.ek_public(), "Endorsed EK CA 3");
    let agent = h.agents.add(agent);
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/tpm-endorsements",
            Auth::Admin,
            Some(json!({"certificate": nodetrust_proto::b64::encode(&cert)})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = register_with_certificate(&h, &agent, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let body = page(&h, "/ui/hosts/node-listed").await;
    assert_eq!(
        ek_issuer_shown(&body),
        "O=Test TPM Vendor, CN=Endorsed EK CA 3",
        "{body}"
    );

    // Endorsed by its public key, with a certificate from a CA nobody trusts: nothing kept.
    let mut agent = common::SoftAgent::new("node-key", "uuid-key");
    agent.boot(&gold_boot("grub 2.06"));
    let (_, cert) = ek_certificate(agent.tpm.ek_public(), "Unknown EK CA");
    let agent = h.agents.add(agent);
    h.endorse(&agent).await;
    let (s, v) = register_with_certificate(&h, &agent, Some(cert)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let body = page(&h, "/ui/hosts/node-key").await;
    assert!(!body.contains("Unknown EK CA"), "{body}");
    assert_eq!(
        ek_issuer_shown(&body),
        "no EK certificate (endorsed by its public key)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_column_follows_the_labellers_policy() {
    let k8s = nodetrust_testkit::kubeapi::FakeApiServer::start().unwrap();
    let mut shown = Vec::new();
    for stale_after in [Some(Duration::from_secs(30)), None] {
        let h = fleet().await;
        let kubeconfig = h.dir.path().join("kubeconfig");
        k8s.write_kubeconfig(&kubeconfig).unwrap();
        let mut config = common::test_config(&h.db, h.dir.path());
        config.kubeconfig = Some(kubeconfig);
        config.labeller_namespace = Some("default".into());
        config.label.stale_after = stale_after;
        let (stop, rx) = tokio::sync::watch::channel(false);
        let tasks = nodetrust_server::labeller::start(&h.state, &config, rx)
            .await
            .unwrap()
            .unwrap();
        let body = page(&h, "/ui/").await;
        assert!(body.contains(">LABEL<"), "{body}");
        assert!(fleet_row(&body, "node-ok").contains("<td class=\"label\">true</td>"));
        assert!(fleet_row(&body, "node-bad").contains("<td class=\"label\">false</td>"));
        // Verdicts expire (10 minutes), then a minute more: past --stale-after.
        h.clock.advance(Duration::from_secs(600 + 60));
        let body = page(&h, "/ui/").await;
        let row = fleet_row(&body, "node-ok");
        assert!(row.contains(">unknown</span>"), "{row}");
        shown.push(row[row.find("<td class=\"label\">").unwrap()..].to_string());
        let _ = stop.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
    // Expired for longer than --stale-after: the labeller fails closed, and so does the page.
    assert!(
        shown[0].starts_with("<td class=\"label\">false</td>"),
        "{}",
        shown[0]
    );
    // Without --stale-after, the label is left as it is.
    assert!(
        shown[1].starts_with("<td class=\"label\">—</td>"),
        "{}",
        shown[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_open_event_streams() {
    use std::io::BufRead as _;
    let h = Harness::new().await;
    add_reader(&h).await;
    let (certs, key) = nodetrust_server::tls::server_identity(None, None, h.dir.path()).unwrap();
    let config = nodetrust_server::tls::server_config(certs, key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(nodetrust_server::run(
        listener,
        config,
        h.app.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    // A browser's live view: an event stream held open.
    let mut curl = std::process::Command::new("curl")
        .args(["-sk", "-N", "-D", "-", "--user"])
        .arg(format!("{}:{}", READER.0, READER.1))
        .arg(format!("https://{addr}/ui/events"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl is installed");
    let stdout = curl.stdout.take().unwrap();
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut head = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line.trim().is_empty() {
                break;
            }
            head.push(line);
        }
        let _ = head_tx.send(head);
        // Until the server ends the stream.
        for _ in lines {}
    });
    let head = tokio::time::timeout(Duration::from_secs(20), head_rx)
        .await
        .expect("the event stream's head")
        .unwrap();
    assert!(head[0].contains(" 200"), "{head:?}");
    assert!(
        head.iter().any(|l| l
            .to_ascii_lowercase()
            .starts_with("content-type: text/event-stream")),
        "{head:?}"
    );
    let began = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server stops")
        .unwrap();
    let took = began.elapsed();
    // Before, the open stream held the shutdown for its whole 10 s limit.
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} with an event stream open"
    );
    // And the client saw its stream end.
    tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    let status = curl.wait().unwrap();
    assert!(status.code().is_some(), "curl ended by itself: {status:?}");
}

/// What the hosts API must answer now: every host of the table, read directly.
async fn hosts_from_the_table(h: &Harness) -> serde_json::Value {
    let now = h.state.clock.now();
    let hosts: Vec<nodetrust_proto::views::HostSummary> = h
        .state
        .store
        .hosts()
        .await
        .unwrap()
        .iter()
        .map(|r| nodetrust_proto::views::HostSummary {
            connection_url: r.connection_url.clone(),
            hardware_uuid: r.hardware_uuid.clone(),
            name: r.name.clone(),
            status: r.status,
            trust: nodetrust_server::engine::trust_view(r, now),
        })
        .collect();
    serde_json::to_value(nodetrust_proto::views::HostList { hosts }).unwrap()
}

/// Replica `a` lists, from its host list kept in memory, exactly what the table holds after
/// each kind of write by replica `b`.
async fn assert_lists_the_table(a: &Harness, step: &str) {
    let (s, listed) = a.call("GET", "/mtwilson/v2/hosts", Auth::Admin, None).await;
    assert_eq!(s, StatusCode::OK, "{listed}");
    assert_eq!(listed, hosts_from_the_table(a).await, "{step}");
    let body = page(a, "/ui/").await;
    for host in listed["hosts"].as_array().unwrap() {
        let row = fleet_row(&body, host["name"].as_str().unwrap());
        let verdict = host["trust"]["verdict"].as_str().unwrap();
        assert!(row.contains(&format!(">{verdict}</span>")), "{step}: {row}");
        if let Some(at) = host["trust"]["attested_at"].as_str() {
            assert!(row.contains(&format!("<td>{at}</td>")), "{step}: {row}");
        }
        let status = host["status"].as_str().unwrap();
        assert!(row.contains(&format!(">{status}</td>")), "{step}: {row}");
    }
    assert!(
        body.contains(&format!(
            "<span class=\"n\">{}</span> hosts",
            listed["hosts"].as_array().unwrap().len()
        )),
        "{step}"
    );
}

async fn replicas_list_each_others_writes(a: Harness, b: Harness) {
    add_reader(&b).await;
    b.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    let (s, v) = b
        .call(
            "POST",
            "/mtwilson/v2/flavors",
            Auth::Admin,
            Some(json!({"from_host": "gold", "parts": ["PLATFORM", "OS"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(b.attest("gold").await.0, StatusCode::OK);
    assert_lists_the_table(&a, "first read").await;
    assert_eq!(a.state.host_list.stats().reloads, 1);

    let node = b.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    assert_lists_the_table(&a, "registered").await;
    assert_eq!(b.attest("node-1").await.1["verdict"], "trusted");
    assert_lists_the_table(&a, "verdict").await;
    // A renewal: the same verdict, new times, no change-feed row.
    b.clock.advance(Duration::from_secs(2));
    let before = a.host("node-1").await["trust"]["attested_at"].clone();
    assert_eq!(b.attest("node-1").await.1["verdict"], "trusted");
    assert_lists_the_table(&a, "renewal").await;
    assert_ne!(a.host("node-1").await["trust"]["attested_at"], before);
    // Unreachable (a status change), then its detail changing while still unreachable.
    node.lock().unwrap().down = true;
    assert_eq!(b.attest("node-1").await.0, StatusCode::BAD_GATEWAY);
    assert_lists_the_table(&a, "unreachable").await;
    b.enrol("node-2", "uuid-2", &gold_boot("grub 2.06")).await;
    assert_eq!(b.attest("node-2").await.1["verdict"], "trusted");
    let (s, _) = b
        .call("DELETE", "/mtwilson/v2/hosts/node-2", Auth::Admin, None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_lists_the_table(&a, "deleted").await;
    // Every write so far was found by the feed and the renewal read: no whole read again.
    assert_eq!(a.state.host_list.stats().reloads, 1);

    // A write stamped further back than the overlap (replica b's clock a minute behind a's):
    // the check finds it, the list is read whole, the answer is right.
    a.clock.advance(Duration::from_secs(90));
    assert_lists_the_table(&a, "clock ahead").await;
    b.clock.advance(Duration::from_secs(30));
    node.lock().unwrap().down = false;
    assert_eq!(b.attest("node-1").await.1["verdict"], "trusted");
    assert_lists_the_table(&a, "write stamped in the past").await;
    assert_eq!(a.state.host_list.stats().reloads, 2);

    // A list behind the feed's retention resyncs.
    b.enrol("node-3", "uuid-3", &gold_boot("grub 2.06")).await;
    let far = b.state.now_ms() + 3_600_000;
    assert!(b.state.store.prune_changes(far, 100).await.unwrap() > 0);
    assert_lists_the_table(&a, "resync").await;
    assert_eq!(a.state.host_list.stats().reloads, 3);
}

#[tokio::test]
async fn host_list_in_memory_follows_another_replicas_writes_on_sqlite() {
    let b = Harness::new().await;
    let a = Harness::with_db(tempfile::tempdir().unwrap(), b.db.clone()).await;
    replicas_list_each_others_writes(a, b).await;
}

#[tokio::test]
async fn host_list_in_memory_follows_another_replicas_writes_on_postgres() {
    let Some(db) = common::pg_database().await else {
        eprintln!("NODETRUST_TEST_PG_URL not set (scripts/with-postgres.sh sets it): skipped");
        return;
    };
    let b = Harness::with_db(tempfile::tempdir().unwrap(), db.clone()).await;
    let a = Harness::with_db(tempfile::tempdir().unwrap(), db).await;
    replicas_list_each_others_writes(a, b).await;
}

#[tokio::test]
async fn pcr_values_and_ek_issuer_are_kept_on_postgres() {
    let Some(db) = common::pg_database().await else {
        eprintln!("NODETRUST_TEST_PG_URL not set (scripts/with-postgres.sh sets it): skipped");
        return;
    };
    let h = Harness::with_db(tempfile::tempdir().unwrap(), db).await;
    add_reader(&h).await;
    let mut agent = common::SoftAgent::new("gold", "uuid-gold");
    agent.boot(&gold_boot("grub 2.06"));
    let (_, cert) = ek_certificate(agent.tpm.ek_public(), "Endorsed EK CA 5");
    let agent = h.agents.add(agent);
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/tpm-endorsements",
            Auth::Admin,
            Some(json!({"certificate": nodetrust_proto::b64::encode(&cert), "hardware_uuid": "uuid-gold"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = register_with_certificate(&h, &agent, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/flavors",
            Auth::Admin,
            Some(json!({"from_host": "gold", "parts": ["PLATFORM", "OS"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(h.attest("gold").await.1["verdict"], "trusted");
    let quoted = serde_json::to_value(&agent.lock().unwrap().last.as_ref().unwrap().pcrs).unwrap();
    let body = page(&h, "/ui/hosts/gold").await;
    assert_eq!(
        serde_json::to_value(shown_pcrs(&body)).unwrap(),
        quoted,
        "{body}"
    );
    assert_eq!(
        ek_issuer_shown(&body),
        "O=Test TPM Vendor, CN=Endorsed EK CA 5"
    );
}
