//! The object validation of the real API server that a labeller can trip: label keys and
//! values, annotation keys and total size, object names. Messages follow apimachinery's.

use serde_json::Value;

/// The most bytes all annotations (keys plus values) may take.
pub const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

const NAME_FMT: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const VALUE_FMT: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const SUBDOMAIN_FMT: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`
fn label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A lowercase RFC 1123 subdomain of at most 253 characters.
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    let ok = !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            b.first().is_some_and(edge)
                && b.last().is_some_and(edge)
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(SUBDOMAIN_FMT.into())
    }
}

/// A qualified name (label or annotation key): `[prefix/]name`.
pub fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err("prefix part must be non-empty".into());
        }
        dns_subdomain(p).map_err(|e| format!("prefix part {e}"))?;
    }
    if name.is_empty() {
        return Err("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 characters".into());
    }
    if !label_chars(name) {
        return Err(NAME_FMT.into());
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters of the label charset.
pub fn label_value(v: &str) -> Result<(), String> {
    if v.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !v.is_empty() && !label_chars(v) {
        return Err(VALUE_FMT.into());
    }
    Ok(())
}

/// One field error: (field path, message as the server prints it).
pub type FieldError = (String, String);

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Validates name, labels and annotations of an object about to be stored.
pub fn object_meta(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Err(e) = dns_subdomain(name) {
        errs.push((
            "metadata.name".to_string(),
            format!("metadata.name: Invalid value: {}: {e}", quote(name)),
        ));
    }
    match obj.pointer("/metadata/labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (k, v) in labels {
                if let Err(e) = qualified_name(k) {
                    errs.push((
                        "metadata.labels".into(),
                        format!("metadata.labels: Invalid value: {}: {e}", quote(k)),
                    ));
                }
                match v.as_str() {
                    Some(s) => {
                        if let Err(e) = label_value(s) {
                            errs.push((
                                "metadata.labels".into(),
                                format!("metadata.labels: Invalid value: {}: {e}", quote(s)),
                            ));
                        }
                    }
                    None => errs.push((
                        "metadata.labels".into(),
                        format!("metadata.labels: Invalid value: {v}: must be a string"),
                    )),
                }
            }
        }
        Some(_) => errs.push((
            "metadata.labels".into(),
            "metadata.labels: Invalid value: must be a map of strings".into(),
        )),
    }
    match obj.pointer("/metadata/annotations") {
        None | Some(Value::Null) => {}
        Some(Value::Object(ann)) => {
            let mut total = 0usize;
            for (k, v) in ann {
                if let Err(e) = qualified_name(&k.to_ascii_lowercase()) {
                    errs.push((
                        "metadata.annotations".into(),
                        format!("metadata.annotations: Invalid value: {}: {e}", quote(k)),
                    ));
                }
                total = total
                    .saturating_add(k.len())
                    .saturating_add(v.as_str().map_or(0, str::len));
                if !v.is_string() {
                    errs.push((
                        "metadata.annotations".into(),
                        format!("metadata.annotations: Invalid value: {v}: must be a string"),
                    ));
                }
            }
            if total > ANNOTATIONS_MAX_BYTES {
                errs.push((
                    "metadata.annotations".into(),
                    format!(
                        "metadata.annotations: Too long: may not be more than {ANNOTATIONS_MAX_BYTES} bytes"
                    ),
                ));
            }
        }
        Some(_) => errs.push((
            "metadata.annotations".into(),
            "metadata.annotations: Invalid value: must be a map of strings".into(),
        )),
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_and_values_follow_the_real_rules() {
        for k in ["a", "ibm-cloud.kubernetes.io/is-trusted", "A_b.c-D", "x/y"] {
            assert!(qualified_name(k).is_ok(), "{k}");
        }
        let long = "a".repeat(64);
        for k in [
            "",
            "/a",
            "a/",
            "-a",
            "a-",
            "Ex.com/a",
            "a/b/c",
            long.as_str(),
        ] {
            assert!(qualified_name(k).is_err(), "{k}");
        }
        assert!(label_value("").is_ok());
        assert!(label_value("true").is_ok());
        assert!(label_value(&"v".repeat(63)).is_ok());
        assert!(label_value(&"v".repeat(64)).is_err());
        assert!(label_value("not ok").is_err());
        assert!(label_value("_x").is_err());
    }
}
