//! The HTTP API: `/mtwilson/v2/...` (paths of the OpenCIT Mt. Wilson API the runbook uses),
//! plus `/healthz`, `/readyz` and `/metrics`.
//!
//! | route | roles |
//! |---|---|
//! | `GET /mtwilson/v2/tpm-endorsements[?hardwareUuidEqualTo=]` | admin, reader, agent |
//! | `POST /mtwilson/v2/tpm-endorsements`, `DELETE .../{id}` (revoke) | admin |
//! | `GET /mtwilson/v2/hosts`, `GET .../{name}` | admin, reader |
//! | `DELETE /mtwilson/v2/hosts/{name}` | admin |
//! | `POST /mtwilson/v2/hosts/register`, `POST .../register/{challenge_id}/activate` | agent, admin |
//! | `POST /mtwilson/v2/agent-events` | agent, admin |
//! | `GET /mtwilson/v2/flavors` | admin, reader |
//! | `POST /mtwilson/v2/flavors` (a flavor, or `{"from_host", "parts"}`), `DELETE .../{id}` | admin |
//! | `GET /mtwilson/v2/reports[?host_name=&latest=true]` | admin, reader |
//! | `POST /mtwilson/v2/host-attestations {"host_name"}` | admin |
//! | `GET /mtwilson/v2/users`, `POST /mtwilson/v2/users`, `PUT .../users/{name}/password`, `DELETE .../users/{name}` | admin |
//! | `GET /ui/`, `/ui/hosts/{name}`, `/ui/flavors`, `/ui/events` (the fleet view, [`crate::ui`]) | admin, reader |
//! | `GET /mtwilson/v2/signing-key`, `/healthz`, `/readyz`, `/metrics`, `/openapi.json` | none |
//!
//! Routes that take a body check the caller's role in an extractor that runs before the body
//! is read, so a caller without the role learns nothing about its body (403 whatever it is).
//!
//! Every answer is a type of `nodetrust_proto` ([`nodetrust_proto::views`], `trust`, `users`)
//! that the CLI reads back; `tests/golden.rs` pins the JSON of each.
//!
//! Each handler's `#[utoipa::path]` documents it for `/openapi.json` ([`crate::openapi`]).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use nodetrust_appraise::{Flavor, FlavorPart};
use nodetrust_proto::registration::{ActivateRequest, AgentStarted, RegisterRequest};
use nodetrust_proto::views::{
    AgentEventAnswer, EndorsementList, EndorsementView, FlavorList, Health, HostDetail, HostList,
    HostSummary, NotReady, ReportList, Revoked, SigningKey,
};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::{Caller, Role};
use crate::engine::{self, signed_view, trust_view, ReportView};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::extract::{ADMIN, READERS};
use crate::registrar::{self, NewEndorsement};
use crate::state::AppState;
use crate::store::{Endorsement, HostRow, ReportRow};

/// The role-checking extractors (in [`crate::extract`]).
pub use crate::extract::{AdminCaller, AgentCaller};

const BASE: &str = "/mtwilson/v2";

/// The path of an API route: `path` under [`BASE`]. The routes are written out whole rather
/// than nested (`Router::nest`), which would strip the prefix from every request's URI and
/// route it a second time.
fn at(path: &str) -> String {
    format!("{BASE}{path}")
}

/// The JSON API's routes: everything under `/mtwilson/v2` (the accounts and push routes
/// included), `/healthz`, `/readyz` and `/metrics`. [`crate::app`] adds the OpenAPI document,
/// the fleet view, the fallbacks and the body limit.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            &at("/tpm-endorsements"),
            get(list_endorsements).post(add_endorsement),
        )
        .route(&at("/tpm-endorsements/{id}"), delete(revoke_endorsement))
        .route(&at("/hosts"), get(list_hosts))
        .route(&at("/hosts/register"), post(register))
        .route(
            &at("/hosts/register/{challenge_id}/activate"),
            post(activate),
        )
        .route(&at("/hosts/{name}"), get(show_host).delete(delete_host))
        .route(&at("/agent-events"), post(agent_event))
        .route(&at("/flavors"), get(list_flavors).post(create_flavors))
        .route(&at("/flavors/{id}"), delete(delete_flavor))
        .route(&at("/reports"), get(list_reports))
        .route(&at("/host-attestations"), post(attest_now))
        .route(&at("/signing-key"), get(signing_key))
        .route(
            &at("/users"),
            get(crate::users::list).post(crate::users::create),
        )
        .route(&at("/users/{name}"), delete(crate::users::delete))
        .route(
            &at("/users/{name}/password"),
            put(crate::users::set_password),
        )
        .merge(crate::push::routes(BASE))
        .route(
            "/healthz",
            get(|| async {
                Json(Health {
                    status: "ok".into(),
                })
            }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

#[derive(Debug, Deserialize)]
struct EndorsementQuery {
    #[serde(rename = "hardwareUuidEqualTo")]
    hardware_uuid_equal_to: Option<String>,
}

#[utoipa::path(get, path = "/mtwilson/v2/tpm-endorsements",
    summary = "List accepted EKs (filter with hardwareUuidEqualTo); the runbook's auth probe",
    security(("basic" = ["admin", "reader", "agent"])),
    params(("hardwareUuidEqualTo" = Option<String>, Query, description = "Only the EKs of this hardware UUID")),
    responses((status = 200, body = EndorsementList)))]
async fn list_endorsements(
    State(state): State<AppState>,
    who: Caller,
    ApiQuery(q): ApiQuery<EndorsementQuery>,
) -> Result<Response, ApiError> {
    who.require(&[Role::Admin, Role::Reader, Role::Agent])?;
    let list = state
        .store
        .endorsements(q.hardware_uuid_equal_to.as_deref())
        .await?;
    Ok(Json(EndorsementList {
        tpm_endorsements: list.into_iter().map(endorsement_view).collect(),
    })
    .into_response())
}

#[utoipa::path(post, path = "/mtwilson/v2/tpm-endorsements",
    summary = "Accept an EK for registration (ek_public, certificate as PEM or base64 DER, or both for the same key)",
    security(("basic" = ["admin"])),
    request_body = NewEndorsement,
    responses((status = 201, body = EndorsementView)))]
async fn add_endorsement(
    State(state): State<AppState>,
    _who: AdminCaller,
    ApiJson(req): ApiJson<NewEndorsement>,
) -> Result<Response, ApiError> {
    let e = registrar::add_endorsement(&state, req).await?;
    Ok((StatusCode::CREATED, Json(endorsement_view(e))).into_response())
}

/// A stored endorsement as the API shows it.
fn endorsement_view(e: Endorsement) -> EndorsementView {
    EndorsementView {
        id: e.id,
        hardware_uuid: e.hardware_uuid,
        ek_sha256: e.ek_sha256,
        ek_public: e.ek_public,
        certificate: e.certificate,
        comment: e.comment,
        revoked: e.revoked,
        created: e.created,
    }
}

#[utoipa::path(delete, path = "/mtwilson/v2/tpm-endorsements/{id}",
    summary = "Revoke an endorsement",
    security(("basic" = ["admin"])),
    params(("id" = String, Path, description = "The endorsement's id")),
    responses((status = 200, body = Revoked),
        (status = 404, description = "no such endorsement", body = nodetrust_proto::ErrorBody)))]
async fn revoke_endorsement(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    who.require(ADMIN)?;
    if state.store.revoke_endorsement(&id).await? {
        Ok(Json(Revoked { id, revoked: true }).into_response())
    } else {
        Err(ApiError::NotFound(format!("no endorsement {id}")))
    }
}

fn host_summary(h: &HostRow, now: std::time::SystemTime) -> HostSummary {
    HostSummary {
        connection_url: h.connection_url.clone(),
        hardware_uuid: h.hardware_uuid.clone(),
        name: h.name.clone(),
        status: h.status,
        trust: trust_view(h, now),
    }
}

fn host_detail(h: HostRow, state: &AppState) -> HostDetail {
    let trust = trust_view(&h, state.clock.now());
    HostDetail {
        connection_url: h.connection_url,
        hardware_uuid: h.hardware_uuid,
        host_info: serde_json::from_str(&h.host_info).unwrap_or(serde_json::Value::Null),
        name: h.name,
        registered: engine::rfc3339(h.created),
        software_tpm: h.software_tpm,
        status: h.status,
        status_detail: h.status_detail,
        tls_cert_sha256: h.tls_cert_sha256,
        trust,
    }
}

#[utoipa::path(get, path = "/mtwilson/v2/hosts",
    summary = "Registered hosts with their current trust",
    security(("basic" = ["admin", "reader"])),
    responses((status = 200, body = HostList)))]
async fn list_hosts(State(state): State<AppState>, who: Caller) -> Result<Response, ApiError> {
    who.require(READERS)?;
    let now = state.clock.now();
    // From the host list kept in memory (crate::hostlist), caught up with the table first.
    let hosts = state
        .host_list
        .current(&state.store, state.now_ms())
        .await?;
    let hosts = hosts.iter().map(|h| host_summary(&h.row, now)).collect();
    Ok(Json(HostList { hosts }).into_response())
}

#[utoipa::path(get, path = "/mtwilson/v2/hosts/{name}",
    summary = "One host, with its facts",
    security(("basic" = ["admin", "reader"])),
    params(("name" = String, Path, description = "Host name")),
    responses((status = 200, body = HostDetail),
        (status = 404, description = "no such host", body = nodetrust_proto::ErrorBody)))]
async fn show_host(
    State(state): State<AppState>,
    who: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    who.require(READERS)?;
    let h = state
        .store
        .host(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no host named {name}")))?;
    Ok(Json(host_detail(h, &state)).into_response())
}

#[utoipa::path(delete, path = "/mtwilson/v2/hosts/{name}",
    summary = "Forget a host and its reports",
    security(("basic" = ["admin"])),
    params(("name" = String, Path, description = "Host name")),
    responses((status = 204, description = "forgotten"),
        (status = 404, description = "no such host", body = nodetrust_proto::ErrorBody)))]
async fn delete_host(
    State(state): State<AppState>,
    who: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    who.require(ADMIN)?;
    if state.store.delete_host(&name, state.now_ms()).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound(format!("no host named {name}")))
    }
}

#[utoipa::path(post, path = "/mtwilson/v2/hosts/register",
    summary = "Register: answers a MakeCredential challenge for the EK and AK",
    security(("basic" = ["agent", "admin"])),
    request_body = RegisterRequest,
    responses((status = 200, body = nodetrust_proto::registration::RegisterChallenge)))]
async fn register(
    State(state): State<AppState>,
    _who: AgentCaller,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(registrar::register(&state, req).await?).into_response())
}

#[utoipa::path(post, path = "/mtwilson/v2/hosts/register/{challenge_id}/activate",
    summary = "Return the activated secret; the AK is pinned",
    security(("basic" = ["agent", "admin"])),
    params(("challenge_id" = String, Path, description = "The challenge's id")),
    request_body = ActivateRequest,
    responses((status = 200, body = nodetrust_proto::registration::RegisterResult),
        (status = 404, description = "no open registration with this id (expired, used, or unknown)", body = nodetrust_proto::ErrorBody)))]
async fn activate(
    State(state): State<AppState>,
    _who: AgentCaller,
    Path(challenge_id): Path<String>,
    ApiJson(req): ApiJson<ActivateRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(registrar::activate(&state, &challenge_id, req).await?).into_response())
}

#[utoipa::path(post, path = "/mtwilson/v2/agent-events",
    summary = "The agent (re)started: attest it now",
    security(("basic" = ["agent", "admin"])),
    request_body = AgentStarted,
    responses((status = 202, body = AgentEventAnswer),
        (status = 404, description = "no such host", body = nodetrust_proto::ErrorBody),
        (status = 409, description = "the host is registered with another hardware UUID", body = nodetrust_proto::ErrorBody)))]
async fn agent_event(
    State(state): State<AppState>,
    _who: AgentCaller,
    ApiJson(ev): ApiJson<AgentStarted>,
) -> Result<Response, ApiError> {
    if ev.host_name.len() > 253 || ev.hardware_uuid.len() > 64 {
        return Err(ApiError::bad_request(
            "too_long",
            "host_name is at most 253 characters, hardware_uuid at most 64",
        ));
    }
    let host = state
        .store
        .host(&ev.host_name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no host named {}", ev.host_name)))?;
    if !host.hardware_uuid.eq_ignore_ascii_case(&ev.hardware_uuid) {
        return Err(ApiError::Conflict(format!(
            "host {} is registered with another hardware UUID",
            ev.host_name
        )));
    }
    if !state.agent_event_due(&host.name) {
        // Coalesced: an attestation was scheduled for this host moments ago.
        return Ok((
            StatusCode::ACCEPTED,
            Json(AgentEventAnswer {
                coalesced: true,
                host_name: host.name,
                scheduled: false,
            }),
        )
            .into_response());
    }
    state.store.schedule(&host.name, 0).await?;
    state.queue.wake();
    Ok((
        StatusCode::ACCEPTED,
        Json(AgentEventAnswer {
            coalesced: false,
            host_name: host.name,
            scheduled: true,
        }),
    )
        .into_response())
}

#[utoipa::path(get, path = "/mtwilson/v2/flavors",
    summary = "List flavors",
    security(("basic" = ["admin", "reader"])),
    responses((status = 200, body = FlavorList<Flavor>)))]
async fn list_flavors(State(state): State<AppState>, who: Caller) -> Result<Response, ApiError> {
    who.require(READERS)?;
    Ok(Json(FlavorList {
        flavors: state.flavors.all().await?,
    })
    .into_response())
}

/// The body of `POST /mtwilson/v2/flavors`: a flavor to store, or an import from a registered
/// host.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FlavorOrImport {
    /// One flavor (its `id` is assigned by the server).
    Flavor(Box<Flavor>),
    /// Flavors imported from a registered host's last verified evidence.
    Import(FlavorImport),
}

/// Import flavors from a registered host.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlavorImport {
    /// The host (at most 253 characters).
    pub from_host: String,
    /// The parts to import (case-insensitive); `PLATFORM` and `OS` when absent.
    #[serde(default)]
    pub parts: Vec<FlavorPart>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    from_host: String,
    #[serde(default)]
    parts: Vec<String>,
}

#[utoipa::path(post, path = "/mtwilson/v2/flavors",
    summary = "Create a flavor, or import flavors from a registered host ({\"from_host\", \"parts\"})",
    security(("basic" = ["admin"])),
    request_body = FlavorOrImport,
    responses((status = 201, body = FlavorList<Flavor>)))]
async fn create_flavors(
    State(state): State<AppState>,
    _who: AdminCaller,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let flavors = if body.get("from_host").is_some() {
        let req: ImportRequest = serde_json::from_value(body)
            .map_err(|e| ApiError::bad_request("invalid_field", format!("invalid request: {e}")))?;
        if req.from_host.len() > 253 || req.parts.len() > 4 {
            return Err(ApiError::bad_request(
                "too_long",
                "from_host is at most 253 characters and parts at most 4",
            ));
        }
        let parts = if req.parts.is_empty() {
            vec![FlavorPart::Platform, FlavorPart::Os]
        } else {
            req.parts
                .iter()
                .map(|p| {
                    FlavorPart::parse(p).ok_or_else(|| {
                        ApiError::bad_request(
                            "bad_part",
                            format!(
                                "unknown flavor part {p:?} (PLATFORM, OS, HOST_UNIQUE, RUNTIME)"
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        engine::import_flavors(&state, &req.from_host, &parts).await?
    } else {
        let f: Flavor = serde_json::from_value(body)
            .map_err(|e| ApiError::bad_request("invalid_field", format!("invalid flavor: {e}")))?;
        check_flavor_limits(&f)?;
        f.validate()
            .map_err(|e| ApiError::bad_request("invalid_flavor", e.to_string()))?;
        let mut added = vec![f];
        state.flavors.add(&mut added, state.now_ms()).await?;
        added
    };
    Ok((StatusCode::CREATED, Json(FlavorList { flavors })).into_response())
}

#[utoipa::path(delete, path = "/mtwilson/v2/flavors/{id}",
    summary = "Delete a flavor",
    security(("basic" = ["admin"])),
    params(("id" = String, Path, description = "The flavor's id")),
    responses((status = 204, description = "deleted"),
        (status = 404, description = "no such flavor", body = nodetrust_proto::ErrorBody)))]
async fn delete_flavor(
    State(state): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    who.require(ADMIN)?;
    if state.flavors.delete(&id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound(format!("no flavor {id}")))
    }
}

/// Longest flavor label.
pub const MAX_FLAVOR_LABEL: usize = 256;
/// Longest event label inside a flavor rule.
pub const MAX_EVENT_LABEL: usize = 1024;
/// Most events one flavor rule lists.
pub const MAX_RULE_EVENTS: usize = 4096;

/// Bounds and uniqueness a stored flavor must meet (beyond [`Flavor::validate`]): bounded
/// free text, at most one rule per (bank, PCR).
fn check_flavor_limits(f: &Flavor) -> Result<(), ApiError> {
    if f.label.is_empty() || f.label.chars().count() > MAX_FLAVOR_LABEL {
        return Err(ApiError::bad_request(
            "too_long",
            format!("label must be 1-{MAX_FLAVOR_LABEL} characters"),
        ));
    }
    for (what, v) in [("host_name", &f.host_name), ("source_host", &f.source_host)] {
        if v.as_ref().is_some_and(|v| v.len() > 253) {
            return Err(ApiError::bad_request(
                "too_long",
                format!("{what} must be at most 253 characters"),
            ));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in &f.pcrs {
        if !seen.insert((r.bank.name(), r.index)) {
            return Err(ApiError::bad_request(
                "duplicate_pcr_rule",
                format!(
                    "flavor {:?} has two rules for PCR {} in bank {}: give one rule per bank and PCR",
                    f.label.chars().take(64).collect::<String>(),
                    r.index,
                    r.bank.name()
                ),
            ));
        }
        if r.events.len() > MAX_RULE_EVENTS
            || r.events.iter().any(|e| e.label.len() > MAX_EVENT_LABEL)
        {
            return Err(ApiError::bad_request(
                "too_long",
                format!(
                    "a rule lists at most {MAX_RULE_EVENTS} events, each label at most {MAX_EVENT_LABEL} bytes"
                ),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct ReportQuery {
    host_name: Option<String>,
    #[serde(default)]
    latest: bool,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/mtwilson/v2/reports",
    summary = "Verdict history, newest first",
    security(("basic" = ["admin", "reader"])),
    params(("host_name" = Option<String>, Query, description = "Only this host's reports"),
        ("latest" = Option<bool>, Query, description = "Only the latest report (of the host, or of every host)"),
        ("limit" = Option<i64>, Query, description = "At most this many (1-1000, 100 by default)")),
    responses((status = 200, body = ReportList)))]
async fn list_reports(
    State(state): State<AppState>,
    who: Caller,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    who.require(READERS)?;
    let limit = if q.latest {
        1
    } else {
        q.limit.unwrap_or(100).clamp(1, 1000)
    };
    if q.latest && q.host_name.is_none() {
        return latest_of_every_host(state).await;
    }
    let rows = state.store.reports(q.host_name.as_deref(), limit).await?;
    let reports = signed_views(&state, rows).await?;
    Ok(Json(ReportList { reports }).into_response())
}

/// Hosts per page of `GET /mtwilson/v2/reports?latest=true`.
const LATEST_PAGE: i64 = 1000;

/// The latest report of every host, as the same JSON a [`ReportList`] is, streamed a page of
/// hosts at a time: read, signed and written only as the client takes the body. At 100,000
/// hosts the whole list is about 90 MB, and building it at once took the server from 100 to
/// 420 MB for each call being answered; a page is about 1 MB. The first page is read before
/// the response starts, so a database that fails answers 503 as elsewhere; a failure after
/// that ends the body early (the client sees a transfer cut short, never a short list that
/// parses), and is logged. Each host's report is its latest when its page was read.
async fn latest_of_every_host(state: AppState) -> Result<Response, ApiError> {
    use futures_util::StreamExt as _;
    let first = latest_page(&state, String::new()).await?;
    let rest = futures_util::stream::unfold(first.1, move |after| {
        let state = state.clone();
        async move {
            match latest_page(&state, after?).await {
                Ok((chunk, next)) => Some((Ok(chunk), next)),
                Err(e) => {
                    tracing::warn!(error = %e, "the latest reports of every host: a page failed; the response is cut short");
                    Some((Err(std::io::Error::other(e.to_string())), None))
                }
            }
        }
    });
    let body = futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(first.0)))
        .chain(rest);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// One page of [`latest_of_every_host`]: the hosts after `after` (`""`: the first page, which
/// opens the list), signed and written as JSON, and the host the next page starts after
/// (`None`: this page closes the list). A page follows only a full one, so every page but the
/// first continues a list that already holds a report.
async fn latest_page(
    state: &AppState,
    after: String,
) -> Result<(axum::body::Bytes, Option<String>), ApiError> {
    let rows = state
        .store
        .latest_reports_after(&after, LATEST_PAGE)
        .await?;
    let full = i64::try_from(rows.len()).is_ok_and(|n| n >= LATEST_PAGE);
    let next = rows.last().filter(|_| full).map(|r| r.host_name.clone());
    let views = signed_views(state, rows).await?;
    let first = after.is_empty();
    let mut out = Vec::with_capacity(views.len().saturating_mul(1024).saturating_add(16));
    if first {
        out.extend_from_slice(b"{\"reports\":[");
    }
    for (i, v) in views.iter().enumerate() {
        if i > 0 || !first {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, v).map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    if next.is_none() {
        out.extend_from_slice(b"]}");
    }
    Ok((out.into(), next))
}

/// The body of `POST /mtwilson/v2/host-attestations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// The host to attest now.
    pub host_name: String,
}

#[utoipa::path(post, path = "/mtwilson/v2/host-attestations",
    summary = "Attest a host now and return the new report",
    security(("basic" = ["admin"])),
    request_body = AttestRequest,
    responses((status = 200, body = ReportView),
        (status = 404, description = "no such host", body = nodetrust_proto::ErrorBody),
        (status = 502, description = "the host's agent could not be reached or answered badly", body = nodetrust_proto::ErrorBody)))]
async fn attest_now(
    State(state): State<AppState>,
    _who: AdminCaller,
    ApiJson(req): ApiJson<AttestRequest>,
) -> Result<Response, ApiError> {
    crate::push::refuse_if_push(&state, &req.host_name).await?;
    let report = engine::attest_host(&state, &req.host_name).await?;
    let view =
        signed_view(&state.signer, &report).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(view).into_response())
}

/// Reports as the report endpoints show them, each signed ([`signed_view`]). A long list (the
/// latest report of every host: one signature each, about 20 µs) is signed on the blocking
/// pool, not on an async worker.
async fn signed_views(state: &AppState, rows: Vec<ReportRow>) -> Result<Vec<ReportView>, ApiError> {
    const ON_WORKER: usize = 100;
    let sign = |signer: &crate::jws::Signer, rows: &[ReportRow]| {
        rows.iter()
            .map(|r| signed_view(signer, r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::Internal(e.to_string()))
    };
    if rows.len() <= ON_WORKER {
        return sign(&state.signer, &rows);
    }
    let st = state.clone();
    tokio::task::spawn_blocking(move || sign(&st.signer, &rows))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}

#[utoipa::path(get, path = "/mtwilson/v2/signing-key",
    summary = "The public key signed reports verify with (JWK and PEM)",
    responses((status = 200, body = SigningKey)))]
async fn signing_key(State(state): State<AppState>) -> Response {
    Json(SigningKey {
        alg: "ES256".into(),
        jwk: state.signer.jwk(),
        kid: state.signer.kid().to_string(),
        pem: state.signer.public_pem(),
    })
    .into_response()
}

#[utoipa::path(get, path = "/readyz",
    summary = "Readiness: database writes work (503 with Retry-After when they do not)",
    responses((status = 200, body = Health),
        (status = 503, description = "the database does not take writes", body = NotReady)))]
async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ready().await {
        Ok(()) => Json(Health {
            status: "ready".into(),
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: not ready");
            let mut resp = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(NotReady {
                    error: e,
                    reason: "database".into(),
                    status: "not ready".into(),
                }),
            )
                .into_response();
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
            resp
        }
    }
}

#[utoipa::path(get, path = "/metrics",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain; version=0.0.4")))]
async fn metrics(State(state): State<AppState>) -> Response {
    let (commits, committed) = state.store.report_commits();
    let (shared, activations) = state.store.registration_commits();
    let per_verdict: BTreeMap<&'static str, u64> = state
        .store
        .verdict_counts(state.now_ms())
        .await
        .map(|counts| counts.into_iter().map(|(v, n)| (v.as_str(), n)).collect())
        .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        format!(
            "{}# HELP nodetrust_password_checks_in_flight Password checks (argon2) running now.\n\
             # TYPE nodetrust_password_checks_in_flight gauge\n\
             nodetrust_password_checks_in_flight {}\n\
             # HELP nodetrust_password_checks_peak Most password checks that ran at once.\n\
             # TYPE nodetrust_password_checks_peak gauge\n\
             nodetrust_password_checks_peak {}\n\
             # HELP nodetrust_report_commits_total Group commits of reports (each one transaction).\n\
             # TYPE nodetrust_report_commits_total counter\n\
             nodetrust_report_commits_total {}\n\
             # HELP nodetrust_reports_committed_total Reports written by group commits.\n\
             # TYPE nodetrust_reports_committed_total counter\n\
             nodetrust_reports_committed_total {}\n\
             # HELP nodetrust_registration_commits_total Shared transactions of activations.\n\
             # TYPE nodetrust_registration_commits_total counter\n\
             nodetrust_registration_commits_total {}\n\
             # HELP nodetrust_registrations_committed_total Activations decided in shared transactions.\n\
             # TYPE nodetrust_registrations_committed_total counter\n\
             nodetrust_registrations_committed_total {}\n\
             # HELP nodetrust_appraisals_reused_total Trusted appraisals reused: the same PCR values, event log, flavors and registration as the host's last trusted one.\n\
             # TYPE nodetrust_appraisals_reused_total counter\n\
             nodetrust_appraisals_reused_total {}\n\
             # HELP nodetrust_event_logs_left_out_total Reused appraisals whose agent left out its unchanged event log (the server holds it; the log's SHA-256 stood for it).\n\
             # TYPE nodetrust_event_logs_left_out_total counter\n\
             nodetrust_event_logs_left_out_total {}\n\
             # HELP nodetrust_event_logs_needed_total Answers that left out an event log the server then needed (the quote is not the one last appraised): asked again with the log.\n\
             # TYPE nodetrust_event_logs_needed_total counter\n\
             nodetrust_event_logs_needed_total {}\n\
             # HELP nodetrust_pcr_values_left_out_total Reused appraisals whose agent left out its unchanged PCR values (the server holds them; the quote's signed digest stood for them).\n\
             # TYPE nodetrust_pcr_values_left_out_total counter\n\
             nodetrust_pcr_values_left_out_total {}\n\
             # HELP nodetrust_pcr_values_needed_total Answers that left out PCR values the server then needed (the quote is not the one last appraised): asked again with the values.\n\
             # TYPE nodetrust_pcr_values_needed_total counter\n\
             nodetrust_pcr_values_needed_total {}\n",
            {
                let mut text = state.metrics.render(&per_verdict);
                if let Some(m) = state.labeller_metrics.get() {
                    m.render(&mut text, state.now_ms());
                }
                text
            },
            state.auth.checks_running(),
            state.auth.peak_concurrent_checks(),
            commits,
            committed,
            shared,
            activations,
            state.appraisals.reused(),
            state.appraisals.left_out(),
            state.appraisals.needed(),
            state.appraisals.pcrs_left_out(),
            state.appraisals.pcrs_needed()
        ),
    )
        .into_response()
}
