//! The group coordinator: committed offsets and group records, kept in the
//! internal topic `__consumer_offsets`.
//!
//! A group belongs to partition `abs(java_hash(group)) mod 50` of that topic
//! (Kafka's rule), and its coordinator is that partition's leader. The
//! topic is created on the first FindCoordinator, replicated like any other
//! (RF = min(3, brokers)). A coordinator rebuilds a partition's groups from
//! its log the first time it is asked about them in a leader epoch
//! (`shard.rs` replays the records); a commit is a record batch appended as
//! leader and acknowledged once the high watermark passes it, so a commit
//! that was answered survives the coordinator's death like any acks=all
//! record.

pub mod records;
pub mod shard;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use strata_storage::batch::{BatchHeader, BatchIter};
use strata_storage::compression::batch_records;
use strata_storage::record::{BatchBuilder, Record, RecordIter};
use tracing::{info, warn};

use self::records::Key;
use self::shard::Shard;
use crate::replica::partition::Partition;
use crate::replica::replica_manager::ReplicaManager;
use crate::server::error_code;

/// The internal topic holding committed offsets and group records.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Its partition count (`offsets.topic.num.partitions`).
pub const OFFSETS_TOPIC_PARTITIONS: u32 = 50;
/// Its replication factor when the cluster has that many brokers.
pub const OFFSETS_TOPIC_REPLICATION_FACTOR: u16 = 3;
/// Longest a commit waits to be durable on the ISR
/// (`offsets.commit.timeout.ms`).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest metadata string a commit may carry (`offset.metadata.max.bytes`).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Bytes read per step when loading a partition's groups.
const LOAD_READ_BYTES: usize = 4 << 20;

/// The `__consumer_offsets` partition of `group`: Kafka's
/// `Utils.abs(group.hashCode()) % partitions`, with Java's String hash.
pub fn partition_for(group: &str) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(unit as i32)
    });
    (hash & 0x7fff_ffff) % OFFSETS_TOPIC_PARTITIONS as i32
}

/// A partition's groups as loaded in one leader epoch.
struct Loaded {
    leader_epoch: i32,
    shard: Shard,
}

/// A `__consumer_offsets` partition this broker leads, with its groups.
pub struct Led {
    partition: Arc<Partition>,
    leader_epoch: i32,
    loaded: Arc<tokio::sync::Mutex<Option<Loaded>>>,
}

impl Led {
    /// Reads the groups (loading them first if this epoch has not), under
    /// the partition's lock.
    pub async fn read<T>(&self, read: impl FnOnce(&Shard) -> T) -> Result<T, i16> {
        let mut loaded = self.loaded.lock().await;
        let shard = self.load(&mut loaded).await?;
        Ok(read(shard))
    }

    async fn load<'a>(&self, loaded: &'a mut Option<Loaded>) -> Result<&'a mut Shard, i16> {
        if loaded
            .as_ref()
            .is_none_or(|loaded| loaded.leader_epoch != self.leader_epoch)
        {
            let partition = Arc::clone(&self.partition);
            let started = std::time::Instant::now();
            let shard = tokio::task::spawn_blocking(move || replay(&partition))
                .await
                .map_err(|_| error_code::COORDINATOR_NOT_AVAILABLE)??;
            info!(
                partition = ?self.partition,
                leader_epoch = self.leader_epoch,
                groups = shard.groups().count(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "loaded consumer groups"
            );
            *loaded = Some(Loaded {
                leader_epoch: self.leader_epoch,
                shard,
            });
        }
        Ok(&mut loaded.as_mut().expect("loaded above").shard)
    }

    /// Appends `records` (key, value or tombstone) as one batch, waits until
    /// the ISR has it durably, then applies it. The error code is the one a
    /// group API answers with.
    pub async fn write(&self, records: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), i16> {
        if records.is_empty() {
            return Ok(());
        }
        let now = crate::handler::now_ms();
        let mut builder = BatchBuilder::new(now);
        for (key, value) in records {
            builder.push(Record {
                key: Some(key),
                value: value.as_deref(),
                headers: &[],
                timestamp_ms: None,
            });
        }
        let batch = Bytes::from(builder.build());
        // Loaded before appending, so the replay cannot also see this
        // batch and apply it under another view.
        let appended = {
            let mut loaded = self.loaded.lock().await;
            self.load(&mut loaded).await?;
            self.partition
                .append(&batch, self.leader_epoch, now)
                .map_err(|error| {
                    warn!(partition = ?self.partition, %error, "cannot write to the offsets topic");
                    error_code::COORDINATOR_NOT_AVAILABLE
                })?
        };
        // Commits to one partition wait for durability together.
        if !self
            .partition
            .wait_committed(appended.log_end_offset, COMMIT_TIMEOUT)
            .await
        {
            return Err(error_code::REQUEST_TIMED_OUT);
        }
        let first_offset = appended.first_offset;
        let mut loaded = self.loaded.lock().await;
        let shard = self.load(&mut loaded).await?;
        for (index, (key, value)) in records.iter().enumerate() {
            shard
                .apply(key, value.as_deref(), first_offset + index as i64)
                .expect("records this coordinator encoded decode");
        }
        Ok(())
    }
}

/// Rebuilds the groups of `partition` from its whole log.
fn replay(partition: &Partition) -> Result<Shard, i16> {
    let mut shard = Shard::default();
    let mut offset = partition.log_start_offset();
    loop {
        let read = partition
            .read_to_log_end(offset, LOAD_READ_BYTES)
            .map_err(|error| {
                warn!(partition = ?partition, %error, "cannot read the offsets topic");
                error_code::COORDINATOR_NOT_AVAILABLE
            })?;
        if read.records.is_empty() {
            return Ok(shard);
        }
        for (header, batch) in BatchIter::new(&read.records) {
            offset = header.last_offset() + 1;
            if let Err(reason) = replay_batch(&mut shard, &header, batch) {
                warn!(partition = ?partition, base_offset = header.base_offset, %reason, "skipped an unreadable batch in the offsets topic");
            }
        }
    }
}

fn replay_batch(shard: &mut Shard, header: &BatchHeader, batch: &[u8]) -> Result<(), String> {
    let section = batch_records(batch, usize::MAX).map_err(|error| error.to_string())?;
    for record in RecordIter::from_records(&section, header.record_count) {
        let record = record.map_err(|error| error.to_string())?;
        let Some(key) = record.key else { continue };
        let record_offset = header.base_offset + record.offset_delta;
        if let Err(error) = shard.apply(key, record.value, record_offset) {
            warn!(record_offset, %error, "skipped a record of the offsets topic");
        }
    }
    Ok(())
}

/// Finds the coordinator's partitions for groups.
pub struct GroupCoordinator {
    replicas: Arc<ReplicaManager>,
    /// Per `__consumer_offsets` partition: its groups, loaded lazily.
    loaded: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<Option<Loaded>>>>>,
}

impl GroupCoordinator {
    pub fn new(replicas: Arc<ReplicaManager>) -> Self {
        GroupCoordinator {
            replicas,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The partition holding `group`, if this broker coordinates it;
    /// otherwise `NOT_COORDINATOR`.
    pub fn led_for(&self, group: &str) -> Result<Led, i16> {
        self.led(partition_for(group))
    }

    /// Partition `index` of the offsets topic, if this broker leads it.
    pub fn led(&self, index: i32) -> Result<Led, i16> {
        let partition = self
            .replicas
            .partition(OFFSETS_TOPIC, index)
            .ok_or(error_code::NOT_COORDINATOR)?;
        let leader_epoch = partition
            .leader_epoch()
            .ok_or(error_code::NOT_COORDINATOR)?;
        let loaded = Arc::clone(
            self.loaded
                .lock()
                .expect("coordinator lock")
                .entry(index)
                .or_default(),
        );
        Ok(Led {
            partition,
            leader_epoch,
            loaded,
        })
    }

    /// Every offsets partition this broker leads.
    pub fn all_led(&self) -> Vec<Led> {
        (0..OFFSETS_TOPIC_PARTITIONS as i32)
            .filter_map(|index| self.led(index).ok())
            .collect()
    }
}

/// The records of a commit of `offset` for `group`'s `topic`/`partition`.
pub fn offset_record(
    group: &str,
    topic: &str,
    partition: i32,
    value: &records::OffsetValue,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = Key::Offset {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
    };
    (key.encode(), Some(value.encode()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_map_to_partitions_as_in_kafka() {
        // Java: "a".hashCode() == 97, "ab".hashCode() == 3105, and
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE, which
        // Kafka's Utils.abs maps to 0.
        assert_eq!(partition_for("a"), 97 % 50);
        assert_eq!(partition_for("ab"), 3105 % 50);
        assert_eq!(partition_for("polygenelubricants"), 0);
        assert_eq!(partition_for(""), 0);
        for group in [
            "console-consumer-12345",
            "a-very-long-group-name-indeed",
            "é",
        ] {
            assert!((0..50).contains(&partition_for(group)));
        }
    }
}
