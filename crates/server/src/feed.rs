//! The typed, resumable change feed: [`ChangeFeed`] yields every change after a sequence
//! number, from the durable `changes` table, then live.
//!
//! The table is the truth; notifications only wake the follower (the in-process broadcast on
//! SQLite, `NOTIFY nodetrust_changes` on PostgreSQL so a replica hears another's commits, and
//! a one-second poll as the floor). So a follower never sees changes out of order or with a
//! silent gap: when its position is older than what retention kept, it gets
//! [`FeedItem::Resync`] and must re-read every host, like a Kubernetes watch's 410.

use std::collections::VecDeque;
use std::time::Duration;

use nodetrust_proto::trust::{ChangeEvent, FeedItem};
use tokio::sync::broadcast;

use crate::store::{Change, Store, StoreError};

/// How many changes one read of the table takes.
const PAGE: i64 = 512;
/// The longest a follower waits without a notification before it looks at the table again.
const POLL: Duration = Duration::from_secs(1);

/// A follower of the change feed (see the module documentation).
pub struct ChangeFeed {
    store: Store,
    cursor: i64,
    buffered: VecDeque<ChangeEvent>,
    live: broadcast::Receiver<Change>,
    pg: Option<sqlx::postgres::PgListener>,
    poll: Duration,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("cursor", &self.cursor)
            .field("buffered", &self.buffered.len())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Follows the change feed from after sequence number `after` (0: from the oldest change
    /// kept; a follower starting fresh should list every host first and then follow from
    /// [`Store::changes_head`]).
    pub async fn subscribe_from(&self, after: i64) -> Result<ChangeFeed, StoreError> {
        let live = self.subscribe();
        let pg = self.pg_listener().await?;
        Ok(ChangeFeed {
            store: self.clone(),
            cursor: after,
            buffered: VecDeque::new(),
            live,
            pg,
            poll: POLL,
        })
    }
}

impl ChangeFeed {
    /// The sequence number of the last change handed out (or the resume point of the last
    /// resync).
    pub fn position(&self) -> i64 {
        self.cursor
    }

    /// The next change, or a resync; waits until there is one. A database error is returned
    /// (the follower may call again: its position is unchanged).
    pub async fn next(&mut self) -> Result<FeedItem, StoreError> {
        loop {
            if let Some(ev) = self.buffered.pop_front() {
                self.cursor = ev.seq;
                return Ok(FeedItem::Change(ev));
            }
            let pruned = self.store.changes_pruned_through().await?;
            if self.cursor < pruned {
                let head = self.store.changes_head().await?;
                tracing::info!(
                    position = self.cursor,
                    pruned_through = pruned,
                    resume_after = head,
                    "change-feed follower fell behind retention: resync"
                );
                self.cursor = head;
                return Ok(FeedItem::Resync { resume_after: head });
            }
            let page = self.store.change_events_since(self.cursor, PAGE).await?;
            if !page.is_empty() {
                self.buffered.extend(page);
                continue;
            }
            self.wait().await;
        }
    }

    /// Waits for a notification or the poll interval.
    async fn wait(&mut self) {
        let poll = tokio::time::sleep(self.poll);
        tokio::pin!(poll);
        match self.pg.as_mut() {
            Some(pg) => {
                tokio::select! {
                    _ = pg.recv() => {}
                    _ = self.live.recv() => {}
                    () = &mut poll => {}
                }
            }
            None => {
                tokio::select! {
                    _ = self.live.recv() => {}
                    () = &mut poll => {}
                }
            }
        }
    }
}
