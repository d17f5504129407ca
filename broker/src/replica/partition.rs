//! One partition this broker hosts: its log, its high watermark, and the
//! flusher that makes appends durable in groups.
//!
//! Invariant: `log_start_offset <= high_watermark <= log_end_offset`, and the
//! high watermark never goes back. With this broker the only replica, the
//! high watermark is its durable log end offset (the recovery point):
//! consumers never see a record a power loss could take back.
//!
//! Durability is group commit: one flusher task per partition runs an fsync
//! whenever someone waits for one (an acks=all producer, a consumer waiting
//! at the high watermark) or `flush.ms` has passed, covering every append
//! made before it began.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use strata_storage::batch::{Source, ValidatedBatches};
use strata_storage::{AppendInfo, PartitionLog, ReadResult, StorageError, TimestampOffset};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::topic_config::TopicConfig;

pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub topic_id: Uuid,
    /// The leader epoch in which this broker leads the partition, or
    /// `NOT_LEADING` (it follows, or its controller session lapsed).
    leading_epoch: AtomicI32,
    /// Replaced whole when the topic's configs are altered.
    config: std::sync::RwLock<Arc<TopicConfig>>,
    log: Mutex<PartitionLog>,
    high_watermark: watch::Sender<i64>,
    flush_wanted: Notify,
    /// A fetch waits at the high watermark: the next append asks for a flush
    /// at once, so the reader sees it after one fsync rather than `flush.ms`.
    reader_waiting: AtomicBool,
    /// Bytes appended since the flusher last started a flush.
    unflushed_bytes: AtomicU64,
    stop: CancellationToken,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.index)
    }
}

const NOT_LEADING: i32 = -1;

/// Name of the file holding the topic id in a partition directory, so a
/// topic deleted and created again under the same name never inherits data.
const TOPIC_ID_FILE: &str = "topic-id";

/// Unflushed bytes that start a flush before `flush.ms` is up. Writing back
/// a little at a time keeps fsync short: one fsync of a second's worth of
/// appends (up to a gigabyte) stalls the appends behind it for as long.
const FLUSH_BYTES_MAX: u64 = 64 << 20;

impl Partition {
    /// Opens (recovering) the partition's log in `dir` and starts its
    /// flusher. `visible` is notified whenever the high watermark moves. It
    /// leads nothing until [`Partition::set_leadership`].
    pub fn open(
        dir: PathBuf,
        topic: String,
        index: i32,
        topic_id: Uuid,
        config: TopicConfig,
        visible: Arc<Notify>,
    ) -> Result<Arc<Self>, StorageError> {
        claim_directory(&dir, topic_id)?;
        let log = PartitionLog::open(&dir, config.log_config())?;
        let (high_watermark, _) = watch::channel(log.recovery_point());
        let partition = Arc::new(Partition {
            topic,
            index,
            topic_id,
            leading_epoch: AtomicI32::new(NOT_LEADING),
            config: std::sync::RwLock::new(Arc::new(config)),
            log: Mutex::new(log),
            high_watermark,
            flush_wanted: Notify::new(),
            reader_waiting: AtomicBool::new(false),
            unflushed_bytes: AtomicU64::new(0),
            stop: CancellationToken::new(),
        });
        tokio::spawn(flusher(Arc::clone(&partition), visible));
        Ok(partition)
    }

    pub fn config(&self) -> Arc<TopicConfig> {
        Arc::clone(&self.config.read().expect("partition config lock"))
    }

    /// Applies altered topic configs: the log's (segments, retention) at
    /// once, the flusher's interval from its next round.
    pub fn update_config(&self, config: &TopicConfig) -> Result<(), StorageError> {
        if *self.config() == *config {
            return Ok(());
        }
        self.log().set_config(config.log_config())?;
        *self.config.write().expect("partition config lock") = Arc::new(config.clone());
        Ok(())
    }

    /// The leader epoch this broker leads in, if it leads.
    pub fn leader_epoch(&self) -> Option<i32> {
        let epoch = self.leading_epoch.load(Ordering::Acquire);
        (epoch != NOT_LEADING).then_some(epoch)
    }

    /// Leads in `epoch` from now on, or (`None`) stops leading.
    pub fn set_leadership(&self, epoch: Option<i32>) {
        let epoch = epoch.unwrap_or(NOT_LEADING);
        let previous = self.leading_epoch.swap(epoch, Ordering::AcqRel);
        if previous != epoch {
            info!(partition = ?self, leader_epoch = epoch, previous, "partition leadership changed (-1: not leading)");
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, PartitionLog> {
        self.log.lock().expect("partition log lock")
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log().log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log().log_end_offset()
    }

    /// Validates and appends a producer's record batches, stamped with
    /// `leader_epoch` (the epoch the caller saw this broker lead in).
    pub fn append(
        &self,
        records: &Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let batches =
            ValidatedBatches::validate(records, Source::Producer, self.config().max_message_bytes)?;
        let appended = self
            .log()
            .append_as_leader(&batches, leader_epoch, now_ms)?;
        let unflushed_bytes = self
            .unflushed_bytes
            .fetch_add(records.len() as u64, Ordering::AcqRel);
        if self.reader_waiting.swap(false, Ordering::AcqRel)
            || unflushed_bytes + records.len() as u64 >= FLUSH_BYTES_MAX
        {
            self.flush_wanted.notify_one();
        }
        Ok(appended)
    }

    /// Waits until every offset below `offset` is durable, asking for a
    /// flush; false if `timeout` passed first.
    pub async fn wait_durable(&self, offset: i64, timeout: Duration) -> bool {
        let mut high_watermark = self.high_watermark.subscribe();
        self.flush_wanted.notify_one();
        tokio::time::timeout(
            timeout,
            high_watermark.wait_for(|&durable| durable >= offset),
        )
        .await
        .is_ok_and(|changed| changed.is_ok())
    }

    /// A reader is about to read at `offset`. If that is the high watermark,
    /// the next append asks for a flush at once; returns whether it is.
    /// Called before the read, so an append is either seen by the read (see
    /// [`Partition::want_visible_after_read`]) or sees the mark.
    pub fn mark_reader_at(&self, offset: i64) -> bool {
        let at_high_watermark = offset >= self.high_watermark();
        if at_high_watermark {
            self.reader_waiting.store(true, Ordering::Release);
        }
        at_high_watermark
    }

    /// After a read at the high watermark that observed `log_end_offset`:
    /// records already above the high watermark are flushed at once.
    pub fn want_visible_after_read(&self, offset: i64, log_end_offset: i64) {
        if log_end_offset > offset {
            self.flush_wanted.notify_one();
        }
    }

    /// Reads whole batches from `offset`, never past the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, StorageError> {
        let high_watermark = self.high_watermark();
        self.log().read(offset, max_bytes, high_watermark)
    }

    /// ListOffsets by timestamp, among visible records.
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<TimestampOffset>, StorageError> {
        let high_watermark = self.high_watermark();
        let found = self.log().offset_for_timestamp(timestamp_ms)?;
        Ok(found.filter(|found| found.offset < high_watermark))
    }

    /// Deletes segments past retention, never above the high watermark.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<(), StorageError> {
        let high_watermark = self.high_watermark();
        let outcome = self.log().enforce_retention(now_ms, high_watermark)?;
        if outcome.segments_deleted > 0 {
            tracing::info!(partition = ?self, segments = outcome.segments_deleted, bytes = outcome.bytes_deleted, log_start_offset = outcome.log_start_offset, "retention deleted segments");
        }
        Ok(())
    }

    /// Stops the flusher, flushes and checkpoints the log, so the next start
    /// recovers nothing.
    pub fn close(&self) {
        self.stop.cancel();
        if let Err(error) = self.log().checkpoint() {
            error!(partition = ?self, %error, "flush on close failed");
        }
    }
}

/// Flushes when asked or every `flush.ms`, then publishes the new high
/// watermark.
async fn flusher(partition: Arc<Partition>, visible: Arc<Notify>) {
    loop {
        let flush_interval = Duration::from_millis(partition.config().flush_ms);
        tokio::select! {
            _ = partition.stop.cancelled() => return,
            _ = partition.flush_wanted.notified() => {}
            _ = tokio::time::sleep(flush_interval) => {}
        }
        partition.unflushed_bytes.store(0, Ordering::Release);
        let pending = match partition.log().begin_flush() {
            Ok(Some(pending)) => pending,
            Ok(None) => continue,
            Err(error) => {
                warn!(partition = ?partition, %error, "log is stopped; the flusher exits");
                return;
            }
        };
        let (pending, outcome) = match tokio::task::spawn_blocking(move || {
            let outcome = pending.sync();
            (pending, outcome)
        })
        .await
        {
            Ok(done) => done,
            Err(join_error) => {
                error!(partition = ?partition, %join_error, "flush task failed");
                return;
            }
        };
        let recovery_point = {
            let mut log = partition.log();
            if let Err(error) = log.complete_flush(pending, outcome) {
                error!(partition = ?partition, %error, "flush failed; the partition stops");
                return;
            }
            log.recovery_point()
        };
        let advanced = partition.high_watermark.send_if_modified(|high_watermark| {
            let moved = recovery_point > *high_watermark;
            *high_watermark = (*high_watermark).max(recovery_point);
            moved
        });
        if advanced {
            visible.notify_waiters();
        }
    }
}

/// Makes sure `dir` belongs to the topic with `topic_id`: a directory left by
/// an older topic of the same name is wiped first.
fn claim_directory(dir: &Path, topic_id: Uuid) -> Result<(), StorageError> {
    let io = |operation| {
        move |source| StorageError::Io {
            operation,
            path: dir.to_path_buf(),
            source,
        }
    };
    let id_path = dir.join(TOPIC_ID_FILE);
    match std::fs::read_to_string(&id_path) {
        Ok(found) if found.trim() == topic_id.to_string() => return Ok(()),
        Ok(found) => {
            warn!(dir = %dir.display(), found = found.trim(), expected = %topic_id, "partition directory belongs to a deleted topic; wiping it");
            std::fs::remove_dir_all(dir).map_err(io("remove stale partition directory"))?;
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io("read topic id")(error)),
    }
    std::fs::create_dir_all(dir).map_err(io("create partition directory"))?;
    let mut id_file = std::fs::File::create(&id_path).map_err(io("create topic id file"))?;
    std::io::Write::write_all(&mut id_file, topic_id.to_string().as_bytes())
        .map_err(io("write topic id"))?;
    id_file.sync_all().map_err(io("fsync topic id"))?;
    strata_storage::checkpoint::sync_dir(dir)
}
