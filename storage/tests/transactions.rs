//! Transactions on the partition log: open transactions hold the last
//! stable offset back, markers end them, aborted ones are listed for the
//! reads that overlap them, and all of it survives a reopen (from the
//! snapshots and `.txnindex` files, or from the log when those are lost),
//! a truncation and retention.

mod harness;

use harness::small_config;
use strata_storage::batch::ProducerId;
use strata_storage::error::SequenceError;
use strata_storage::record::{BatchBuilder, Record};
use strata_storage::transaction::{AbortedTxn, Marker};
use strata_storage::validate::{Source, ValidatedBatches};
use strata_storage::{AppendInfo, PartitionLog, StorageError};

/// Appends one transactional record of `producer` (epoch 0).
fn write(log: &mut PartitionLog, producer: i64, sequence: i32) -> AppendInfo {
    let value = format!("{producer}-{sequence:0>300}");
    let mut builder = BatchBuilder::new(1_000)
        .producer(ProducerId(producer), 0, sequence)
        .transactional();
    builder.push(Record::value(value.as_bytes()));
    let bytes = builder.build();
    let batches = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap();
    log.append_as_leader(&batches, 0, 1_000).unwrap()
}

fn end(log: &mut PartitionLog, producer: i64, epoch: i16, marker: Marker) -> AppendInfo {
    log.append_marker(marker, ProducerId(producer), epoch, 0, 0, 1_000)
        .unwrap()
}

/// Producer 1 commits [0, 2], producer 2 aborts [1, 4], producer 3 stays
/// open from 5: offsets 0..=6 hold two data records each side.
fn three_transactions(log: &mut PartitionLog) {
    write(log, 1, 0); // 0
    write(log, 2, 0); // 1
    write(log, 1, 1); // 2
    end(log, 1, 0, Marker::Commit); // 3
    end(log, 2, 0, Marker::Abort); // 4
    write(log, 3, 0); // 5
}

fn aborted_of_2() -> AbortedTxn {
    AbortedTxn {
        producer_id: ProducerId(2),
        first_offset: 1,
        last_offset: 4,
        last_stable_offset: 5,
    }
}

#[test]
fn open_transactions_hold_the_last_stable_offset_and_aborts_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path().join("t-0"), small_config()).unwrap();
    write(&mut log, 1, 0);
    assert_eq!(
        log.last_stable_offset(1),
        0,
        "producer 1's transaction is open"
    );
    assert_eq!(log.last_stable_offset(0), 0);
    three_transactions_after_first(&mut log);
    assert_eq!(log.last_stable_offset(100), 5);
    assert_eq!(
        log.last_stable_offset(4),
        4,
        "never above the high watermark"
    );
    assert_eq!(log.aborted_transactions(0, 5), vec![aborted_of_2()]);
    assert_eq!(log.aborted_transactions(3, 5), vec![aborted_of_2()]);
    assert_eq!(log.aborted_transactions(5, 6), vec![]);
    assert_eq!(
        log.aborted_transactions(0, 1),
        vec![],
        "the read ends before it"
    );
    end(&mut log, 3, 0, Marker::Commit);
    assert_eq!(log.last_stable_offset(100), 100);
}

/// `three_transactions` once producer 1's first record is written.
fn three_transactions_after_first(log: &mut PartitionLog) {
    write(log, 2, 0);
    write(log, 1, 1);
    end(log, 1, 0, Marker::Commit);
    end(log, 2, 0, Marker::Abort);
    write(log, 3, 0);
}

#[test]
fn a_marker_of_a_fenced_epoch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path().join("t-0"), small_config()).unwrap();
    write(&mut log, 1, 0);
    end(&mut log, 1, 1, Marker::Abort);
    assert!(matches!(
        log.append_marker(Marker::Commit, ProducerId(1), 0, 0, 0, 1_000),
        Err(StorageError::Sequence(
            SequenceError::InvalidProducerEpoch { .. }
        ))
    ));
    assert_eq!(log.aborted_transactions(0, 10).len(), 1);
}

#[test]
fn transactions_survive_a_reopen_with_and_without_their_index_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let mut log = PartitionLog::open(&path, small_config()).unwrap();
    // Enough to roll several 4 KiB segments, aborts in the sealed ones.
    let mut expected = Vec::new();
    for round in 0..8i64 {
        let producer = 10 + round;
        let first = write(&mut log, producer, 0).first_offset;
        write(&mut log, producer, 1);
        write(&mut log, 99, round as i32);
        let marker = if round % 2 == 0 {
            Marker::Abort
        } else {
            Marker::Commit
        };
        let at = end(&mut log, producer, 0, marker).first_offset;
        if marker == Marker::Abort {
            expected.push((producer, first, at));
        }
    }
    assert!(log.segment_count() > 2, "the test needs sealed segments");
    write(&mut log, 7, 0);
    let check = |log: &PartitionLog| {
        let listed: Vec<(i64, i64, i64)> = log
            .aborted_transactions(0, i64::MAX)
            .iter()
            .map(|entry| (entry.producer_id.0, entry.first_offset, entry.last_offset))
            .collect();
        assert_eq!(listed, expected);
        // Producer 99 never ended its transaction: it pins offset 2.
        assert_eq!(log.last_stable_offset(i64::MAX), 2);
        assert!(log.producers().in_transaction(ProducerId(7), 0));
    };
    check(&log);
    drop(log);
    let log = PartitionLog::open(&path, small_config()).unwrap();
    check(&log);
    drop(log);
    // Every index file lost: rebuilt from the log, and written again.
    let mut removed = 0;
    for entry in std::fs::read_dir(&path).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().ends_with(".txnindex") {
            std::fs::remove_file(entry.path()).unwrap();
            removed += 1;
        }
    }
    assert!(removed > 0);
    let log = PartitionLog::open(&path, small_config()).unwrap();
    check(&log);
    drop(log);
    let txnindex_files = std::fs::read_dir(&path)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".txnindex")
        })
        .count();
    assert_eq!(txnindex_files, removed, "written again");
}

#[test]
fn truncation_forgets_the_markers_it_cut_and_reopens_their_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path().join("t-0"), small_config()).unwrap();
    three_transactions(&mut log);
    log.truncate_to(4).unwrap();
    assert_eq!(log.aborted_transactions(0, 10), vec![]);
    assert_eq!(
        log.last_stable_offset(10),
        1,
        "producer 2's transaction is open again"
    );
    assert!(log.producers().in_transaction(ProducerId(2), 0));
    assert!(!log.producers().in_transaction(ProducerId(1), 0));
}

#[test]
fn compaction_stops_at_the_last_stable_offset() {
    let dir = tempfile::tempdir().unwrap();
    let config = strata_storage::LogConfig {
        compact: true,
        ..small_config()
    };
    let mut log = PartitionLog::open(dir.path().join("t-0"), config).unwrap();
    // An open transaction at offset 0, then enough keyed records to seal
    // segments that would otherwise be compacted.
    write(&mut log, 1, 0);
    for index in 0..60 {
        let mut builder = BatchBuilder::new(1_000);
        builder.push(Record::keyed(b"k", format!("{index:0>200}").as_bytes()));
        let bytes = builder.build();
        let batches = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap();
        log.append_as_leader(&batches, 0, 1_000).unwrap();
    }
    log.flush().unwrap();
    let end = log.log_end_offset();
    let outcome = log.compact(end, 1_000).unwrap();
    assert_eq!(
        outcome.records_removed, 0,
        "nothing above offset 0 is stable"
    );
    end_txn_and_compact(&mut log, end);
}

fn end_txn_and_compact(log: &mut PartitionLog, end_offset: i64) {
    end(log, 1, 0, Marker::Commit);
    for index in 0..20 {
        let mut builder = BatchBuilder::new(1_000);
        builder.push(Record::keyed(b"k", format!("{index:0>200}").as_bytes()));
        let bytes = builder.build();
        let batches = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap();
        log.append_as_leader(&batches, 0, 1_000).unwrap();
    }
    log.flush().unwrap();
    let outcome = log.compact(log.log_end_offset(), 1_000).unwrap();
    assert!(outcome.records_removed > 0);
    assert!(log.log_end_offset() > end_offset);
}
