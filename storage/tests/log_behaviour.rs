//! Behaviour of the partition log beyond plain appends and reads: timestamp
//! lookup, leader epochs, follower appends, truncation under readers, flush
//! coordination and fail-stop, limits.

mod harness;

use std::sync::{Arc, Mutex};

use harness::{append, batch, read_all, small_config, values};
use strata_storage::record::{BatchBuilder, Record, RecordIter};
use strata_storage::validate::{Source, ValidatedBatches};
use strata_storage::{page_cache, EpochEntry, LogConfig, PartitionLog, StorageError};

fn open(dir: &tempfile::TempDir) -> PartitionLog {
    PartitionLog::open(dir.path().join("t-0"), small_config()).unwrap()
}

#[test]
fn timestamp_lookup_matches_a_scan_of_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    let mut all = Vec::new(); // (offset, timestamp)
    for step in 0..80i64 {
        // Timestamps go up overall but not monotonically within or across batches.
        let base = 1_000 + step * 50 - (step % 3) * 70;
        let mut builder = BatchBuilder::new(base);
        for index in 0..3i64 {
            let timestamp_ms = base + ((index * 37 + step) % 90);
            builder.push(Record {
                timestamp_ms: Some(timestamp_ms),
                ..Record::value(&[b'v'; 200])
            });
            all.push((log.log_end_offset() + index, timestamp_ms));
        }
        let bytes = builder.build();
        let batches = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap();
        log.append_as_leader(&batches, 0, 0).unwrap();
    }
    assert!(log.segment_count() > 3);
    for target in (800..5_200).step_by(13) {
        let expected = all
            .iter()
            .find(|(_, timestamp)| *timestamp >= target)
            .copied();
        let found = log
            .offset_for_timestamp(target)
            .unwrap()
            .map(|found| (found.offset, found.timestamp));
        assert_eq!(found, expected, "target {target}");
    }
    log.delete_records_before(100).unwrap();
    let found = log.offset_for_timestamp(0).unwrap().unwrap();
    assert_eq!(found.offset, 100, "never below the log start offset");
}

#[test]
fn read_stops_below_the_upper_bound_and_honours_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    for step in 0..10 {
        append(&mut log, &values(step, 2, 100), 0); // offsets 2*step, 2*step+1
    }
    let read = log.read(0, 1 << 20, 6).unwrap();
    assert_eq!(
        read.next_offset, 6,
        "batches reaching the bound are held back"
    );
    let read = log.read(6, 1 << 20, 6).unwrap();
    assert!(read.records.is_empty());
    assert_eq!(read.next_offset, 6);
    let one = log.read(3, 1, i64::MAX).unwrap();
    assert_eq!(
        one.next_offset, 4,
        "at least one whole batch, from the one holding the offset"
    );
    let first_record = RecordIter::new(&one.records)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first_record.offset_delta, 0);
    assert!(matches!(
        log.read(21, 100, i64::MAX),
        Err(StorageError::OffsetOutOfRange { requested: 21, .. })
    ));
    assert!(log.read(20, 100, i64::MAX).unwrap().records.is_empty());
}

#[test]
fn leader_epochs_are_recorded_truncated_and_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    let append_with_epoch = |log: &mut PartitionLog, leader_epoch| {
        let bytes = batch(&values(1, 5, 10), 0);
        let batches = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap();
        log.append_as_leader(&batches, leader_epoch, 0).unwrap()
    };
    append_with_epoch(&mut log, 1); // 0..5
    append_with_epoch(&mut log, 1); // 5..10
    append_with_epoch(&mut log, 3); // 10..15
    append_with_epoch(&mut log, 4); // 15..20
    let entries = |pairs: &[(i32, i64)]| -> Vec<EpochEntry> {
        pairs
            .iter()
            .map(|&(leader_epoch, start_offset)| EpochEntry {
                leader_epoch,
                start_offset,
            })
            .collect()
    };
    assert_eq!(log.leader_epochs(), entries(&[(1, 0), (3, 10), (4, 15)]));
    assert_eq!(log.end_offset_for_epoch(2), (1, 10));
    assert_eq!(log.end_offset_for_epoch(4), (4, 20));
    assert_eq!(log.end_offset_for_epoch(0), (-1, -1));

    // The stamped epoch is in the batches themselves.
    let read = log.read(10, 1, i64::MAX).unwrap();
    assert_eq!(
        strata_storage::batch::BatchHeader::parse(&read.records)
            .unwrap()
            .partition_leader_epoch,
        3
    );

    log.truncate_to(12).unwrap();
    assert_eq!(
        log.log_end_offset(),
        10,
        "the whole batch holding offset 12 goes"
    );
    assert_eq!(log.leader_epochs(), entries(&[(1, 0)]));
    drop(log);
    let log = open(&dir);
    assert_eq!(log.leader_epochs(), entries(&[(1, 0)]));
    assert_eq!(log.latest_leader_epoch(), Some(1));
}

#[test]
fn a_lost_epoch_checkpoint_is_rebuilt_from_the_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    for (leader_epoch, count) in [(0, 3), (2, 4), (5, 1)] {
        for _ in 0..count {
            let bytes = batch(&values(1, 30, 10), 0);
            let batches = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap();
            log.append_as_leader(&batches, leader_epoch, 0).unwrap();
        }
    }
    let expected = log.leader_epochs().to_vec();
    assert_eq!(expected.len(), 3);
    log.close().unwrap();
    std::fs::write(
        dir.path().join("t-0").join("leader-epoch-checkpoint"),
        b"garbage",
    )
    .unwrap();
    assert_eq!(open(&dir).leader_epochs(), expected);
}

#[test]
fn follower_appends_keep_offsets_and_refuse_going_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = PartitionLog::open(dir.path().join("leader"), small_config()).unwrap();
    for step in 0..30 {
        append(&mut leader, &values(step, 3, 150), step as i64);
    }
    let mut follower = PartitionLog::open(dir.path().join("follower"), small_config()).unwrap();
    let mut offset = 0;
    while offset < leader.log_end_offset() {
        let read = leader.read(offset, 700, i64::MAX).unwrap();
        let batches =
            ValidatedBatches::validate(&read.records, Source::Replica, usize::MAX).unwrap();
        let info = follower.append_as_follower(&batches, 0).unwrap();
        assert_eq!(info.first_offset, offset);
        offset = read.next_offset;
    }
    assert_eq!(read_all(&follower, 4096), read_all(&leader, 4096));
    assert_eq!(follower.leader_epochs(), leader.leader_epochs());

    let again = leader.read(0, 100, i64::MAX).unwrap();
    let batches = ValidatedBatches::validate(&again.records, Source::Replica, usize::MAX).unwrap();
    assert!(matches!(
        follower.append_as_follower(&batches, 0),
        Err(StorageError::OffsetNotIncreasing {
            base_offset: 0,
            log_end_offset: 90
        })
    ));
}

#[test]
fn truncation_never_changes_bytes_a_reader_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    for step in 0..6 {
        append(&mut log, &values(step, 1, 100), 0);
    }
    let held = log.read(3, 1 << 20, i64::MAX).unwrap().records;
    let copy = held.to_vec();
    log.truncate_to(3).unwrap();
    for step in 10..16 {
        append(&mut log, &values(step, 1, 100), 0);
    }
    assert_eq!(
        &held[..],
        &copy[..],
        "the held slice still shows the old batches"
    );
    drop(held);
    let records = read_all(&log, 4096);
    assert_eq!(records.len(), 9);
    assert!(
        records[3].1.starts_with(b"10-0-"),
        "offset 3 now holds the new record"
    );
    drop(log);
    let log = open(&dir);
    assert_eq!(
        read_all(&log, 4096),
        records,
        "the truncation and new data survive a crash"
    );
}

#[test]
fn truncating_below_the_start_restarts_the_log_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    for step in 0..40 {
        append(&mut log, &values(step, 2, 100), 0);
    }
    log.delete_records_before(50).unwrap();
    log.truncate_to(20).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (20, 20));
    assert_eq!(append(&mut log, &values(1, 1, 1), 0).first_offset, 20);
    drop(log);
    let log = open(&dir);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (20, 21));
}

#[test]
fn a_flush_covers_exactly_what_was_appended_before_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(open(&dir)));
    append(&mut log.lock().unwrap(), &values(1, 10, 50), 0);
    let pending = log.lock().unwrap().begin_flush().unwrap().expect("dirty");
    assert_eq!(pending.target_offset(), 10);
    // Appends go on while the fsync runs outside the lock.
    let writer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || append(&mut log.lock().unwrap(), &values(2, 5, 50), 0))
    };
    let outcome = pending.sync();
    writer.join().unwrap();
    let mut log = log.lock().unwrap();
    log.complete_flush(pending, outcome).unwrap();
    assert_eq!(log.recovery_point(), 10);
    assert_eq!(log.log_end_offset(), 15);
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), 15);
    assert!(
        log.begin_flush().unwrap().is_none(),
        "nothing left to flush"
    );
}

#[test]
fn a_failed_flush_stops_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    append(&mut log, &values(1, 1, 10), 0);
    let pending = log.begin_flush().unwrap().unwrap();
    let failure = StorageError::Io {
        operation: "fsync segment",
        path: dir.path().into(),
        source: std::io::Error::other("injected I/O error"),
    };
    assert!(matches!(
        log.complete_flush(pending, Err(failure)),
        Err(StorageError::Failed { .. })
    ));
    assert!(matches!(
        log.read(0, 10, i64::MAX),
        Err(StorageError::Failed { .. })
    ));
    let bytes = batch(&values(2, 1, 10), 0);
    let batches = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap();
    let error = log.append_as_leader(&batches, 0, 0).unwrap_err();
    assert!(error.to_string().contains("restart the broker"), "{error}");
    drop(log);
    assert_eq!(
        read_all(&open(&dir), 100).len(),
        1,
        "a restart recovers what the disk holds"
    );
}

#[test]
fn a_batch_larger_than_a_segment_is_refused_and_several_batches_span_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    let huge = batch(&values(1, 1, 5_000), 0);
    let batches = ValidatedBatches::validate(&huge, Source::Producer, usize::MAX).unwrap();
    assert!(matches!(
        log.append_as_leader(&batches, 0, 0),
        Err(StorageError::BatchTooLarge { .. })
    ));
    assert_eq!(log.log_end_offset(), 0, "nothing was appended");

    // Ten batches of ~1 KiB in one call land in several 4 KiB segments.
    let mut many = Vec::new();
    for step in 0..10 {
        many.extend_from_slice(&batch(&values(step, 1, 1000), 0));
    }
    let batches = ValidatedBatches::validate(&many, Source::Producer, usize::MAX).unwrap();
    let info = log.append_as_leader(&batches, 0, 0).unwrap();
    assert_eq!((info.first_offset, info.last_offset), (0, 9));
    assert!(log.segment_count() >= 3);
    assert_eq!(read_all(&log, 100).len(), 10);
}

#[test]
fn segment_ms_rolls_an_old_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 1_000,
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let mut log = PartitionLog::open(dir.path().join("t-0"), config).unwrap();
    let append_at = |log: &mut PartitionLog, now_ms| {
        let bytes = batch(&values(1, 1, 10), now_ms);
        let batches = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap();
        log.append_as_leader(&batches, 0, now_ms).unwrap();
    };
    append_at(&mut log, 10_000);
    append_at(&mut log, 10_999);
    assert_eq!(log.segment_count(), 1);
    append_at(&mut log, 11_000);
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
}

#[test]
fn a_run_of_thousands_of_small_batches_is_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 8 << 20,
        ..small_config()
    };
    let mut log = PartitionLog::open(dir.path().join("t-0"), config).unwrap();
    let all: Vec<Vec<Vec<u8>>> = (0..3000)
        .map(|step| values(step, 1 + step as usize % 3, 20))
        .collect();
    let bytes: Vec<u8> = all.iter().flat_map(|values| batch(values, 0)).collect();
    let batches = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap();
    log.append_as_leader(&batches, 2, 0).unwrap();
    let expected: Vec<(i64, Vec<u8>)> = (0..).zip(all.into_iter().flatten()).collect();
    assert_eq!(read_all(&log, 1 << 20), expected);
    for (header, _) in
        strata_storage::batch::BatchIter::new(&log.read(0, 1 << 20, i64::MAX).unwrap().records)
    {
        assert_eq!(header.partition_leader_epoch, 2);
        strata_storage::batch::BatchHeader::validate(
            &log.read(header.base_offset, 1, i64::MAX).unwrap().records,
            usize::MAX,
        )
        .unwrap();
    }
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn pages_behind_the_cache_window_are_released_and_read_back_intact() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        preallocate_bytes: 1 << 20,
        page_cache_window_bytes: Some(64 << 10),
        ..small_config()
    };
    let mut log = PartitionLog::open(dir.path().join("t-0"), config).unwrap();
    for step in 0..64 {
        append(&mut log, &values(step, 4, 1000), 0);
    }
    let held = log.read(0, 64 << 10, i64::MAX).unwrap().records;
    let copy = held.to_vec();
    let expected = read_all(&log, 1 << 20);

    log.flush().unwrap();

    let segment_path = dir.path().join("t-0").join(format!("{:020}.log", 0));
    let cached = cached_pages(&segment_path, 64 << 10);
    assert!(
        cached < 16,
        "{cached} of the first 16 pages still cached after the release"
    );
    assert!(
        !page_cache::is_resident(&held),
        "the held slice is on disk only"
    );
    page_cache::load(&held);
    assert!(page_cache::is_resident(&held), "loaded back");
    assert_eq!(
        &held[..],
        &copy[..],
        "a held slice reads the same bytes back"
    );
    assert_eq!(read_all(&log, 1 << 20), expected);
}

/// How many of the first `len` bytes' pages of `path` are in the page cache.
fn cached_pages(path: &std::path::Path, len: usize) -> usize {
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: a read-only private map of a file nobody truncates here; it is
    // only passed to mincore, never read.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(&file) }.unwrap();
    let page = 4096;
    let mut resident = vec![0u8; len.div_ceil(page)];
    // SAFETY: `resident` has one byte per page of the mapped range.
    let result = unsafe {
        libc::mincore(
            map.as_ptr() as *mut libc::c_void,
            len,
            resident.as_mut_ptr(),
        )
    };
    assert_eq!(result, 0, "mincore: {}", std::io::Error::last_os_error());
    resident.iter().filter(|byte| *byte & 1 == 1).count()
}
