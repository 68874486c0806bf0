//! HTTP: routing of the Kubernetes URL scheme, discovery, CRUD, patches, watches, pod logs and
//! injected faults.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State as AxState};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::resources::{self, Resource};
use super::selector::{FieldSelector, LabelSelector};
use super::store::{filter_event, ApiError, Part};
use super::{Fault, RequestRecord, Shared};

/// Largest request body accepted (the real server's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;
/// Requests kept in the log (the oldest tenth is dropped when it is full).
pub const MAX_LOGGED: usize = 200_000;
/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

fn json_response(code: u16, v: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.code, &e.to_status());
    if let Some(secs) = e.retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

fn not_found_path(path: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
    )
}

/// The entry point: faults, routing, and the request log.
pub async fn handle(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    let (delay, injected) = take_faults(&shared, &method, &path);
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let resp = match injected {
        Some(e) => error_response(&e),
        None => {
            route(
                &shared,
                req,
                &method,
                &path,
                content_type.as_deref().unwrap_or_default(),
            )
            .await
        }
    };
    let mut st = shared.lock();
    if st.requests.len() >= MAX_LOGGED {
        st.requests.drain(..MAX_LOGGED / 10);
    }
    st.requests.push(RequestRecord {
        method: method.to_string(),
        path,
        query,
        content_type,
        status: resp.status().as_u16(),
    });
    drop(st);
    resp
}

/// Consumes the faults that apply to this request: a delay and/or an error to answer with.
fn take_faults(shared: &Shared, method: &Method, path: &str) -> (Option<u64>, Option<ApiError>) {
    let mut st = shared.lock();
    let mut delay = None;
    let mut err = None;
    let is_node_write = (*method == Method::PUT || *method == Method::PATCH)
        && (path.starts_with("/api/v1/nodes/"));
    for f in st.faults.iter_mut() {
        match f {
            Fault::Delay { ms, times } if *times > 0 && delay.is_none() => {
                *times -= 1;
                delay = Some(*ms);
            }
            Fault::Status {
                code,
                times,
                path_contains,
                method: m,
            } if *times > 0 && err.is_none() => {
                let path_ok = path_contains.as_deref().is_none_or(|p| path.contains(p));
                let method_ok = m
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()));
                if path_ok && method_ok {
                    *times -= 1;
                    let (reason, msg) = match *code {
                        429 => ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
                        500 => ("InternalError", "an error on the server (\"injected fault\") has prevented the request from succeeding"),
                        503 => ("ServiceUnavailable", "the server is currently unable to handle the request"),
                        504 => ("Timeout", "the server was unable to return a response in the time allotted, but may still be processing the request"),
                        _ => ("Unknown", "injected fault"),
                    };
                    let mut e = ApiError::new(*code, reason, msg);
                    if *code == 429 {
                        e.retry_after = Some(1);
                    }
                    err = Some(e);
                }
            }
            Fault::ConflictStorm { times } if *times > 0 && err.is_none() && is_node_write => {
                *times -= 1;
                let name = path
                    .trim_start_matches("/api/v1/nodes/")
                    .split('/')
                    .next()
                    .unwrap_or_default();
                if let Some(r) = resources::resolve("nodes") {
                    err = Some(ApiError::conflict(r, name));
                }
            }
            _ => {}
        }
    }
    st.faults.retain(|f| match f {
        Fault::Delay { times, .. }
        | Fault::Status { times, .. }
        | Fault::ConflictStorm { times } => *times > 0,
        Fault::DropWatches => false,
    });
    (delay, err)
}

/// Where a URL points.
#[derive(Debug)]
struct Target {
    res: &'static Resource,
    /// Namespace in the URL; None for cluster-scoped resources and all-namespace collections.
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_target(segs: &[&str]) -> Option<Target> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, more @ ..]
            if resources::by_url(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            (Some((*ns).to_string()), {
                let mut v = vec![*plural];
                v.extend_from_slice(more);
                v
            })
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some((*n).to_string()), None),
        [p, n, s] => (*p, Some((*n).to_string()), Some((*s).to_string())),
        _ => return None,
    };
    let res = resources::by_url(group, version, plural)?;
    if ns.is_none() && res.namespaced && name.is_some() {
        return None;
    }
    Some(Target { res, ns, name, sub })
}

async fn route(
    shared: &Arc<Shared>,
    req: Request,
    method: &Method,
    path: &str,
    content_type: &str,
) -> Response {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let get = *method == Method::GET;
    match segs.as_slice() {
        ["api"] if get => {
            return json_response(200, &resources::api_versions(&shared.addr.to_string()))
        }
        ["apis"] if get => return json_response(200, &resources::api_group_list()),
        ["version"] if get => return json_response(200, &resources::version()),
        ["healthz"] | ["livez"] | ["readyz"] if get => {
            return (StatusCode::OK, "ok").into_response()
        }
        ["api", v] if get => {
            return match resources::resource_list("", v) {
                Some(l) => json_response(200, &l),
                None => error_response(&not_found_path(path)),
            }
        }
        ["apis", g] if get => {
            return match resources::api_group(g) {
                Some(l) => json_response(200, &l),
                None => error_response(&not_found_path(path)),
            }
        }
        ["apis", g, v] if get => {
            return match resources::resource_list(g, v) {
                Some(l) => json_response(200, &l),
                None => error_response(&not_found_path(path)),
            }
        }
        _ => {}
    }
    let Some(t) = parse_target(&segs) else {
        return error_response(&not_found_path(path));
    };
    let q: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    let body = if *method == Method::GET {
        Bytes::new()
    } else {
        match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                return error_response(&ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    format!("the request body is larger than {MAX_BODY} bytes"),
                ))
            }
        }
    };
    match dispatch(shared, &t, method, &q, content_type, &body) {
        Ok(Reply::Json(code, v)) => json_response(code, &v),
        Ok(Reply::Text(s)) => {
            let mut r = (StatusCode::OK, s).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        Ok(Reply::Watch(w)) => start_watch(shared, &t, w),
        Err(e) => error_response(&e),
    }
}

enum Reply {
    Json(u16, Value),
    Text(String),
    Watch(WatchParams),
}

struct WatchParams {
    ls: LabelSelector,
    fs: FieldSelector,
    rv: Option<u64>,
    bookmarks: bool,
    send_initial: bool,
    timeout: Option<Duration>,
}

fn is_true(q: &HashMap<String, String>, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("true" | "1"))
}

/// POST and PUT bodies must be JSON (protobuf and YAML are not decoded here).
fn check_json_body(content_type: &str) -> Result<(), ApiError> {
    let base = content_type.split(';').next().unwrap_or_default().trim();
    if base.is_empty() || base == "application/json" || base == "*/*" {
        return Ok(());
    }
    Err(ApiError::new(
        415,
        "UnsupportedMediaType",
        format!("the body of the request was in an unknown format - accepted media types include: application/json (got {base:?})"),
    ))
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

fn dispatch(
    shared: &Shared,
    t: &Target,
    method: &Method,
    q: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let res = t.res;
    let ns = t.ns.as_deref().unwrap_or_default();
    let ls = LabelSelector::parse(
        q.get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(ApiError::bad_request)?;
    let fs = FieldSelector::parse(
        q.get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
        res.plural,
    )
    .map_err(ApiError::bad_request)?;
    let part = match t.sub.as_deref() {
        None => Part::Main,
        Some("status") if res.has_status => Part::Status,
        Some("log") if res.plural == "pods" && res.group.is_empty() => {
            if *method != Method::GET {
                return Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    "pods/log only supports GET",
                ));
            }
            let name = t.name.as_deref().unwrap_or_default();
            return pod_log(shared, res, ns, name, q).map(Reply::Text);
        }
        Some(s) => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!(
                    "the server could not find the requested resource ({}/{s})",
                    res.plural
                ),
            ))
        }
    };
    if *method != Method::GET && q.get("dryRun").is_some_and(|d| !d.is_empty()) {
        // Refused rather than ignored: a dry run that wrote would hide a bug.
        return Err(ApiError::bad_request(
            "dryRun is not implemented by this test API server",
        ));
    }
    let mut st = shared.lock();
    match (method.as_str(), t.name.as_deref()) {
        ("GET", None) => {
            if is_true(q, "watch") {
                let rv = match q.get("resourceVersion").map(String::as_str) {
                    None | Some("") | Some("0") => None,
                    Some(s) => Some(s.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!(
                            "resourceVersion {s:?} is not a valid resource version"
                        ))
                    })?),
                };
                let timeout = q
                    .get("timeoutSeconds")
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs);
                return Ok(Reply::Watch(WatchParams {
                    ls,
                    fs,
                    rv,
                    bookmarks: is_true(q, "allowWatchBookmarks"),
                    send_initial: is_true(q, "sendInitialEvents"),
                    timeout,
                }));
            }
            if q.get("resourceVersionMatch").map(String::as_str) == Some("Exact") {
                if let Some(rv) = q.get("resourceVersion").and_then(|s| s.parse::<u64>().ok()) {
                    if rv < st.rv && rv <= st.compacted {
                        return Err(ApiError::expired(format!(
                            "too old resource version: {rv} ({})",
                            st.compacted.saturating_add(1)
                        )));
                    }
                }
            }
            let limit = q.get("limit").and_then(|s| s.parse::<usize>().ok());
            let list = st.list(
                res,
                t.ns.as_deref(),
                &ls,
                &fs,
                limit,
                q.get("continue").map(String::as_str),
            )?;
            Ok(Reply::Json(200, list))
        }
        ("GET", Some(name)) => Ok(Reply::Json(200, st.get(res, ns, name)?)),
        ("POST", None) => {
            if res.namespaced && t.ns.is_none() {
                return Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    "create needs a namespace in the URL",
                ));
            }
            check_json_body(content_type)?;
            let obj = parse_json(body)?;
            Ok(Reply::Json(201, st.create(res, ns, obj, false)?))
        }
        ("PUT", Some(name)) => {
            check_json_body(content_type)?;
            let obj = parse_json(body)?;
            Ok(Reply::Json(200, st.update(res, ns, name, obj, part)?))
        }
        ("PATCH", Some(name)) => {
            let patched = apply_patch(&st.get(res, ns, name)?, content_type, body)?;
            Ok(Reply::Json(200, st.update(res, ns, name, patched, part)?))
        }
        ("DELETE", Some(name)) => {
            let opts = if body.is_empty() {
                None
            } else {
                Some(parse_json(body)?)
            };
            Ok(Reply::Json(200, st.delete(res, ns, name, opts.as_ref())?))
        }
        (m, _) => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{m} is not supported on this URL"),
        )),
    }
}

/// The object after a PATCH, by the request's content type.
fn apply_patch(current: &Value, ct: &str, body: &[u8]) -> Result<Value, ApiError> {
    let patch = parse_json(body)?;
    let mut doc = current.clone();
    // Preconditions are carried by the patch itself: a metadata.resourceVersion in the
    // patched result that differs from the stored one is a conflict (checked by update).
    match ct.split(';').next().unwrap_or_default().trim() {
        "application/merge-patch+json" => super::patch::merge_patch(&mut doc, &patch),
        "application/strategic-merge-patch+json" => super::patch::strategic_merge_patch(&mut doc, &patch)
            .map_err(|e| ApiError::new(422, "Invalid", e))?,
        "application/json-patch+json" => super::patch::json_patch(&mut doc, &patch)
            .map_err(|e| ApiError::new(422, "Invalid", e))?,
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?}; server-side apply is not implemented by this stand-in)"),
            ))
        }
    }
    Ok(doc)
}

fn pod_log(
    shared: &Shared,
    res: &Resource,
    ns: &str,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<String, ApiError> {
    let st = shared.lock();
    let pod = st.get(res, ns, name)?;
    let mut names: Vec<String> = Vec::new();
    for field in ["initContainers", "containers"] {
        if let Some(list) = pod
            .pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
        {
            names.extend(
                list.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .map(str::to_string),
            );
        }
    }
    let container = match q.get("container").filter(|c| !c.is_empty()) {
        Some(c) => {
            if !names.is_empty() && !names.contains(c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c.clone()
        }
        None => match names.as_slice() {
            [one] => one.clone(),
            [] => String::new(),
            many => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    many.join(" ")
                )))
            }
        },
    };
    let text = st
        .logs
        .get(&(ns.to_string(), name.to_string(), container))
        .cloned()
        .unwrap_or_default();
    match q.get("tailLines").and_then(|s| s.parse::<usize>().ok()) {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            let mut out = lines.get(start..).unwrap_or_default().join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            Ok(out)
        }
        None => Ok(text),
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(res: &Resource, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        if let Some(m) = meta.as_object_mut() {
            m.insert(
                "annotations".into(),
                json!({"k8s.io/initial-events-end": "true"}),
            );
        }
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta}),
    )
}

fn start_watch(shared: &Arc<Shared>, t: &Target, w: WatchParams) -> Response {
    let res = t.res;
    let ns = t.ns.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut initial: Vec<Bytes> = Vec::new();
    let mut expired = false;
    let (mut brx, mut last_rv) = {
        let st = shared.lock();
        let brx = st.tx.subscribe();
        match w.rv {
            Some(rv) if rv < st.compacted => {
                expired = true;
                let e = ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    st.compacted.saturating_add(1)
                ));
                initial.push(event_line("ERROR", &e.to_status()));
            }
            Some(rv) => {
                for ev in st.history.iter().filter(|e| e.rv > rv) {
                    if let Some((kind, obj)) = filter_event(ev, res, ns.as_deref(), &w.ls, &w.fs) {
                        initial.push(event_line(kind, &obj));
                    }
                }
            }
            None => {
                for (_, obj) in st.matching(res, ns.as_deref(), &w.ls, &w.fs) {
                    initial.push(event_line("ADDED", obj));
                }
                if w.send_initial && w.bookmarks {
                    initial.push(bookmark(res, st.rv, true));
                }
            }
        }
        (brx, st.rv.max(w.rv.unwrap_or(0)))
    };
    let mut drops = shared.drop_watches.subscribe();
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        let deadline = w.timeout.map(|d| tokio::time::Instant::now() + d);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            // Biased: a drop or a closed client wins over an event that is ready at the same
            // time, so no event committed after `inject(DropWatches)` reaches an old stream.
            let line = tokio::select! {
                biased;
                _ = drops.changed() => return,
                _ = tx.closed() => return,
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => return,
                r = brx.recv() => match r {
                    Ok(ev) => {
                        if ev.rv <= last_rv {
                            continue;
                        }
                        last_rv = ev.rv;
                        match filter_event(&ev, res, ns.as_deref(), &w.ls, &w.fs) {
                            Some((kind, obj)) => event_line(kind, &obj),
                            None => continue,
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let e = ApiError::expired("too old resource version: the watch fell behind");
                        let _ = tx.send(event_line("ERROR", &e.to_status())).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick(), if w.bookmarks => bookmark(res, last_rv, false),
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<Bytes, Infallible>(b), rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    r
}
