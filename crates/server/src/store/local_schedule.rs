//! The pull schedule of a server on a SQLite file, kept in memory ([`Store::claim_scheduled`]).
//!
//! A server on SQLite is the only one on its database: no other replica takes its hosts, so
//! its claims need no lease and its due times no durable row. A durable claim
//! ([`Store::claim_due`]) cost each attestation about 13 µs of the report writer's thread: a
//! statement and a commit of its own about 37 times a second at 10,000 hosts, each writing
//! some 12 pages of `schedule` and its index for 25 hosts. Here a claim takes the due hosts
//! from an ordered set and moves their due times on in memory; only the read of the claimed
//! hosts' rows goes to the database.
//!
//! The `schedule` table still holds what registrations and [`Store::schedule`] write there,
//! and this copy follows it:
//! - **Loaded** by the first claim from `schedule` and each host's last attestation: a host
//!   attested at `t` is due at `t` plus a period, so a restarted server keeps each host's
//!   phase and does not attest every host at once; a host never attested is due when its row
//!   says (a registration's first attestation). A row due later than its host's last
//!   attestation (scheduled by a server that claimed durably) keeps its due time.
//! - **Followed**: each commit of this store that registers or deletes hosts, and each
//!   [`Store::schedule`], marks the hosts it wrote; the next claim reads their rows again
//!   before it takes any. Both happen while the writer connection is held, so a claim sees
//!   every write committed before it and none is applied out of order. (No other process
//!   writes the file: it has one server, [`Store::hold_as_only_server`].)
//!
//! What is lost with the process: a host made due at once ([`Store::schedule`] with 0) but
//! not yet attested when the server stops is next due one period after its last attestation,
//! as if the request had not come.

use super::*;

/// The schedule of the pull hosts in memory: when each is due next.
#[derive(Default)]
pub(super) struct LocalSchedule {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Whether a claim has loaded the schedule from the database.
    loaded: bool,
    /// (due time, name), earliest first.
    due: BTreeSet<(i64, Arc<str>)>,
    /// Each host's due time, by name.
    at: HashMap<Arc<str>, i64, foldhash::quality::RandomState>,
    /// Hosts whose rows were written since the last claim read them.
    dirty: Vec<String>,
}

impl State {
    fn set(&mut self, name: &str, due: Option<i64>) {
        if let Some((key, old)) = self.at.remove_entry(name) {
            self.due.remove(&(old, key));
        }
        if let Some(due) = due {
            let key: Arc<str> = Arc::from(name);
            self.due.insert((due, key.clone()));
            self.at.insert(key, due);
        }
    }
}

/// A host's due time as stored: `next_attest`, `None` for a push host (never due) or a host
/// with no row.
fn pull_due(next_attest: Option<i64>) -> Option<i64> {
    next_attest.filter(|&n| n < PUSH_NEVER_DUE)
}

/// Where a loaded host is due: one `period` after its last attestation, unless its row says
/// later (see the module's text).
fn loaded_due(next_attest: i64, attested_at: Option<i64>, period: i64) -> i64 {
    match attested_at {
        Some(t) if next_attest <= t => t.saturating_add(period),
        _ => next_attest,
    }
}

/// Every pull host's due time and last attestation.
pub(super) static LOAD_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT s.name, s.next_attest, h.attested_at FROM schedule s \
         JOIN hosts h ON h.name = s.name WHERE s.next_attest < {PUSH_NEVER_DUE}"
    )
});

/// The `schedule` rows of the hosts named.
pub(super) static SCHEDULE_NAMED: ShapedSql = ShapedSql::new(|backend, shape| {
    in_list(
        backend,
        "SELECT name, next_attest FROM schedule WHERE name",
        shape,
        "",
    )
});

/// What the database says, read for a claim ([`LocalSchedule::sync`]).
pub(super) trait ScheduleSource {
    /// Every pull host: name, `next_attest`, `attested_at` ([`LOAD_SQL`]).
    fn load(&mut self) -> Result<Vec<(String, i64, Option<i64>)>>;
    /// The `next_attest` of the hosts named that have a row.
    fn named(&mut self, names: &[String]) -> Result<Vec<(String, i64)>>;
}

impl LocalSchedule {
    /// Marks hosts whose `schedule` rows a commit just wrote (nothing before the first claim
    /// loads the schedule, which reads them then). The caller still holds the writer.
    pub(super) fn touch<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        if let Ok(mut s) = self.state.lock() {
            if s.loaded {
                s.dirty.extend(names.into_iter().map(str::to_owned));
            }
        }
    }

    /// Brings the schedule up to date with the database: loads it at the first call, then
    /// reads the rows of the hosts marked since. The caller holds the writer.
    pub(super) fn sync(&self, db: &mut impl ScheduleSource, period: i64) -> Result<()> {
        let loaded = self.state.lock().map(|s| s.loaded).unwrap_or(false);
        if !loaded {
            let rows = db.load()?;
            let mut s = self.state.lock().map_err(|_| poisoned())?;
            *s = State::default();
            for (name, next_attest, attested_at) in rows {
                s.set(&name, Some(loaded_due(next_attest, attested_at, period)));
            }
            s.loaded = true;
            return Ok(());
        }
        let mut dirty = match self.state.lock() {
            Ok(mut s) => std::mem::take(&mut s.dirty),
            Err(_) => return Err(poisoned()),
        };
        if dirty.is_empty() {
            return Ok(());
        }
        dirty.sort_unstable();
        dirty.dedup();
        let mut rows = Vec::with_capacity(dirty.len());
        for chunk in dirty.chunks(BATCH_MAX) {
            match db.named(chunk) {
                Ok(r) => rows.extend(r),
                Err(e) => {
                    // Read again at the next claim.
                    if let Ok(mut s) = self.state.lock() {
                        s.dirty.extend(dirty);
                    }
                    return Err(e);
                }
            }
        }
        let found: HashMap<String, i64> = rows.into_iter().collect();
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        for name in &dirty {
            s.set(name, pull_due(found.get(name).copied()));
        }
        Ok(())
    }

    /// Takes up to `limit` hosts due at `now`, as [`Store::claim_due`] would: those due, then
    /// those more than twice `period` ahead (scheduled by a clock that has since jumped back).
    /// Each is due again at its due time plus `period`, or at `now` plus `period` when that is
    /// past.
    pub(super) fn take_due(&self, now: i64, period: i64, limit: usize) -> Vec<String> {
        let Ok(mut s) = self.state.lock() else {
            return Vec::new();
        };
        let ahead = now.saturating_add(period.saturating_mul(2));
        let mut taken: Vec<(i64, Arc<str>)> = s
            .due
            .iter()
            .take_while(|(due, _)| *due <= now)
            .take(limit)
            .cloned()
            .collect();
        if taken.len() < limit {
            let room = limit - taken.len();
            let late = s.due.iter().rev().take_while(|(due, _)| *due > ahead);
            taken.extend(late.take(room).cloned());
        }
        let mut names = Vec::with_capacity(taken.len());
        for (due, name) in taken {
            let next = if due <= now && due.saturating_add(period) > now {
                due.saturating_add(period)
            } else {
                now.saturating_add(period)
            };
            s.due.remove(&(due, name.clone()));
            s.due.insert((next, name.clone()));
            s.at.insert(name.clone(), next);
            names.push(name.to_string());
        }
        names
    }

    /// When `name` is due next (`None`: not a pull host this schedule knows).
    #[cfg(test)]
    fn due_at(&self, name: &str) -> Option<i64> {
        self.state.lock().ok()?.at.get(name).copied()
    }
}

fn poisoned() -> StoreError {
    StoreError::Corrupt {
        table: "schedule",
        detail: "the schedule in memory was poisoned by a panic".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of `schedule` rows (name, next_attest, attested_at), counting its reads.
    #[derive(Default)]
    struct Rows {
        rows: Vec<(String, i64, Option<i64>)>,
        loads: usize,
        named: usize,
    }

    impl ScheduleSource for Rows {
        fn load(&mut self) -> Result<Vec<(String, i64, Option<i64>)>> {
            self.loads += 1;
            Ok(self
                .rows
                .iter()
                .filter(|r| r.1 < PUSH_NEVER_DUE)
                .cloned()
                .collect())
        }
        fn named(&mut self, names: &[String]) -> Result<Vec<(String, i64)>> {
            self.named += 1;
            Ok(self
                .rows
                .iter()
                .filter(|r| names.contains(&r.0))
                .map(|r| (r.0.clone(), r.1))
                .collect())
        }
    }

    fn row(name: &str, next: i64, attested: Option<i64>) -> (String, i64, Option<i64>) {
        (name.to_string(), next, attested)
    }

    #[test]
    fn a_load_keeps_each_hosts_phase_from_its_last_attestation() {
        let mut db = Rows {
            rows: vec![
                // Attested at 50,000 (its row says 1,000, a registration's).
                row("a", 1_000, Some(50_000)),
                // Never attested: due when its row says.
                row("b", 2_000, None),
                // Due later than its last attestation (a durable claim's row): kept.
                row("c", 130_000, Some(70_000)),
                // A push host: not in the pull schedule.
                row("p", PUSH_NEVER_DUE, None),
            ],
            ..Rows::default()
        };
        let local = LocalSchedule::default();
        local.touch(["a"]);
        local.sync(&mut db, 60_000).unwrap();
        assert_eq!(db.loads, 1);
        assert_eq!(local.due_at("a"), Some(110_000));
        assert_eq!(local.due_at("b"), Some(2_000));
        assert_eq!(local.due_at("c"), Some(130_000));
        assert_eq!(local.due_at("p"), None);
        // Marks before the load were read by it: nothing read again.
        local.sync(&mut db, 60_000).unwrap();
        assert_eq!((db.loads, db.named), (1, 0));
        // At 100,000 only b is due; at 115,000 a too, earliest first.
        assert_eq!(local.take_due(100_000, 60_000, 10), ["b"]);
        assert_eq!(local.take_due(115_000, 60_000, 10), ["a"]);
        assert_eq!(local.due_at("a"), Some(170_000), "its phase kept");
        // b was due long before: next one period from the claim.
        assert_eq!(local.due_at("b"), Some(160_000));
    }

    #[test]
    fn marked_hosts_are_read_again_before_the_next_claim() {
        let mut db = Rows {
            rows: vec![row("a", 1_000, None), row("b", 1_000, None)],
            ..Rows::default()
        };
        let local = LocalSchedule::default();
        local.sync(&mut db, 60_000).unwrap();
        assert_eq!(local.take_due(10_000, 60_000, 10), ["a", "b"]);
        // a made due at once, b deleted, c registered, d registered as a push host.
        db.rows = vec![
            row("a", 0, Some(10_000)),
            row("c", 12_000, None),
            row("d", PUSH_NEVER_DUE, None),
        ];
        local.touch(["a", "b", "c", "d", "a"]);
        local.sync(&mut db, 60_000).unwrap();
        assert_eq!(db.named, 1, "one read for the four");
        assert_eq!(local.due_at("b"), None);
        assert_eq!(local.due_at("d"), None);
        assert_eq!(local.take_due(12_000, 60_000, 10), ["a", "c"]);
        // Nothing marked: no read.
        local.sync(&mut db, 60_000).unwrap();
        assert_eq!(db.named, 1);
    }

    #[test]
    fn a_claim_takes_at_most_its_limit_earliest_first_and_hosts_set_by_a_clock_gone_back() {
        let mut db = Rows {
            rows: (0..10)
                .map(|i| row(&format!("h{i}"), 1_000 + i, None))
                .chain([row("late", 900_000, None)])
                .collect(),
            ..Rows::default()
        };
        let local = LocalSchedule::default();
        local.sync(&mut db, 60_000).unwrap();
        assert_eq!(local.take_due(5_000, 60_000, 3), ["h0", "h1", "h2"]);
        // Due at 1,003: next at 61,003, in phase.
        assert_eq!(local.take_due(5_000, 60_000, 1), ["h3"]);
        assert_eq!(local.due_at("h3"), Some(61_003));
        // The six due left, then the host more than two periods ahead.
        let rest = local.take_due(5_000, 60_000, 10);
        assert_eq!(rest.len(), 7);
        assert_eq!(rest.last().map(String::as_str), Some("late"));
        assert_eq!(local.due_at("late"), Some(65_000));
        assert!(local.take_due(5_000, 60_000, 10).is_empty());
    }
}
