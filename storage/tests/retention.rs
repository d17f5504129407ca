//! Retention by size and time, record deletion, and deleted segments that
//! readers still hold.

mod harness;

use harness::{append, read_all, small_config, values};
use strata_storage::{LogConfig, PartitionLog, StorageError};

fn log_with_segments(path: &std::path::Path, config: LogConfig, batch_count: u64) -> PartitionLog {
    let mut log = PartitionLog::open(path, config).unwrap();
    for step in 0..batch_count {
        append(&mut log, &values(step, 2, 200), 10_000 + step as i64 * 100);
    }
    log
}

#[test]
fn retention_bytes_deletes_oldest_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let config = LogConfig {
        retention_bytes: Some(10_000),
        ..small_config()
    };
    let mut log = log_with_segments(&path, config, 100);
    let before = log.size_bytes();
    let segments_before = log.segment_count();
    let end = log.log_end_offset();
    let outcome = log.enforce_retention(0, end).unwrap();
    assert!(outcome.segments_deleted > 0);
    assert_eq!(
        log.segment_count(),
        segments_before - outcome.segments_deleted
    );
    assert_eq!(log.size_bytes(), before - outcome.bytes_deleted);
    assert!(log.size_bytes() >= 10_000, "never below the retention size");
    assert!(log.size_bytes() < 10_000 + 4096, "within one segment of it");
    assert_eq!(log.log_start_offset(), outcome.log_start_offset);
    assert_eq!(log.log_start_offset(), log.segment_base_offsets()[0]);
    assert!(matches!(
        log.read(0, 100, i64::MAX),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    let kept = read_all(&log, 4096);
    assert_eq!(kept.first().unwrap().0, log.log_start_offset());
    assert_eq!(kept.last().unwrap().0, end - 1);

    // The files are gone and the start offset survives a restart.
    let files = std::fs::read_dir(&path)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|extension| extension == "log")
        })
        .count();
    assert_eq!(files, log.segment_count());
    let start = log.log_start_offset();
    drop(log);
    let log = PartitionLog::open(&path, small_config()).unwrap();
    assert_eq!(log.log_start_offset(), start);
}

#[test]
fn retention_ms_deletes_segments_whose_newest_record_expired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let config = LogConfig {
        retention_ms: Some(1_000),
        ..small_config()
    };
    let mut log = log_with_segments(&path, config, 100); // timestamps 10_000 ..= 19_900
    let end = log.log_end_offset();
    // At 15_000 everything with a newest timestamp before 14_000 has expired.
    log.enforce_retention(15_000, end).unwrap();
    // Batch `step` holds offsets 2 * step and 2 * step + 1, stamped 10_000 + 100 * step.
    let timestamp_of = |offset: i64| 10_000 + offset / 2 * 100;
    let start = log.log_start_offset();
    assert!(
        start > 0 && timestamp_of(start - 1) < 14_000,
        "only expired segments are deleted"
    );
    let first_kept_segment_end = log.segment_base_offsets()[1];
    assert!(
        timestamp_of(first_kept_segment_end - 1) >= 14_000,
        "every expired segment is deleted"
    );
    // Nothing in the active segment is ever deleted, however old.
    log.enforce_retention(1_000_000, end).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(read_all(&log, 4096).last().unwrap().0, end - 1);
}

#[test]
fn retention_never_passes_the_upper_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let config = LogConfig {
        retention_ms: Some(1),
        ..small_config()
    };
    let mut log = log_with_segments(&path, config, 100);
    let outcome = log.enforce_retention(1_000_000, 0).unwrap();
    assert_eq!(outcome.segments_deleted, 0);
    let second_segment = log.segment_base_offsets()[1];
    log.enforce_retention(1_000_000, second_segment).unwrap();
    assert_eq!(log.log_start_offset(), second_segment);
}

#[test]
fn delete_records_before_moves_the_start_inside_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let mut log = log_with_segments(&path, small_config(), 50);
    log.delete_records_before(37).unwrap();
    assert_eq!(log.log_start_offset(), 37);
    assert_eq!(read_all(&log, 4096).first().unwrap().0, 37);
    assert!(log.segment_base_offsets()[0] <= 37);
    assert!(matches!(
        log.delete_records_before(10_000),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    drop(log);
    let log = PartitionLog::open(&path, small_config()).unwrap();
    assert_eq!(log.log_start_offset(), 37, "durable across a crash");
}

#[test]
fn a_deleted_segment_lives_until_its_last_reader_drops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let config = LogConfig {
        retention_bytes: Some(1),
        ..small_config()
    };
    let mut log = log_with_segments(&path, config, 40);
    let held = log.read(0, 1 << 20, i64::MAX).unwrap().records;
    let copy = held.to_vec();
    let end = log.log_end_offset();
    log.enforce_retention(0, end).unwrap();
    let deleted = path.join(format!("{:020}.log.deleted", 0));
    assert!(deleted.exists(), "the file waits for its reader");
    assert_eq!(&held[..], &copy[..], "the reader's bytes are unchanged");
    drop(held);
    assert!(!deleted.exists(), "removed once the reader is done");
}
