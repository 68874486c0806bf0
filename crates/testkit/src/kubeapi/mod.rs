//! A loopback stand-in for the Kubernetes API server, for tests of the labeller and of
//! `nodetrust doctor` (kube-rs) and for driving with the real `kubectl`.
//!
//! Plain HTTP on `127.0.0.1:<random port>`, no authentication. Objects are stored as
//! `serde_json::Value`s with the server's semantics: one global, monotonically increasing
//! resourceVersion; uid and creationTimestamp on create; 409 `Conflict` for a write carrying a
//! stale resourceVersion and `AlreadyExists` for a duplicate create; 422 `Invalid` for bad
//! label keys/values, annotation keys or more than 256 KiB of annotations; 404 `NotFound`;
//! no-op writes keep the resourceVersion; the main endpoint of a resource with a `/status`
//! subresource keeps the old status. LIST honours `labelSelector`, `fieldSelector` (the
//! fields the real server allows per resource), `limit`/`continue`. WATCH streams
//! newline-delimited events (chunked), replays from a bounded history (the last
//! [`store::HISTORY_LIMIT`] events) and answers an `ERROR` event with a 410 `Expired` Status
//! for an older resourceVersion; without a resourceVersion (or `0`) it starts with ADDED for
//! every current object; bookmarks on `allowWatchBookmarks`; `timeoutSeconds`; an object that
//! stops (starts) matching a selector is sent as DELETED (ADDED).
//!
//! PATCH: `merge-patch+json`, `strategic-merge-patch+json` (merge keys of the real types;
//! lists without a patch strategy, such as `Node.spec.taints`, are replaced whole, as the real
//! server does) and `json-patch+json`. Server-side apply answers 415.
//!
//! Served: core `v1` nodes, namespaces, pods (+ `pods/log`), configmaps, secrets, events,
//! services, serviceaccounts; `apps/v1` daemonsets, deployments; `coordination.k8s.io/v1`
//! leases; `events.k8s.io/v1` events. `/openapi/*` answers 404 (kubectl then does without).
//! Tables (`as=Table`) are not produced: kubectl prints the plain list (`NAME`, `AGE`).
//!
//! The server runs on a runtime of its own in its own thread, so it works the same from a
//! `#[test]` and from a `#[tokio::test]` (of either flavour); every helper is synchronous and
//! quick (one short lock). Dropping the [`FakeApiServer`] stops it and ends every watch.

mod http;
pub mod patch;
pub mod resources;
pub mod selector;
pub mod store;
pub mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use crate::Result;
use store::{Part, State};

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// URL path, without the query.
    pub path: String,
    /// Raw query string (may be empty).
    pub query: String,
    /// The request's `Content-Type`, if any.
    pub content_type: Option<String>,
    /// HTTP status answered.
    pub status: u16,
}

/// A fault to inject; see [`FakeApiServer::inject`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer the next `times` matching requests with this HTTP code and a Kubernetes Status
    /// (`429` adds `Retry-After: 1`). `path_contains` and `method` narrow what matches.
    Status {
        /// HTTP status code (500, 503, 429, 504, ...).
        code: u16,
        /// How many requests get it.
        times: u32,
        /// Only requests whose path contains this.
        path_contains: Option<String>,
        /// Only requests with this method (case-insensitive).
        method: Option<String>,
    },
    /// Close every watch stream open now (clients see the stream end and must re-watch).
    DropWatches,
    /// Delay the next `times` requests by `ms` milliseconds before answering.
    Delay {
        /// Milliseconds.
        ms: u64,
        /// How many requests.
        times: u32,
    },
    /// The next `times` PUT or PATCH requests to nodes answer 409 Conflict, whatever their
    /// resourceVersion.
    ConflictStorm {
        /// How many writes.
        times: u32,
    },
}

/// State shared by the server task and the test's handle.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    drop_watches: tokio::sync::watch::Sender<u64>,
    addr: SocketAddr,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge the server: take the state as it is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running stand-in. Stops (and ends every watch) on drop.
#[derive(Debug)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn resolve(kind: &str) -> Result<&'static resources::Resource> {
    resources::resolve(kind).ok_or_else(|| {
        format!("kubeapi: unknown kind {kind:?}; served: nodes, namespaces, pods, configmaps, secrets, events, services, serviceaccounts, daemonsets, deployments, leases")
    })
}

fn api_err(e: store::ApiError) -> String {
    format!("kubeapi: {} {}: {}", e.code, e.reason, e.message)
}

impl FakeApiServer {
    /// Starts a server on `127.0.0.1:<free port>` with the namespaces `default`,
    /// `kube-system`, `kube-public` and `kube-node-lease`.
    pub fn start() -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("kubeapi: bind 127.0.0.1:0: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("kubeapi: set_nonblocking: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("kubeapi: local_addr: {e}"))?;
        let (drop_watches, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            drop_watches,
            addr,
        });
        {
            let mut st = shared.lock();
            let ns = resolve("namespaces")?;
            for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                st.create(ns, "", json!({"metadata": {"name": name}}), false)
                    .map_err(api_err)?;
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kubeapi")
            .enable_all()
            .build()
            .map_err(|e| format!("kubeapi: tokio runtime: {e}"))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let thread = std::thread::Builder::new()
            .name("kubeapi".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("kubeapi: listener: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        r = axum::serve(listener, app) => {
                            if let Err(e) = r {
                                eprintln!("kubeapi: serve: {e}");
                            }
                        }
                        _ = rx => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(|e| format!("kubeapi: spawn thread: {e}"))?;
        Ok(Self {
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Kubeconfig text: one cluster, context and user (no credentials), current-context set.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\npreferences: {{}}\n",
            self.url()
        )
    }

    /// Writes [`Self::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.kubeconfig())
            .map_err(|e| format!("kubeapi: write kubeconfig {}: {e}", path.display()))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Creates a Ready node with these labels and `status.nodeInfo.systemUUID`.
    pub fn add_node(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        system_uuid: &str,
    ) -> Result<Value> {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), json!(v)))
            .collect();
        let mut all = labels;
        all.entry("kubernetes.io/hostname")
            .or_insert_with(|| json!(name));
        self.add_object(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": all},
            "spec": {},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                 "message": "kubelet is posting ready status"}],
                "addresses": [{"type": "Hostname", "address": name}],
                "nodeInfo": {"systemUUID": system_uuid, "kubeletVersion": "v1.32.0",
                             "osImage": "Ubuntu 24.04", "architecture": "amd64",
                             "operatingSystem": "linux", "machineID": "", "bootID": "",
                             "kernelVersion": "6.8.0", "containerRuntimeVersion": "containerd://1.7",
                             "kubeProxyVersion": ""}
            }
        }))
    }

    /// The node, if it exists.
    pub fn node(&self, name: &str) -> Option<Value> {
        self.get("nodes", None, name)
    }

    /// Replaces (or creates) a node with this object, status included, as a controller would;
    /// a new resourceVersion and a watch event follow unless nothing changed.
    pub fn set_node(&self, node: Value) -> Result<Value> {
        self.set_object(node)
    }

    /// Creates any served object from its JSON (`apiVersion`, `kind`, `metadata.name`,
    /// `metadata.namespace` — default `default` — required as the API would). A missing
    /// namespace is created first (the API itself answers 404 for it).
    pub fn add_object(&self, obj: Value) -> Result<Value> {
        let (res, ns) = Self::res_ns(&obj)?;
        self.lock().create(res, &ns, obj, true).map_err(api_err)
    }

    /// Creates or replaces an object (everything, status included; the resourceVersion in the
    /// body is ignored).
    pub fn set_object(&self, mut obj: Value) -> Result<Value> {
        let (res, ns) = Self::res_ns(&obj)?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut st = self.lock();
        if st.get(res, &ns, &name).is_err() {
            return st.create(res, &ns, obj, true).map_err(api_err);
        }
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        st.update(res, &ns, &name, obj, Part::All).map_err(api_err)
    }

    /// Changes a stored object in place (`f` gets the current JSON), as a controller would.
    pub fn update(
        &self,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Result<Value> {
        let res = resolve(kind)?;
        let ns = ns.unwrap_or_default();
        let mut st = self.lock();
        let mut obj = st.get(res, ns, name).map_err(api_err)?;
        f(&mut obj);
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        st.update(res, ns, name, obj, Part::All).map_err(api_err)
    }

    fn res_ns(obj: &Value) -> Result<(&'static resources::Resource, String)> {
        let av = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let res = resources::by_kind(av, kind)
            .ok_or_else(|| format!("kubeapi: not served: apiVersion {av:?} kind {kind:?}"))?;
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        Ok((
            res,
            if res.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
        ))
    }

    /// An object by kind (`Node`, `nodes`, `lease`, `ds`, ...), namespace and name.
    pub fn get(&self, kind: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let res = resources::resolve(kind)?;
        self.lock().get(res, ns.unwrap_or_default(), name).ok()
    }

    /// Every object of a kind (in `ns`, or in all namespaces with `None`).
    pub fn list(&self, kind: &str, ns: Option<&str>) -> Vec<Value> {
        let Some(res) = resources::resolve(kind) else {
            return Vec::new();
        };
        let (ls, fs) = (Default::default(), Default::default());
        let st = self.lock();
        st.matching(res, ns.filter(|_| res.namespaced), &ls, &fs)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Deletes an object (a DELETED watch event follows); returns it if it existed.
    pub fn delete(&self, kind: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        let res = resources::resolve(kind)?;
        self.lock()
            .delete(res, ns.unwrap_or_default(), name, None)
            .ok()
    }

    /// What `GET .../pods/{pod}/log?container={container}` answers.
    pub fn set_pod_log(&self, ns: &str, pod: &str, container: &str, text: &str) {
        self.lock().logs.insert(
            (ns.to_string(), pod.to_string(), container.to_string()),
            text.to_string(),
        );
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }

    /// Requests with this method whose path contains `path_contains`.
    pub fn count_requests(&self, method: &str, path_contains: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.contains(path_contains))
            .count()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Forgets the watch history, as etcd compaction does: a watch or continued list from any
    /// resourceVersion before now gets 410 Expired.
    pub fn compact_history(&self) {
        self.lock().compact();
    }

    /// Injects a fault. [`Fault::DropWatches`] acts at once; the others apply to the next
    /// requests, in the order injected, until used up or [`Self::clear_faults`].
    pub fn inject(&self, fault: Fault) {
        if fault == Fault::DropWatches {
            self.shared
                .drop_watches
                .send_modify(|n| *n = n.wrapping_add(1));
            return;
        }
        self.lock().faults.push(fault);
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
