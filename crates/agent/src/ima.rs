//! The IMA runtime log, served from an entry index without reading the whole file again.
//!
//! The kernel's `binary_runtime_measurements` only grows while the node runs, and a verifier
//! asks for the entries after those it has already appraised. [`ImaLog`] remembers the byte
//! offset of every entry it has delimited, so an answer from entry `n` seeks to `n`'s offset
//! and reads only what follows; entries beyond what it knows are delimited (and remembered) as
//! they are read. On securityfs a seek is served by the kernel walking its list, without
//! copying the earlier entries to user space.
//!
//! Entries are delimited, not parsed: the header's lengths are checked against the bounds of
//! the event-log crate's parser (template name at most 255 bytes, template data at most
//! 1 MiB), and an entry that breaks them ends the answer with an error the verifier reports.
//! Answers are bounded in entries and bytes ([`MAX_IMA_ENTRIES`], [`MAX_IMA_BYTES`]); the
//! verifier asks again for the rest.
//!
//! A request from entry 0 forgets the remembered offsets (a verifier starting over, e.g. after
//! a reboot); so does a regular file that became shorter or was replaced.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use nodetrust_proto::agent::{ImaEntries, MAX_IMA_BYTES, MAX_IMA_ENTRIES};

/// Longest template name (as the event-log crate's parser allows).
const MAX_TEMPLATE_NAME: u32 = 255;
/// Largest template data of one entry (as the event-log crate's parser allows).
const MAX_TEMPLATE_DATA: u32 = 1 << 20;
/// Most entries remembered (as the event-log crate's parser allows in one log).
const MAX_INDEXED: usize = 1 << 24;

/// What is remembered about the file.
#[derive(Debug, Default)]
struct Index {
    /// Byte offset of each entry delimited so far.
    offsets: Vec<u64>,
    /// Byte offset just after the last delimited entry.
    end: u64,
    /// Identity of the file the offsets belong to (device, inode), where known.
    identity: Option<(u64, u64)>,
}

impl Index {
    fn reset(&mut self, identity: Option<(u64, u64)>) {
        self.offsets = Vec::new();
        self.end = 0;
        self.identity = identity;
    }

    fn push(&mut self, start: u64, len: u64) {
        if self.offsets.len() < MAX_INDEXED {
            self.offsets.push(start);
            self.end = start + len;
        }
    }
}

/// The IMA log at a path, with the offsets of the entries delimited so far.
#[derive(Debug)]
pub struct ImaLog {
    path: PathBuf,
    index: Mutex<Index>,
    bytes_read: AtomicU64,
}

/// One entry, delimited: its whole bytes.
enum Next {
    Entry(Vec<u8>),
    /// End of the log (possibly after a partial entry the kernel or a writer has not finished).
    End,
    /// An entry that breaks the bounds.
    Bad(String),
}

fn read_u32(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<Option<u32>> {
    let mut b = [0u8; 4];
    match r.read_exact(&mut b) {
        Ok(()) => {
            buf.extend_from_slice(&b);
            Ok(Some(u32::from_le_bytes(b)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_n(r: &mut impl Read, n: u32, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let start = buf.len();
    let n = n as usize;
    buf.resize(start + n, 0);
    match r.read_exact(buf.get_mut(start..).unwrap_or_default()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads one whole entry: `pcr u32, template_hash[20], name_len u32, name`, then for the `ima`
/// template `digest[20], name_len u32, name`, else `data_len u32, data`.
fn next_entry(r: &mut impl BufRead, number: u64, at: u64) -> std::io::Result<Next> {
    if r.fill_buf()?.is_empty() {
        return Ok(Next::End);
    }
    let mut buf = Vec::with_capacity(128);
    let bad = |what: String| Ok(Next::Bad(format!("entry {number} at byte {at}: {what}")));
    if read_u32(r, &mut buf)?.is_none() || !read_n(r, 20, &mut buf)? {
        return Ok(Next::End);
    }
    let Some(name_len) = read_u32(r, &mut buf)? else {
        return Ok(Next::End);
    };
    if name_len > MAX_TEMPLATE_NAME {
        return bad(format!(
            "template name of {name_len} bytes (at most {MAX_TEMPLATE_NAME})"
        ));
    }
    let name_at = buf.len();
    if !read_n(r, name_len, &mut buf)? {
        return Ok(Next::End);
    }
    let is_ima = buf.get(name_at..) == Some(b"ima".as_slice());
    if is_ima {
        if !read_n(r, 20, &mut buf)? {
            return Ok(Next::End);
        }
        let Some(len) = read_u32(r, &mut buf)? else {
            return Ok(Next::End);
        };
        if len > MAX_TEMPLATE_NAME {
            return bad(format!(
                "ima file name of {len} bytes (at most {MAX_TEMPLATE_NAME})"
            ));
        }
        if !read_n(r, len, &mut buf)? {
            return Ok(Next::End);
        }
    } else {
        let Some(len) = read_u32(r, &mut buf)? else {
            return Ok(Next::End);
        };
        if len > MAX_TEMPLATE_DATA {
            return bad(format!(
                "template data of {len} bytes (at most {MAX_TEMPLATE_DATA})"
            ));
        }
        if !read_n(r, len, &mut buf)? {
            return Ok(Next::End);
        }
    }
    Ok(Next::Entry(buf))
}

#[cfg(unix)]
fn identity(m: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(_m: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// Counts the bytes read through it.
struct Counting<'a, R> {
    inner: R,
    count: &'a AtomicU64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl ImaLog {
    /// The log at `path` (which may not exist: a kernel without IMA).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            index: Mutex::new(Index::default()),
            bytes_read: AtomicU64::new(0),
        }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes read from the file so far (what a seek saved shows here).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Entries whose offsets are remembered.
    pub fn entries_known(&self) -> usize {
        self.index.lock().map(|i| i.offsets.len()).unwrap_or(0)
    }

    /// Entries from `offset` on, at most `max_entries` (and [`MAX_IMA_ENTRIES`]) and about
    /// [`MAX_IMA_BYTES`]. `Ok(None)` when there is no log (the kernel has no IMA, or it is off).
    /// Blocking: call from a blocking thread.
    pub fn entries_from(
        &self,
        offset: u64,
        max_entries: Option<u32>,
    ) -> std::io::Result<Option<ImaEntries>> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let max_entries = u64::from(
            max_entries
                .unwrap_or(MAX_IMA_ENTRIES)
                .clamp(1, MAX_IMA_ENTRIES),
        );
        let mut index = self
            .index
            .lock()
            .map_err(|_| std::io::Error::other("IMA index lock poisoned"))?;
        let id = identity(&meta);
        let shrunk = meta.is_file() && meta.len() < index.end;
        if offset == 0 || shrunk || id != index.identity {
            index.reset(id);
        }
        let known = index.offsets.len() as u64;
        // Start at the wanted entry when its offset is known, else after the last known one.
        let (mut number, pos) = if offset < known {
            let at = usize::try_from(offset)
                .ok()
                .and_then(|i| index.offsets.get(i))
                .copied()
                .unwrap_or(index.end);
            (offset, at)
        } else {
            (known, index.end)
        };
        let mut file = file;
        if pos > 0 {
            file.seek(SeekFrom::Start(pos))?;
        }
        let mut r = BufReader::with_capacity(
            64 * 1024,
            Counting {
                inner: file,
                count: &self.bytes_read,
            },
        );
        let mut at = pos;
        let mut out = ImaEntries {
            start: offset,
            count: 0,
            log: Vec::new(),
            more: false,
            total: None,
            error: None,
        };
        loop {
            let sending = number >= offset;
            if sending
                && (out.count >= max_entries || (out.count > 0 && out.log.len() >= MAX_IMA_BYTES))
            {
                out.more = !r.fill_buf()?.is_empty();
                break;
            }
            match next_entry(&mut r, number, at)? {
                Next::Entry(bytes) => {
                    let len = bytes.len() as u64;
                    if sending && out.count > 0 && out.log.len() + bytes.len() > MAX_IMA_BYTES {
                        // Kept for the next answer; remembered now.
                        if number >= index.offsets.len() as u64 {
                            index.push(at, len);
                        }
                        out.more = true;
                        break;
                    }
                    if number >= index.offsets.len() as u64 {
                        index.push(at, len);
                    }
                    if sending {
                        out.log.extend_from_slice(&bytes);
                        out.count += 1;
                    }
                    number += 1;
                    at += len;
                }
                Next::End => {
                    out.total = Some(number);
                    break;
                }
                Next::Bad(why) => {
                    out.error = Some(why);
                    break;
                }
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        reason = "test code: a panic is a failed test"
    )]
    use super::*;

    fn entry(path: &str) -> Vec<u8> {
        let mut data = Vec::new();
        let d = [b"sha256:\0".as_slice(), &[7u8; 32]].concat();
        data.extend_from_slice(&(d.len() as u32).to_le_bytes());
        data.extend_from_slice(&d);
        let n = [path.as_bytes(), &[0]].concat();
        data.extend_from_slice(&(n.len() as u32).to_le_bytes());
        data.extend_from_slice(&n);
        let mut e = Vec::new();
        e.extend_from_slice(&10u32.to_le_bytes());
        e.extend_from_slice(&[1u8; 20]);
        e.extend_from_slice(&6u32.to_le_bytes());
        e.extend_from_slice(b"ima-ng");
        e.extend_from_slice(&(data.len() as u32).to_le_bytes());
        e.extend_from_slice(&data);
        e
    }

    #[test]
    fn absent_log_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let log = ImaLog::new(dir.path().join("nothing"));
        assert!(log.entries_from(0, None).unwrap().is_none());
    }

    #[test]
    fn serves_from_an_offset_reading_only_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ima");
        let entries: Vec<Vec<u8>> = (0..100).map(|i| entry(&format!("/bin/f{i}"))).collect();
        std::fs::write(&path, entries[..60].concat()).unwrap();
        let log = ImaLog::new(&path);
        let a = log.entries_from(0, None).unwrap().unwrap();
        assert_eq!(
            (a.start, a.count, a.more, a.total),
            (0, 60, false, Some(60))
        );
        assert_eq!(a.log, entries[..60].concat());
        let read_first = log.bytes_read();
        // The log grows; from entry 60, only the new bytes are read.
        std::fs::write(&path, entries.concat()).unwrap();
        let b = log.entries_from(60, None).unwrap().unwrap();
        assert_eq!((b.start, b.count, b.total), (60, 40, Some(100)));
        assert_eq!(b.log, entries[60..].concat());
        let new_bytes: usize = entries[60..].iter().map(Vec::len).sum();
        assert_eq!(log.bytes_read() - read_first, new_bytes as u64);
        // An older offset is a seek too.
        let before = log.bytes_read();
        let c = log.entries_from(90, Some(5)).unwrap().unwrap();
        assert_eq!((c.start, c.count, c.more, c.total), (90, 5, true, None));
        assert_eq!(c.log, entries[90..95].concat());
        assert!(log.bytes_read() - before < 2 * new_bytes as u64);
    }

    #[test]
    fn an_offset_past_the_end_says_how_many_there_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ima");
        std::fs::write(&path, [entry("/a"), entry("/b")].concat()).unwrap();
        let log = ImaLog::new(&path);
        let a = log.entries_from(5, None).unwrap().unwrap();
        assert_eq!((a.start, a.count, a.total), (5, 0, Some(2)));
        assert!(a.log.is_empty());
    }

    #[test]
    fn a_shorter_file_is_indexed_again_and_partial_entries_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ima");
        let entries: Vec<Vec<u8>> = (0..10).map(|i| entry(&format!("/x{i}"))).collect();
        std::fs::write(&path, entries.concat()).unwrap();
        let log = ImaLog::new(&path);
        assert_eq!(log.entries_from(0, None).unwrap().unwrap().count, 10);
        // A new boot's log: shorter, other entries.
        let other: Vec<Vec<u8>> = (0..3).map(|i| entry(&format!("/other-{i}"))).collect();
        let mut bytes = other.concat();
        bytes.extend_from_slice(&entry("/half")[..30]);
        std::fs::write(&path, &bytes).unwrap();
        let b = log.entries_from(1, None).unwrap().unwrap();
        assert_eq!((b.count, b.total), (2, Some(3)));
        assert_eq!(b.log, other[1..].concat());
    }

    #[test]
    fn an_entry_beyond_the_bounds_ends_the_answer_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ima");
        let mut bad = entry("/bad");
        // The template data length of the second entry: 4 GiB.
        bad[34..38].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, [entry("/ok"), bad, entry("/after")].concat()).unwrap();
        let log = ImaLog::new(&path);
        let a = log.entries_from(0, None).unwrap().unwrap();
        assert_eq!((a.count, a.more, a.total), (1, false, None));
        assert!(
            a.error.as_deref().unwrap().contains("entry 1"),
            "{:?}",
            a.error
        );
    }

    #[test]
    fn answers_are_bounded_in_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ima");
        let n = MAX_IMA_ENTRIES as usize + 10;
        let one = entry("/usr/lib/x");
        std::fs::write(&path, one.repeat(n)).unwrap();
        let log = ImaLog::new(&path);
        let a = log.entries_from(0, Some(u32::MAX)).unwrap().unwrap();
        assert_eq!(a.count, u64::from(MAX_IMA_ENTRIES));
        assert!(a.more);
        let b = log.entries_from(a.count, None).unwrap().unwrap();
        assert_eq!((b.count, b.more, b.total), (10, false, Some(n as u64)));
    }
}
