//! Idempotent and transactional producers' state in one partition: per
//! producer id, its producer epoch, the sequence ranges and offsets of its
//! last `BATCHES_PER_PRODUCER` batches, and the first offset of its ongoing
//! transaction. The leader checks each produced batch against it (a retry
//! of a batch it holds is a duplicate, answered with the original offsets;
//! a gap is out of order; an older epoch is fenced); every replica records
//! every batch it appends, markers included, so a follower that takes over
//! holds exactly the leader's state, rebuilt from its own log. The ongoing
//! transactions give the partition's last stable offset.
//!
//! `ProducerStates` is a pure decision core: no I/O, no clock. The
//! snapshot files at the bottom of this module bound the replay on open: a
//! snapshot `BASE.snapshot` holds the state as of offset `BASE` (written
//! when a segment rolls, so `BASE` is the next segment's base offset).
//!
//! Snapshot payload (inside a `checkpoint` file, magic `PSN2`), big-endian:
//!
//! ```text
//! producer_count u32
//! per producer: producer_id i64, producer_epoch i16, last_timestamp_ms i64,
//!               txn_first_offset i64 (-1: no ongoing transaction),
//!               batch_count u8,
//!               per batch: first_sequence i32, last_sequence i32,
//!                          first_offset i64, last_offset i64
//! ```
//!
//! Snapshots of the earlier format (magic `PSNP`, without
//! `txn_first_offset`) are still read.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::batch::{BatchHeader, ProducerId};
use crate::checkpoint::{self, Durability, Loaded, PayloadReader};
use crate::error::{io_error, Result, SequenceError};
use crate::transaction::{AbortedTxn, Marker};

/// Batches remembered per producer: Kafka's clients keep at most five
/// requests in flight per partition, so a retry is always among the last
/// five.
pub const BATCHES_PER_PRODUCER: usize = 5;

/// One remembered batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// What a partition knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub producer_epoch: i16,
    /// Oldest first; at most `BATCHES_PER_PRODUCER`. Empty only after a
    /// marker started a new epoch.
    pub batches: VecDeque<ProducerBatch>,
    /// Max timestamp of its newest batch: the clock its expiration uses.
    pub last_timestamp_ms: i64,
    /// First offset of its ongoing transaction in this partition.
    pub txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    /// The last sequence of its newest batch in the current epoch.
    pub fn last_sequence(&self) -> Option<i32> {
        self.batches.back().map(|batch| batch.last_sequence)
    }
}

/// What the leader does with a produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not seen before (or not from an idempotent producer): append it.
    Append,
    /// A retry of a batch already in the log at these offsets: append
    /// nothing, answer with them.
    Duplicate(ProducerBatch),
}

/// The sequence after `sequence` (sequences wrap at `i32::MAX`).
fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

fn last_sequence_of(header: &BatchHeader) -> i32 {
    let last = header.base_sequence as i64 + header.last_offset_delta as i64;
    if last > i32::MAX as i64 {
        (last - i32::MAX as i64 - 1) as i32
    } else {
        last as i32
    }
}

/// Idempotent and transactional producers' state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: BTreeMap<ProducerId, ProducerEntry>,
    /// Ongoing transactions by first offset: the first pins the last
    /// stable offset.
    ongoing: BTreeSet<(i64, ProducerId)>,
}

impl ProducerStates {
    /// How the leader must treat the produced batch `header`.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        if header.producer_id == ProducerId::NONE || header.is_control() {
            return Ok(SequenceCheck::Append);
        }
        let producer_id = header.producer_id;
        let producer_epoch = header.producer_epoch;
        let first_sequence = header.base_sequence;
        let Some(entry) = self.producers.get(&producer_id) else {
            if first_sequence == 0 {
                return Ok(SequenceCheck::Append);
            }
            return Err(SequenceError::UnknownProducerId {
                producer_id,
                first_sequence,
            });
        };
        if producer_epoch < entry.producer_epoch {
            return Err(SequenceError::InvalidProducerEpoch {
                producer_id,
                producer_epoch,
                current_epoch: entry.producer_epoch,
            });
        }
        let expected_sequence = if producer_epoch > entry.producer_epoch {
            // A new epoch starts its sequences again.
            0
        } else {
            let last_sequence = last_sequence_of(header);
            if let Some(batch) = entry.batches.iter().find(|batch| {
                batch.first_sequence == first_sequence && batch.last_sequence == last_sequence
            }) {
                return Ok(SequenceCheck::Duplicate(*batch));
            }
            entry.last_sequence().map_or(0, next_sequence)
        };
        if first_sequence != expected_sequence {
            return Err(SequenceError::OutOfOrderSequence {
                producer_id,
                producer_epoch,
                first_sequence,
                expected_sequence,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Whether a coordinator may write for `producer_id` in
    /// `producer_epoch` here (a marker, a transactional offset commit):
    /// refused when a newer epoch of the producer wrote.
    pub fn check_epoch(
        &self,
        producer_id: ProducerId,
        producer_epoch: i16,
    ) -> Result<(), SequenceError> {
        match self.producers.get(&producer_id) {
            Some(entry) if producer_epoch < entry.producer_epoch => {
                Err(SequenceError::InvalidProducerEpoch {
                    producer_id,
                    producer_epoch,
                    current_epoch: entry.producer_epoch,
                })
            }
            _ => Ok(()),
        }
    }

    /// Records a batch this replica appended; `header.base_offset` is the
    /// offset it was appended at. An abort marker that ends a transaction
    /// holding records here returns it, for the aborted-transaction index.
    pub fn record(&mut self, header: &BatchHeader, batch: &[u8]) -> Option<AbortedTxn> {
        if header.producer_id == ProducerId::NONE {
            return None;
        }
        if header.is_control() {
            return self.record_marker(header, Marker::of(header, batch)?);
        }
        let batch = ProducerBatch {
            first_sequence: header.base_sequence,
            last_sequence: last_sequence_of(header),
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
        };
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                producer_epoch: header.producer_epoch,
                batches: VecDeque::with_capacity(BATCHES_PER_PRODUCER),
                last_timestamp_ms: header.max_timestamp,
                txn_first_offset: None,
            });
        if header.producer_epoch != entry.producer_epoch {
            entry.producer_epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.batches.push_back(batch);
        entry.last_timestamp_ms = entry.last_timestamp_ms.max(header.max_timestamp);
        if header.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(header.base_offset);
            self.ongoing
                .insert((header.base_offset, header.producer_id));
        }
        None
    }

    fn record_marker(&mut self, header: &BatchHeader, marker: Marker) -> Option<AbortedTxn> {
        let producer_id = header.producer_id;
        let entry = self.producers.get_mut(&producer_id)?;
        // A marker written in a newer epoch (the coordinator fenced the
        // producer, or the producer bumped its epoch at the end of a
        // transaction) fences the older one here too.
        if header.producer_epoch > entry.producer_epoch {
            entry.producer_epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.last_timestamp_ms = entry.last_timestamp_ms.max(header.max_timestamp);
        let first_offset = entry.txn_first_offset.take()?;
        self.ongoing.remove(&(first_offset, producer_id));
        (marker == Marker::Abort).then(|| AbortedTxn {
            producer_id,
            first_offset,
            last_offset: header.base_offset,
            last_stable_offset: self
                .first_unstable_offset()
                .unwrap_or(header.base_offset + 1),
        })
    }

    /// First offset of the oldest ongoing transaction: the last stable
    /// offset, unless the high watermark is lower.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.first().map(|(offset, _)| *offset)
    }

    /// Whether `producer_id` in `producer_epoch` has a transaction ongoing
    /// here.
    pub fn in_transaction(&self, producer_id: ProducerId, producer_epoch: i16) -> bool {
        self.producers.get(&producer_id).is_some_and(|entry| {
            entry.producer_epoch == producer_epoch && entry.txn_first_offset.is_some()
        })
    }

    /// Forgets producers whose newest batch is older than `expiration_ms`
    /// at `now_ms`; returns how many.
    /// A producer with an ongoing transaction is kept: its transaction
    /// still pins the last stable offset until its coordinator ends it.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, entry| {
            entry.txn_first_offset.is_some()
                || now_ms.saturating_sub(entry.last_timestamp_ms) < expiration_ms
        });
        before - self.producers.len()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Every producer, by id.
    pub fn iter(&self) -> impl Iterator<Item = (ProducerId, &ProducerEntry)> {
        self.producers.iter().map(|(id, entry)| (*id, entry))
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(4 + self.producers.len() * 64);
        bytes.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (producer_id, entry) in &self.producers {
            bytes.extend_from_slice(&producer_id.0.to_be_bytes());
            bytes.extend_from_slice(&entry.producer_epoch.to_be_bytes());
            bytes.extend_from_slice(&entry.last_timestamp_ms.to_be_bytes());
            bytes.extend_from_slice(&entry.txn_first_offset.unwrap_or(-1).to_be_bytes());
            bytes.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                bytes.extend_from_slice(&batch.first_sequence.to_be_bytes());
                bytes.extend_from_slice(&batch.last_sequence.to_be_bytes());
                bytes.extend_from_slice(&batch.first_offset.to_be_bytes());
                bytes.extend_from_slice(&batch.last_offset.to_be_bytes());
            }
        }
        bytes
    }

    /// `None` if `bytes` is not a snapshot payload of `format`.
    fn decode(bytes: &[u8], format: SnapshotFormat) -> Option<ProducerStates> {
        let mut reader = PayloadReader::new(bytes);
        let count = reader.u32()?;
        let mut producers = BTreeMap::new();
        let mut ongoing = BTreeSet::new();
        for _ in 0..count {
            let producer_id = ProducerId(reader.i64()?);
            let producer_epoch = reader.i16()?;
            let last_timestamp_ms = reader.i64()?;
            let txn_first_offset = match format {
                SnapshotFormat::Current => Some(reader.i64()?).filter(|offset| *offset >= 0),
                SnapshotFormat::WithoutTransactions => None,
            };
            let batch_count = reader.u8()? as usize;
            if batch_count > BATCHES_PER_PRODUCER {
                return None;
            }
            let mut batches = VecDeque::with_capacity(BATCHES_PER_PRODUCER);
            for _ in 0..batch_count {
                batches.push_back(ProducerBatch {
                    first_sequence: reader.i32()?,
                    last_sequence: reader.i32()?,
                    first_offset: reader.i64()?,
                    last_offset: reader.i64()?,
                });
            }
            if let Some(first_offset) = txn_first_offset {
                ongoing.insert((first_offset, producer_id));
            }
            producers.insert(
                producer_id,
                ProducerEntry {
                    producer_epoch,
                    batches,
                    last_timestamp_ms,
                    txn_first_offset,
                },
            );
        }
        reader
            .is_empty()
            .then_some(ProducerStates { producers, ongoing })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotFormat {
    Current,
    WithoutTransactions,
}

const SNAPSHOT_MAGIC: [u8; 4] = *b"PSN2";
const SNAPSHOT_MAGIC_WITHOUT_TRANSACTIONS: [u8; 4] = *b"PSNP";
const SNAPSHOT_SUFFIX: &str = ".snapshot";

fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))
}

/// The offsets of the snapshots in `dir`, ascending.
pub fn snapshot_offsets(dir: &Path) -> Result<Vec<i64>> {
    let mut offsets = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error("list partition directory", dir))? {
        let entry = entry.map_err(io_error("list partition directory", dir))?;
        let name = entry.file_name();
        let offset = name
            .to_str()
            .and_then(|name| name.strip_suffix(SNAPSHOT_SUFFIX))
            .and_then(|stem| stem.parse::<i64>().ok());
        offsets.extend(offset);
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Writes the state as of `offset`. Left to the page cache: a lost or
/// damaged snapshot is skipped on open and the log replayed instead.
pub fn write_snapshot(dir: &Path, offset: i64, states: &ProducerStates) -> Result<()> {
    checkpoint::write(
        &snapshot_path(dir, offset),
        SNAPSHOT_MAGIC,
        &states.encode(),
        Durability::Cached,
    )
}

/// Removes the snapshots of `dir` that `remove` picks by offset.
pub fn remove_snapshots(dir: &Path, mut remove: impl FnMut(i64) -> bool) -> Result<()> {
    for offset in snapshot_offsets(dir)? {
        if remove(offset) {
            let path = snapshot_path(dir, offset);
            fs::remove_file(&path).map_err(io_error("remove producer snapshot", &path))?;
        }
    }
    Ok(())
}

/// The newest intact snapshot at or below `offset`, with its offset;
/// damaged ones are removed with a warning.
pub fn latest_snapshot_at_or_below(
    dir: &Path,
    offset: i64,
) -> Result<Option<(i64, ProducerStates)>> {
    for snapshot_offset in snapshot_offsets(dir)?.into_iter().rev() {
        if snapshot_offset > offset {
            continue;
        }
        let path = snapshot_path(dir, snapshot_offset);
        let mut loaded = checkpoint::read(&path, SNAPSHOT_MAGIC)?;
        let mut format = SnapshotFormat::Current;
        if loaded == Loaded::Damaged(checkpoint::WRONG_MAGIC) {
            loaded = checkpoint::read(&path, SNAPSHOT_MAGIC_WITHOUT_TRANSACTIONS)?;
            format = SnapshotFormat::WithoutTransactions;
        }
        let reason = match loaded {
            Loaded::Intact(payload) => match ProducerStates::decode(&payload, format) {
                Some(states) => return Ok(Some((snapshot_offset, states))),
                None => "its payload does not decode",
            },
            Loaded::Damaged(reason) => reason,
            Loaded::Missing => continue,
        };
        warn!(path = %path.display(), reason, "producer snapshot is damaged; replaying the log instead");
        fs::remove_file(&path).map_err(io_error("remove damaged producer snapshot", &path))?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
        records: i32,
        base_offset: i64,
    ) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 0,
            partition_leader_epoch: 0,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 1_000,
            max_timestamp: 1_000,
            producer_id: ProducerId(producer_id),
            producer_epoch,
            base_sequence,
            record_count: records,
        }
    }

    fn check(
        states: &ProducerStates,
        batch: BatchHeader,
        expected: Result<SequenceCheck, SequenceError>,
    ) {
        assert_eq!(states.check(&batch), expected, "{batch:?}");
    }

    #[test]
    fn in_order_batches_append_and_a_retry_is_a_duplicate_with_its_offsets() {
        let mut states = ProducerStates::default();
        check(&states, header(7, 0, 0, 3, 0), Ok(SequenceCheck::Append));
        states.record(&header(7, 0, 0, 3, 10), &[]);
        check(&states, header(7, 0, 3, 2, 0), Ok(SequenceCheck::Append));
        states.record(&header(7, 0, 3, 2, 13), &[]);
        let first = ProducerBatch {
            first_sequence: 0,
            last_sequence: 2,
            first_offset: 10,
            last_offset: 12,
        };
        check(
            &states,
            header(7, 0, 0, 3, 0),
            Ok(SequenceCheck::Duplicate(first)),
        );
    }

    #[test]
    fn a_gap_an_old_epoch_and_an_unknown_producer_are_refused() {
        let mut states = ProducerStates::default();
        states.record(&header(7, 2, 0, 3, 0), &[]);
        check(
            &states,
            header(7, 2, 5, 1, 0),
            Err(SequenceError::OutOfOrderSequence {
                producer_id: ProducerId(7),
                producer_epoch: 2,
                first_sequence: 5,
                expected_sequence: 3,
            }),
        );
        check(
            &states,
            header(7, 1, 3, 1, 0),
            Err(SequenceError::InvalidProducerEpoch {
                producer_id: ProducerId(7),
                producer_epoch: 1,
                current_epoch: 2,
            }),
        );
        check(
            &states,
            header(8, 0, 4, 1, 0),
            Err(SequenceError::UnknownProducerId {
                producer_id: ProducerId(8),
                first_sequence: 4,
            }),
        );
    }

    #[test]
    fn a_new_epoch_starts_at_sequence_zero_and_forgets_the_old_batches() {
        let mut states = ProducerStates::default();
        states.record(&header(7, 0, 0, 3, 0), &[]);
        assert!(matches!(
            states.check(&header(7, 1, 3, 1, 0)),
            Err(SequenceError::OutOfOrderSequence {
                expected_sequence: 0,
                ..
            })
        ));
        check(&states, header(7, 1, 0, 1, 0), Ok(SequenceCheck::Append));
        states.record(&header(7, 1, 0, 1, 3), &[]);
        // The old epoch's batch is no duplicate any more: it is fenced.
        assert!(matches!(
            states.check(&header(7, 0, 0, 3, 0)),
            Err(SequenceError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_duplicates() {
        let mut states = ProducerStates::default();
        for index in 0..7 {
            states.record(&header(7, 0, index, 1, index as i64), &[]);
        }
        assert_eq!(states.iter().next().unwrap().1.batches.len(), 5);
        assert!(matches!(
            states.check(&header(7, 0, 2, 1, 0)),
            Ok(SequenceCheck::Duplicate(ProducerBatch {
                first_offset: 2,
                ..
            }))
        ));
        // Older than the window: neither a duplicate nor next.
        assert!(matches!(
            states.check(&header(7, 0, 1, 1, 0)),
            Err(SequenceError::OutOfOrderSequence { .. })
        ));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut states = ProducerStates::default();
        states.record(&header(7, 0, i32::MAX - 1, 2, 0), &[]);
        assert_eq!(
            states.iter().next().unwrap().1.last_sequence(),
            Some(i32::MAX)
        );
        check(&states, header(7, 0, 0, 1, 0), Ok(SequenceCheck::Append));
        states.record(&header(7, 0, i32::MAX, 3, 10), &[]);
        assert_eq!(states.iter().next().unwrap().1.last_sequence(), Some(1));
    }

    #[test]
    fn producers_idle_past_the_expiration_are_forgotten() {
        let mut states = ProducerStates::default();
        states.record(&header(7, 0, 0, 1, 0), &[]);
        assert_eq!(states.expire(1_000 + 99, 100), 0);
        assert_eq!(states.expire(1_000 + 100, 100), 1);
        assert!(states.is_empty());
    }

    #[test]
    fn batches_of_producers_that_are_not_idempotent_are_not_tracked() {
        let mut states = ProducerStates::default();
        states.record(&header(ProducerId::NONE.0, -1, -1, 4, 0), &[]);
        assert!(states.is_empty());
        check(
            &states,
            header(ProducerId::NONE.0, -1, -1, 1, 0),
            Ok(SequenceCheck::Append),
        );
    }

    fn transactional(mut batch: BatchHeader) -> BatchHeader {
        batch.attributes |= crate::batch::TRANSACTIONAL_FLAG;
        batch
    }

    /// A marker batch at `offset` and its header.
    fn marker(
        marker: Marker,
        producer_id: i64,
        producer_epoch: i16,
        offset: i64,
    ) -> (BatchHeader, Vec<u8>) {
        let mut bytes = marker.batch(ProducerId(producer_id), producer_epoch, 0, 1_000);
        crate::batch::stamp(&mut bytes, offset, 0);
        (BatchHeader::parse(&bytes).unwrap(), bytes)
    }

    #[test]
    fn transactions_pin_the_first_unstable_offset_until_their_markers() {
        let mut states = ProducerStates::default();
        states.record(&header(9, 0, 0, 1, 0), &[]);
        assert_eq!(states.first_unstable_offset(), None);
        states.record(&transactional(header(7, 0, 0, 2, 10)), &[]);
        states.record(&transactional(header(8, 0, 0, 1, 12)), &[]);
        states.record(&transactional(header(7, 0, 2, 1, 13)), &[]);
        assert_eq!(states.first_unstable_offset(), Some(10));
        assert!(states.in_transaction(ProducerId(7), 0));
        assert!(!states.in_transaction(ProducerId(7), 1));
        assert!(!states.in_transaction(ProducerId(9), 0));
        let (header_7, bytes_7) = marker(Marker::Commit, 7, 0, 14);
        assert_eq!(
            states.record(&header_7, &bytes_7),
            None,
            "a commit is not indexed"
        );
        assert_eq!(states.first_unstable_offset(), Some(12));
        let (header_8, bytes_8) = marker(Marker::Abort, 8, 0, 15);
        assert_eq!(
            states.record(&header_8, &bytes_8),
            Some(AbortedTxn {
                producer_id: ProducerId(8),
                first_offset: 12,
                last_offset: 15,
                last_stable_offset: 16,
            })
        );
        assert_eq!(states.first_unstable_offset(), None);
        // A marker with nothing ongoing (a retried marker) changes nothing.
        assert_eq!(states.record(&header_8, &bytes_8), None);
    }

    #[test]
    fn a_marker_of_a_newer_epoch_fences_the_old_one_and_restarts_sequences() {
        let mut states = ProducerStates::default();
        states.record(&transactional(header(7, 0, 0, 3, 0)), &[]);
        let (bumped, bytes) = marker(Marker::Abort, 7, 1, 3);
        assert!(states.record(&bumped, &bytes).is_some());
        assert!(matches!(
            states.check(&transactional(header(7, 0, 3, 1, 0))),
            Err(SequenceError::InvalidProducerEpoch {
                current_epoch: 1,
                ..
            })
        ));
        // Sequence 0 of the new epoch is new, not a duplicate of the old one.
        check(
            &states,
            transactional(header(7, 1, 0, 3, 0)),
            Ok(SequenceCheck::Append),
        );
        assert!(states.check_epoch(ProducerId(7), 0).is_err());
        assert!(states.check_epoch(ProducerId(7), 1).is_ok());
        assert!(states.check_epoch(ProducerId(99), 0).is_ok());
    }

    #[test]
    fn a_producer_in_a_transaction_does_not_expire() {
        let mut states = ProducerStates::default();
        states.record(&transactional(header(7, 0, 0, 1, 0)), &[]);
        assert_eq!(states.expire(i64::MAX, 100), 0);
        let (commit, bytes) = marker(Marker::Commit, 7, 0, 1);
        states.record(&commit, &bytes);
        assert_eq!(states.expire(i64::MAX, 100), 1);
    }

    #[test]
    fn snapshots_keep_ongoing_transactions_and_old_snapshots_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut states = ProducerStates::default();
        states.record(&transactional(header(7, 0, 0, 2, 5)), &[]);
        states.record(&header(8, 0, 0, 1, 7), &[]);
        write_snapshot(dir.path(), 8, &states).unwrap();
        let (_, loaded) = latest_snapshot_at_or_below(dir.path(), 8).unwrap().unwrap();
        assert_eq!(loaded, states);
        assert_eq!(loaded.first_unstable_offset(), Some(5));
        // The format without transactions: producer 8 alone, one batch.
        let mut old = Vec::new();
        old.extend_from_slice(&1u32.to_be_bytes());
        old.extend_from_slice(&8i64.to_be_bytes());
        old.extend_from_slice(&0i16.to_be_bytes());
        old.extend_from_slice(&1_000i64.to_be_bytes());
        old.push(1);
        for value in [0i32, 0] {
            old.extend_from_slice(&value.to_be_bytes());
        }
        for value in [7i64, 7] {
            old.extend_from_slice(&value.to_be_bytes());
        }
        checkpoint::write(
            &snapshot_path(dir.path(), 20),
            SNAPSHOT_MAGIC_WITHOUT_TRANSACTIONS,
            &old,
            Durability::Cached,
        )
        .unwrap();
        let (offset, loaded) = latest_snapshot_at_or_below(dir.path(), 20)
            .unwrap()
            .unwrap();
        assert_eq!(offset, 20);
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded.first_unstable_offset(), None);
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut states = ProducerStates::default();
        for producer_id in 0..3 {
            for index in 0..6 {
                states.record(&header(producer_id, 1, index * 2, 2, index as i64 * 2), &[]);
            }
        }
        write_snapshot(dir.path(), 12, &states).unwrap();
        write_snapshot(dir.path(), 40, &ProducerStates::default()).unwrap();
        assert_eq!(
            latest_snapshot_at_or_below(dir.path(), 39).unwrap(),
            Some((12, states.clone()))
        );
        assert_eq!(snapshot_offsets(dir.path()).unwrap(), vec![12, 40]);
        let path = snapshot_path(dir.path(), 12);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert_eq!(latest_snapshot_at_or_below(dir.path(), 39).unwrap(), None);
        assert_eq!(snapshot_offsets(dir.path()).unwrap(), vec![40]);
        assert_eq!(
            ProducerStates::decode(&[0, 0, 0, 1, 9], SnapshotFormat::Current),
            None
        );
    }
}
