//! Idempotent producers on the partition log: a retried batch is answered
//! with its original offsets and written once, a gap or a fenced epoch is
//! refused, and the state behind those answers survives a reopen (from the
//! segment-roll snapshots and the log), a truncation and a lost snapshot.

mod harness;

use harness::{read_all, small_config};
use strata_storage::batch::ProducerId;
use strata_storage::error::SequenceError;
use strata_storage::record::{BatchBuilder, Record};
use strata_storage::validate::{Source, ValidatedBatches};
use strata_storage::{AppendInfo, PartitionLog, StorageError};

const PRODUCER: ProducerId = ProducerId(42);

fn produce(
    log: &mut PartitionLog,
    producer_epoch: i16,
    base_sequence: i32,
    values: &[&str],
) -> Result<AppendInfo, StorageError> {
    let mut builder = BatchBuilder::new(1_000).producer(PRODUCER, producer_epoch, base_sequence);
    for value in values {
        builder.push(Record::value(value.as_bytes()));
    }
    let bytes = builder.build();
    let batches = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX)?;
    log.append_as_leader(&batches, 0, 1_000)
}

/// Writes `count` two-record batches, in sequence, from sequence 0.
fn produce_many(log: &mut PartitionLog, count: i32) {
    for index in 0..count {
        let value = format!("{index:0>200}");
        let appended = produce(log, 0, index * 2, &[&value, &value]).expect("in sequence");
        assert!(!appended.duplicate);
    }
}

#[test]
fn a_retried_batch_is_written_once_and_answered_with_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path().join("t-0"), small_config()).unwrap();
    let first = produce(&mut log, 0, 0, &["a", "b"]).unwrap();
    produce(&mut log, 0, 2, &["c"]).unwrap();
    let retried = produce(&mut log, 0, 0, &["a", "b"]).unwrap();
    assert!(retried.duplicate);
    assert_eq!(
        (retried.first_offset, retried.last_offset),
        (first.first_offset, first.last_offset)
    );
    assert_eq!(log.log_end_offset(), 3);
    assert!(matches!(
        produce(&mut log, 0, 7, &["d"]),
        Err(StorageError::Sequence(SequenceError::OutOfOrderSequence {
            expected_sequence: 3,
            ..
        }))
    ));
    produce(&mut log, 1, 0, &["e"]).unwrap();
    assert!(matches!(
        produce(&mut log, 0, 3, &["f"]),
        Err(StorageError::Sequence(
            SequenceError::InvalidProducerEpoch { .. }
        ))
    ));
    assert_eq!(read_all(&log, 1 << 20).len(), 4);
}

#[test]
fn duplicates_are_still_recognised_after_a_reopen_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let mut log = PartitionLog::open(&path, small_config()).unwrap();
    produce_many(&mut log, 60);
    assert!(log.segment_count() > 3, "the test spans segments");
    let before = log.producers().clone();
    log.close().unwrap();

    let mut log = PartitionLog::open(&path, small_config()).unwrap();
    assert_eq!(
        log.producers(),
        &before,
        "snapshot plus replay rebuilds the state"
    );
    let value = format!("{:0>200}", 59);
    let retried = produce(&mut log, 0, 118, &[&value, &value]).unwrap();
    assert!(retried.duplicate);
    assert_eq!(retried.first_offset, 118);
    log.close().unwrap();

    // Without any snapshot the whole log is replayed to the same state.
    for entry in std::fs::read_dir(&path).unwrap() {
        let entry = entry.unwrap().path();
        if entry.extension().is_some_and(|ext| ext == "snapshot") {
            std::fs::remove_file(entry).unwrap();
        }
    }
    let log = PartitionLog::open(&path, small_config()).unwrap();
    assert_eq!(log.producers(), &before);
}

#[test]
fn truncation_takes_the_truncated_batches_out_of_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path().join("t-0"), small_config()).unwrap();
    produce_many(&mut log, 40);
    // Cut the last ten batches (20 offsets): sequence 60 is next again.
    log.truncate_to(60).unwrap();
    let value = format!("{:0>200}", 30);
    let again = produce(&mut log, 0, 60, &[&value, &value]).unwrap();
    assert!(
        !again.duplicate,
        "the truncated batch is gone, so this is new"
    );
    assert_eq!(again.first_offset, 60);
    assert!(matches!(
        produce(&mut log, 0, 80, &["x"]),
        Err(StorageError::Sequence(
            SequenceError::OutOfOrderSequence { .. }
        ))
    ));
}
