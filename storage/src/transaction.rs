//! Transactions as the log sees them: the markers a transaction coordinator
//! writes to end a producer's transaction in a partition (Kafka's control
//! batches), and the index of aborted transactions a `read_committed`
//! consumer needs to skip their records.
//!
//! A marker is a control batch (attributes: transactional and control) of
//! one record, from the producer whose transaction it ends:
//!
//! ```text
//! key:   version i16 (0), type i16 (0 abort, 1 commit)
//! value: version i16 (0), coordinator_epoch i32
//! ```
//!
//! Aborted transactions are kept per segment, the one holding the abort
//! marker; a sealed segment's entries are written beside it in
//! `BASE.txnindex` (a `checkpoint` file, magic `TXNI`), big-endian:
//!
//! ```text
//! count u32
//! per entry: producer_id i64, first_offset i64, last_offset i64,
//!            last_stable_offset i64
//! ```

use std::path::{Path, PathBuf};

use crate::batch::{BatchHeader, ProducerId};
use crate::checkpoint::{self, Durability, Loaded, PayloadReader};
use crate::compression::batch_records;
use crate::error::Result;
use crate::record::{BatchBuilder, Record, RecordIter};

const CONTROL_VERSION: i16 = 0;
const ABORT: i16 = 0;
const COMMIT: i16 = 1;

/// How a transaction ended in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Commit,
    Abort,
}

impl Marker {
    /// The marker a control batch carries; `None` for a control batch of
    /// another kind, or one that does not parse.
    pub fn of(header: &BatchHeader, batch: &[u8]) -> Option<Marker> {
        if !header.is_control() {
            return None;
        }
        let records = batch_records(batch, 1 << 16).ok()?;
        let record = RecordIter::from_records(&records, header.record_count)
            .next()?
            .ok()?;
        match record.key? {
            [version_high, version_low, type_high, type_low] => {
                if i16::from_be_bytes([*version_high, *version_low]) != CONTROL_VERSION {
                    return None;
                }
                match i16::from_be_bytes([*type_high, *type_low]) {
                    ABORT => Some(Marker::Abort),
                    COMMIT => Some(Marker::Commit),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The control batch that ends `producer_id`'s transaction (offsets are
    /// stamped when it is appended).
    pub fn batch(
        self,
        producer_id: ProducerId,
        producer_epoch: i16,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Vec<u8> {
        let kind = match self {
            Marker::Commit => COMMIT,
            Marker::Abort => ABORT,
        };
        let mut key = Vec::with_capacity(4);
        key.extend_from_slice(&CONTROL_VERSION.to_be_bytes());
        key.extend_from_slice(&kind.to_be_bytes());
        let mut value = Vec::with_capacity(6);
        value.extend_from_slice(&CONTROL_VERSION.to_be_bytes());
        value.extend_from_slice(&coordinator_epoch.to_be_bytes());
        let mut builder = BatchBuilder::new(now_ms)
            .producer(producer_id, producer_epoch, -1)
            .control();
        builder.push(Record::keyed(&key, &value));
        builder.build()
    }
}

/// A transaction that ended with an abort marker: a `read_committed`
/// consumer drops `producer_id`'s transactional batches from `first_offset`
/// up to the marker at `last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: ProducerId,
    pub first_offset: i64,
    /// The abort marker's offset.
    pub last_offset: i64,
    /// The partition's last stable offset just after the marker: no
    /// transaction aborted later started below it, so a search for the
    /// transactions overlapping a read can stop at the first entry whose
    /// `last_stable_offset` reaches past the read.
    pub last_stable_offset: i64,
}

const TXN_INDEX_MAGIC: [u8; 4] = *b"TXNI";

pub(crate) fn txn_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.txnindex"))
}

/// Writes the aborted transactions whose markers are in the segment at
/// `base_offset`. Left to the page cache like the other indexes: a missing
/// or damaged file makes the next open rebuild the index from the log.
pub(crate) fn write_txn_index(dir: &Path, base_offset: i64, aborted: &[AbortedTxn]) -> Result<()> {
    let mut payload = Vec::with_capacity(4 + aborted.len() * 32);
    payload.extend_from_slice(&(aborted.len() as u32).to_be_bytes());
    for entry in aborted {
        payload.extend_from_slice(&entry.producer_id.0.to_be_bytes());
        payload.extend_from_slice(&entry.first_offset.to_be_bytes());
        payload.extend_from_slice(&entry.last_offset.to_be_bytes());
        payload.extend_from_slice(&entry.last_stable_offset.to_be_bytes());
    }
    checkpoint::write(
        &txn_index_path(dir, base_offset),
        TXN_INDEX_MAGIC,
        &payload,
        Durability::Cached,
    )
}

/// The entries of the segment at `base_offset`, or `None` when its file is
/// missing or damaged.
pub(crate) fn read_txn_index(dir: &Path, base_offset: i64) -> Result<Option<Vec<AbortedTxn>>> {
    let Loaded::Intact(payload) =
        checkpoint::read(&txn_index_path(dir, base_offset), TXN_INDEX_MAGIC)?
    else {
        return Ok(None);
    };
    let mut reader = PayloadReader::new(&payload);
    let Some(count) = reader.u32() else {
        return Ok(None);
    };
    let mut aborted = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        let (Some(producer_id), Some(first_offset), Some(last_offset), Some(last_stable_offset)) =
            (reader.i64(), reader.i64(), reader.i64(), reader.i64())
        else {
            return Ok(None);
        };
        aborted.push(AbortedTxn {
            producer_id: ProducerId(producer_id),
            first_offset,
            last_offset,
            last_stable_offset,
        });
    }
    Ok(reader.is_empty().then_some(aborted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Source, ValidatedBatches};

    #[test]
    fn markers_round_trip_and_other_batches_are_none() {
        for marker in [Marker::Commit, Marker::Abort] {
            let bytes = marker.batch(ProducerId(7), 3, 12, 1_000);
            let validated = ValidatedBatches::validate(&bytes, Source::Replica, usize::MAX);
            assert!(validated.is_ok(), "a marker is a valid batch");
            let header = BatchHeader::parse(&bytes).unwrap();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!(
                (header.producer_id, header.producer_epoch),
                (ProducerId(7), 3)
            );
            assert_eq!(Marker::of(&header, &bytes), Some(marker));
        }
        let mut builder = BatchBuilder::new(0).transactional();
        builder.push(Record::keyed(&[0, 0, 0, 1], b"not a marker"));
        let bytes = builder.build();
        assert_eq!(
            Marker::of(&BatchHeader::parse(&bytes).unwrap(), &bytes),
            None
        );
    }

    #[test]
    fn txn_index_files_round_trip_and_damage_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![
            AbortedTxn {
                producer_id: ProducerId(1),
                first_offset: 3,
                last_offset: 9,
                last_stable_offset: 10,
            },
            AbortedTxn {
                producer_id: ProducerId(2),
                first_offset: 5,
                last_offset: 12,
                last_stable_offset: 13,
            },
        ];
        write_txn_index(dir.path(), 0, &entries).unwrap();
        assert_eq!(read_txn_index(dir.path(), 0).unwrap(), Some(entries));
        assert_eq!(read_txn_index(dir.path(), 100).unwrap(), None);
        let path = txn_index_path(dir.path(), 0);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_txn_index(dir.path(), 0).unwrap(), None);
    }
}
