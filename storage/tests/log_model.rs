//! Model-based test: random appends, reads, rolls, truncations, record
//! deletions, flushes and reopenings against a plain `Vec` of batches.

mod harness;

use harness::{append, batch, read_all, small_config, values};
use proptest::prelude::*;
use strata_storage::validate::{Source, ValidatedBatches};
use strata_storage::{LogConfig, PartitionLog, StorageError};

#[derive(Debug, Clone)]
enum Op {
    Append {
        record_count: usize,
        size_bytes: usize,
    },
    /// Several batches in one call (a produce request or a follower fetch).
    AppendMany {
        batch_count: usize,
        record_count: usize,
        size_bytes: usize,
    },
    /// Position as a fraction of the log, in 1/1000ths.
    Truncate {
        at: u16,
    },
    DeleteRecordsBefore {
        at: u16,
    },
    Read {
        at: u16,
        max_bytes: usize,
    },
    Flush,
    /// Drop without closing (a crashed process: the page cache survives).
    Reopen,
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..6, 0usize..700).prop_map(|(record_count, size_bytes)| Op::Append { record_count, size_bytes }),
        2 => (2usize..40, 1usize..6, 0usize..700).prop_map(|(batch_count, record_count, size_bytes)| {
            Op::AppendMany { batch_count, record_count, size_bytes }
        }),
        1 => (0u16..1200).prop_map(|at| Op::Truncate { at }),
        1 => (0u16..1000).prop_map(|at| Op::DeleteRecordsBefore { at }),
        2 => (0u16..1000, 1usize..3000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => Just(Op::Close),
    ]
}

#[derive(Debug, Default)]
struct Model {
    /// (base offset, values) per batch, in order.
    batches: Vec<(i64, Vec<Vec<u8>>)>,
    log_start_offset: i64,
    log_end_offset: i64,
}

impl Model {
    fn offset_at(&self, at: u16) -> i64 {
        let span = self.log_end_offset - self.log_start_offset;
        self.log_start_offset + span * at as i64 / 1000
    }

    fn records(&self) -> Vec<(i64, Vec<u8>)> {
        self.batches
            .iter()
            .flat_map(|(base, values)| {
                values
                    .iter()
                    .enumerate()
                    .map(move |(index, value)| (base + index as i64, value.clone()))
            })
            .filter(|(offset, _)| *offset >= self.log_start_offset)
            .collect()
    }

    fn truncate_to(&mut self, offset: i64) {
        if offset >= self.log_end_offset {
            return;
        }
        if offset < self.log_start_offset {
            self.batches.clear();
            self.log_start_offset = offset;
            self.log_end_offset = offset;
            return;
        }
        let keep = self
            .batches
            .iter()
            .position(|(base, values)| base + values.len() as i64 > offset)
            .unwrap();
        self.log_end_offset = self.batches[keep].0;
        self.batches.truncate(keep);
        self.log_start_offset = self.log_start_offset.min(self.log_end_offset);
    }
}

fn check(log: &PartitionLog, model: &Model) {
    assert_eq!(
        log.log_start_offset(),
        model.log_start_offset,
        "log start offset"
    );
    assert_eq!(log.log_end_offset(), model.log_end_offset, "log end offset");
    assert_eq!(read_all(log, 1500), model.records());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_a_vec_of_batches(ops in proptest::collection::vec(op(), 1..120), large_segments in any::<bool>()) {
        // Small segments roll constantly; large ones take big multi-batch runs
        // whole, through the vectored-write path.
        let config = if large_segments { LogConfig { segment_bytes: 1 << 20, ..small_config() } } else { small_config() };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topic-0");
        let mut log = PartitionLog::open(&path, config.clone()).unwrap();
        let mut model = Model::default();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append { record_count, size_bytes } => {
                    let values = values(step as u64, record_count, size_bytes);
                    let info = append(&mut log, &values, 1_000 + step as i64);
                    prop_assert_eq!(info.first_offset, model.log_end_offset);
                    prop_assert_eq!(info.last_offset, model.log_end_offset + record_count as i64 - 1);
                    model.batches.push((info.first_offset, values));
                    model.log_end_offset = info.log_end_offset;
                }
                Op::AppendMany { batch_count, record_count, size_bytes } => {
                    let all: Vec<Vec<Vec<u8>>> = (0..batch_count)
                        .map(|index| values((step * 100 + index) as u64, record_count, size_bytes))
                        .collect();
                    let bytes: Vec<u8> = all.iter().flat_map(|values| batch(values, 7)).collect();
                    let batches = ValidatedBatches::validate(&bytes, Source::Producer, usize::MAX).unwrap();
                    let info = log.append_as_leader(&batches, 0, 7).unwrap();
                    prop_assert_eq!(info.first_offset, model.log_end_offset);
                    for values in all {
                        let base = model.log_end_offset;
                        model.log_end_offset += values.len() as i64;
                        model.batches.push((base, values));
                    }
                    prop_assert_eq!(info.log_end_offset, model.log_end_offset);
                }
                Op::Truncate { at } => {
                    let offset = model.offset_at(at.min(1000)) + i64::from(at > 1000) * 5;
                    log.truncate_to(offset).unwrap();
                    model.truncate_to(offset);
                }
                Op::DeleteRecordsBefore { at } => {
                    let offset = model.offset_at(at);
                    log.delete_records_before(offset).unwrap();
                    model.log_start_offset = model.log_start_offset.max(offset);
                }
                Op::Read { at, max_bytes } => {
                    let offset = model.offset_at(at);
                    let read = log.read(offset, max_bytes, i64::MAX).unwrap();
                    prop_assert!(read.next_offset >= offset);
                    if offset < model.log_end_offset {
                        prop_assert!(!read.records.is_empty(), "a read below the end returns a batch");
                    }
                    let below = log.read(model.log_start_offset - 1, max_bytes, i64::MAX);
                    if model.log_start_offset > 0 {
                        let is_out_of_range = matches!(below, Err(StorageError::OffsetOutOfRange { .. }));
                        prop_assert!(is_out_of_range);
                    }
                }
                Op::Flush => {
                    log.flush().unwrap();
                    prop_assert_eq!(log.recovery_point(), model.log_end_offset);
                }
                Op::Reopen => {
                    drop(log);
                    log = PartitionLog::open(&path, config.clone()).unwrap();
                }
                Op::Close => {
                    log.close().unwrap();
                    log = PartitionLog::open(&path, config.clone()).unwrap();
                }
            }
            check(&log, &model);
        }
    }
}
