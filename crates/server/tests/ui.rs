//! The fleet view (`/ui/`), in process: authentication, what the served HTML says (before any
//! script runs), escaping of hostile values, the Content-Security-Policy, paging, and the
//! rendering benchmark (ignored; see docs/PERFORMANCE.md "Fleet view").
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine as _;
use common::{app_event, gold_boot, Auth, Harness};
use http_body_util::BodyExt as _;
use nodetrust_proto::trust::{HostStatus, Trust};
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
    let hosts: Vec<HostRow> = (0..10_000)
        .map(|i| {
            let verdict = match i % 10 {
                0 => Some(Trust::Untrusted),
                1 => None,
                _ => Some(Trust::Trusted),
            };
            row(
                &format!("node-{i:05}.rack-{}.example", i % 40),
                &format!("u{i:05}"),
                verdict,
                &[
                    "PLATFORM: matches flavor \"gold PLATFORM\" (0123456789abcdef)",
                    "OS: matches flavor \"gold OS\" (fedcba9876543210)",
                ],
                now,
            )
        })
        .collect();
    let q = FleetQuery::default();
    for _ in 0..3 {
        std::hint::black_box(fleet_page(&hosts, now, &q, true).into_string());
    }
    let runs = 20u32;
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..runs {
        bytes = std::hint::black_box(fleet_page(&hosts, now, &q, true).into_string()).len();
    }
    let per = started.elapsed() / runs;
    println!(
        "fleet page, 10000 hosts, 500 rows shown, labeller column on: {:.1} ms per render on one thread, {bytes} bytes",
        per.as_secs_f64() * 1000.0
    );
}

/// The whole request for the fleet page of 10,000 hosts on SQLite (authentication from its
/// cache, every host read, verdicts computed, sorted, 500 rows rendered). Run with
/// `cargo test --release -p nodetrust-server --test ui -- --ignored --nocapture fleet_page_request_cost`.
#[tokio::test]
#[ignore = "benchmark: prints a figure"]
async fn fleet_page_request_cost() {
    let h = ten_thousand().await;
    for _ in 0..3 {
        page(&h, "/ui/").await;
    }
    let runs = 10u32;
    let started = Instant::now();
    for _ in 0..runs {
        let (s, _, body) = get(&h, "/ui/", Some(READER)).await;
        assert_eq!(s, StatusCode::OK);
        std::hint::black_box(body);
    }
    let per = started.elapsed() / runs;
    let started = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(h.state.store.host_summaries().await.unwrap());
    }
    let read = started.elapsed() / runs;
    println!(
        "GET /ui/, 10000 hosts on SQLite, 500 rows shown: {:.1} ms per request, of which {:.1} ms reading the hosts from the store",
        per.as_secs_f64() * 1000.0,
        read.as_secs_f64() * 1000.0
    );
}
