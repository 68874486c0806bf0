//! The resources the stand-in serves, and the discovery documents built from them.

use serde_json::{json, Value};

/// One served resource (a `group/version` plus a plural name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// Version, always the one served (`v1`).
    pub version: &'static str,
    /// Plural, lower case: the URL segment (`nodes`).
    pub plural: &'static str,
    /// Singular, lower case (`node`).
    pub singular: &'static str,
    /// Kind (`Node`).
    pub kind: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Whether a `/status` subresource exists (the main endpoint then keeps the old status).
    pub has_status: bool,
}

impl Resource {
    /// `v1` or `group/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Storage identity: `nodes` or `leases.coordination.k8s.io`.
    pub fn id(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const fn core(
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    has_status: bool,
) -> Resource {
    Resource {
        group: "",
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        has_status,
    }
}

const fn grouped(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    short_names: &'static [&'static str],
    has_status: bool,
) -> Resource {
    Resource {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced: true,
        short_names,
        has_status,
    }
}

/// Every resource served. Order matters for [`resolve`]: the core `events` comes first.
pub const RESOURCES: &[Resource] = &[
    core("nodes", "node", "Node", false, &["no"], true),
    core("namespaces", "namespace", "Namespace", false, &["ns"], true),
    core("pods", "pod", "Pod", true, &["po"], true),
    core("configmaps", "configmap", "ConfigMap", true, &["cm"], false),
    core("secrets", "secret", "Secret", true, &[], false),
    core("events", "event", "Event", true, &["ev"], false),
    core("services", "service", "Service", true, &["svc"], true),
    core(
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        false,
    ),
    grouped(
        "apps",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        &["ds"],
        true,
    ),
    grouped(
        "apps",
        "deployments",
        "deployment",
        "Deployment",
        &["deploy"],
        true,
    ),
    grouped(
        "coordination.k8s.io",
        "leases",
        "lease",
        "Lease",
        &[],
        false,
    ),
    grouped("events.k8s.io", "events", "event", "Event", &["ev"], false),
];

/// The groups of `/apis` (the core group is served at `/api`).
const GROUPS: &[&str] = &["apps", "coordination.k8s.io", "events.k8s.io"];

/// The resource at `group/version/plural` of a URL.
pub fn by_url(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// A resource named the way a test names it: kind (`Node`), plural (`nodes`), singular, short
/// name, or `plural.group` (`events.events.k8s.io`); case-insensitive. Core wins on ambiguity.
pub fn resolve(name: &str) -> Option<&'static Resource> {
    let n = name.to_ascii_lowercase();
    RESOURCES.iter().find(|r| {
        r.kind.eq_ignore_ascii_case(&n)
            || r.plural == n
            || r.singular == n
            || r.short_names.contains(&n.as_str())
            || r.id() == n
    })
}

/// The resource of an object by its `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

fn verbs() -> Value {
    json!(["create", "delete", "get", "list", "patch", "update", "watch"])
}

fn resource_entry(r: &Resource) -> Value {
    let mut e = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": verbs(),
    });
    if !r.short_names.is_empty() {
        if let Some(m) = e.as_object_mut() {
            m.insert("shortNames".into(), json!(r.short_names));
        }
    }
    e
}

/// `APIResourceList` of `groupVersion` (`v1` or `apps/v1`), if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(resource_entry(r));
        if r.has_status {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if r.plural == "pods" && r.group.is_empty() {
            resources.push(json!({
                "name": "pods/log",
                "singularName": "",
                "namespaced": true,
                "kind": "Pod",
                "verbs": ["get"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

/// `/api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    })
}

fn group_entry(name: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
    json!({
        "name": name,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

/// `/apis`.
pub fn api_group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": GROUPS.iter().map(|g| group_entry(g)).collect::<Vec<_>>(),
    })
}

/// `/apis/{group}`.
pub fn api_group(name: &str) -> Option<Value> {
    if !GROUPS.contains(&name) {
        return None;
    }
    let mut g = group_entry(name);
    if let Some(m) = g.as_object_mut() {
        m.insert("kind".into(), json!("APIGroup"));
        m.insert("apiVersion".into(), json!("v1"));
    }
    Some(g)
}

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-nodetrust-testkit",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_names_kinds_plurals_and_short_names() {
        assert_eq!(resolve("Node").map(|r| r.plural), Some("nodes"));
        assert_eq!(resolve("ds").map(|r| r.kind), Some("DaemonSet"));
        assert_eq!(
            resolve("lease").map(|r| r.group),
            Some("coordination.k8s.io")
        );
        assert_eq!(resolve("events").map(|r| r.group), Some(""));
        assert_eq!(
            resolve("events.events.k8s.io").map(|r| r.group),
            Some("events.k8s.io")
        );
        assert!(resolve("widgets").is_none());
    }
}
