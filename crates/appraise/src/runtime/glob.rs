//! Exclude globs: `*` matches any run of characters, `/` included (`/var/log/*` excludes the
//! whole tree below `/var/log/`), `?` exactly one character, everything else itself. A pattern
//! must match the whole path.

use serde::{Deserialize, Serialize};

/// Longest pattern.
pub(crate) const MAX_GLOB_LEN: usize = 4096;

/// One exclude pattern, checked when built.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Glob {
    pattern: String,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// Empty.
    #[error("an exclude pattern is empty")]
    Empty,
    /// Too long.
    #[error("an exclude pattern has {0} bytes, more than {MAX_GLOB_LEN}")]
    TooLong(usize),
    /// A NUL byte, which no path holds.
    #[error("an exclude pattern holds a NUL byte")]
    Nul,
}

impl Glob {
    /// Checks and keeps `pattern`.
    pub fn new(pattern: &str) -> Result<Self, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        if pattern.len() > MAX_GLOB_LEN {
            return Err(GlobError::TooLong(pattern.len()));
        }
        if pattern.contains('\0') {
            return Err(GlobError::Nul);
        }
        Ok(Self {
            pattern: pattern.to_string(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern has no wildcard (it names one path).
    pub fn is_literal(&self) -> bool {
        !self.pattern.contains(['*', '?'])
    }

    /// The literal text before a single trailing `*` (`/tmp/*` → `/tmp/`), when the pattern has
    /// that shape.
    pub fn prefix(&self) -> Option<&str> {
        let p = self.pattern.strip_suffix('*')?;
        (!p.contains(['*', '?'])).then_some(p)
    }

    /// Whether `path` matches the whole pattern. Linear in `pattern.len() * path.len()` at
    /// worst (the classic two-pointer wildcard match, which backtracks only to the last `*`).
    pub fn matches(&self, path: &str) -> bool {
        wildcard(self.pattern.as_bytes(), path.as_bytes())
    }
}

/// `?` matches one byte of UTF-8, so it is checked on characters when the path is not ASCII.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    if !text.is_ascii() || !pattern.is_ascii() {
        let p: Vec<char> = String::from_utf8_lossy(pattern).chars().collect();
        let t: Vec<char> = String::from_utf8_lossy(text).chars().collect();
        return wildcard_chars(&p, &t);
    }
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(c) if *c == b'?' || Some(c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|c| *c == b'*'))
}

fn wildcard_chars(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(c) if *c == '?' || Some(c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

impl TryFrom<String> for Glob {
    type Error = GlobError;
    fn try_from(s: String) -> Result<Self, GlobError> {
        Self::new(&s)
    }
}

impl From<Glob> for String {
    fn from(g: Glob) -> String {
        g.pattern
    }
}

impl std::fmt::Display for Glob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.pattern)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Glob::new(p).unwrap().matches(t)
    }

    #[test]
    fn stars_cross_directories_and_must_match_whole_path() {
        assert!(m("/tmp/*", "/tmp/x"));
        assert!(m("/tmp/*", "/tmp/a/b/c"));
        assert!(m("/tmp/*", "/tmp/"));
        assert!(!m("/tmp/*", "/tmp"));
        assert!(!m("/tmp/*", "/usr/tmp/x"));
        assert!(m("*.log", "/var/x.log"));
        assert!(!m("*.log", "/var/x.log.1"));
        assert!(m("/usr/lib/*/libc.so.?", "/usr/lib/x86_64/libc.so.6"));
        assert!(!m("/usr/lib/*/libc.so.?", "/usr/lib/x86_64/libc.so.66"));
        assert!(m("/a/b", "/a/b"));
        assert!(!m("/a/b", "/a/bc"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx"));
        assert!(!m("*a*b*c*", "xxaxxcxxbxx"));
        assert!(m("/é/?", "/é/ü"));
        assert!(!m("/é/?", "/é/üü"));
    }

    #[test]
    fn shapes() {
        assert_eq!(Glob::new("/tmp/*").unwrap().prefix(), Some("/tmp/"));
        assert_eq!(Glob::new("/t*p/*").unwrap().prefix(), None);
        assert!(Glob::new("/etc/passwd").unwrap().is_literal());
        assert_eq!(Glob::new(""), Err(GlobError::Empty));
        assert_eq!(Glob::new("a\0"), Err(GlobError::Nul));
    }
}
