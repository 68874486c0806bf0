//! Label selectors (equality- and set-based, as `labels.Parse` accepts) and field selectors.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector: every requirement must hold (comma is AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Req>);

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "unable to parse requirement: unmatched ')' in {s:?}"
                    ));
                }
            }
            ',' if depth == 0 => {
                parts.push(s.get(start..i).unwrap_or_default());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!(
            "unable to parse requirement: unmatched '(' in {s:?}"
        ));
    }
    parts.push(s.get(start..).unwrap_or_default());
    Ok(parts)
}

fn check_key(k: &str) -> Result<String, String> {
    let k = k.trim();
    if k.is_empty() {
        return Err("unable to parse requirement: found '', expected: identifier".into());
    }
    if let Err(msg) = super::validate::qualified_name(k) {
        return Err(format!(
            "unable to parse requirement: key: Invalid value: {k:?}: {msg}"
        ));
    }
    Ok(k.to_string())
}

fn check_value(v: &str) -> Result<String, String> {
    let v = v.trim();
    if let Err(msg) = super::validate::label_value(v) {
        return Err(format!(
            "unable to parse requirement: values[0]: Invalid value: {v:?}: {msg}"
        ));
    }
    Ok(v.to_string())
}

fn parse_set(key: &str, rest: &str) -> Result<(String, Vec<String>), String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: found {rest:?}, expected: '('"))?;
    let values = inner
        .split(',')
        .map(check_value)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((check_key(key)?, values))
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter; an error is the message of a 400.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for part in split_top(s)? {
            let p = part.trim();
            let req = if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(check_key(k)?)
            } else if let Some((k, v)) = p.split_once("!=") {
                Req::NotEq(check_key(k)?, check_value(v)?)
            } else if let Some((k, v)) = p.split_once("==") {
                Req::Eq(check_key(k)?, check_value(v)?)
            } else if let Some((k, v)) = p.split_once('=') {
                Req::Eq(check_key(k)?, check_value(v)?)
            } else if let Some(idx) = p.find(" notin ").or_else(|| p.find(" notin(")) {
                let (k, rest) = p.split_at(idx);
                let rest = rest.trim_start().trim_start_matches("notin");
                let (k, vs) = parse_set(k, rest)?;
                Req::NotIn(k, vs)
            } else if let Some(idx) = p.find(" in ").or_else(|| p.find(" in(")) {
                let (k, rest) = p.split_at(idx);
                let rest = rest.trim_start().trim_start_matches("in");
                let (k, vs) = parse_set(k, rest)?;
                Req::In(k, vs)
            } else if p.contains(['<', '>', '(', ')', ' ']) {
                return Err(format!("unable to parse requirement: {p:?}"));
            } else {
                Req::Exists(check_key(p)?)
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector: `path=value`, `path==value`, `path!=value`, comma-AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The fields the real server lets a selector name, per resource (plural); every resource
/// also has `metadata.name` and `metadata.namespace`.
fn allowed_fields(plural: &str) -> &'static [&'static str] {
    match plural {
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "nodes" => &["spec.unschedulable"],
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "secrets" => &["type"],
        "namespaces" => &["status.phase"],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parses `fieldSelector` for a resource; fields the real server refuses give its 400 text.
    pub fn parse(s: &str, plural: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(out));
        }
        for part in s.split(',') {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !allowed_fields(plural).contains(&field)
            {
                return Err(format!("field label not supported: {field}"));
            }
            out.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(Self(out))
    }

    /// Whether the object satisfies every term (a missing field reads as "").
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let ptr = format!("/{}", field.replace('.', "/"));
            let have = match obj.pointer(&ptr) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(other) => other.to_string(),
            };
            (have == *want) == *eq
        })
    }

    /// The name a `metadata.name=X` term pins, if any.
    pub fn pinned_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, eq, _)| f == "metadata.name" && *eq)
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(labels: Value) -> Value {
        json!({"metadata": {"name": "n", "labels": labels}})
    }

    #[test]
    fn label_selector_operators() {
        let n = node(json!({"a": "1", "b": "2", "x.io/t": "true"}));
        let ok = [
            "a=1",
            "a==1",
            "a!=2",
            "a",
            "!c",
            "a=1,b=2",
            "a in (1,3)",
            "c notin (1)",
            "b notin (1, 3)",
            "x.io/t=true",
            "",
        ];
        for s in ok {
            assert!(LabelSelector::parse(s).unwrap().matches(&n), "{s}");
        }
        let no = [
            "a=2",
            "a!=1",
            "c",
            "!a",
            "a=1,b=3",
            "a in (2,3)",
            "a notin (1)",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(&n), "{s}");
        }
        assert!(LabelSelector::parse("a in (1").is_err());
        assert!(LabelSelector::parse("a=bad value").is_err());
        assert!(LabelSelector::parse("a>1").is_err());
    }

    #[test]
    fn field_selector_terms_and_refused_fields() {
        let p = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "w1"}});
        let f = FieldSelector::parse("metadata.name=p,spec.nodeName=w1", "pods").unwrap();
        assert!(f.matches(&p));
        assert_eq!(f.pinned_name(), Some("p"));
        assert!(!FieldSelector::parse("spec.nodeName!=w1", "pods")
            .unwrap()
            .matches(&p));
        let e = FieldSelector::parse("spec.nodeName=w1", "configmaps").unwrap_err();
        assert!(e.contains("field label not supported"), "{e}");
    }
}
