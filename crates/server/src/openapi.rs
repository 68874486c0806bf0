//! The OpenAPI 3.1 document served at `/openapi.json`, built from [`ROUTES`], the table of
//! routes with their roles, bodies and answers.
//!
//! A test checks that every route of the table answers on the router (so the table cannot
//! name a route that does not exist) and that the committed copy `crates/server/openapi.json`
//! is current (`NODETRUST_UPDATE_OPENAPI=1 cargo test -p nodetrust-server --test openapi`
//! rewrites it).

use serde_json::{json, Map, Value};

/// One documented route.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    /// HTTP method (lower case).
    pub method: &'static str,
    /// Path, with `{param}`s.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Roles allowed; empty for no authentication.
    pub roles: &'static [&'static str],
    /// Request body schema name.
    pub request: Option<&'static str>,
    /// Success status and its body schema name.
    pub response: (u16, Option<&'static str>),
}

const R: &[&str] = &["admin", "reader"];
const A: &[&str] = &["admin"];
const AG: &[&str] = &["agent", "admin"];
const ALL: &[&str] = &["admin", "reader", "agent"];

/// Every route.
pub const ROUTES: &[RouteDoc] = &[
    RouteDoc {
        method: "get",
        path: "/mtwilson/v2/tpm-endorsements",
        summary: "List accepted EKs (filter with hardwareUuidEqualTo); the runbook's auth probe",
        roles: ALL,
        request: None,
        response: (200, Some("EndorsementList")),
    },
    RouteDoc {
        method: "post",
        path: "/mtwilson/v2/tpm-endorsements",
        summary: "Accept an EK for registration",
        roles: A,
        request: Some("NewEndorsement"),
        response: (201, Some("Endorsement")),
    },
    RouteDoc {
        method: "delete",
        path: "/mtwilson/v2/tpm-endorsements/{id}",
        summary: "Revoke an endorsement",
        roles: A,
        request: None,
        response: (200, None),
    },
    RouteDoc {
        method: "get",
        path: "/mtwilson/v2/hosts",
        summary: "Registered hosts with their current trust",
        roles: R,
        request: None,
        response: (200, Some("HostList")),
    },
    RouteDoc {
        method: "get",
        path: "/mtwilson/v2/hosts/{name}",
        summary: "One host, with its facts",
        roles: R,
        request: None,
        response: (200, Some("Host")),
    },
    RouteDoc {
        method: "delete",
        path: "/mtwilson/v2/hosts/{name}",
        summary: "Forget a host and its reports",
        roles: A,
        request: None,
        response: (204, None),
    },
    RouteDoc {
        method: "post",
        path: "/mtwilson/v2/hosts/register",
        summary: "Register: answers a MakeCredential challenge for the EK and AK",
        roles: AG,
        request: Some("RegisterRequest"),
        response: (200, Some("RegisterChallenge")),
    },
    RouteDoc {
        method: "post",
        path: "/mtwilson/v2/hosts/register/{challenge_id}/activate",
        summary: "Return the activated secret; the AK is pinned",
        roles: AG,
        request: Some("ActivateRequest"),
        response: (200, Some("RegisterResult")),
    },
    RouteDoc {
        method: "post",
        path: "/mtwilson/v2/agent-events",
        summary: "The agent (re)started: attest it now",
        roles: AG,
        request: Some("AgentStarted"),
        response: (202, None),
    },
    RouteDoc {
        method: "get",
        path: "/mtwilson/v2/flavors",
        summary: "List flavors",
        roles: R,
        request: None,
        response: (200, Some("FlavorList")),
    },
    RouteDoc {
        method: "post",
        path: "/mtwilson/v2/flavors",
        summary:
            "Create a flavor, or import flavors from a registered host ({\"from_host\", \"parts\"})",
        roles: A,
        request: Some("FlavorOrImport"),
        response: (201, Some("FlavorList")),
    },
    RouteDoc {
        method: "delete",
        path: "/mtwilson/v2/flavors/{id}",
        summary: "Delete a flavor",
        roles: A,
        request: None,
        response: (204, None),
    },
    RouteDoc {
        method: "get",
        path: "/mtwilson/v2/reports",
        summary: "Verdict history (host_name, latest=true, limit)",
        roles: R,
        request: None,
        response: (200, Some("ReportList")),
    },
    RouteDoc {
        method: "post",
        path: "/mtwilson/v2/host-attestations",
        summary: "Attest a host now and return the new report",
        roles: A,
        request: Some("AttestRequest"),
        response: (200, Some("Report")),
    },
    RouteDoc {
        method: "get",
        path: "/mtwilson/v2/users",
        summary: "List accounts (never passwords)",
        roles: A,
        request: None,
        response: (200, Some("UserList")),
    },
    RouteDoc {
        method: "post",
        path: "/mtwilson/v2/users",
        summary: "Create an account (409 when the name is taken)",
        roles: A,
        request: Some("NewUser"),
        response: (201, Some("UserView")),
    },
    RouteDoc {
        method: "put",
        path: "/mtwilson/v2/users/{name}/password",
        summary: "Change an account's password; its cached logins end at once",
        roles: A,
        request: Some("NewPassword"),
        response: (200, Some("UserView")),
    },
    RouteDoc {
        method: "delete",
        path: "/mtwilson/v2/users/{name}",
        summary: "Delete an account (409 for the last admin)",
        roles: A,
        request: None,
        response: (204, None),
    },
    RouteDoc {
        method: "get",
        path: "/mtwilson/v2/signing-key",
        summary: "The public key signed reports verify with (JWK and PEM)",
        roles: &[],
        request: None,
        response: (200, Some("SigningKey")),
    },
    RouteDoc {
        method: "get",
        path: "/healthz",
        summary: "Liveness",
        roles: &[],
        request: None,
        response: (200, None),
    },
    RouteDoc {
        method: "get",
        path: "/readyz",
        summary: "Readiness: database writes work (503 with Retry-After when they do not)",
        roles: &[],
        request: None,
        response: (200, None),
    },
    RouteDoc {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics",
        roles: &[],
        request: None,
        response: (200, None),
    },
    RouteDoc {
        method: "get",
        path: "/openapi.json",
        summary: "This document",
        roles: &[],
        request: None,
        response: (200, None),
    },
];

fn obj(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "required": required, "properties": props})
}

fn s() -> Value {
    json!({"type": "string"})
}

fn b64() -> Value {
    json!({"type": "string", "contentEncoding": "base64"})
}

fn list(key: &str, item: &str) -> Value {
    obj(
        &[key],
        json!({ key: {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}} }),
    )
}

fn schemas() -> Value {
    let trust = obj(
        &["verdict", "reasons"],
        json!({
            "verdict": {"type": "string", "enum": ["trusted", "untrusted", "unknown"]},
            "reasons": {"type": "array", "items": s()},
            "attested_at": {"type": ["string", "null"], "format": "date-time"},
            "expires_at": {"type": ["string", "null"], "format": "date-time"},
        }),
    );
    let host = obj(
        &["name", "hardware_uuid", "connection_url", "status", "trust"],
        json!({
            "name": s(), "hardware_uuid": s(), "connection_url": s(),
            "status": {"type": "string", "enum": ["pending", "connected", "unreachable"]},
            "trust": {"$ref": "#/components/schemas/Trust"},
            "status_detail": {"type": ["string", "null"]}, "tls_cert_sha256": s(), "software_tpm": {"type": "boolean"},
            "registered": {"type": "string", "format": "date-time"}, "host_info": {"type": "object"},
        }),
    );
    let report = obj(
        &[
            "host_name",
            "verdict",
            "reasons",
            "created",
            "expires",
            "signed_report",
        ],
        json!({
            "host_name": s(), "verdict": {"type": "string", "enum": ["trusted", "untrusted", "unknown"]},
            "reasons": {"type": "array", "items": s()},
            "created": {"type": "string", "format": "date-time"}, "expires": {"type": "string", "format": "date-time"},
            "signed_report": {"type": "string", "description": "compact JWS (ES256) over the report"},
        }),
    );
    let endorsement = obj(
        &["id", "ek_sha256", "revoked", "created"],
        json!({
            "id": s(), "hardware_uuid": {"type": ["string", "null"]}, "ek_sha256": s(), "ek_public": {"type": ["string", "null"]},
            "certificate": {"type": ["string", "null"]}, "comment": {"type": ["string", "null"]}, "revoked": {"type": "boolean"},
            "created": {"type": "integer", "description": "Unix milliseconds"},
        }),
    );
    let new_endorsement = json!({"type": "object", "additionalProperties": false,
        "description": "ek_public, certificate (PEM or base64 DER), or both (then for the same key)", "properties": {
        "ek_public": b64(), "hardware_uuid": s(), "certificate": s(), "comment": s()}});
    let host_info = obj(
        &["host_name", "hardware_uuid"],
        json!({"host_name": s(), "hardware_uuid": s(), "os_name": s(), "os_version": s(), "kernel_version": s(),
               "tpm_version": s(), "tpm_manufacturer": s(), "tpm_firmware_version": s(),
               "pcr_banks": {"type": "array", "items": s()}, "measured_launch": {"type": "boolean"},
               "secure_boot": {"type": ["boolean", "null"]}, "software_tpm": {"type": "boolean"}, "agent_version": s()}),
    );
    let register = json!({"type": "object", "additionalProperties": false,
        "required": ["host", "connection_url", "tls_cert_sha256", "ek_public", "aik"], "properties": {
        "host": {"$ref": "#/components/schemas/HostInfo"}, "connection_url": s(), "tls_cert_sha256": s(),
        "ek_public": b64(), "ek_certificate": b64(), "aik": b64()}});
    let rule = json!({"type": "object", "additionalProperties": false, "required": ["bank", "index"], "properties": {
        "bank": s(), "index": {"type": "integer", "minimum": 0, "maximum": 23}, "value": s(),
        "scope": {"type": "string", "enum": ["all", "shared", "host_unique"]},
        "events": {"type": "array", "items": obj(&["label", "digest"], json!({"label": s(), "digest": s()}))}}});
    let flavor = json!({"type": "object", "additionalProperties": false, "required": ["label", "part", "pcrs"], "properties": {
        "id": s(), "label": s(), "part": {"type": "string", "enum": ["PLATFORM", "OS", "HOST_UNIQUE"]},
        "host_name": s(), "source_host": s(), "allow_software_tpm": {"type": "boolean"},
        "pcrs": {"type": "array", "items": rule}}});
    let import = json!({"type": "object", "additionalProperties": false, "required": ["from_host"], "properties": {
        "from_host": s(), "parts": {"type": "array", "items": {"type": "string", "enum": ["PLATFORM", "OS", "HOST_UNIQUE"]}}}});
    let role = json!({"type": "string", "enum": ["admin", "reader", "agent"]});
    json!({
        "ErrorBody": obj(&["error", "reason"], json!({"error": s(), "reason": s()})),
        "Trust": trust,
        "Host": host,
        "HostList": list("hosts", "Host"),
        "HostInfo": host_info,
        "Report": report,
        "ReportList": list("reports", "Report"),
        "Endorsement": endorsement,
        "EndorsementList": list("tpm_endorsements", "Endorsement"),
        "NewEndorsement": new_endorsement,
        "RegisterRequest": register,
        "RegisterChallenge": obj(&["challenge_id", "credential_blob", "encrypted_secret"], json!({"challenge_id": s(), "credential_blob": b64(), "encrypted_secret": b64()})),
        "ActivateRequest": json!({"type": "object", "additionalProperties": false, "required": ["secret"], "properties": {"secret": b64()}}),
        "RegisterResult": obj(&["host_name", "hardware_uuid", "replaced"], json!({"host_name": s(), "hardware_uuid": s(), "replaced": {"type": "boolean"}})),
        "AgentStarted": json!({"type": "object", "additionalProperties": false, "required": ["host_name", "hardware_uuid"], "properties": {"host_name": s(), "hardware_uuid": s()}}),
        "Flavor": flavor,
        "FlavorList": list("flavors", "Flavor"),
        "FlavorOrImport": {"oneOf": [{"$ref": "#/components/schemas/Flavor"}, import]},
        "AttestRequest": json!({"type": "object", "additionalProperties": false, "required": ["host_name"], "properties": {"host_name": s()}}),
        "UserView": obj(&["name", "role", "created"], json!({"name": s(), "role": role.clone(), "created": {"type": "string", "format": "date-time"}})),
        "UserList": list("users", "UserView"),
        "NewUser": json!({"type": "object", "additionalProperties": false, "required": ["name", "role", "password"], "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9._@-]+$"},
            "role": role, "password": {"type": "string", "minLength": 12, "maxLength": 1024}}}),
        "NewPassword": json!({"type": "object", "additionalProperties": false, "required": ["password"], "properties": {
            "password": {"type": "string", "minLength": 12, "maxLength": 1024}}}),
        "SigningKey": obj(&["alg", "kid", "jwk", "pem"], json!({"alg": s(), "kid": s(), "jwk": {"type": "object"}, "pem": s()})),
    })
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
}

/// The document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for r in ROUTES {
        let mut op = Map::new();
        op.insert("summary".into(), json!(r.summary));
        if !r.roles.is_empty() {
            op.insert("security".into(), json!([{"basic": []}]));
            op.insert("x-roles".into(), json!(r.roles));
        }
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op.insert("parameters".into(), json!(params));
        }
        if let Some(req) = r.request {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{req}")}}}}),
            );
        }
        let mut responses = Map::new();
        let ok = match r.response.1 {
            Some(schema) => {
                json!({"description": "success", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
            }
            None => json!({"description": "success"}),
        };
        responses.insert(r.response.0.to_string(), ok);
        if r.request.is_some() {
            responses.insert(
                "400".into(),
                error_response("malformed body, unknown field, or body too large"),
            );
        }
        if !r.roles.is_empty() {
            responses.insert("401".into(), error_response("no or wrong credentials"));
            responses.insert(
                "429".into(),
                error_response(
                    "too many failed logins, or too many logins being checked; see Retry-After",
                ),
            );
            responses.insert(
                "403".into(),
                error_response("the role may not do this, or the request is refused with a reason"),
            );
        }
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        if let Some(e) = entry.as_object_mut() {
            e.insert(r.method.to_string(), Value::Object(op));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "nodetrust Trust Server", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Registers TPM hosts, attests them, and serves verdicts (paths of the OpenCIT Mt. Wilson v2 API)."},
        "paths": paths,
        "components": {"schemas": schemas(), "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
    })
}
