//! Indexes that disagree with the log are rebuilt from it on open.

mod harness;

use std::fs;
use std::path::Path;

use harness::{append, read_all, small_config, values};
use strata_storage::PartitionLog;

/// A log of several sealed segments; returns the records and segment bases.
fn build(path: &Path) -> (Vec<(i64, Vec<u8>)>, Vec<i64>) {
    let mut log = PartitionLog::open(path, small_config()).unwrap();
    for step in 0..60 {
        append(&mut log, &values(step, 3, 90), 1_000 + step as i64 * 10);
    }
    let records = read_all(&log, 2048);
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 4, "the test needs several sealed segments");
    log.close().unwrap();
    (records, bases)
}

fn index_path(dir: &Path, base: i64, extension: &str) -> std::path::PathBuf {
    dir.join(format!("{base:020}.{extension}"))
}

/// Reopens and checks every record, every offset lookup and a timestamp lookup.
fn check_reopened(path: &Path, records: &[(i64, Vec<u8>)]) {
    let log = PartitionLog::open(path, small_config()).unwrap();
    assert_eq!(read_all(&log, 2048), records);
    for &(offset, ref value) in records.iter().step_by(7) {
        let read = log.read(offset, 1, i64::MAX).unwrap();
        assert!(read.next_offset > offset);
        let found = harness_values_in(&read.records);
        assert!(found.contains(value), "offset {offset} reads its own value");
    }
    // Batch `step` has timestamp 1_000 + 10 * step and three records.
    let found = log
        .offset_for_timestamp(1_000 + 10 * 20 - 5)
        .unwrap()
        .unwrap();
    assert_eq!((found.offset, found.timestamp), (60, 1_200));
}

fn harness_values_in(bytes: &[u8]) -> Vec<Vec<u8>> {
    strata_storage::batch::BatchIter::new(bytes)
        .flat_map(|(_, batch)| {
            strata_storage::record::RecordIter::new(batch)
                .unwrap()
                .map(|record| record.unwrap().value.unwrap().to_vec())
        })
        .collect()
}

#[test]
fn missing_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let (records, bases) = build(&path);
    fs::remove_file(index_path(&path, bases[1], "index")).unwrap();
    fs::remove_file(index_path(&path, bases[2], "timeindex")).unwrap();
    check_reopened(&path, &records);
    assert!(
        index_path(&path, bases[1], "index").exists(),
        "the rebuilt index is written back"
    );
    assert!(index_path(&path, bases[2], "timeindex").exists());
}

#[test]
fn damaged_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let (records, bases) = build(&path);
    for (base, extension) in [(bases[0], "index"), (bases[1], "timeindex")] {
        let file = index_path(&path, base, extension);
        let mut bytes = fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        fs::write(&file, bytes).unwrap();
    }
    let truncated = index_path(&path, bases[2], "index");
    let bytes = fs::read(&truncated).unwrap();
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    check_reopened(&path, &records);
}

#[test]
fn an_intact_index_of_another_segment_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let (records, bases) = build(&path);
    // Checksums pass, but the entries describe another segment's batches.
    fs::copy(
        index_path(&path, bases[0], "index"),
        index_path(&path, bases[1], "index"),
    )
    .unwrap();
    fs::copy(
        index_path(&path, bases[0], "timeindex"),
        index_path(&path, bases[1], "timeindex"),
    )
    .unwrap();
    check_reopened(&path, &records);
    let rebuilt = fs::read(index_path(&path, bases[1], "index")).unwrap();
    assert_ne!(
        rebuilt,
        fs::read(index_path(&path, bases[0], "index")).unwrap()
    );
}

#[test]
fn orphan_and_leftover_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let (records, _) = build(&path);
    let orphan = index_path(&path, 999_999, "index");
    let leftover = path.join(format!("{:020}.log.deleted", 1_000_000));
    fs::write(&orphan, b"stale").unwrap();
    fs::write(&leftover, b"stale").unwrap();
    check_reopened(&path, &records);
    assert!(!orphan.exists() && !leftover.exists());
}
