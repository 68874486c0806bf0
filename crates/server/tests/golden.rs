//! Golden answers: the exact JSON of every admin and reader answer (and of the error bodies),
//! compared with the committed files in `tests/golden/`.
//!
//! The comparison keeps field names, their order and value types; only values that vary from
//! one run to the next (identifiers, times, signatures, keys) are replaced by placeholders.
//! Each answer is also read as its typed view (`nodetrust_proto::views`, the types the CLI
//! reads) and written back: the bytes must not change, so the types describe the whole answer.
//! `NODETRUST_UPDATE_GOLDEN=1 cargo test -p nodetrust-server --test golden` rewrites the files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use common::{gold_boot, Auth, Harness, SoftAgent, ADMIN, AGENT};
use http_body_util::BodyExt;
use nodetrust_appraise::Flavor;
use nodetrust_proto::b64;
use nodetrust_proto::users::{UserList, UserView};
use nodetrust_proto::views::{
    AgentEventAnswer, EndorsementList, EndorsementView, FlavorList, Health, HostDetail, HostList,
    ReportList, ReportView, Revoked, SigningKey,
};
use nodetrust_proto::ErrorBody;
use serde::de::DeserializeOwned;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;
use tower::ServiceExt as _;

/// A JSON value that keeps the order of object fields as they were sent.
#[derive(Debug, Clone, PartialEq)]
enum Ordered {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Ordered>),
    Object(Vec<(String, Ordered)>),
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_none<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Ordered, E> {
                Ok(Ordered::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Ordered, E> {
                Ok(Ordered::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Ordered, E> {
                Ok(Ordered::Number(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Ordered, E> {
                serde_json::Number::from_f64(v)
                    .map(Ordered::Number)
                    .ok_or_else(|| E::custom("not a JSON number"))
            }
            fn visit_str<E>(self, v: &str) -> Result<Ordered, E> {
                Ok(Ordered::String(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Ordered, E> {
                Ok(Ordered::String(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = a.next_element()? {
                    out.push(v);
                }
                Ok(Ordered::Array(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry()? {
                    out.push((k, v));
                }
                Ok(Ordered::Object(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => s.serialize_unit(),
            Self::Bool(b) => s.serialize_bool(*b),
            Self::Number(n) => n.serialize(s),
            Self::String(v) => s.serialize_str(v),
            Self::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Self::Object(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Replaces every RFC 3339 time inside `s` (`2026-12-01T14:08:32.123Z`) by `<time>`.
fn mask_times(s: &str) -> String {
    let b = s.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:dd";
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let is_time = b.len() - i >= shape.len()
            && shape.iter().enumerate().all(|(k, c)| match c {
                b'd' => b[i + k].is_ascii_digit(),
                c => b[i + k] == *c,
            });
        if is_time {
            let mut j = i + shape.len();
            if b.get(j) == Some(&b'.') {
                j += 1;
                while b.get(j).is_some_and(u8::is_ascii_digit) {
                    j += 1;
                }
            }
            if b.get(j) == Some(&b'Z') {
                j += 1;
            }
            out.push_str("<time>");
            i = j;
        } else {
            let ch = s[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Keys whose value differs between runs: the value is replaced by a placeholder of the
/// same JSON type.
fn placeholder(key: &str, parent: &str) -> Option<&'static str> {
    Some(match (parent, key) {
        (_, "id") => "<id>",
        (_, "signed_report") => "<jws>",
        (_, "kid") => "<kid>",
        (_, "pem") => "<pem>",
        ("jwk", "x" | "y") => "<coordinate>",
        (_, "ek_sha256") => "<sha256>",
        (_, "ek_public") => "<tpm2b_public>",
        _ => return None,
    })
}

/// Numeric times (Unix ms) that vary between runs.
const MS_TIMES: &[&str] = &["created"];

/// Every identifier (`"id"`) in `v`, so that other answers naming it (a flavor named in a
/// reason) are normalised too.
fn collect_ids(v: &Ordered, key: &str, ids: &mut BTreeSet<String>) {
    match v {
        Ordered::String(s) if key == "id" && !s.is_empty() => {
            ids.insert(s.clone());
        }
        Ordered::Array(a) => a.iter().for_each(|v| collect_ids(v, key, ids)),
        Ordered::Object(o) => o.iter().for_each(|(k, v)| collect_ids(v, k, ids)),
        _ => {}
    }
}

fn normalise(v: Ordered, key: &str, parent: &str, ids: &BTreeSet<String>) -> Ordered {
    match v {
        Ordered::String(s) => match placeholder(key, parent) {
            Some(p) => Ordered::String(p.into()),
            None => {
                let mut s = mask_times(&s);
                for id in ids {
                    s = s.replace(id.as_str(), "<id>");
                }
                Ordered::String(s)
            }
        },
        Ordered::Number(_) if MS_TIMES.contains(&key) => Ordered::Number(0.into()),
        Ordered::Array(a) => {
            let mut a: Vec<Ordered> = a
                .into_iter()
                .map(|v| normalise(v, key, parent, ids))
                .collect();
            if key == "flavors" {
                // Flavors made in the same millisecond are listed in the order of their random
                // identifiers.
                a.sort_by_key(|f| serde_json::to_string(f).unwrap());
            }
            Ordered::Array(a)
        }
        Ordered::Object(o) => Ordered::Object(
            o.into_iter()
                .map(|(k, v)| {
                    let v = normalise(v, &k, key, ids);
                    (k, v)
                })
                .collect(),
        ),
        v => v,
    }
}

/// A request to the router; the status and the raw body.
async fn send(
    h: &Harness,
    method: &str,
    path: &str,
    auth: Auth,
    body: Option<Vec<u8>>,
) -> (StatusCode, Vec<u8>) {
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
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let resp = h
        .app
        .clone()
        .oneshot(b.body(Body::from(body.unwrap_or_default())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

/// Collects the golden answers of one run and checks them at the end (every mismatch is
/// reported, not only the first).
struct Golden {
    dir: PathBuf,
    update: bool,
    stale: Vec<String>,
    ids: BTreeSet<String>,
}

impl Golden {
    fn new() -> Self {
        Self {
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden"),
            update: std::env::var_os("NODETRUST_UPDATE_GOLDEN").is_some(),
            stale: Vec::new(),
            ids: BTreeSet::new(),
        }
    }

    /// Sends a request and checks its answer against `tests/golden/{name}.json`; returns the
    /// answer (not normalised) for the test to continue with.
    async fn check<T: Serialize + DeserializeOwned>(
        &mut self,
        h: &Harness,
        name: &str,
        method: &str,
        path: &str,
        auth: Auth,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        // Two records made in one millisecond would be listed in the order of their random
        // identifiers: keep them apart.
        h.clock.advance(Duration::from_millis(5));
        let (status, bytes) = send(
            h,
            method,
            path,
            auth,
            body.map(|b| serde_json::to_vec(&b).unwrap()),
        )
        .await;
        let ordered: Ordered = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{name}: {method} {path} answered {status} with a body that is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        // The answer is exactly its typed view: read as `T` and written again, not a byte
        // changes (no field the type does not know, none in another order).
        match serde_json::from_slice::<T>(&bytes) {
            Ok(typed) if serde_json::to_vec(&typed).unwrap() == bytes => {}
            Ok(typed) => self.stale.push(format!(
                "{name}: the answer is not {} written back:\n{}\n{}",
                std::any::type_name::<T>(),
                String::from_utf8_lossy(&bytes),
                serde_json::to_string(&typed).unwrap()
            )),
            Err(e) => self.stale.push(format!(
                "{name}: the answer does not read as {}: {e}",
                std::any::type_name::<T>()
            )),
        }
        collect_ids(&ordered, "", &mut self.ids);
        let record = Ordered::Object(vec![
            ("status".into(), Ordered::Number(status.as_u16().into())),
            ("body".into(), normalise(ordered, "", "", &self.ids)),
        ]);
        let text = serde_json::to_string_pretty(&record).unwrap() + "\n";
        let path_on_disk = self.dir.join(format!("{name}.json"));
        if self.update {
            std::fs::create_dir_all(&self.dir).unwrap();
            std::fs::write(&path_on_disk, &text).unwrap();
        }
        let committed = std::fs::read_to_string(&path_on_disk).unwrap_or_default();
        if committed != text {
            self.stale.push(format!(
                "tests/golden/{name}.json differs; the answer now is:\n{text}"
            ));
        }
        serde_json::from_slice(&bytes).unwrap()
    }

    fn finish(self) {
        assert!(
            self.stale.is_empty(),
            "{}\nIf the change is intended, run NODETRUST_UPDATE_GOLDEN=1 cargo test -p nodetrust-server --test golden and review the diff",
            self.stale.join("\n")
        );
    }
}

fn ek_of(agent: &std::sync::Arc<std::sync::Mutex<SoftAgent>>) -> String {
    b64::encode(&agent.lock().unwrap().tpm.ek_public().tpm2b_bytes())
}

#[tokio::test]
async fn every_admin_and_reader_answer_keeps_its_golden_shape() {
    let h = Harness::new().await;
    let mut g = Golden::new();

    g.check::<Health>(&h, "healthz", "GET", "/healthz", Auth::None, None)
        .await;
    g.check::<Health>(&h, "readyz", "GET", "/readyz", Auth::None, None)
        .await;
    g.check::<SigningKey>(
        &h,
        "signing_key",
        "GET",
        "/mtwilson/v2/signing-key",
        Auth::None,
        None,
    )
    .await;

    // Accounts.
    g.check::<UserView>(
        &h,
        "users_create",
        "POST",
        "/mtwilson/v2/users",
        Auth::Admin,
        Some(json!({"name": "dashboard", "role": "reader", "password": "a-long-reader-password"})),
    )
    .await;
    g.check::<UserList>(
        &h,
        "users_list",
        "GET",
        "/mtwilson/v2/users",
        Auth::Admin,
        None,
    )
    .await;

    // Endorsements: one added by hand, two through enrolment, one revoked.
    let mut gold = SoftAgent::new("gold", "uuid-gold");
    gold.boot(&gold_boot("grub 2.06"));
    let gold = h.agents.add(gold);
    g.check::<EndorsementView>(
        &h,
        "endorsement_add",
        "POST",
        "/mtwilson/v2/tpm-endorsements",
        Auth::Admin,
        Some(json!({"ek_public": ek_of(&gold), "hardware_uuid": "uuid-gold", "comment": "rack 4"})),
    )
    .await;
    let (s, v) = h.register(&gold).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.clock.advance(Duration::from_millis(5));
    let node = h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;
    let spare = SoftAgent::new("spare", "uuid-spare");
    let spare_ek = b64::encode(&spare.tpm.ek_public().tpm2b_bytes());
    h.clock.advance(Duration::from_millis(5));
    let (s, added) = h
        .call(
            "POST",
            "/mtwilson/v2/tpm-endorsements",
            Auth::Admin,
            Some(json!({"ek_public": spare_ek})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{added}");
    let spare_id = added["id"].as_str().unwrap().to_string();
    g.check::<Revoked>(
        &h,
        "endorsement_revoke",
        "DELETE",
        &format!("/mtwilson/v2/tpm-endorsements/{spare_id}"),
        Auth::Admin,
        None,
    )
    .await;
    g.check::<EndorsementList>(
        &h,
        "endorsements_list",
        "GET",
        "/mtwilson/v2/tpm-endorsements",
        Auth::Agent,
        None,
    )
    .await;

    // Attestation without a flavor (untrusted), flavors, attestation with them (trusted).
    g.check::<ReportView>(
        &h,
        "attest_untrusted",
        "POST",
        "/mtwilson/v2/host-attestations",
        Auth::Admin,
        Some(json!({"host_name": "node-1"})),
    )
    .await;
    g.check::<FlavorList<Flavor>>(
        &h,
        "flavor_import",
        "POST",
        "/mtwilson/v2/flavors",
        Auth::Admin,
        Some(json!({"from_host": "gold", "parts": ["PLATFORM", "OS"]})),
    )
    .await;
    g.check::<FlavorList<Flavor>>(
        &h,
        "flavor_create",
        "POST",
        "/mtwilson/v2/flavors",
        Auth::Admin,
        Some(
            json!({"label": "node-1-unique", "part": "HOST_UNIQUE", "host_name": "node-1",
            "pcrs": [{"bank": "sha256", "index": 8, "value": "00".repeat(32)}]}),
        ),
    )
    .await;
    g.check::<FlavorList<Flavor>>(
        &h,
        "flavors_list",
        "GET",
        "/mtwilson/v2/flavors",
        Auth::Admin,
        None,
    )
    .await;
    // The HOST_UNIQUE flavor above does not match: node-1 is untrusted, with the PCR named.
    g.check::<ReportView>(
        &h,
        "attest_host_unique_mismatch",
        "POST",
        "/mtwilson/v2/host-attestations",
        Auth::Admin,
        Some(json!({"host_name": "node-1"})),
    )
    .await;

    // A host that answers, a host never attested (pending), then an unreachable one.
    let (s, flavors) = h
        .call("GET", "/mtwilson/v2/flavors", Auth::Admin, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let unique = flavors["flavors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["part"] == "HOST_UNIQUE")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = h
        .call(
            "DELETE",
            &format!("/mtwilson/v2/flavors/{unique}"),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    g.check::<ReportView>(
        &h,
        "attest_trusted",
        "POST",
        "/mtwilson/v2/host-attestations",
        Auth::Admin,
        Some(json!({"host_name": "node-1"})),
    )
    .await;
    g.check::<HostList>(
        &h,
        "hosts_list",
        "GET",
        "/mtwilson/v2/hosts",
        Auth::Admin,
        None,
    )
    .await;
    g.check::<HostDetail>(
        &h,
        "host_detail_connected",
        "GET",
        "/mtwilson/v2/hosts/node-1",
        Auth::Admin,
        None,
    )
    .await;
    g.check::<HostDetail>(
        &h,
        "host_detail_pending",
        "GET",
        "/mtwilson/v2/hosts/gold",
        Auth::Admin,
        None,
    )
    .await;
    g.check::<ReportList>(
        &h,
        "reports_list",
        "GET",
        "/mtwilson/v2/reports?host_name=node-1",
        Auth::Admin,
        None,
    )
    .await;
    g.check::<ReportList>(
        &h,
        "reports_latest",
        "GET",
        "/mtwilson/v2/reports?latest=true",
        Auth::Admin,
        None,
    )
    .await;
    node.lock().unwrap().down = true;
    g.check::<ErrorBody>(
        &h,
        "attest_unreachable",
        "POST",
        "/mtwilson/v2/host-attestations",
        Auth::Admin,
        Some(json!({"host_name": "node-1"})),
    )
    .await;
    g.check::<HostDetail>(
        &h,
        "host_detail_unreachable",
        "GET",
        "/mtwilson/v2/hosts/node-1",
        Auth::Admin,
        None,
    )
    .await;
    // An agent (re)start schedules an attestation; a second one at once is coalesced.
    g.check::<AgentEventAnswer>(
        &h,
        "agent_event",
        "POST",
        "/mtwilson/v2/agent-events",
        Auth::Agent,
        Some(json!({"host_name": "node-1", "hardware_uuid": "uuid-1"})),
    )
    .await;
    g.check::<AgentEventAnswer>(
        &h,
        "agent_event_coalesced",
        "POST",
        "/mtwilson/v2/agent-events",
        Auth::Agent,
        Some(json!({"host_name": "node-1", "hardware_uuid": "uuid-1"})),
    )
    .await;

    // Error bodies.
    g.check::<ErrorBody>(
        &h,
        "error_401",
        "GET",
        "/mtwilson/v2/hosts",
        Auth::None,
        None,
    )
    .await;
    g.check::<ErrorBody>(
        &h,
        "error_403",
        "GET",
        "/mtwilson/v2/hosts",
        Auth::Agent,
        None,
    )
    .await;
    g.check::<ErrorBody>(
        &h,
        "error_404",
        "GET",
        "/mtwilson/v2/hosts/no-such-host",
        Auth::Admin,
        None,
    )
    .await;
    g.check::<ErrorBody>(
        &h,
        "error_400",
        "POST",
        "/mtwilson/v2/host-attestations",
        Auth::Admin,
        Some(json!({"host_name": "node-1", "colour": "red"})),
    )
    .await;
    g.finish();
}
