//! The Kubernetes API stand-in driven by kube-rs (the client the labeller and `nodetrust
//! doctor` use): kubeconfig, typed GET/LIST/PATCH, conflicts, the runtime watcher across
//! dropped watches and history compaction, Leases, Events and pod logs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use nodetrust_testkit::kubeapi::{FakeApiServer, Fault};
use serde_json::json;

const TPM: &str = "ibm-cloud.kubernetes.io/tpm-enabled";
const TRUSTED: &str = "ibm-cloud.kubernetes.io/is-trusted";

async fn client(api: &FakeApiServer) -> (Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    api.write_kubeconfig(&path).unwrap();
    let kc = Kubeconfig::read_from(&path).unwrap();
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    (Client::try_from(cfg).unwrap(), dir)
}

fn seeded() -> FakeApiServer {
    let api = FakeApiServer::start().unwrap();
    api.add_node("worker-1", &[(TPM, "true")], "uuid-1")
        .unwrap();
    api.add_node("worker-2", &[(TPM, "true")], "uuid-2")
        .unwrap();
    api.add_node("worker-3", &[(TPM, "false")], "uuid-3")
        .unwrap();
    api
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[tokio::test]
async fn kube_rs_patch_with_a_stale_resource_version_conflicts_until_reread() {
    let api = seeded();
    let (c, _dir) = client(&api).await;
    let nodes: Api<Node> = Api::all(c);
    let list = nodes
        .list(&ListParams::default().labels(&format!("{TPM}=true")))
        .await
        .unwrap();
    let names: Vec<_> = list
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert_eq!(names, ["worker-1", "worker-2"]);
    let n = nodes.get("worker-1").await.unwrap();
    assert_eq!(
        n.status.unwrap().node_info.unwrap().system_uuid,
        "uuid-1".to_string()
    );
    let stale = n.metadata.resource_version.clone().unwrap();
    // Someone else writes first.
    api.update("nodes", None, "worker-1", |v| {
        v["metadata"]["labels"]["other"] = json!("x");
    })
    .unwrap();
    let patch = json!({"metadata": {"resourceVersion": stale, "labels": {TRUSTED: "true"}}});
    let err = nodes
        .patch("worker-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(409), "{err}");
    let fresh = nodes.get("worker-1").await.unwrap();
    let patch = json!({"metadata": {"resourceVersion": fresh.metadata.resource_version, "labels": {TRUSTED: "true"}}});
    let done = nodes
        .patch("worker-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let labels = done.metadata.labels.unwrap();
    assert_eq!(labels[TRUSTED], "true");
    assert_eq!(labels["other"], "x");
    assert_eq!(nodes.get_opt("nope").await.unwrap(), None);
    // Server-side apply is not served: 415, not a silent merge.
    let err = nodes
        .patch(
            "worker-1",
            &PatchParams::apply("labeller"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-1"}}),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(415), "{err}");
    assert_eq!(api.count_requests("PATCH", "worker-2"), 0);
}

/// Waits for the watcher to report `want` (a predicate on the event), skipping others.
async fn until<S>(s: &mut S, what: &str, want: impl Fn(&watcher::Event<Node>) -> bool)
where
    S: futures_util::Stream<Item = Result<watcher::Event<Node>, watcher::Error>> + Unpin,
{
    let fut = async {
        while let Some(ev) = s.next().await {
            if let Ok(ev) = ev {
                if want(&ev) {
                    return;
                }
            }
        }
        panic!("watch stream ended before {what}");
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("no {what} within 20 s"));
}

fn applied(ev: &watcher::Event<Node>, name: &str, label: &str, value: &str) -> bool {
    matches!(ev, watcher::Event::Apply(n)
        if n.metadata.name.as_deref() == Some(name)
            && n.metadata.labels.as_ref().and_then(|l| l.get(label)).map(String::as_str) == Some(value))
}

#[tokio::test]
async fn kube_rs_watcher_follows_changes_across_dropped_watches_and_compaction() {
    let api = seeded();
    let (c, _dir) = client(&api).await;
    let nodes: Api<Node> = Api::all(c);
    let mut s = watcher(
        nodes.clone(),
        watcher::Config::default().labels(&format!("{TPM}=true")),
    )
    .boxed();
    let mut initial = Vec::new();
    let fut = async {
        while let Some(ev) = s.next().await {
            match ev.unwrap() {
                watcher::Event::InitApply(n) => initial.push(n.metadata.name.unwrap()),
                watcher::Event::InitDone => return,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap();
    assert_eq!(initial, ["worker-1", "worker-2"]);

    let set = |name: &str, v: &str| {
        let patch = json!({"metadata": {"labels": {TRUSTED: v}}});
        let nodes = nodes.clone();
        let name = name.to_string();
        async move {
            nodes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap()
        }
    };
    set("worker-1", "true").await;
    until(&mut s, "the first change", |e| {
        applied(e, "worker-1", TRUSTED, "true")
    })
    .await;

    // The server closes every watch: the watcher re-watches from its resourceVersion.
    api.inject(Fault::DropWatches);
    set("worker-2", "false").await;
    until(&mut s, "a change after the dropped watch", |e| {
        applied(e, "worker-2", TRUSTED, "false")
    })
    .await;

    // A change, then compaction, while the watch is down (the watcher is lazy: nothing
    // reconnects until it is polled): re-watching from its resourceVersion gets 410, and the
    // watcher lists again (Init ... InitDone) and still sees the change.
    api.inject(Fault::DropWatches);
    set("worker-1", "false").await;
    api.compact_history();
    until(&mut s, "a relist after 410", |e| {
        matches!(e, watcher::Event::Init)
    })
    .await;
    let fut = async {
        let mut seen = false;
        while let Some(Ok(ev)) = s.next().await {
            match ev {
                watcher::Event::InitApply(n)
                    if n.metadata.name.as_deref() == Some("worker-1")
                        && n.metadata.labels.as_ref().unwrap()[TRUSTED] == "false" =>
                {
                    seen = true;
                }
                watcher::Event::InitDone => return seen,
                _ => {}
            }
        }
        false
    };
    assert!(tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap());
    let lists = api
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v1/nodes" && !r.query.contains("watch"))
        .count();
    assert_eq!(lists, 2, "one initial list and one after the 410");
    assert!(api
        .requests()
        .iter()
        .any(|r| r.query.contains("watch=true") && r.query.contains("allowWatchBookmarks=true")));
}

#[tokio::test]
async fn kube_rs_lease_create_replace_conflict_and_events() {
    let api = seeded();
    let (c, _dir) = client(&api).await;
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-system");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "nodetrust-labeller"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let err = leases
        .create(&PostParams::default(), &lease)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(409));
    let mut mine = created.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let replaced = leases
        .replace("nodetrust-labeller", &PostParams::default(), &mine)
        .await
        .unwrap();
    assert_eq!(replaced.spec.unwrap().holder_identity.as_deref(), Some("b"));
    // Another replica still holding the old resourceVersion loses.
    let mut theirs = created;
    theirs.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let err = leases
        .replace("nodetrust-labeller", &PostParams::default(), &theirs)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(409));
    assert_eq!(
        api.get("lease", Some("kube-system"), "nodetrust-labeller")
            .unwrap()["spec"]["holderIdentity"],
        "b"
    );

    let events: Api<Event> = Api::namespaced(c, "default");
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "worker-1."},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reason": "Untrusted", "action": "Label", "type": "Warning",
        "reportingController": "nodetrust.io/labeller", "reportingInstance": "server-0",
        "regarding": {"kind": "Node", "name": "worker-1", "apiVersion": "v1"},
        "note": "PCR 7 mismatch"
    }))
    .unwrap();
    let posted = events.create(&PostParams::default(), &ev).await.unwrap();
    assert!(posted.metadata.name.unwrap().starts_with("worker-1."));
    let all = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 1);
    assert_eq!(all.items[0].note.as_deref(), Some("PCR 7 mismatch"));
}

#[tokio::test]
async fn kube_rs_pages_lists_and_reads_pod_logs() {
    let api = seeded();
    for i in 0..5 {
        api.add_object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("agent-{i}"), "namespace": "kubx-cit", "labels": {"app": "trust-agent"}},
            "spec": {"nodeName": format!("worker-{}", i % 3 + 1),
                     "containers": [{"name": "run-trust-agent", "image": "x"}]}}))
            .unwrap();
    }
    api.set_pod_log("kubx-cit", "agent-3", "run-trust-agent", "a\nb\nc\n");
    let (c, _dir) = client(&api).await;
    let pods: Api<Pod> = Api::namespaced(c, "kubx-cit");
    let first = pods.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let mut names: Vec<String> = first
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let mut token = first.metadata.continue_.clone();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = pods
            .list(&ListParams::default().limit(2).continue_token(&t))
            .await
            .unwrap();
        names.extend(page.items.iter().filter_map(|p| p.metadata.name.clone()));
        token = page.metadata.continue_.clone();
    }
    assert_eq!(
        names,
        ["agent-0", "agent-1", "agent-2", "agent-3", "agent-4"]
    );
    let on_w1 = pods
        .list(&ListParams::default().fields("spec.nodeName=worker-1"))
        .await
        .unwrap();
    assert_eq!(on_w1.items.len(), 2);
    let log = pods
        .logs(
            "agent-3",
            &LogParams {
                container: Some("run-trust-agent".into()),
                tail_lines: Some(2),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(log, "b\nc\n");
}
