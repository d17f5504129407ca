//! What the coordinator of one `__consumer_offsets` partition knows in one
//! leader epoch: the partition's records (the shard), the groups' state
//! machines, and the requests they parked; rebuilt from the log by
//! `replay` when the partition is first asked about in an epoch.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use strata_storage::batch::{BatchHeader, BatchIter, ProducerId};
use strata_storage::compression::batch_records;
use strata_storage::record::RecordIter;
use strata_storage::transaction::Marker;
use tokio::sync::oneshot;
use tracing::warn;

use super::classic::{ClassicGroup, GroupConfig, GroupError, Joined};
use super::consumer::ConsumerGroup;
use super::error::Answer;
use super::shard::Shard;
use crate::coordinator_log::{CoordinatorState, KeyedRecord, LogError};
use crate::replica::partition::Partition;

/// Bytes read per step when loading a partition's groups.
const LOAD_READ_BYTES: usize = 4 << 20;

pub(super) type Waiters<T> = HashMap<(String, String), oneshot::Sender<Answer<T>>>;

/// A parked request's sender and the answer it is to get.
pub(super) type Answering<T> = (oneshot::Sender<Answer<T>>, Result<T, GroupError>);

/// What the coordinator of one offsets partition knows in one leader epoch.
pub struct Groups {
    /// What the partition's records say.
    pub(super) shard: Shard,
    /// Membership of classic-protocol groups with members or on record.
    pub(super) classic: HashMap<String, ClassicGroup>,
    /// Consumer-protocol (KIP-848) groups with members or on record. A
    /// group is in one map or the other.
    pub(super) consumer: HashMap<String, ConsumerGroup>,
    /// Parked JoinGroups and SyncGroups, by (group, member id).
    pub(super) join_waiters: Waiters<Joined>,
    pub(super) sync_waiters: Waiters<Bytes>,
}

impl Groups {
    pub(super) fn new(shard: Shard, config: GroupConfig, now_ms: i64) -> Groups {
        let mut classic = HashMap::new();
        let mut consumer = HashMap::new();
        for (name, records) in shard.groups() {
            match (
                records.consumer_is_latest(),
                &records.metadata,
                &records.consumer,
            ) {
                (Some(false), Some((record, _)), _) => {
                    let group = ClassicGroup::from_record(config, record, now_ms);
                    classic.insert(name.clone(), group);
                }
                (Some(true), _, Some((record, _))) => {
                    match ConsumerGroup::decode(record, &config, now_ms) {
                        Ok(group) => {
                            consumer.insert(name.clone(), group);
                        }
                        Err(error) => {
                            warn!(group = name, %error, "skipped an unreadable consumer group record")
                        }
                    }
                }
                _ => {}
            }
        }
        Groups {
            shard,
            classic,
            consumer,
            join_waiters: HashMap::new(),
            sync_waiters: HashMap::new(),
        }
    }

    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    pub fn classic(&self, group: &str) -> Option<&ClassicGroup> {
        self.classic
            .get(group)
            .filter(|classic| !classic.is_idle() || self.shard.group(group).is_some())
    }

    pub fn consumer(&self, group: &str) -> Option<&ConsumerGroup> {
        self.consumer
            .get(group)
            .filter(|consumer| !consumer.is_empty() || self.shard.group(group).is_some())
    }

    /// Has the group members (under either protocol)?
    pub(super) fn has_members(&self, group: &str) -> bool {
        self.classic
            .get(group)
            .is_some_and(|classic| !classic.is_idle())
            || self
                .consumer
                .get(group)
                .is_some_and(|consumer| !consumer.is_empty())
    }

    /// A group's state name and protocol type, if it has members or
    /// records. A consumer-protocol group's protocol type is "consumer".
    pub fn summary(&self, group: &str) -> Option<(&'static str, String)> {
        if let Some(consumer) = self.consumer(group) {
            return Some((consumer.state_name(), "consumer".to_string()));
        }
        match self.classic(group) {
            Some(classic) => Some((classic.state().name(), classic.protocol_type().to_string())),
            None => self.shard.group(group).map(|_| ("Empty", String::new())),
        }
    }

    /// Every group with members or records: name, state, protocol type.
    pub fn list(&self) -> Vec<(String, &'static str, String)> {
        let names: BTreeSet<&String> = self
            .shard
            .groups()
            .map(|(name, _)| name)
            .chain(self.classic.keys())
            .chain(self.consumer.keys())
            .collect();
        names
            .into_iter()
            .filter_map(|name| {
                let (state, protocol_type) = self.summary(name)?;
                Some((name.clone(), state, protocol_type))
            })
            .collect()
    }

    /// Tombstones for the offsets (and records) of empty groups past
    /// `offsets.retention.minutes`.
    pub(super) fn expired_records(&self, now_ms: i64, retention_ms: i64) -> Vec<KeyedRecord> {
        self.shard
            .groups()
            .flat_map(|(name, records)| {
                let empty_since = match (self.classic.get(name), self.consumer.get(name)) {
                    (Some(classic), _) if !classic.is_idle() => None,
                    (_, Some(consumer)) if !consumer.is_empty() => None,
                    (Some(classic), _) => Some(classic.state_since_ms()),
                    (_, Some(consumer)) => Some(consumer.state_since_ms()),
                    // Offsets committed without membership (an admin, a
                    // consumer that assigns itself): their commit times.
                    (None, None) => Some(
                        records
                            .metadata
                            .as_ref()
                            .map_or(i64::MIN, |(group, _)| group.state_timestamp_ms),
                    ),
                };
                self.shard.expired(name, empty_since, now_ms, retention_ms)
            })
            .map(|key| (key.encode(), None))
            .collect()
    }

    pub(super) fn classic_mut(
        &mut self,
        group: &str,
        config: GroupConfig,
        now_ms: i64,
    ) -> &mut ClassicGroup {
        self.classic
            .entry(group.to_string())
            .or_insert_with(|| ClassicGroup::new(config, now_ms))
    }
}

impl CoordinatorState for Groups {
    type Config = GroupConfig;
    const WHAT: &'static str = "consumer groups";

    fn load(partition: &Partition, config: GroupConfig, now_ms: i64) -> Result<Self, LogError> {
        Ok(Groups::new(replay(partition)?, config, now_ms))
    }

    fn count(&self) -> usize {
        self.shard.groups().count()
    }

    fn apply(&mut self, (key, value): &KeyedRecord, offset: i64, transaction: Option<ProducerId>) {
        let applied = match transaction {
            None => self.shard.apply(key, value.as_deref(), offset),
            Some(producer_id) => self.shard.stage(producer_id, key, value.as_deref(), offset),
        };
        applied.expect("records this coordinator encoded decode");
    }
}

/// Rebuilds the groups of `partition` from its whole log.
fn replay(partition: &Partition) -> Result<Shard, LogError> {
    let mut shard = Shard::default();
    let mut offset = partition.log_start_offset();
    loop {
        let read = partition
            .read_to_log_end(offset, LOAD_READ_BYTES)
            .map_err(|error| {
                warn!(partition = ?partition, %error, "cannot read the offsets topic");
                LogError::Unavailable
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
    if header.is_control() {
        if let Some(marker) = Marker::of(header, batch) {
            shard.end_transaction(header.producer_id, marker == Marker::Commit);
        }
        return Ok(());
    }
    let transaction = header.is_transactional().then_some(header.producer_id);
    let section = batch_records(batch, usize::MAX).map_err(|error| error.to_string())?;
    for record in RecordIter::from_records(&section, header.record_count) {
        let record = record.map_err(|error| error.to_string())?;
        let Some(key) = record.key else { continue };
        let record_offset = header.base_offset + record.offset_delta;
        let applied = match transaction {
            None => shard.apply(key, record.value, record_offset),
            Some(producer_id) => shard.stage(producer_id, key, record.value, record_offset),
        };
        if let Err(error) = applied {
            warn!(record_offset, %error, "skipped a record of the offsets topic");
        }
    }
    Ok(())
}
