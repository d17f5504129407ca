//! Storage benchmarks: append throughput beside two baselines measured in the
//! same run (a plain memcpy of the same bytes into warm memory, and `write()`
//! of the same bytes to a fresh file), sequential reads, offset lookups and
//! the recovery scan.
//!
//! `cargo bench -p strata-storage`; `STRATA_BENCH_DIR` picks the directory
//! (default: the system temp dir). Nothing is fsync'd: these measure the page
//! cache path, as the targets do.

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strata_storage::record::{BatchBuilder, Record};
use strata_storage::validate::{Source, ValidatedBatches};
use strata_storage::{LogConfig, PartitionLog};

/// Bytes appended per measured iteration; each iteration starts a fresh log.
const BYTES_PER_ITERATION: usize = 256 << 20;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("STRATA_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(PathBuf::from(dir)).expect("bench dir"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

/// One batch of about `batch_bytes`, made of 1 KiB records (or one record if smaller).
fn make_batch(batch_bytes: usize) -> Vec<u8> {
    let record_bytes = batch_bytes.min(1024);
    let value = vec![b'x'; record_bytes.saturating_sub(80).max(1)];
    let mut builder = BatchBuilder::with_capacity(1_700_000_000_000, batch_bytes + 1024);
    while builder.size_bytes() + record_bytes <= batch_bytes || builder.record_count() == 0 {
        builder.push(Record::value(&value));
    }
    builder.build()
}

fn append_group(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    for (label, batch_bytes) in [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        let batch = make_batch(batch_bytes);
        let batches = ValidatedBatches::validate(&batch, Source::Producer, usize::MAX).unwrap();
        let count = BYTES_PER_ITERATION / batch.len();
        group.throughput(Throughput::Bytes((count * batch.len()) as u64));

        group.bench_function(BenchmarkId::new("strata_log", label), |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let dir = bench_dir();
                    let mut log =
                        PartitionLog::open(dir.path().join("bench-0"), LogConfig::default())
                            .unwrap();
                    let start = Instant::now();
                    for _ in 0..count {
                        black_box(log.append_as_leader(&batches, 0, 0).unwrap());
                    }
                    total += start.elapsed();
                }
                total
            })
        });

        group.bench_function(BenchmarkId::new("baseline_memcpy", label), |b| {
            let mut target = vec![1u8; count * batch.len()];
            b.iter(|| {
                for chunk in target.chunks_exact_mut(batch.len()) {
                    chunk.copy_from_slice(&batch);
                }
                black_box(&target);
            })
        });

        group.bench_function(BenchmarkId::new("baseline_write_fresh_file", label), |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let dir = bench_dir();
                    let mut file = File::create(dir.path().join("plain.log")).unwrap();
                    let start = Instant::now();
                    for _ in 0..count {
                        file.write_all(&batch).unwrap();
                    }
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

/// A log of `total_bytes` in `batch_bytes` batches, closed and reopened.
fn filled_log(dir: &tempfile::TempDir, batch_bytes: usize, total_bytes: usize) -> PartitionLog {
    let batch = make_batch(batch_bytes);
    let batches = ValidatedBatches::validate(&batch, Source::Producer, usize::MAX).unwrap();
    let path = dir.path().join("bench-0");
    let mut log = PartitionLog::open(&path, LogConfig::default()).unwrap();
    for _ in 0..total_bytes / batch.len() {
        log.append_as_leader(&batches, 0, 0).unwrap();
    }
    log.close().unwrap();
    PartitionLog::open(&path, LogConfig::default()).unwrap()
}

fn read_group(c: &mut Criterion) {
    let dir = bench_dir();
    let log = filled_log(&dir, 64 << 10, 1 << 30);
    let mut group = c.benchmark_group("read");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(log.size_bytes()));
    group.bench_function("sequential_1MiB_reads_copied_out", |b| {
        let mut buffer = vec![0u8; 2 << 20];
        b.iter(|| {
            let mut offset = 0;
            loop {
                let read = log.read(offset, 1 << 20, i64::MAX).unwrap();
                if read.records.is_empty() {
                    break;
                }
                buffer[..read.records.len()].copy_from_slice(&read.records);
                offset = read.next_offset;
            }
            black_box(&buffer);
        })
    });
    group.finish();
    drop(log);

    let dir = bench_dir();
    let log = filled_log(&dir, 1 << 10, 256 << 20);
    let end = log.log_end_offset();
    let mut group = c.benchmark_group("index");
    group.throughput(Throughput::Elements(1));
    group.bench_function("random_offset_lookup_1KiB_batches", |b| {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        b.iter(|| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let offset = (state % end as u64) as i64;
            black_box(log.read(offset, 1, i64::MAX).unwrap().next_offset)
        })
    });
    group.finish();
}

fn recovery_group(c: &mut Criterion) {
    let dir = bench_dir();
    let log = filled_log(&dir, 64 << 10, 512 << 20);
    let path = log.dir().to_path_buf();
    let bytes = log.size_bytes();
    drop(log);
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("full_validation_scan_64KiB_batches", |b| {
        b.iter(|| {
            // Without a checkpoint every batch is validated, CRC included.
            std::fs::remove_file(path.join("log-checkpoint")).unwrap();
            black_box(
                PartitionLog::open(&path, LogConfig::default())
                    .unwrap()
                    .log_end_offset(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, append_group, read_group, recovery_group);
criterion_main!(benches);
