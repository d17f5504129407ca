//! Shared fixtures for the partition-log tests: building batches and reading
//! a log back as plain `(offset, value)` records.

#![allow(dead_code)] // each test file uses its own subset

use strata_storage::batch::BatchIter;
use strata_storage::record::{BatchBuilder, Record, RecordIter};
use strata_storage::validate::{Source, ValidatedBatches};
use strata_storage::{AppendInfo, LogConfig, PartitionLog};

/// A config small enough that a test rolls many segments and indexes often.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        preallocate_bytes: 1024,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// One batch of `values`, every record stamped `timestamp_ms`.
pub fn batch(values: &[Vec<u8>], timestamp_ms: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(timestamp_ms);
    for value in values {
        builder.push(Record::value(value));
    }
    builder.build()
}

pub fn append(log: &mut PartitionLog, values: &[Vec<u8>], timestamp_ms: i64) -> AppendInfo {
    let bytes = batch(values, timestamp_ms);
    let batches =
        ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).expect("valid batch");
    log.append_as_leader(&batches, 0, timestamp_ms)
        .expect("append")
}

/// `count` distinct values of `size_bytes` each, tagged with `seed`.
pub fn values(seed: u64, count: usize, size_bytes: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|index| {
            let tag = format!("{seed}-{index}-");
            tag.bytes()
                .chain(std::iter::repeat(b'x'))
                .take(size_bytes.max(tag.len()))
                .collect()
        })
        .collect()
}

/// Every record from the log start to the log end, through `read` calls of at
/// most `max_bytes`.
pub fn read_all(log: &PartitionLog, max_bytes: usize) -> Vec<(i64, Vec<u8>)> {
    let mut records = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let read = log.read(offset, max_bytes, i64::MAX).expect("read");
        if read.records.is_empty() {
            assert_eq!(
                read.next_offset,
                log.log_end_offset(),
                "an empty read happens only at the end"
            );
            return records;
        }
        for (header, batch) in BatchIter::new(&read.records) {
            assert!(
                header.last_offset() >= offset,
                "read returned a batch wholly before the requested offset"
            );
            for record in RecordIter::new(batch).expect("uncompressed") {
                let record = record.expect("well-formed record");
                let record_offset = header.base_offset + record.offset_delta;
                if record_offset >= offset {
                    records.push((record_offset, record.value.expect("value").to_vec()));
                }
            }
        }
        assert!(read.next_offset > offset, "reads make progress");
        offset = read.next_offset;
    }
}
