//! The leader-epoch cache: which leader epoch started at which offset.
//!
//! A follower of a new leader asks it for the end offset of its own latest
//! epoch and truncates what lies beyond (KIP-101, KIP-279). The cache is kept
//! in `leader-epoch-checkpoint`, written durably on every change (changes come
//! only with leader elections, truncation and log-start moves).
//!
//! Invariant: entries strictly increase in both leader epoch and start offset.

use std::path::{Path, PathBuf};

use crate::checkpoint::{self, Durability, Loaded, PayloadReader};
use crate::error::Result;

const MAGIC: [u8; 4] = *b"SLEC";
pub const FILE_NAME: &str = "leader-epoch-checkpoint";

/// Returned for an epoch older than anything the log holds (Kafka's
/// UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET).
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub leader_epoch: i32,
    pub start_offset: i64,
}

#[derive(Debug)]
pub(crate) struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Loads the cache of the partition in `dir`. A damaged file is reported
    /// as `Err(reason)` in the second value; the caller rebuilds from the log.
    pub(crate) fn load(dir: &Path) -> Result<(Self, Option<&'static str>)> {
        let path = dir.join(FILE_NAME);
        let mut cache = LeaderEpochCache {
            path,
            entries: Vec::new(),
        };
        let damage = match checkpoint::read(&cache.path, MAGIC)? {
            Loaded::Missing => None,
            Loaded::Damaged(reason) => Some(reason),
            Loaded::Intact(payload) => match decode(&payload) {
                Some(entries) => {
                    cache.entries = entries;
                    None
                }
                None => Some("entries are malformed or out of order"),
            },
        };
        Ok((cache, damage))
    }

    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub(crate) fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `leader_epoch` starts at `start_offset`. Returns whether the
    /// cache changed (an epoch at or below the latest is already known).
    pub(crate) fn assign(&mut self, leader_epoch: i32, start_offset: i64) -> bool {
        if leader_epoch < 0 {
            return false;
        }
        if let Some(latest) = self.latest() {
            if leader_epoch <= latest.leader_epoch {
                return false;
            }
            assert!(
                start_offset >= latest.start_offset,
                "a newer leader epoch cannot start before an older one"
            );
            if start_offset == latest.start_offset {
                // The older epoch never wrote anything: it is superseded.
                self.entries.pop();
            }
        }
        self.entries.push(EpochEntry {
            leader_epoch,
            start_offset,
        });
        true
    }

    /// Forgets epochs that start at or after `log_end_offset`.
    pub(crate) fn truncate_from_end(&mut self, log_end_offset: i64) -> bool {
        let keep = self
            .entries
            .partition_point(|entry| entry.start_offset < log_end_offset);
        let changed = keep != self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Forgets epochs wholly below `log_start_offset`; the epoch that covers it
    /// now starts there.
    pub(crate) fn truncate_from_start(&mut self, log_start_offset: i64) -> bool {
        let covering = self
            .entries
            .partition_point(|entry| entry.start_offset <= log_start_offset);
        if covering == 0 {
            return false;
        }
        let first_kept = covering - 1;
        let changed = first_kept > 0 || self.entries[first_kept].start_offset != log_start_offset;
        self.entries.drain(..first_kept);
        self.entries[0].start_offset = log_start_offset;
        changed
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// The largest epoch at or below `leader_epoch` and the offset where it
    /// ended (the next epoch's start, or the log end offset for the latest).
    pub(crate) fn end_offset_for(&self, leader_epoch: i32, log_end_offset: i64) -> (i32, i64) {
        let after = self
            .entries
            .partition_point(|entry| entry.leader_epoch <= leader_epoch);
        if after == 0 {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        }
        let found = self.entries[after - 1];
        let end_offset = self
            .entries
            .get(after)
            .map_or(log_end_offset, |next| next.start_offset);
        (found.leader_epoch, end_offset)
    }

    pub(crate) fn persist(&self) -> Result<()> {
        let mut payload = Vec::with_capacity(4 + self.entries.len() * 12);
        payload.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for entry in &self.entries {
            payload.extend_from_slice(&entry.leader_epoch.to_be_bytes());
            payload.extend_from_slice(&entry.start_offset.to_be_bytes());
        }
        checkpoint::write(&self.path, MAGIC, &payload, Durability::Synced)
    }
}

fn decode(payload: &[u8]) -> Option<Vec<EpochEntry>> {
    let mut reader = PayloadReader::new(payload);
    let count = reader.u32()? as usize;
    if count > reader.remaining_bytes() / 12 {
        return None;
    }
    let mut entries: Vec<EpochEntry> = Vec::with_capacity(count);
    for _ in 0..count {
        let entry = EpochEntry {
            leader_epoch: reader.i32()?,
            start_offset: reader.i64()?,
        };
        if let Some(last) = entries.last() {
            if entry.leader_epoch <= last.leader_epoch || entry.start_offset <= last.start_offset {
                return None;
            }
        }
        entries.push(entry);
    }
    reader.is_empty().then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache {
            path: PathBuf::from("unused"),
            entries: Vec::new(),
        };
        for &(leader_epoch, start_offset) in entries {
            assert!(cache.assign(leader_epoch, start_offset));
        }
        cache
    }

    #[test]
    fn end_offset_is_the_next_epochs_start() {
        let cache = cache(&[(1, 0), (3, 100), (4, 250)]);
        let check =
            |leader_epoch, expected| assert_eq!(cache.end_offset_for(leader_epoch, 300), expected);
        check(0, (UNDEFINED_EPOCH, UNDEFINED_OFFSET));
        check(1, (1, 100));
        check(2, (1, 100));
        check(3, (3, 250));
        check(4, (4, 300));
        check(9, (4, 300));
    }

    #[test]
    fn stale_epochs_are_ignored_and_empty_epochs_superseded() {
        let mut cache = cache(&[(2, 10)]);
        assert!(!cache.assign(1, 20));
        assert!(!cache.assign(2, 20));
        assert!(cache.assign(5, 10));
        assert_eq!(
            cache.entries(),
            &[EpochEntry {
                leader_epoch: 5,
                start_offset: 10
            }]
        );
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut cache = cache(&[(1, 0), (2, 10), (3, 20)]);
        assert!(cache.truncate_from_end(20));
        assert_eq!(
            cache.latest(),
            Some(EpochEntry {
                leader_epoch: 2,
                start_offset: 10
            })
        );
        assert!(cache.truncate_from_start(15));
        assert_eq!(
            cache.entries(),
            &[EpochEntry {
                leader_epoch: 2,
                start_offset: 15
            }]
        );
        assert!(!cache.truncate_from_start(15));
    }

    #[test]
    fn persisted_cache_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut written = LeaderEpochCache::load(dir.path()).unwrap().0;
        written.assign(1, 0);
        written.assign(4, 77);
        written.persist().unwrap();
        let (loaded, damage) = LeaderEpochCache::load(dir.path()).unwrap();
        assert_eq!(damage, None);
        assert_eq!(loaded.entries(), written.entries());
    }
}
