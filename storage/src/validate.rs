//! Checking batches before they are appended: a producer's batches strictly
//! (record framing, dense offset deltas, compressed records walked too), a
//! leader's batches fetched by a follower by their headers and CRCs.
//!
//! Unverified bytes become a [`ValidatedBatches`] only through
//! [`ValidatedBatches::validate`]; storage appends nothing else.

use crate::batch::{
    BatchError, BatchHeader, BatchIter, InvalidBatch, ProducerId, BATCH_HEADER_BYTES,
};
use crate::compression::{batch_records, DECOMPRESSED_BATCH_BYTES_MAX};
use crate::record::RecordIter;

/// Where a batch came from decides how strictly it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A producer: offsets are assigned by the leader, every offset carries a
    /// record, and the records (decompressed first, if need be) are walked to
    /// check their framing and offset deltas.
    Producer,
    /// A leader's log, fetched by a follower: offsets are already assigned and
    /// must increase; compaction may have left gaps.
    Replica,
}

/// One or more consecutive batches that passed validation. Storage appends
/// only this type, so it never stores bytes nobody checked.
#[derive(Debug, Clone, Copy)]
pub struct ValidatedBatches<'a> {
    bytes: &'a [u8],
    batch_count: usize,
    offset_count: u64,
    first_base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
}

impl<'a> ValidatedBatches<'a> {
    /// Validates every batch in `bytes`, which must hold whole batches and at
    /// least one. `batch_bytes_max` bounds each batch (the topic's
    /// `max.message.bytes`).
    pub fn validate(
        bytes: &'a [u8],
        source: Source,
        batch_bytes_max: usize,
    ) -> Result<Self, InvalidBatch> {
        let mut position = 0;
        let mut batch_count = 0;
        let mut offset_count = 0u64;
        let mut first_base_offset = 0;
        let mut last_offset = -1i64;
        let mut max_timestamp = i64::MIN;
        if bytes.is_empty() {
            let source = BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: 0,
            };
            return Err(InvalidBatch {
                position: 0,
                source,
            });
        }
        while position < bytes.len() {
            let rest = &bytes[position..];
            let header = BatchHeader::validate(rest, batch_bytes_max)
                .map_err(|source| InvalidBatch { position, source })?;
            match source {
                Source::Producer => check_producer_batch(&header, &rest[..header.total_bytes()])
                    .map_err(|source| InvalidBatch { position, source })?,
                Source::Replica => {
                    if batch_count > 0 && header.base_offset <= last_offset {
                        let source = BatchError::Record {
                            record_index: 0,
                            reason: "batch offsets do not increase",
                        };
                        return Err(InvalidBatch { position, source });
                    }
                }
            }
            if batch_count == 0 {
                first_base_offset = header.base_offset;
            }
            last_offset = header.last_offset();
            max_timestamp = max_timestamp.max(header.max_timestamp);
            offset_count += header.offset_count();
            batch_count += 1;
            position += header.total_bytes();
        }
        Ok(ValidatedBatches {
            bytes,
            batch_count,
            offset_count,
            first_base_offset,
            last_offset,
            max_timestamp,
        })
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn batch_count(&self) -> usize {
        self.batch_count
    }

    /// Offsets spanned by all batches together; a leader assigns this many.
    pub fn offset_count(&self) -> u64 {
        self.offset_count
    }

    /// Base offset of the first batch as written by the sender (meaningful for
    /// [`Source::Replica`] only).
    pub fn first_base_offset(&self) -> i64 {
        self.first_base_offset
    }

    /// Last offset of the last batch as written by the sender.
    pub fn last_offset(&self) -> i64 {
        self.last_offset
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// The batches, each with its header, in order.
    pub fn iter(&self) -> BatchIter<'a> {
        BatchIter::new(self.bytes)
    }
}

fn check_producer_batch(header: &BatchHeader, batch: &[u8]) -> Result<(), BatchError> {
    if header.is_control() {
        return Err(BatchError::Producer(
            "a producer may not write control batches: transaction markers come from transaction coordinators",
        ));
    }
    if header.is_transactional() && header.producer_id == ProducerId::NONE {
        return Err(BatchError::Producer(
            "a transactional batch needs a producer id and epoch (InitProducerId)",
        ));
    }
    if header.record_count <= 0 || header.record_count as i64 != header.last_offset_delta as i64 + 1
    {
        return Err(BatchError::RecordCount {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    // Compressed records are decompressed and walked like any others, so a
    // batch whose CRC is right but whose records are not is refused here
    // instead of failing every consumer that reads it.
    let bytes = batch_records(batch, DECOMPRESSED_BATCH_BYTES_MAX)?;
    let mut records = RecordIter::from_records(&bytes, header.record_count);
    let mut record_index = 0usize;
    for record in &mut records {
        let record = record.map_err(|reason| BatchError::Record {
            record_index,
            reason,
        })?;
        if record.offset_delta != record_index as i64 {
            return Err(BatchError::OffsetDelta {
                record_index,
                found: record.offset_delta,
            });
        }
        record_index += 1;
    }
    if record_index != header.record_count as usize {
        return Err(BatchError::Record {
            record_index,
            reason: "fewer records than the record count",
        });
    }
    if !records.is_exhausted() {
        return Err(BatchError::Record {
            record_index,
            reason: "trailing bytes after the last record",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{
        restamp_producer, seal_crc, stamp, BATCH_LENGTH_POSITION, MAGIC_POSITION,
        RECORD_COUNT_POSITION,
    };
    use crate::record::{BatchBuilder, Record};
    use crate::transaction::Marker;

    fn batch(values: &[&[u8]]) -> Vec<u8> {
        let mut builder = BatchBuilder::new(1_000);
        for value in values {
            builder.push(Record::value(value));
        }
        builder.build()
    }

    fn check(bytes: &[u8], expected: Result<(), BatchError>) {
        let result = ValidatedBatches::validate(bytes, Source::Producer, usize::MAX)
            .map(|_| ())
            .map_err(|e| e.source);
        assert_eq!(result, expected);
    }

    #[test]
    fn built_batch_is_valid() {
        let bytes = batch(&[b"a", b"bc", b""]);
        let validated = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap();
        assert_eq!(validated.batch_count(), 1);
        assert_eq!(validated.offset_count(), 3);
        let header = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(header.record_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.total_bytes(), bytes.len());
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let mut bytes = batch(&[b"x"]);
        stamp(&mut bytes, 42, 7);
        let header = BatchHeader::validate(&bytes, usize::MAX).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.partition_leader_epoch, 7);
    }

    #[test]
    fn restamping_the_producer_fields_seals_a_new_crc() {
        let mut bytes = batch(&[b"x", b"y"]);
        restamp_producer(&mut bytes, ProducerId(9), 3, 40);
        let header = BatchHeader::validate(&bytes, usize::MAX).unwrap();
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (ProducerId(9), 3, 40)
        );
    }

    #[test]
    fn flipped_bit_is_a_crc_error() {
        let mut bytes = batch(&[b"hello"]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        assert!(matches!(
            BatchHeader::validate(&bytes, usize::MAX),
            Err(BatchError::Crc { .. })
        ));
    }

    #[test]
    fn wrong_magic_is_named() {
        let mut bytes = batch(&[b"x"]);
        bytes[MAGIC_POSITION] = 1;
        check(&bytes, Err(BatchError::Magic { found: 1 }));
    }

    #[test]
    fn short_input_is_truncated_not_a_panic() {
        let bytes = batch(&[b"0123456789"]);
        for cut in 0..bytes.len() {
            let result = ValidatedBatches::validate(&bytes[..cut], Source::Producer, usize::MAX);
            assert!(result.is_err(), "cut at {cut} accepted");
        }
    }

    #[test]
    fn oversized_length_is_refused() {
        let mut bytes = batch(&[b"x"]);
        bytes[BATCH_LENGTH_POSITION..BATCH_LENGTH_POSITION + 4]
            .copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            BatchHeader::parse(&bytes),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            BatchHeader::parse_bounded(&bytes, 1 << 20),
            Err(BatchError::Length { .. })
        ));
    }

    #[test]
    fn record_count_must_match_offsets_for_producers() {
        let mut bytes = batch(&[b"a", b"b"]);
        bytes[RECORD_COUNT_POSITION..RECORD_COUNT_POSITION + 4]
            .copy_from_slice(&1i32.to_be_bytes());
        seal_crc(&mut bytes);
        check(
            &bytes,
            Err(BatchError::RecordCount {
                record_count: 1,
                last_offset_delta: 1,
            }),
        );
        // A compacted batch in a replica's log may hold fewer records than offsets.
        assert!(ValidatedBatches::validate(&bytes, Source::Replica, usize::MAX).is_ok());
    }

    #[test]
    fn offset_deltas_must_be_dense() {
        let mut builder = BatchBuilder::new(0);
        builder.push(Record::value(b"a"));
        builder.push(Record::value(b"b"));
        let mut bytes = builder.build();
        // The second record's offset delta varint sits after its length (1 byte),
        // attributes (1) and timestamp delta (1): rewrite 1 as 3 (zigzag 6).
        let first_record_length = bytes[BATCH_HEADER_BYTES] as usize / 2;
        let second = BATCH_HEADER_BYTES + 1 + first_record_length;
        assert_eq!(bytes[second + 3], 2, "zigzag(1)");
        bytes[second + 3] = 6;
        seal_crc(&mut bytes);
        check(
            &bytes,
            Err(BatchError::OffsetDelta {
                record_index: 1,
                found: 3,
            }),
        );
    }

    #[test]
    fn producers_write_no_markers_and_no_transactional_batch_without_an_id() {
        let marker = Marker::Commit.batch(ProducerId(3), 0, 0, 1_000);
        assert!(matches!(
            ValidatedBatches::validate(&marker, Source::Producer, usize::MAX),
            Err(InvalidBatch {
                source: BatchError::Producer(_),
                ..
            })
        ));
        let mut builder = BatchBuilder::new(0).transactional();
        builder.push(Record::value(b"a"));
        let anonymous = builder.build();
        assert!(ValidatedBatches::validate(&anonymous, Source::Producer, usize::MAX).is_err());
        let mut builder = BatchBuilder::new(0)
            .producer(ProducerId(3), 0, 0)
            .transactional();
        builder.push(Record::value(b"a"));
        let identified = builder.build();
        assert!(ValidatedBatches::validate(&identified, Source::Producer, usize::MAX).is_ok());
    }

    #[test]
    fn several_batches_validate_together() {
        let mut bytes = batch(&[b"a"]);
        bytes.extend_from_slice(&batch(&[b"b", b"c"]));
        let validated = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap();
        assert_eq!(validated.batch_count(), 2);
        assert_eq!(validated.offset_count(), 3);
        assert_eq!(validated.iter().count(), 2);
    }
}
