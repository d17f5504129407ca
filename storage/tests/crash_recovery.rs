//! Crash tests: tear the active segment at random byte positions or flip
//! random bits in its last batch, reopen, and check the log is exactly the
//! valid prefix. Damage with valid batches after it must be refused.

mod harness;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use harness::{append, read_all, values};
use proptest::prelude::*;
use strata_storage::batch::BatchHeader;
use strata_storage::{LogConfig, PartitionLog, StorageError};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: 512,
        preallocate_bytes: 64 << 10,
        ..LogConfig::default()
    }
}

/// What `write_unflushed` wrote: the records, the byte range of every batch
/// in the single segment file, and that file.
struct Written {
    records: Vec<(i64, Vec<u8>)>,
    ranges: Vec<(usize, usize)>,
    segment: PathBuf,
}

/// Writes `batch_sizes.len()` batches without flushing them and drops the log
/// (a crash of the process).
fn write_unflushed(path: &Path, batch_sizes: &[(usize, usize)]) -> Written {
    let mut log = PartitionLog::open(path, config()).unwrap();
    let mut records = Vec::new();
    for (index, &(record_count, size_bytes)) in batch_sizes.iter().enumerate() {
        let values = values(index as u64, record_count, size_bytes);
        let info = append(&mut log, &values, 1_000 + index as i64);
        records.extend((info.first_offset..).zip(values));
    }
    assert_eq!(log.recovery_point(), 0, "nothing was flushed");
    drop(log);
    let segment = path.join(format!("{:020}.log", 0));
    let data = fs::read(&segment).unwrap();
    let mut ranges = Vec::new();
    let mut position = 0;
    while let Ok(header) = BatchHeader::parse(&data[position..]) {
        ranges.push((position, position + header.total_bytes()));
        position += header.total_bytes();
    }
    assert_eq!(ranges.len(), batch_sizes.len());
    Written {
        records,
        ranges,
        segment,
    }
}

/// Records of the first `batch_count` batches.
fn prefix(
    records: &[(i64, Vec<u8>)],
    batch_sizes: &[(usize, usize)],
    batch_count: usize,
) -> Vec<(i64, Vec<u8>)> {
    let record_count: usize = batch_sizes[..batch_count]
        .iter()
        .map(|(count, _)| count)
        .sum();
    records[..record_count].to_vec()
}

fn batch_sizes() -> impl Strategy<Value = Vec<(usize, usize)>> {
    proptest::collection::vec((1usize..4, 0usize..2000), 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_torn_tail_is_cut_to_the_valid_prefix(sizes in batch_sizes(), cut in 0.0f64..1.0) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let Written { records, ranges, segment } = write_unflushed(&path, &sizes);
        let end = ranges.last().unwrap().1;
        let cut_at = (end as f64 * cut) as usize;
        OpenOptions::new().write(true).open(&segment).unwrap().set_len(cut_at as u64).unwrap();

        let mut log = PartitionLog::open(&path, config()).unwrap();
        let whole = ranges.iter().filter(|(_, batch_end)| *batch_end <= cut_at).count();
        let expected = prefix(&records, &sizes, whole);
        prop_assert_eq!(read_all(&log, 4096), expected.clone());
        prop_assert_eq!(log.log_end_offset(), expected.len() as i64);
        prop_assert_eq!(log.recovery_point(), log.log_end_offset());

        // The log goes on densely from where it was cut, and survives a clean reopen.
        let info = append(&mut log, &values(99, 2, 10), 5_000);
        prop_assert_eq!(info.first_offset, expected.len() as i64);
        log.close().unwrap();
        let log = PartitionLog::open(&path, config()).unwrap();
        prop_assert_eq!(read_all(&log, 4096).len(), expected.len() + 2);
    }

    #[test]
    fn a_flipped_bit_in_the_last_batch_drops_only_that_batch(
        sizes in batch_sizes(),
        where_in_batch in 0.0f64..1.0,
        bit in 0u8..8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let Written { records, ranges, segment } = write_unflushed(&path, &sizes);
        let (start, end) = *ranges.last().unwrap();
        // Every byte from the length field on is checked, except the partition
        // leader epoch, which Kafka's format leaves outside the CRC.
        let checked: Vec<usize> = (start + 8..end).filter(|p| !(start + 12..start + 16).contains(p)).collect();
        let position = checked[((checked.len() - 1) as f64 * where_in_batch) as usize];
        let mut data = fs::read(&segment).unwrap();
        data[position] ^= 1 << bit;
        fs::write(&segment, &data).unwrap();

        let log = PartitionLog::open(&path, config()).unwrap();
        let expected = prefix(&records, &sizes, ranges.len() - 1);
        prop_assert_eq!(read_all(&log, 4096), expected.clone());
        prop_assert_eq!(log.log_end_offset(), expected.len() as i64);
    }

    #[test]
    fn damage_followed_by_valid_batches_is_refused(
        sizes in proptest::collection::vec((1usize..4, 0usize..2000), 2..12),
        which in 0.0f64..1.0,
        where_in_batch in 0.0f64..1.0,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let Written { ranges, segment, .. } = write_unflushed(&path, &sizes);
        let damaged = ((ranges.len() - 2) as f64 * which) as usize;
        let (start, end) = ranges[damaged];
        let position = start + 21 + ((end - start - 22) as f64 * where_in_batch) as usize;
        let mut data = fs::read(&segment).unwrap();
        data[position] ^= 0x10;
        fs::write(&segment, &data).unwrap();

        match PartitionLog::open(&path, config()) {
            Err(StorageError::Corrupt { segment: named, position: reported, .. }) => {
                prop_assert_eq!(named, segment);
                prop_assert_eq!(reported, start as u64);
            }
            other => prop_assert!(false, "expected a corruption error, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn garbage_after_the_last_batch_is_cut_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let sizes = [(2, 100), (3, 50)];
    let Written {
        records,
        ranges,
        segment,
    } = write_unflushed(&path, &sizes);
    let mut data = fs::read(&segment).unwrap();
    let end = ranges.last().unwrap().1;
    data[end + 100] = 0xff;
    fs::write(&segment, &data).unwrap();
    let log = PartitionLog::open(&path, config()).unwrap();
    assert_eq!(read_all(&log, 4096), records);
}

#[test]
fn flushed_data_survives_and_unflushed_tail_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let mut log = PartitionLog::open(&path, config()).unwrap();
    append(&mut log, &values(1, 3, 100), 1_000);
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), 3);
    append(&mut log, &values(2, 3, 100), 1_000);
    drop(log);

    // Damage the unflushed batch: recovery cuts it and keeps the flushed one.
    let segment = path.join(format!("{:020}.log", 0));
    let mut data = fs::read(&segment).unwrap();
    let second = BatchHeader::parse(&data).unwrap().total_bytes();
    data[second + 40] ^= 0x01;
    fs::write(&segment, &data).unwrap();
    let log = PartitionLog::open(&path, config()).unwrap();
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(read_all(&log, 4096).len(), 3);
}
