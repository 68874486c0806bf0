//! The object store: one global resourceVersion, objects by (resource, namespace, name), a
//! bounded watch history and the write rules of the real API server (conflicts, validation,
//! no-op updates that do not bump the resourceVersion).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use super::resources::Resource;
use super::selector::{FieldSelector, LabelSelector};
use super::validate;
use super::{Fault, RequestRecord};

/// Events kept for watches that resume from a resourceVersion.
pub const HISTORY_LIMIT: usize = 1000;

/// (resource id, namespace or "", name)
pub type Key = (String, String, String);

/// A stored change, as watches replay it.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub rid: String,
    pub ns: String,
    pub kind: &'static str,
    pub object: Value,
    /// The object before a MODIFIED (for selector transitions).
    pub prev: Option<Value>,
}

/// A Kubernetes `Status` failure, with the HTTP code it is sent with.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, res: &Resource, name: &str) -> Self {
        let mut d = json!({"name": name, "kind": res.plural});
        if !res.group.is_empty() {
            if let Some(m) = d.as_object_mut() {
                m.insert("group".into(), json!(res.group));
            }
        }
        self.details = Some(d);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn not_found(res: &Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", qualified(res)),
        )
        .with_details(res, name)
    }

    pub fn conflict(res: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                qualified(res)
            ),
        )
        .with_details(res, name)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        let mut details = self.details.clone();
        if let Some(secs) = self.retry_after {
            let d = details.get_or_insert_with(|| json!({}));
            if let Some(m) = d.as_object_mut() {
                m.insert("retryAfterSeconds".into(), json!(secs));
            }
        }
        if let (Some(d), Some(m)) = (details, s.as_object_mut()) {
            m.insert("details".into(), d);
        }
        s
    }
}

/// `nodes` or `leases.coordination.k8s.io`, as server messages name a resource.
pub fn qualified(res: &Resource) -> String {
    res.id()
}

/// RFC 3339 UTC timestamp (seconds) of now.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main endpoint: for resources with a status subresource the status is kept.
    Main,
    /// `/status`: only the status changes.
    Status,
    /// Test helpers: everything.
    All,
}

/// Everything behind the server's one lock.
#[derive(Debug)]
pub struct State {
    pub rv: u64,
    pub objects: BTreeMap<Key, Value>,
    pub history: VecDeque<Arc<Event>>,
    /// Events with a resourceVersion at or below this one are gone from the history.
    pub compacted: u64,
    pub logs: BTreeMap<(String, String, String), String>,
    pub requests: Vec<RequestRecord>,
    pub faults: Vec<Fault>,
    uid_seq: u64,
    pub tx: broadcast::Sender<Arc<Event>>,
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let o = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let m = o.entry("metadata").or_insert_with(|| json!({}));
    if m.is_null() {
        *m = json!({});
    }
    m.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be a JSON object"))
}

fn set_type(obj: &mut Value, res: &Resource) {
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), json!(res.api_version()));
        o.insert("kind".into(), json!(res.kind));
    }
}

/// Whether two objects differ other than in metadata.resourceVersion.
fn differs(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) != strip(b)
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            rv: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 0,
            logs: BTreeMap::new(),
            requests: Vec::new(),
            faults: Vec::new(),
            uid_seq: 0,
            tx,
        }
    }

    fn next_uid(&mut self) -> String {
        self.uid_seq = self.uid_seq.wrapping_add(1);
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{t:08x}-0000-4000-8000-{:012x}", self.uid_seq)
    }

    /// Stores (or removes, for DELETED) an object under a new resourceVersion and records the
    /// event for watches.
    fn commit(
        &mut self,
        res: &Resource,
        key: Key,
        kind: &'static str,
        mut obj: Value,
        prev: Option<Value>,
    ) -> Value {
        self.rv = self.rv.saturating_add(1);
        if let Ok(m) = meta_mut(&mut obj) {
            m.insert("resourceVersion".into(), json!(self.rv.to_string()));
        }
        if kind == "DELETED" {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key.clone(), obj.clone());
        }
        let ev = Arc::new(Event {
            rv: self.rv,
            rid: res.id(),
            ns: key.1,
            kind,
            object: obj.clone(),
            prev,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > HISTORY_LIMIT {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receiver is not an error: nobody is watching.
        let _ = self.tx.send(ev);
        obj
    }

    /// Forgets the watch history: a watch from any resourceVersion before now gets 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    pub fn key(res: &Resource, ns: &str, name: &str) -> Key {
        let ns = if res.namespaced { ns } else { "" };
        (res.id(), ns.to_string(), name.to_string())
    }

    pub fn get(&self, res: &Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&Self::key(res, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .contains_key(&("namespaces".to_string(), String::new(), ns.to_string()))
    }

    fn invalid(res: &Resource, name: &str, errs: Vec<validate::FieldError>) -> ApiError {
        let msgs: Vec<&str> = errs.iter().map(|(_, m)| m.as_str()).collect();
        let joined = if msgs.len() == 1 {
            msgs.concat()
        } else {
            format!("[{}]", msgs.join(", "))
        };
        let causes: Vec<Value> = errs
            .iter()
            .map(|(field, msg)| {
                let short = msg
                    .strip_prefix(&format!("{field}: "))
                    .unwrap_or(msg.as_str());
                json!({"reason": "FieldValueInvalid", "message": short, "field": field})
            })
            .collect();
        let mut e = ApiError::new(
            422,
            "Invalid",
            format!("{} {name:?} is invalid: {joined}", res.kind),
        )
        .with_details(res, name);
        if let Some(m) = e.details.as_mut().and_then(Value::as_object_mut) {
            // Invalid names the kind (NotFound, Conflict, AlreadyExists name the resource).
            m.insert("kind".into(), json!(res.kind));
            m.insert("causes".into(), json!(causes));
        }
        e
    }

    /// POST: creates an object. `ensure_ns` creates a missing namespace (test seeding).
    pub fn create(
        &mut self,
        res: &Resource,
        ns: &str,
        mut obj: Value,
        ensure_ns: bool,
    ) -> Result<Value, ApiError> {
        let uid = self.next_uid();
        let m = meta_mut(&mut obj)?;
        let name = match m.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match m.get("generateName").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => {
                    let suffix: String = uid
                        .chars()
                        .rev()
                        .filter(char::is_ascii_alphanumeric)
                        .take(5)
                        .collect();
                    format!("{g}{suffix}")
                }
                _ => {
                    return Err(Self::invalid(
                        res,
                        "",
                        vec![(
                            "metadata.name".into(),
                            "metadata.name: Required value: name or generateName is required"
                                .into(),
                        )],
                    ))
                }
            },
        };
        m.insert("name".into(), json!(name));
        if res.namespaced {
            if let Some(body_ns) = m.get("namespace").and_then(Value::as_str) {
                if !body_ns.is_empty() && body_ns != ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
            m.insert("namespace".into(), json!(ns));
        } else {
            m.remove("namespace");
        }
        m.remove("resourceVersion");
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        set_type(&mut obj, res);
        if res.plural == "namespaces" && res.group.is_empty() {
            if let Some(o) = obj.as_object_mut() {
                o.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
                o.insert("status".into(), json!({"phase": "Active"}));
            }
        }
        let errs = validate::object_meta(&obj);
        if !errs.is_empty() {
            return Err(Self::invalid(res, &name, errs));
        }
        if res.namespaced && !self.namespace_exists(ns) {
            if ensure_ns {
                let ns_res = super::resources::resolve("namespaces")
                    .ok_or_else(|| ApiError::internal("namespaces resource missing"))?;
                self.create(ns_res, "", json!({"metadata": {"name": ns}}), false)?;
            } else {
                let ns_res = super::resources::resolve("namespaces")
                    .ok_or_else(|| ApiError::internal("namespaces resource missing"))?;
                return Err(ApiError::not_found(ns_res, ns));
            }
        }
        let key = Self::key(res, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} {name:?} already exists", qualified(res)),
            )
            .with_details(res, &name));
        }
        Ok(self.commit(res, key, "ADDED", obj, None))
    }

    /// PUT, PATCH and helpers: replaces an object with `new`, following the server's rules.
    pub fn update(
        &mut self,
        res: &Resource,
        ns: &str,
        name: &str,
        mut new: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        let key = Self::key(res, ns, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let old_rv = meta_str(&old, "resourceVersion")
            .unwrap_or_default()
            .to_string();
        {
            let m = meta_mut(&mut new)?;
            match m.get("resourceVersion").and_then(Value::as_str) {
                Some(rv) if !rv.is_empty() && rv != old_rv => {
                    return Err(ApiError::conflict(res, name));
                }
                _ => {}
            }
            match m.get("name").and_then(Value::as_str) {
                Some(n) if n != name => {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )));
                }
                _ => {}
            }
            m.insert("name".into(), json!(name));
            if res.namespaced {
                match m.get("namespace").and_then(Value::as_str) {
                    Some(n) if !n.is_empty() && n != ns => {
                        return Err(ApiError::bad_request(
                            "the namespace of the provided object does not match the namespace sent on the request",
                        ));
                    }
                    _ => {}
                }
                m.insert("namespace".into(), json!(ns));
            }
            for keep in ["uid", "creationTimestamp"] {
                match old.get("metadata").and_then(|om| om.get(keep)) {
                    Some(v) => {
                        m.insert(keep.into(), v.clone());
                    }
                    None => {
                        m.remove(keep);
                    }
                }
            }
            m.insert("resourceVersion".into(), json!(old_rv));
        }
        set_type(&mut new, res);
        if res.has_status {
            match part {
                Part::Main => {
                    if let Some(o) = new.as_object_mut() {
                        match old.get("status") {
                            Some(s) => o.insert("status".into(), s.clone()),
                            None => o.remove("status"),
                        };
                    }
                }
                Part::Status => {
                    let status = new.get("status").cloned();
                    let mut kept = old.clone();
                    if let Some(o) = kept.as_object_mut() {
                        match status {
                            Some(s) => o.insert("status".into(), s),
                            None => o.remove("status"),
                        };
                    }
                    new = kept;
                }
                Part::All => {}
            }
        }
        let errs = validate::object_meta(&new);
        if !errs.is_empty() {
            return Err(Self::invalid(res, name, errs));
        }
        if !differs(&old, &new) {
            return Ok(old);
        }
        Ok(self.commit(res, key, "MODIFIED", new, Some(old)))
    }

    /// DELETE, with the optional preconditions of a `DeleteOptions` body.
    pub fn delete(
        &mut self,
        res: &Resource,
        ns: &str,
        name: &str,
        options: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let key = Self::key(res, ns, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        if let Some(pre) = options.and_then(|o| o.get("preconditions")) {
            for field in ["resourceVersion", "uid"] {
                if let Some(want) = pre.get(field).and_then(Value::as_str) {
                    if meta_str(&old, field) != Some(want) {
                        return Err(ApiError::new(
                            409,
                            "Conflict",
                            format!(
                                "Operation cannot be fulfilled on {} {name:?}: Precondition failed: {field}: {want}, {field} in object meta: {}",
                                qualified(res),
                                meta_str(&old, field).unwrap_or_default()
                            ),
                        )
                        .with_details(res, name));
                    }
                }
            }
        }
        if res.plural == "namespaces" && res.group.is_empty() {
            let inside: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| k.1 == name && k.0 != "namespaces")
                .cloned()
                .collect();
            for k in inside {
                if let Some(r) = super::resources::RESOURCES.iter().find(|r| r.id() == k.0) {
                    if let Some(o) = self.objects.get(&k).cloned() {
                        self.commit(r, k, "DELETED", o.clone(), Some(o));
                    }
                }
            }
            self.logs.retain(|(lns, _, _), _| lns != name);
        }
        if res.plural == "pods" && res.group.is_empty() {
            self.logs
                .retain(|(lns, pod, _), _| !(lns == ns && pod == name));
        }
        Ok(self.commit(res, key, "DELETED", old.clone(), Some(old)))
    }

    /// Matching objects in key order.
    pub fn matching<'a>(
        &'a self,
        res: &'a Resource,
        ns: Option<&'a str>,
        ls: &'a LabelSelector,
        fs: &'a FieldSelector,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        let rid = res.id();
        self.objects.iter().filter(move |(k, v)| {
            k.0 == rid && ns.is_none_or(|n| k.1 == n) && ls.matches(v) && fs.matches(v)
        })
    }

    /// LIST with `limit`/`continue` pagination.
    pub fn list(
        &self,
        res: &Resource,
        ns: Option<&str>,
        ls: &LabelSelector,
        fs: &FieldSelector,
        limit: Option<usize>,
        cont: Option<&str>,
    ) -> Result<Value, ApiError> {
        let mut list_rv = self.rv;
        let mut after: Option<(String, String)> = None;
        if let Some(tok) = cont.filter(|t| !t.is_empty()) {
            let mut parts = tok.splitn(3, ':');
            let (Some(rv), Some(tns), Some(tname)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(ApiError::bad_request(format!(
                    "continue key is not valid: {tok:?}"
                )));
            };
            let rv: u64 = rv.parse().map_err(|_| {
                ApiError::bad_request(format!("continue key is not valid: {tok:?}"))
            })?;
            if rv < self.compacted {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            list_rv = rv;
            after = Some((tns.to_string(), tname.to_string()));
        }
        let all: Vec<(&Key, &Value)> = self
            .matching(res, ns, ls, fs)
            .filter(|(k, _)| {
                after
                    .as_ref()
                    .is_none_or(|(a_ns, a_name)| (&k.1, &k.2) > (a_ns, a_name))
            })
            .collect();
        let take = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let items: Vec<Value> = all.iter().take(take).map(|(_, v)| (*v).clone()).collect();
        let mut meta = json!({"resourceVersion": list_rv.to_string()});
        if all.len() > take {
            if let (Some((k, _)), Some(m)) = (all.get(take.saturating_sub(1)), meta.as_object_mut())
            {
                m.insert(
                    "continue".into(),
                    json!(format!("{list_rv}:{}:{}", k.1, k.2)),
                );
                m.insert("remainingItemCount".into(), json!(all.len() - take));
            }
        }
        Ok(json!({
            "kind": format!("{}List", res.kind),
            "apiVersion": res.api_version(),
            "metadata": meta,
            "items": items,
        }))
    }
}

/// A watch's view of a stored event: the type it is sent as, after selector transitions
/// (an object that stops matching is sent as DELETED, one that starts matching as ADDED).
pub fn filter_event(
    ev: &Event,
    res: &Resource,
    ns: Option<&str>,
    ls: &LabelSelector,
    fs: &FieldSelector,
) -> Option<(&'static str, Value)> {
    if ev.rid != res.id() || ns.is_some_and(|n| n != ev.ns) {
        return None;
    }
    let m = |v: &Value| ls.matches(v) && fs.matches(v);
    let now = m(&ev.object);
    match ev.kind {
        "MODIFIED" => {
            let before = ev.prev.as_ref().is_some_and(m);
            match (before, now) {
                (true, true) => Some(("MODIFIED", ev.object.clone())),
                (false, true) => Some(("ADDED", ev.object.clone())),
                (true, false) => Some(("DELETED", ev.object.clone())),
                (false, false) => None,
            }
        }
        kind => now.then(|| (kind, ev.object.clone())),
    }
}
