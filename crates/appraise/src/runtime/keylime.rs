//! Keylime's runtime-policy JSON (format version 1), brought over.
//!
//! ```json
//! {"meta": {"version": 1, "generator": 3, "timestamp": "..."}, "release": 0,
//!  "digests": {"/usr/bin/bash": ["<hex>", ...]}, "excludes": ["<python regex>", ...],
//!  "keyrings": {...}, "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
//!  "ima-buf": {...}, "verification-keys": "<JSON string: {keyring: \"{\\\"pubkeys\\\": [b64 DER], \\\"keyids\\\": [int]}\"}>"}
//! ```
//! - `digests`: hex without an algorithm; the algorithm is named by the length (40 `sha1`,
//!   64 `sha256`, 96 `sha384`, 128 `sha512`). Keylime itself compares hex only, so a 64-digit
//!   digest would also match an `sm3` entry there; here it is `sha256`.
//! - `excludes`: Python regular expressions matched at the path's start (`re.match`). Those
//!   that are a literal with `.*` and `.` become [`Glob`]s; the others are kept as
//!   `exclude_regexes` (Rust `regex` syntax, which covers Keylime's usual patterns); one that
//!   does not compile is left out, with a note (the policy is then stricter, never looser).
//! - `verification-keys`: the keys and their key ids become trusted keys.
//! - `boot_aggregate` digests, `keyrings`, `ima-buf` and `dm_policy` are not brought over,
//!   with a note each: the boot aggregate is checked against the quote, and `ima-buf` entries
//!   are not appraised.

use serde_json::Value;

use super::glob::Glob;
use super::keys::{KeyId, TrustedKey};
use super::policy::{FileDigest, PolicyError, RuntimePolicy, MAX_POLICY_BYTES};

/// A Keylime policy brought over, and what could not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeylimeImport {
    /// The policy.
    pub policy: RuntimePolicy,
    /// What was left out or changed, one sentence each.
    pub notes: Vec<String>,
}

fn alg_for_hex_len(n: usize) -> Option<&'static str> {
    match n {
        40 => Some("sha1"),
        64 => Some("sha256"),
        96 => Some("sha384"),
        128 => Some("sha512"),
        _ => None,
    }
}

/// A Keylime exclude as a glob, when it is a literal with `.*` (any run) and `.` (one
/// character), anchored at the start (and at the end only with `$`).
pub(crate) fn regex_as_glob(re: &str) -> Option<String> {
    let body = re.strip_prefix('^').unwrap_or(re);
    let (body, anchored_end) = match body.strip_suffix('$') {
        Some(b) if !b.ends_with('\\') => (b, true),
        _ => (body, false),
    };
    let mut out = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) if e.is_ascii_punctuation() && e != '*' && e != '?' => out.push(e),
                _ => return None,
            },
            '.' => {
                if chars.peek() == Some(&'*') {
                    chars.next();
                    out.push('*');
                } else {
                    out.push('?');
                }
            }
            '*' | '?' | '+' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '^' | '$' => return None,
            c => out.push(c),
        }
    }
    if !anchored_end && !out.ends_with('*') {
        out.push('*');
    }
    (!out.is_empty()).then_some(out)
}

fn keys_from(value: &str, notes: &mut Vec<String>) -> Vec<TrustedKey> {
    let mut out = Vec::new();
    if value.trim().is_empty() {
        return out;
    }
    let mut obj: Value = match serde_json::from_str(value) {
        Ok(v) => v,
        Err(e) => {
            notes.push(format!(
                "verification-keys is not JSON ({e}); no key imported"
            ));
            return out;
        }
    };
    if let Value::String(s) = &obj {
        obj = serde_json::from_str(s).unwrap_or(Value::Null);
    }
    let Value::Object(rings) = obj else {
        notes.push("verification-keys is not an object of keyrings; no key imported".to_string());
        return out;
    };
    for (name, ring) in rings {
        let ring: Value = match ring {
            Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::Null),
            other => other,
        };
        let pubkeys = ring.get("pubkeys").and_then(Value::as_array);
        let keyids = ring.get("keyids").and_then(Value::as_array);
        let Some(pubkeys) = pubkeys else {
            notes.push(format!("keyring {name:?}: no pubkeys; skipped"));
            continue;
        };
        for (i, k) in pubkeys.iter().enumerate() {
            use base64::Engine as _;
            let der = k
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok());
            let Some(der) = der else {
                notes.push(format!("keyring {name:?}: key {i} is not base64; skipped"));
                continue;
            };
            match TrustedKey::from_pem_or_der(&der, &format!("keylime {name}")) {
                Ok(mut key) => {
                    let id = keyids
                        .and_then(|ids| ids.get(i))
                        .and_then(Value::as_u64)
                        .and_then(|v| u32::try_from(v).ok());
                    if let Some(id) = id {
                        key = key.with_key_id(KeyId(id));
                    }
                    out.push(key);
                }
                Err(e) => notes.push(format!("keyring {name:?}: key {i}: {e}; skipped")),
            }
        }
    }
    out
}

impl RuntimePolicy {
    /// Brings over a Keylime runtime policy (see the module documentation for what maps to
    /// what). Fails on a file that is not one, or of another format version.
    pub fn from_keylime(bytes: &[u8]) -> Result<KeylimeImport, PolicyError> {
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge(bytes.len()));
        }
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| PolicyError::Keylime(e.to_string()))?;
        let k = |m: &str| PolicyError::Keylime(m.to_string());
        let obj = v.as_object().ok_or_else(|| k("not a JSON object"))?;
        let version = obj
            .get("meta")
            .and_then(|m| m.get("version"))
            .and_then(Value::as_u64)
            .ok_or_else(|| k("no meta.version (is this a Keylime runtime policy?)"))?;
        if version != 1 {
            return Err(k(&format!("meta.version {version} (version 1 is read)")));
        }
        let mut policy = RuntimePolicy::new();
        let mut notes = Vec::new();
        policy.label = "imported from a Keylime runtime policy".to_string();
        if let Some(ts) = obj
            .get("meta")
            .and_then(|m| m.get("timestamp"))
            .and_then(Value::as_str)
        {
            policy.label = format!(
                "{} ({})",
                policy.label,
                ts.chars().take(64).collect::<String>()
            );
        }
        let digests = obj
            .get("digests")
            .and_then(Value::as_object)
            .ok_or_else(|| k("no digests object"))?;
        for (path, list) in digests {
            let list = list
                .as_array()
                .ok_or_else(|| k(&format!("digests of {path:?} is not a list")))?;
            if path == "boot_aggregate" {
                notes.push(format!(
                    "{} boot_aggregate digest(s) not imported: boot_aggregate is checked against \
                     the quoted PCRs 0-9",
                    list.len()
                ));
                continue;
            }
            for d in list {
                let h = d
                    .as_str()
                    .ok_or_else(|| k(&format!("a digest of {path:?} is not a string")))?;
                let h = h.to_ascii_lowercase();
                let alg = alg_for_hex_len(h.len()).ok_or_else(|| {
                    k(&format!(
                        "digest {h:?} of {path:?} is not 40, 64, 96 or 128 hex digits"
                    ))
                })?;
                let bytes = hex::decode(&h)
                    .map_err(|_| k(&format!("digest {h:?} of {path:?} is not hex")))?;
                policy.add_digest(path, FileDigest::new(alg, bytes)?)?;
            }
        }
        if let Some(ex) = obj.get("excludes").and_then(Value::as_array) {
            for e in ex {
                let Some(re) = e.as_str() else {
                    notes.push("an exclude that is not a string was left out".to_string());
                    continue;
                };
                match regex_as_glob(re) {
                    Some(g) if Glob::new(&g).is_ok() => policy.add_exclude(&g)?,
                    _ => {
                        let ok = regex::RegexBuilder::new(&format!("^(?:{re})"))
                            .size_limit(32 << 20)
                            .build()
                            .is_ok();
                        if ok && !re.is_empty() && re.len() <= 4096 {
                            if !policy.exclude_regexes.iter().any(|r| r == re) {
                                policy.exclude_regexes.push(re.to_string());
                            }
                        } else {
                            notes.push(format!(
                                "exclude {:?} is not a regular expression this verifier reads; \
                                 left out (those paths are appraised)",
                                re.chars().take(160).collect::<String>()
                            ));
                        }
                    }
                }
            }
        }
        for (field, what) in [
            ("keyrings", "keyring key measurements"),
            ("ima-buf", "ima-buf measurements"),
        ] {
            let n = obj
                .get(field)
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            if n > 0 {
                notes.push(format!(
                    "{field}: {n} {what} not imported (ima-buf entries are not appraised)"
                ));
            }
        }
        if obj
            .get("ima")
            .and_then(|i| i.get("dm_policy"))
            .is_some_and(|d| !d.is_null())
        {
            notes.push("ima.dm_policy (device-mapper rules) not imported".to_string());
        }
        if let Some(vk) = obj.get("verification-keys").and_then(Value::as_str) {
            for key in keys_from(vk, &mut notes) {
                policy.add_key(key)?;
            }
        }
        policy.validate()?;
        // The regular expressions must also compile together.
        policy.compile()?;
        Ok(KeylimeImport { policy, notes })
    }
}

#[cfg(test)]
mod tests {
    use super::regex_as_glob;

    #[test]
    fn simple_regexes_become_globs() {
        assert_eq!(regex_as_glob("/tmp/.*").as_deref(), Some("/tmp/*"));
        assert_eq!(regex_as_glob("^/var/log/").as_deref(), Some("/var/log/*"));
        assert_eq!(
            regex_as_glob("^/etc/passwd$").as_deref(),
            Some("/etc/passwd")
        );
        assert_eq!(
            regex_as_glob(r"/usr/lib/.*\.so\..$").as_deref(),
            Some("/usr/lib/*.so.?")
        );
        assert_eq!(
            regex_as_glob("boot_aggregate").as_deref(),
            Some("boot_aggregate*")
        );
        assert_eq!(regex_as_glob("/(tmp|var)/.*"), None);
        assert_eq!(regex_as_glob("/opt/[a-z]+/"), None);
        assert_eq!(regex_as_glob(r"/a\*b"), None);
    }
}
