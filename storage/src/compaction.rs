//! Log compaction (`cleanup.policy=compact`): a sealed segment keeps, of
//! each key, only the record no later one with the same key replaces.
//! Pure functions over segment bytes; `PartitionLog::compact` decides which
//! segments and swaps the files.
//!
//! - Offsets never change: a batch keeps its base offset and offset range
//!   (`last_offset_delta`), only some of its records go, so consumers and
//!   followers see gaps, never renumbered records. A batch left with no
//!   record goes entirely, except a segment's last batch, which stays as an
//!   empty batch (as Kafka's cleaner leaves them) so every segment keeps its
//!   end offset.
//! - A tombstone (a keyed record without value) is the latest record of its
//!   key until `delete.retention.ms` after its batch's newest timestamp;
//!   then it goes too, so a consumer that reads the log within that time
//!   sees the deletion. Dropping it is safe because no older record of its
//!   key survives a pass: `PartitionLog::compact` cleans every sealed
//!   segment, oldest first, against the same key map.
//! - Records without a key and control batches are kept as they are.
//! - Transactions (Kafka's rules): nothing at or above the last stable
//!   offset is compacted (the caller's bound); records of aborted
//!   transactions never count as a key's latest record and are removed;
//!   markers stay, so a consumer still sees where each transaction ended.
//! - A rewritten batch is stored uncompressed with a new CRC; the fields
//!   outside the records (timestamps, producer id, epoch and sequence)
//!   stay.

use std::collections::HashMap;

use crate::batch::{
    BatchError, BatchHeader, BatchIter, ProducerId, BATCH_HEADER_BYTES, COMPRESSION_MASK,
    LOG_OVERHEAD,
};
use crate::compression::{batch_records, DECOMPRESSED_BATCH_BYTES_MAX};
use crate::record::{get_varint, RecordIter};
use crate::transaction::AbortedTxn;

/// The latest offset of each key.
pub(crate) type LatestOffsets = HashMap<Vec<u8>, i64>;

/// The offset ranges of aborted transactions, per producer.
#[derive(Debug, Default)]
pub(crate) struct AbortedRanges(HashMap<ProducerId, Vec<(i64, i64)>>);

impl AbortedRanges {
    pub(crate) fn new(aborted: &[AbortedTxn]) -> Self {
        let mut ranges: HashMap<ProducerId, Vec<(i64, i64)>> = HashMap::new();
        for entry in aborted {
            ranges
                .entry(entry.producer_id)
                .or_default()
                .push((entry.first_offset, entry.last_offset));
        }
        AbortedRanges(ranges)
    }

    /// Whether `header` is a data batch of an aborted transaction.
    fn holds(&self, header: &BatchHeader) -> bool {
        header.is_transactional()
            && !header.is_control()
            && self.0.get(&header.producer_id).is_some_and(|ranges| {
                ranges
                    .iter()
                    .any(|(first, last)| (*first..=*last).contains(&header.base_offset))
            })
    }
}

/// What one compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    pub segments_cleaned: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Notes in `latest` the offset of every keyed record in `data` (whole
/// batches) below `upper_bound_offset`; later offsets win.
pub(crate) fn note_latest_offsets(
    data: &[u8],
    upper_bound_offset: i64,
    aborted: &AbortedRanges,
    latest: &mut LatestOffsets,
) -> Result<(), BatchError> {
    for (header, batch) in BatchIter::new(data) {
        if header.last_offset() >= upper_bound_offset {
            break;
        }
        if header.is_control() || aborted.holds(&header) {
            continue;
        }
        let records = batch_records(batch, DECOMPRESSED_BATCH_BYTES_MAX)?;
        for record in RecordIter::from_records(&records, header.record_count) {
            let record = record.map_err(|reason| BatchError::Record {
                record_index: 0,
                reason,
            })?;
            if let Some(key) = record.key {
                let offset = header.base_offset + record.offset_delta;
                match latest.get_mut(key) {
                    Some(known) => *known = (*known).max(offset),
                    None => {
                        latest.insert(key.to_vec(), offset);
                    }
                }
            }
        }
    }
    Ok(())
}

/// `data` (a sealed segment's batches) without the records `latest` says
/// are replaced, the records of aborted transactions, and the tombstones
/// of batches whose newest timestamp is before `tombstones_before_ms`;
/// `None` when nothing would go.
pub(crate) fn clean_segment(
    data: &[u8],
    latest: &LatestOffsets,
    aborted: &AbortedRanges,
    tombstones_before_ms: i64,
) -> Result<Option<(Vec<u8>, u64)>, BatchError> {
    let batches: Vec<(BatchHeader, &[u8])> = BatchIter::new(data).collect();
    let mut out = Vec::with_capacity(data.len());
    let mut removed_total = 0u64;
    for (index, (header, batch)) in batches.iter().enumerate() {
        let last_of_segment = index + 1 == batches.len();
        if header.is_control() {
            out.extend_from_slice(batch);
            continue;
        }
        let aborted_batch = aborted.holds(header);
        let records = batch_records(batch, DECOMPRESSED_BATCH_BYTES_MAX)?;
        let mut kept = Vec::with_capacity(records.len());
        let (mut kept_count, mut removed) = (0i32, 0u64);
        let mut rest: &[u8] = &records;
        for _ in 0..header.record_count {
            let (length, prefix) = get_varint(rest).ok_or(BatchError::Record {
                record_index: 0,
                reason: "record length is not a varint",
            })?;
            let end = prefix + usize::try_from(length).unwrap_or(usize::MAX);
            if end > rest.len() {
                return Err(BatchError::Record {
                    record_index: 0,
                    reason: "record length exceeds the batch",
                });
            }
            let (raw, tail) = rest.split_at(end);
            rest = tail;
            let record = RecordIter::from_records(raw, 1)
                .next()
                .expect("one record")
                .map_err(|reason| BatchError::Record {
                    record_index: 0,
                    reason,
                })?;
            let offset = header.base_offset + record.offset_delta;
            let keep = match record.key {
                _ if aborted_batch => false,
                None => true,
                Some(key) => {
                    latest.get(key).is_none_or(|&newest| newest <= offset)
                        && (record.value.is_some() || header.max_timestamp >= tombstones_before_ms)
                }
            };
            if keep {
                kept.extend_from_slice(raw);
                kept_count += 1;
            } else {
                removed += 1;
            }
        }
        if removed == 0 {
            out.extend_from_slice(batch);
            continue;
        }
        removed_total += removed;
        if kept_count == 0 && !last_of_segment {
            continue;
        }
        let start = out.len();
        out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
        out.extend_from_slice(&kept);
        let rebuilt = &mut out[start..];
        // The kept records are stored uncompressed.
        BatchHeader {
            batch_length: (rebuilt.len() - LOG_OVERHEAD) as i32,
            attributes: header.attributes & !COMPRESSION_MASK,
            record_count: kept_count,
            ..*header
        }
        .write_sealed(rebuilt);
    }
    Ok((removed_total > 0).then_some((out, removed_total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{stamp, Compression};
    use crate::record::{BatchBuilder, Record};

    /// A batch at `base_offset` of (key, value) records.
    fn batch(base_offset: i64, records: &[(&str, Option<&str>)], codec: Compression) -> Vec<u8> {
        let mut builder = BatchBuilder::new(1_000).compression(codec);
        for (key, value) in records {
            builder.push(Record {
                key: Some(key.as_bytes()),
                value: value.map(str::as_bytes),
                headers: &[],
                timestamp_ms: None,
            });
        }
        let mut bytes = builder.build();
        stamp(&mut bytes, base_offset, 0);
        bytes
    }

    /// (offset, key, value) of every record of `data`, checking each batch.
    fn contents(data: &[u8]) -> Vec<(i64, String, Option<String>)> {
        let mut out = Vec::new();
        for (header, bytes) in BatchIter::new(data) {
            BatchHeader::validate(bytes, usize::MAX).expect("a valid batch");
            let records = batch_records(bytes, usize::MAX).unwrap();
            for record in RecordIter::from_records(&records, header.record_count) {
                let record = record.unwrap();
                out.push((
                    header.base_offset + record.offset_delta,
                    String::from_utf8(record.key.unwrap().to_vec()).unwrap(),
                    record
                        .value
                        .map(|value| String::from_utf8(value.to_vec()).unwrap()),
                ));
            }
        }
        out
    }

    #[test]
    fn only_the_latest_record_of_each_key_stays_at_its_offset() {
        let segment = [
            batch(0, &[("a", Some("1")), ("b", Some("1"))], Compression::None),
            batch(2, &[("a", Some("2")), ("c", Some("1"))], Compression::Lz4),
            batch(4, &[("b", None)], Compression::None),
            batch(5, &[("a", Some("old-but-last"))], Compression::None),
        ]
        .concat();
        // A later segment replaces "a" again.
        let later = batch(6, &[("a", Some("3"))], Compression::None);
        let none = AbortedRanges::default();
        let mut latest = LatestOffsets::new();
        note_latest_offsets(&segment, i64::MAX, &none, &mut latest).unwrap();
        note_latest_offsets(&later, i64::MAX, &none, &mut latest).unwrap();
        assert_eq!(latest[&b"a".to_vec()], 6);

        let (cleaned, removed) = clean_segment(&segment, &latest, &none, 0).unwrap().unwrap();
        assert_eq!(removed, 4, "a@0, b@1, a@2 and a@5");
        assert_eq!(
            contents(&cleaned),
            [
                (3, "c".to_string(), Some("1".to_string())),
                (4, "b".to_string(), None),
            ],
            "offsets kept; the tombstone is recent"
        );
        let ranges: Vec<(i64, i64, i32)> = BatchIter::new(&cleaned)
            .map(|(h, _)| (h.base_offset, h.last_offset(), h.record_count))
            .collect();
        assert_eq!(
            ranges,
            [(2, 3, 1), (4, 4, 1), (5, 5, 0)],
            "batches keep their range; the segment's last one stays, empty"
        );

        // Once the tombstone is old enough it goes; cleaning again changes
        // nothing else.
        let (again, removed) = clean_segment(&cleaned, &latest, &none, 2_000)
            .unwrap()
            .unwrap();
        assert_eq!(removed, 1);
        assert_eq!(contents(&again).len(), 1);
        assert_eq!(clean_segment(&again, &latest, &none, 2_000).unwrap(), None);
    }

    #[test]
    fn the_upper_bound_limits_what_counts_as_later() {
        let data = [
            batch(0, &[("k", Some("1"))], Compression::None),
            batch(1, &[("k", Some("2"))], Compression::None),
        ]
        .concat();
        let mut latest = LatestOffsets::new();
        note_latest_offsets(&data, 1, &AbortedRanges::default(), &mut latest).unwrap();
        assert_eq!(latest[&b"k".to_vec()], 0, "offset 1 is not below the bound");
    }

    #[test]
    fn records_of_aborted_transactions_go_and_never_replace_a_committed_one() {
        let transactional = |base_offset: i64, key: &str, value: &str| {
            let mut builder = BatchBuilder::new(1_000)
                .producer(ProducerId(7), 0, base_offset as i32)
                .transactional();
            builder.push(Record::keyed(key.as_bytes(), value.as_bytes()));
            let mut bytes = builder.build();
            stamp(&mut bytes, base_offset, 0);
            bytes
        };
        let segment = [
            batch(0, &[("k", Some("committed"))], Compression::None),
            transactional(1, "k", "aborted"),
            transactional(2, "j", "aborted"),
            batch(3, &[("z", Some("last"))], Compression::None),
        ]
        .concat();
        let aborted = AbortedRanges::new(&[AbortedTxn {
            producer_id: ProducerId(7),
            first_offset: 1,
            last_offset: 4,
            last_stable_offset: 5,
        }]);
        let mut latest = LatestOffsets::new();
        note_latest_offsets(&segment, i64::MAX, &aborted, &mut latest).unwrap();
        assert_eq!(
            latest[&b"k".to_vec()],
            0,
            "the aborted write is not the latest"
        );
        assert!(!latest.contains_key(b"j".as_slice()));
        let (cleaned, removed) = clean_segment(&segment, &latest, &aborted, 0)
            .unwrap()
            .unwrap();
        assert_eq!(removed, 2);
        let kept: Vec<i64> = contents(&cleaned)
            .iter()
            .map(|(offset, ..)| *offset)
            .collect();
        assert_eq!(kept, [0, 3]);
    }
}
