//! Compaction of a partition log: the latest record of every key survives at
//! its offset, the log end stays, readers keep what they hold, and a
//! restart reads the compacted log back.

mod harness;

use harness::small_config;
use strata_storage::batch::BatchIter;
use strata_storage::compression::batch_records;
use strata_storage::record::{BatchBuilder, Record, RecordIter};
use strata_storage::validate::{Source, ValidatedBatches};
use strata_storage::{LogConfig, PartitionLog};

/// Every record of the log: (offset, key, value).
fn records(log: &PartitionLog) -> Vec<(i64, String, String)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let read = log.read(offset, 1 << 20, i64::MAX).expect("read");
        if read.records.is_empty() {
            return out;
        }
        for (header, batch) in BatchIter::new(&read.records) {
            let section = batch_records(batch, usize::MAX).unwrap();
            for record in RecordIter::from_records(&section, header.record_count) {
                let record = record.unwrap();
                let record_offset = header.base_offset + record.offset_delta;
                if record_offset >= offset {
                    out.push((
                        record_offset,
                        String::from_utf8(record.key.unwrap().to_vec()).unwrap(),
                        String::from_utf8(record.value.unwrap().to_vec()).unwrap(),
                    ));
                }
            }
        }
        offset = read.next_offset;
    }
}

/// Appends `steps` batches of two records each, over seven keys.
fn write_keys(log: &mut PartitionLog, steps: std::ops::Range<i64>) {
    for step in steps {
        let mut builder = BatchBuilder::new(1_000 + step);
        let values: Vec<(String, String)> = (0..2)
            .map(|index| {
                (
                    format!("key-{}", (step * 2 + index) % 7),
                    format!("value-{step}-{index}-{}", "x".repeat(40)),
                )
            })
            .collect();
        for (key, value) in &values {
            builder.push(Record::keyed(key.as_bytes(), value.as_bytes()));
        }
        let bytes = builder.build();
        let batches = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap();
        log.append_as_leader(&batches, 0, 1_000 + step).unwrap();
    }
    log.flush().unwrap();
}

fn compacted_log(dir: &std::path::Path) -> (PartitionLog, LogConfig) {
    let config = LogConfig {
        compact: true,
        ..small_config()
    };
    (PartitionLog::open(dir, config.clone()).unwrap(), config)
}

#[test]
fn compaction_keeps_the_latest_record_of_each_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offsets-0");
    let (mut log, config) = compacted_log(&path);
    write_keys(&mut log, 0..300);
    let before = records(&log);
    let (end, size) = (log.log_end_offset(), log.size_bytes());
    let held = log.read(0, 1 << 20, i64::MAX).unwrap().records;
    let held_copy = held.to_vec();

    let outcome = log.compact(end, 10_000).unwrap();
    assert!(outcome.segments_cleaned > 10, "{outcome:?}");
    assert!(outcome.records_removed > 400, "{outcome:?}");
    assert_eq!(
        log.size_bytes(),
        size - outcome.bytes_before + outcome.bytes_after
    );
    assert!(
        log.size_bytes() < size / 4,
        "{} of {size} bytes left",
        log.size_bytes()
    );
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(
        &held[..],
        &held_copy[..],
        "a reader keeps the bytes it holds"
    );

    let after = records(&log);
    // Nothing invented or moved; offsets still increase.
    assert!(after.iter().all(|record| before.contains(record)));
    assert!(after.windows(2).all(|pair| pair[0].0 < pair[1].0));
    // The latest of every key is there.
    for key in 0..7 {
        let key = format!("key-{key}");
        let latest = before.iter().rev().find(|record| record.1 == key).unwrap();
        assert!(after.contains(latest), "{key} lost its latest record");
    }
    // The compacted segments hold no superseded record.
    let active_base = *log.segment_base_offsets().last().unwrap();
    let superseded = after
        .iter()
        .filter(|record| record.0 < active_base)
        .filter(|record| before.iter().rev().find(|r| r.1 == record.1) != Some(record))
        .count();
    assert_eq!(
        superseded,
        0,
        "superseded records left in {} sealed segments",
        log.segment_count() - 1
    );

    // Nothing sealed since: nothing to do. A restart reads the same log.
    assert_eq!(log.compact(end, 10_000).unwrap().segments_cleaned, 0);
    log.close().unwrap();
    let log = PartitionLog::open(&path, config).unwrap();
    assert_eq!(records(&log), after);
    assert_eq!(log.log_end_offset(), end);
}

#[test]
fn appends_go_on_while_segments_are_cleaned_and_a_truncation_drops_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offsets-0");
    let (mut log, _config) = compacted_log(&path);
    write_keys(&mut log, 0..300);
    let end = log.log_end_offset();

    // Appends between the plan and the swap: the log serves them, and the
    // cleaned segments still go in.
    let plan = log
        .plan_compaction(end, 10_000)
        .unwrap()
        .expect("sealed segments");
    write_keys(&mut log, 300..310);
    let cleaned = plan.clean().unwrap();
    let before = records(&log);
    let outcome = log.finish_compaction(cleaned).unwrap();
    assert!(outcome.segments_cleaned > 10, "{outcome:?}");
    assert_eq!(log.log_end_offset(), end + 20);
    let after = records(&log);
    assert!(after.iter().all(|record| before.contains(record)));
    assert_eq!(after.last(), before.last(), "the new appends are kept");

    // A truncation between the plan and the swap: nothing is swapped in,
    // and no file of the dropped work is left behind.
    write_keys(&mut log, 310..600);
    let end = log.log_end_offset();
    let plan = log
        .plan_compaction(end, 10_000)
        .unwrap()
        .expect("sealed segments");
    let cleaned = plan.clean().unwrap();
    log.truncate_to(end - 2).unwrap();
    let before = records(&log);
    let outcome = log.finish_compaction(cleaned).unwrap();
    assert_eq!(outcome.segments_cleaned, 0, "{outcome:?}");
    assert_eq!(records(&log), before);
    let leftovers: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
