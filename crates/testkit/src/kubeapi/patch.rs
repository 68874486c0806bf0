//! The three patch types of the API server on JSON values: JSON merge patch (RFC 7386),
//! strategic merge patch (with the merge keys of the fields a labeller and kubectl touch), and
//! JSON patch (RFC 6902).
//!
//! Strategic merge follows the Go struct tags of `k8s.io/api`: a list field without a
//! `patchStrategy` is replaced whole. `Node.spec.taints` is such a list (no merge key in the
//! real types), so a strategic patch carrying `spec.taints` replaces every taint, as on a real
//! cluster.

use serde_json::{Map, Value};

/// RFC 7386 merge patch: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// How a list field merges under a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// No patch strategy: the patch's list replaces the old one.
    Replace,
    /// Merge maps by this key.
    MergeKey(&'static str),
    /// Merge a list of scalars as a set (finalizers).
    MergeScalars,
}

/// The patch strategy of list `field` below `parent` (the field names above it, list
/// indices left out), from the `patchStrategy`/`patchMergeKey` tags of `k8s.io/api`.
fn list_strategy(parent: &[String], field: &str) -> ListStrategy {
    use ListStrategy::*;
    let parent_last = parent.last().map(String::as_str).unwrap_or_default();
    match field {
        "finalizers" if parent_last == "metadata" => MergeScalars,
        "ownerReferences" if parent_last == "metadata" => MergeKey("uid"),
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => MergeKey("name"),
        "volumeMounts" => MergeKey("mountPath"),
        "volumeDevices" => MergeKey("devicePath"),
        "ports" if parent_last == "containers" || parent_last == "initContainers" => {
            MergeKey("containerPort")
        }
        "ports" if parent_last == "spec" => MergeKey("port"),
        "conditions" | "addresses" => MergeKey("type"),
        "hostAliases" => MergeKey("ip"),
        "podCIDRs" => MergeScalars,
        _ => Replace,
    }
}

/// Applies a strategic merge patch. An error is the message of a 400/422.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    smp_value(target, patch, &mut Vec::new())
}

fn smp_value(target: &mut Value, patch: &Value, path: &mut Vec<String>) -> Result<(), String> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut copy = p.clone();
            copy.remove("$patch");
            *target = Value::Object(copy);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other} in map")),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return Ok(());
    };
    // `$deleteFromPrimitiveList/<field>` first, then plain fields.
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(gone)) = (t.get_mut(field), v) {
                list.retain(|x| !gone.contains(x));
            }
        }
    }
    for (k, v) in p {
        if k.starts_with('$') {
            // $patch handled above; $setElementOrder, $retainKeys and
            // $deleteFromPrimitiveList carry no new content here.
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match v {
            Value::Array(pl) => {
                let strategy = list_strategy(path, k);
                let old = t.remove(k);
                let merged = smp_list(old, pl, strategy, path, k)?;
                t.insert(k.clone(), merged);
            }
            Value::Object(_) => {
                path.push(k.clone());
                let r = smp_value(t.entry(k.clone()).or_insert(Value::Null), v, path);
                path.pop();
                r?;
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(())
}

fn smp_list(
    old: Option<Value>,
    patch: &[Value],
    strategy: ListStrategy,
    path: &mut Vec<String>,
    field: &str,
) -> Result<Value, String> {
    // `[{"$patch": "replace"}, ...]` replaces the list with the remaining elements.
    let replace_all = patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"));
    let clean: Vec<Value> = patch
        .iter()
        .filter(|e| e.get("$patch").and_then(Value::as_str) != Some("replace"))
        .cloned()
        .collect();
    let mut list = match old {
        Some(Value::Array(l)) if !replace_all => l,
        _ => Vec::new(),
    };
    match strategy {
        ListStrategy::Replace => {
            if clean.iter().any(|e| e.get("$patch").is_some()) {
                return Err(format!(
                    "{field}: $patch directives need a list with a patch merge key; this list is replaced whole"
                ));
            }
            Ok(Value::Array(clean))
        }
        _ if replace_all => Ok(Value::Array(clean)),
        ListStrategy::MergeScalars => {
            for e in clean {
                if !list.contains(&e) {
                    list.push(e);
                }
            }
            Ok(Value::Array(list))
        }
        ListStrategy::MergeKey(key) => {
            path.push(field.to_string());
            for e in &clean {
                let Some(kv) = e.get(key) else {
                    path.pop();
                    return Err(format!(
                        "map: {e} does not contain declared merge key: {key}"
                    ));
                };
                let pos = list.iter().position(|x| x.get(key) == Some(kv));
                if e.get("$patch").and_then(Value::as_str) == Some("delete") {
                    if let Some(i) = pos {
                        list.remove(i);
                    }
                    continue;
                }
                match pos.and_then(|i| list.get_mut(i)) {
                    Some(slot) => {
                        if let Err(err) = smp_value(slot, e, path) {
                            path.pop();
                            return Err(err);
                        }
                    }
                    None => {
                        let mut fresh = Value::Null;
                        if let Err(err) = smp_value(&mut fresh, e, path) {
                            path.pop();
                            return Err(err);
                        }
                        list.push(fresh);
                    }
                }
            }
            path.pop();
            Ok(Value::Array(list))
        }
    }
}

/// Unescapes one JSON pointer token (`~1` → `/`, `~0` → `~`).
fn unescape(tok: &str) -> String {
    tok.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(ptr: &str) -> Result<(Vec<String>, String), String> {
    if ptr.is_empty() {
        return Err("the root path \"\" cannot be patched here".into());
    }
    let rest = ptr
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {ptr:?}: must start with '/'"))?;
    let mut toks: Vec<String> = rest.split('/').map(unescape).collect();
    let last = toks.pop().unwrap_or_default();
    Ok((toks, last))
}

fn parent_mut<'a>(doc: &'a mut Value, toks: &[String], ptr: &str) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("doc is missing path: {ptr:?}"))?;
    }
    Ok(cur)
}

fn op_add(doc: &mut Value, ptr: &str, value: Value) -> Result<(), String> {
    let (toks, last) = split_pointer(ptr)?;
    match parent_mut(doc, &toks, ptr)? {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid array index {last:?} in {ptr:?}"))?;
            if i > a.len() {
                return Err(format!("array index out of bounds in {ptr:?}"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("doc is missing path: {ptr:?}")),
    }
}

fn op_remove(doc: &mut Value, ptr: &str) -> Result<Value, String> {
    let (toks, last) = split_pointer(ptr)?;
    let missing = || format!("Unable to remove nonexistent key: {last}: missing value");
    match parent_mut(doc, &toks, ptr)? {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i < a.len() {
                Ok(a.remove(i))
            } else {
                Err(missing())
            }
        }
        _ => Err(missing()),
    }
}

/// Applies an RFC 6902 JSON patch (`add`, `remove`, `replace`, `move`, `copy`, `test`).
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("json patch must be a JSON array of operations")?;
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("operation {op} has no \"path\""))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("operation {op} has no \"value\""))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("operation {op} has no \"from\""))
        };
        match name {
            "add" => op_add(doc, path, value()?)?,
            "remove" => {
                op_remove(doc, path)?;
            }
            "replace" => {
                if doc.pointer(path).is_none() {
                    return Err(format!(
                        "replace operation does not apply: doc is missing key: {path}: missing value"
                    ));
                }
                if let Some(slot) = doc.pointer_mut(path) {
                    *slot = value()?;
                }
            }
            "move" => {
                let v = op_remove(doc, from()?)?;
                op_add(doc, path, v)?;
            }
            "copy" => {
                let f = from()?;
                let v = doc
                    .pointer(f)
                    .cloned()
                    .ok_or_else(|| format!("copy from {f:?}: missing value"))?;
                op_add(doc, path, v)?;
            }
            "test" => {
                let want = value()?;
                if doc.pointer(path) != Some(&want) {
                    return Err(format!("testing value {path} failed: test failed"));
                }
            }
            other => return Err(format!("Unexpected kind: {other:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_merges_and_deletes() {
        let mut d = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        merge_patch(
            &mut d,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        );
        assert_eq!(d, json!({"metadata": {"labels": {"b": "2", "c": "3"}}}));
    }

    #[test]
    fn strategic_patch_replaces_taints_and_merges_conditions() {
        let mut d = json!({
            "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            "metadata": {"finalizers": ["x"]}
        });
        let p = json!({
            "spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Disk", "status": "True"}],
                        "$setElementOrder/conditions": [{"type": "Ready"}, {"type": "Disk"}]},
            "metadata": {"finalizers": ["y"]}
        });
        strategic_merge_patch(&mut d, &p).unwrap();
        assert_eq!(
            d["spec"]["taints"],
            json!([{"key": "b", "effect": "NoExecute"}])
        );
        assert_eq!(
            d["status"]["conditions"],
            json!([{"type": "Ready", "status": "False"}, {"type": "Disk", "status": "True"}])
        );
        assert_eq!(d["metadata"]["finalizers"], json!(["x", "y"]));
        assert!(d["status"].get("$setElementOrder/conditions").is_none());
        strategic_merge_patch(
            &mut d,
            &json!({"status": {"conditions": [{"type": "Disk", "$patch": "delete"}]}}),
        )
        .unwrap();
        assert_eq!(
            d["status"]["conditions"],
            json!([{"type": "Ready", "status": "False"}])
        );
        strategic_merge_patch(&mut d, &json!({"spec": {"taints": null}})).unwrap();
        assert!(d["spec"].get("taints").is_none());
    }

    #[test]
    fn json_patch_ops_and_escaping() {
        let mut d = json!({"metadata": {"labels": {"a/b": "1"}}, "l": [1, 2]});
        json_patch(
            &mut d,
            &json!([
                {"op": "test", "path": "/metadata/labels/a~1b", "value": "1"},
                {"op": "replace", "path": "/metadata/labels/a~1b", "value": "2"},
                {"op": "add", "path": "/metadata/labels/c~0d", "value": "3"},
                {"op": "add", "path": "/l/-", "value": 3},
                {"op": "remove", "path": "/l/0"},
                {"op": "copy", "from": "/l", "path": "/m"},
                {"op": "move", "from": "/m", "path": "/n"}
            ]),
        )
        .unwrap();
        assert_eq!(d["metadata"]["labels"], json!({"a/b": "2", "c~d": "3"}));
        assert_eq!(d["l"], json!([2, 3]));
        assert_eq!(d["n"], json!([2, 3]));
        assert!(d.get("m").is_none());
        let before = d.clone();
        assert!(json_patch(&mut d, &json!([{"op": "test", "path": "/l/0", "value": 9}])).is_err());
        assert!(json_patch(&mut d, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(
            &mut d,
            &json!([{"op": "replace", "path": "/nope", "value": 1}])
        )
        .is_err());
        assert_eq!(d, before);
    }
}
