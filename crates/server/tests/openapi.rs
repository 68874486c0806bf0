//! `/openapi.json` against the router and the real answers:
//! - every documented operation is served, and every route the router serves is documented
//!   (no drift either way; the failure says what to add);
//! - real answers, and the requests that produced them, validate against the document's schemas
//!   (JSON Schema 2020-12, formats checked); bodies the server refuses are refused by the
//!   schemas too; enums are listed as they are serialised;
//! - the committed copy `crates/server/openapi.json` is current
//!   (`NODETRUST_UPDATE_OPENAPI=1 cargo test -p nodetrust-server --test openapi` rewrites it).
//!
//! That each documented role gets past the role check and every other role is refused is
//! `attacks.rs`' `every_route_refuses_no_credentials_and_each_wrong_role`, over the same
//! [`routes`].
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::http::StatusCode;
use common::{gold_boot, Auth, Harness, SoftAgent};
use nodetrust_appraise::{EventScope, FlavorPart};
use nodetrust_proto::b64;
use nodetrust_proto::trust::{HostStatus, Trust};
use nodetrust_proto::users::UserRole;
use nodetrust_server::openapi::{document, routes, UNDOCUMENTED};
use serde::Serialize;
use serde_json::{json, Value};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];
const READER: (&str, &str) = ("poller", "reader-password-1");

/// A path with every `{param}` replaced by `x`.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                "x"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The `{param}` names of a path.
fn params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
        .collect()
}

/// Every path the router has a route for. axum does not list its routes, but its `Debug`
/// output prints the path table (`paths: {RouteId(1): "/healthz", ...}`) of the router and of
/// its fallback router; only the first is read.
fn router_paths(app: &axum::Router) -> BTreeSet<String> {
    let text = format!("{app:?}");
    let main = text
        .split("fallback_router:")
        .next()
        .expect("the router's Debug output");
    let mut out = BTreeSet::new();
    let mut rest = main;
    while let Some(i) = rest.find("): \"/") {
        let after = &rest[i + 4..];
        let end = after.find('"').expect("a closing quote");
        out.insert(after[..end].to_string());
        rest = &after[end..];
    }
    assert!(
        out.contains("/healthz") && out.contains("/mtwilson/v2/hosts/{name}"),
        "cannot read the router's paths from its Debug output (did axum change it?): {out:?}"
    );
    out
}

fn excluded(path: &str) -> Option<&'static str> {
    UNDOCUMENTED
        .iter()
        .find(|(prefix, _)| path == *prefix || path.starts_with(&format!("{prefix}/")))
        .map(|(_, why)| *why)
}

async fn harness_with_reader() -> Harness {
    let h = Harness::new().await;
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/users",
            Auth::Admin,
            Some(json!({"name": READER.0, "role": "reader", "password": READER.1})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    h
}

/// Whether the router serves `method` on `path` (a method it does not route is a 405).
async fn served(h: &Harness, method: &str, path: &str) -> bool {
    let (s, _) = h.call(method, &concrete(path), Auth::None, None).await;
    s != StatusCode::METHOD_NOT_ALLOWED
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let h = Harness::new().await;
    let on_router = router_paths(&h.app);
    let doc = document();
    let mut problems = Vec::new();
    let routes = routes();
    for r in &routes {
        let what = format!("{} {}", r.method.to_uppercase(), r.path);
        if !on_router.contains(&r.path) {
            problems.push(format!(
                "{what} is documented, but the router has no route {}: fix the path of its \
                 #[utoipa::path], or drop the handler from `paths(...)` of ApiDoc \
                 (crates/server/src/openapi.rs)",
                r.path
            ));
            continue;
        }
        if !served(&h, &r.method.to_uppercase(), &r.path).await {
            problems.push(format!(
                "{what} is documented, but the router answers 405 for {}: fix the method of its \
                 #[utoipa::path]",
                r.method.to_uppercase()
            ));
            continue;
        }
        // Every {param} is declared as a path parameter.
        let declared: Vec<&str> = doc["paths"][&r.path][&r.method]["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        for p in params(&r.path) {
            if !declared.contains(&p) {
                problems.push(format!(
                    "{what}: add params((\"{p}\" = String, Path, description = \"...\")) to its \
                     #[utoipa::path]"
                ));
            }
        }
        // Without credentials: a 401 when it needs an account, its success status otherwise.
        let body = r.request.as_ref().map(|_| json!({}));
        let (s, v) = h
            .call(
                &r.method.to_uppercase(),
                &concrete(&r.path),
                Auth::None,
                body,
            )
            .await;
        let expected = if r.roles.is_empty() {
            r.response.0
        } else {
            401
        };
        if s.as_u16() != expected {
            problems.push(format!(
                "{what} without credentials answered {s} (expected {expected}): {v}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(routes.len() >= 23, "{} documented routes", routes.len());
    let (s, served_doc) = h.call("GET", "/openapi.json", Auth::None, None).await;
    assert_eq!(s.as_u16(), 200);
    assert_eq!(served_doc, doc);
}

#[tokio::test]
async fn every_served_route_is_documented() {
    let h = harness_with_reader().await;
    let documented: BTreeSet<(String, String)> = routes()
        .into_iter()
        .map(|r| (r.method.to_uppercase(), r.path))
        .collect();
    let mut missing = Vec::new();
    let mut checked = 0;
    for path in router_paths(&h.app) {
        if excluded(&path).is_some() {
            continue;
        }
        for method in METHODS {
            if !served(&h, method, &path).await {
                continue;
            }
            checked += 1;
            if documented.contains(&(method.to_string(), path.clone())) {
                continue;
            }
            missing.push(missing_route(&h, method, &path).await);
        }
    }
    assert!(
        missing.is_empty(),
        "routes on the router that /openapi.json does not document:\n\n{}",
        missing.join("\n\n")
    );
    assert!(checked >= 23, "only {checked} served routes found");
    // The exclusions name real routes, so they cannot hide a typo.
    for (prefix, _) in UNDOCUMENTED {
        assert!(
            router_paths(&h.app)
                .iter()
                .any(|p| excluded(p).is_some() && p.starts_with(prefix)),
            "UNDOCUMENTED names {prefix}, which the router does not serve"
        );
    }
}

/// What to add for an undocumented route: the attribute, with the roles the handler enforces
/// (found by calling it with each role) and its path parameters.
async fn missing_route(h: &Harness, method: &str, path: &str) -> String {
    let url = concrete(path);
    let (s, _) = h.call(method, &url, Auth::None, None).await;
    let mut security = String::new();
    if s == StatusCode::UNAUTHORIZED {
        let mut roles = Vec::new();
        for (role, auth) in [
            ("admin", Auth::Admin),
            ("reader", Auth::Basic(READER.0, READER.1)),
            ("agent", Auth::Agent),
        ] {
            let (s, _) = h.call(method, &url, auth, None).await;
            if s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN {
                roles.push(format!("\"{role}\""));
            }
        }
        security = format!("\n        security((\"basic\" = [{}])),", roles.join(", "));
    }
    let mut attr_params = String::new();
    if !params(path).is_empty() {
        let ps: Vec<String> = params(path)
            .iter()
            .map(|p| format!("(\"{p}\" = String, Path, description = \"...\")"))
            .collect();
        attr_params = format!("\n        params({}),", ps.join(", "));
    }
    let body = if method == "POST" || method == "PUT" || method == "PATCH" {
        "\n        request_body = <the request type, if it takes a body>,"
    } else {
        ""
    };
    format!(
        "{method} {path} is served but not documented. On its handler put\n    \
         #[utoipa::path({m}, path = \"{path}\", summary = \"<what it does>\",{security}{attr_params}{body}\n        \
         responses((status = <success status>, body = <the type it answers>)))]\n\
         and add the handler to `paths(...)` of `ApiDoc` in crates/server/src/openapi.rs (or, \
         if it is not part of the JSON API, add its prefix to `UNDOCUMENTED` there).",
        m = method.to_lowercase(),
    )
}

#[test]
fn committed_openapi_json_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let current = serde_json::to_string_pretty(&document()).unwrap() + "\n";
    if std::env::var_os("NODETRUST_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "crates/server/openapi.json is stale: run NODETRUST_UPDATE_OPENAPI=1 cargo test -p nodetrust-server --test openapi"
    );
}

/// Validates requests and answers against the document.
struct Contract {
    doc: Value,
    /// `METHOD path status` of every answer validated.
    checked: BTreeSet<String>,
}

impl Contract {
    fn new() -> Self {
        Self {
            doc: document(),
            checked: BTreeSet::new(),
        }
    }

    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("{schema} is not a valid schema: {e}"))
    }

    fn errors(&self, schema: &Value, v: &Value) -> Vec<String> {
        self.validator(schema)
            .iter_errors(v)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect()
    }

    fn operation(&self, method: &str, template: &str) -> &Value {
        let op = &self.doc["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not documented");
        op
    }

    fn request_schema(&self, method: &str, template: &str) -> &Value {
        let schema = &self.operation(method, template)["requestBody"]["content"]
            ["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template} documents no JSON body"
        );
        schema
    }

    /// Calls the route; the body must match the documented request, the status must be
    /// documented, and the answer must match its schema.
    async fn call(
        &mut self,
        h: &Harness,
        method: &str,
        template: &str,
        path: &str,
        auth: Auth,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        if let Some(b) = &body {
            let errors = self.errors(self.request_schema(method, template), b);
            assert!(
                errors.is_empty(),
                "{method} {template}: the request {b} does not match the documented body: {errors:#?}"
            );
        }
        let (s, v) = h.call(method, path, auth, body).await;
        let what = format!("{method} {template} {}", s.as_u16());
        let response = &self.operation(method, template)["responses"][s.as_str()];
        assert!(
            response.is_object(),
            "{what}: the document does not list this status; answer: {v}"
        );
        match response.get("content").and_then(Value::as_object) {
            None => assert_eq!(v, Value::Null, "{what}: documented without a body"),
            Some(content) => {
                let (_, media) = content.iter().next().unwrap();
                let errors = self.errors(&media["schema"], &v);
                assert!(
                    errors.is_empty(),
                    "{what}: the answer does not match its schema:\n{v:#}\n{errors:#?}"
                );
            }
        }
        self.checked.insert(what);
        (s, v)
    }

    /// A body the schema refuses must be refused by the server too (400), and the reverse.
    async fn refused_body(
        &mut self,
        h: &Harness,
        method: &str,
        template: &str,
        path: &str,
        body: Value,
    ) {
        let errors = self.errors(self.request_schema(method, template), &body);
        assert!(
            !errors.is_empty(),
            "{method} {template}: the documented body accepts {body}"
        );
        let (s, v) = h.call(method, path, Auth::Admin, Some(body.clone())).await;
        assert_eq!(
            s,
            StatusCode::BAD_REQUEST,
            "{method} {template} {body}: {v}"
        );
    }
}

#[tokio::test]
async fn real_answers_match_the_schemas() {
    let h = Harness::new().await;
    let mut c = Contract::new();
    const HOSTS: &str = "/mtwilson/v2/hosts";
    const HOST: &str = "/mtwilson/v2/hosts/{name}";
    const ENDORSEMENTS: &str = "/mtwilson/v2/tpm-endorsements";
    const FLAVORS: &str = "/mtwilson/v2/flavors";
    const ATTEST: &str = "/mtwilson/v2/host-attestations";
    const USERS: &str = "/mtwilson/v2/users";
    const EVENTS: &str = "/mtwilson/v2/agent-events";

    for p in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        c.call(&h, "GET", p, p, Auth::None, None).await;
    }
    let sk = "/mtwilson/v2/signing-key";
    c.call(&h, "GET", sk, sk, Auth::None, None).await;

    // Accounts.
    let reader =
        json!({"name": "dash.board@ops", "role": "reader", "password": "a-long-reader-password"});
    let (s, _) = c
        .call(&h, "POST", USERS, USERS, Auth::Admin, Some(reader.clone()))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = c
        .call(&h, "POST", USERS, USERS, Auth::Admin, Some(reader))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let pw = "/mtwilson/v2/users/{name}/password";
    let (s, _) = c
        .call(
            &h,
            "PUT",
            pw,
            "/mtwilson/v2/users/dash.board@ops/password",
            Auth::Admin,
            Some(json!({"password": "another-long-password"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let user = "/mtwilson/v2/users/{name}";
    let (s, _) = c
        .call(
            &h,
            "DELETE",
            user,
            "/mtwilson/v2/users/nobody",
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = c.call(&h, "GET", USERS, USERS, Auth::Admin, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = c
        .call(
            &h,
            "DELETE",
            user,
            "/mtwilson/v2/users/dash.board@ops",
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // Endorsement and registration of a gold host, step by step.
    let mut gold = SoftAgent::new("gold", "uuid-gold");
    gold.boot(&gold_boot("grub 2.06"));
    let gold = h.agents.add(gold);
    let ek = b64::encode(&gold.lock().unwrap().tpm.ek_public().tpm2b_bytes());
    let (s, _) = c
        .call(
            &h,
            "POST",
            ENDORSEMENTS,
            ENDORSEMENTS,
            Auth::Admin,
            Some(json!({"ek_public": ek, "hardware_uuid": "uuid-gold", "comment": "rack 4"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let req = serde_json::to_value(gold.lock().unwrap().register_request()).unwrap();
    let reg = "/mtwilson/v2/hosts/register";
    let (s, challenge) = c.call(&h, "POST", reg, reg, Auth::Agent, Some(req)).await;
    assert_eq!(s, StatusCode::OK);
    let (path, body) = common::activation(&gold, &challenge);
    let act = "/mtwilson/v2/hosts/register/{challenge_id}/activate";
    let (s, _) = c
        .call(&h, "POST", act, &path, Auth::Agent, Some(body.clone()))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = c
        .call(
            &h,
            "POST",
            act,
            "/mtwilson/v2/hosts/register/no-such/activate",
            Auth::Agent,
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    h.clock.advance(Duration::from_millis(5));
    let node = h.enrol("node-1", "uuid-1", &gold_boot("grub 2.06")).await;

    // A spare endorsement, revoked; the list as the agent sees it.
    let spare = SoftAgent::new("spare", "uuid-spare");
    let spare_ek = b64::encode(&spare.tpm.ek_public().tpm2b_bytes());
    let (_, added) = c
        .call(
            &h,
            "POST",
            ENDORSEMENTS,
            ENDORSEMENTS,
            Auth::Admin,
            Some(json!({"ek_public": spare_ek})),
        )
        .await;
    let one = "/mtwilson/v2/tpm-endorsements/{id}";
    let spare_path = format!("{ENDORSEMENTS}/{}", added["id"].as_str().unwrap());
    let (s, _) = c
        .call(&h, "DELETE", one, &spare_path, Auth::Admin, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = c
        .call(
            &h,
            "DELETE",
            one,
            &format!("{ENDORSEMENTS}/nope"),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    c.call(&h, "GET", ENDORSEMENTS, ENDORSEMENTS, Auth::Agent, None)
        .await;
    c.call(
        &h,
        "GET",
        ENDORSEMENTS,
        &format!("{ENDORSEMENTS}?hardwareUuidEqualTo=uuid-gold"),
        Auth::Admin,
        None,
    )
    .await;

    // Untrusted (no flavor), flavors imported and created, a mismatch, then trusted.
    let attest = || Some(json!({"host_name": "node-1"}));
    let (_, report) = c
        .call(&h, "POST", ATTEST, ATTEST, Auth::Admin, attest())
        .await;
    assert_eq!(report["verdict"], "untrusted");
    let (s, _) = c
        .call(
            &h,
            "POST",
            FLAVORS,
            FLAVORS,
            Auth::Admin,
            Some(json!({"from_host": "gold", "parts": ["PLATFORM", "OS"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, created) = c
        .call(&h, "POST", FLAVORS, FLAVORS, Auth::Admin,
            Some(json!({"label": "node-1-unique", "part": "HOST_UNIQUE", "host_name": "node-1",
                "pcrs": [{"bank": "sha256", "index": 8, "value": "00".repeat(32), "scope": "host_unique",
                          "events": [{"label": "kernel_cmdline", "digest": "ab".repeat(32)}]}]})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    c.call(&h, "GET", FLAVORS, FLAVORS, Auth::Admin, None).await;
    let (_, report) = c
        .call(&h, "POST", ATTEST, ATTEST, Auth::Admin, attest())
        .await;
    assert_eq!(report["verdict"], "untrusted");
    let flavor = "/mtwilson/v2/flavors/{id}";
    let unique = format!(
        "{FLAVORS}/{}",
        created["flavors"][0]["id"].as_str().unwrap()
    );
    let (s, _) = c
        .call(&h, "DELETE", flavor, &unique, Auth::Admin, None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = c
        .call(&h, "DELETE", flavor, &unique, Auth::Admin, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, report) = c
        .call(&h, "POST", ATTEST, ATTEST, Auth::Admin, attest())
        .await;
    assert_eq!(report["verdict"], "trusted");

    // Hosts: connected and trusted, pending (never attested: nulls), then unreachable.
    let reader = Auth::Admin;
    let (_, hosts) = c.call(&h, "GET", HOSTS, HOSTS, reader, None).await;
    assert_eq!(hosts["hosts"].as_array().unwrap().len(), 2);
    let (_, pending) = c
        .call(&h, "GET", HOST, "/mtwilson/v2/hosts/gold", reader, None)
        .await;
    assert_eq!(pending["status"], "pending");
    assert!(pending["trust"]["attested_at"].is_null());
    let (_, connected) = c
        .call(&h, "GET", HOST, "/mtwilson/v2/hosts/node-1", reader, None)
        .await;
    assert_eq!(connected["status"], "connected");
    assert!(connected["host_info"].is_object());
    for q in [
        "?host_name=node-1",
        "?latest=true",
        "?host_name=node-1&limit=2",
    ] {
        let r = "/mtwilson/v2/reports";
        c.call(&h, "GET", r, &format!("{r}{q}"), reader, None).await;
    }
    node.lock().unwrap().down = true;
    let (s, _) = c
        .call(&h, "POST", ATTEST, ATTEST, Auth::Admin, attest())
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    let (_, unreachable) = c
        .call(&h, "GET", HOST, "/mtwilson/v2/hosts/node-1", reader, None)
        .await;
    assert_eq!(unreachable["status"], "unreachable");
    assert!(unreachable["status_detail"].is_string());

    // Agent events: scheduled, coalesced, an unknown host, another hardware UUID.
    let started = |name: &str, uuid: &str| Some(json!({"host_name": name, "hardware_uuid": uuid}));
    let (_, first) = c
        .call(
            &h,
            "POST",
            EVENTS,
            EVENTS,
            Auth::Agent,
            started("node-1", "uuid-1"),
        )
        .await;
    assert_eq!(first["scheduled"], true);
    let (_, again) = c
        .call(
            &h,
            "POST",
            EVENTS,
            EVENTS,
            Auth::Agent,
            started("node-1", "uuid-1"),
        )
        .await;
    assert_eq!(again["coalesced"], true);
    let (s, _) = c
        .call(
            &h,
            "POST",
            EVENTS,
            EVENTS,
            Auth::Agent,
            started("ghost", "uuid-1"),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = c
        .call(
            &h,
            "POST",
            EVENTS,
            EVENTS,
            Auth::Agent,
            started("node-1", "uuid-2"),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Error answers: 401, 403, 404, 400.
    let (s, _) = c.call(&h, "GET", HOSTS, HOSTS, Auth::None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = c.call(&h, "GET", HOSTS, HOSTS, Auth::Agent, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = c
        .call(
            &h,
            "GET",
            HOST,
            "/mtwilson/v2/hosts/no-such-host",
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .call(
            "POST",
            ATTEST,
            Auth::Admin,
            Some(json!({"host_name": "node-1", "colour": "red"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = c
        .call(
            &h,
            "DELETE",
            HOST,
            "/mtwilson/v2/hosts/gold",
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // What the server refuses, the schemas refuse: unknown fields, enums in another case,
    // missing fields, out-of-range values.
    for body in [json!({"host_name": "node-1", "colour": "red"}), json!({})] {
        c.refused_body(&h, "POST", ATTEST, ATTEST, body).await;
    }
    for body in [
        json!({"name": "x", "role": "Admin", "password": "long-enough-password"}),
        json!({"name": "x", "role": "root", "password": "long-enough-password"}),
        json!({"name": "x", "role": "reader", "password": "long-enough-password", "admin": true}),
        json!({"name": "x", "role": "reader", "password": "short"}),
        json!({"name": "x y", "role": "reader", "password": "long-enough-password"}),
    ] {
        c.refused_body(&h, "POST", USERS, USERS, body).await;
    }
    for body in [
        json!({"label": "f", "part": "os", "pcrs": [{"bank": "sha256", "index": 4}]}),
        json!({"label": "f", "part": "OS", "pcrs": [{"bank": "sha256", "index": 24}]}),
        json!({"label": "f", "part": "OS", "pcrs": [{"bank": "sha256", "index": 4, "scope": "mine"}]}),
        json!({"label": "f", "part": "OS", "pcrs": [], "extra": 1}),
        json!({"from_host": "gold", "parts": ["KERNEL"]}),
        json!({"from_host": "gold", "colour": "red"}),
    ] {
        c.refused_body(&h, "POST", FLAVORS, FLAVORS, body).await;
    }
    c.refused_body(
        &h,
        "POST",
        ENDORSEMENTS,
        ENDORSEMENTS,
        json!({"ek": "AAAA"}),
    )
    .await;

    assert!(
        c.checked.len() >= 30,
        "only {} answers validated: {:#?}",
        c.checked.len(),
        c.checked
    );
}

/// Every enum is listed in the document exactly as serde writes its values.
#[test]
fn enums_are_documented_as_serialised() {
    fn values<T: Serialize>(all: &[T]) -> Vec<Value> {
        all.iter()
            .map(|v| serde_json::to_value(v).unwrap())
            .collect()
    }
    let doc = document();
    let expected: BTreeMap<&str, Vec<Value>> = BTreeMap::from([
        (
            "Trust",
            values(&[Trust::Trusted, Trust::Untrusted, Trust::Unknown]),
        ),
        (
            "HostStatus",
            values(&[
                HostStatus::Pending,
                HostStatus::Connected,
                HostStatus::Unreachable,
            ]),
        ),
        (
            "UserRole",
            values(&[UserRole::Admin, UserRole::Reader, UserRole::Agent]),
        ),
        ("FlavorPart", values(&FlavorPart::ALL)),
        (
            "EventScope",
            values(&[EventScope::All, EventScope::Shared, EventScope::HostUnique]),
        ),
    ]);
    for (name, want) in expected {
        let got = doc["components"]["schemas"][name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is not an enum in the document"));
        assert_eq!(got, &want, "{name}");
    }
    assert_eq!(
        doc["components"]["schemas"]["Trust"]["enum"],
        json!(["trusted", "untrusted", "unknown"])
    );
}
