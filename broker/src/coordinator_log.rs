//! What both coordinators (consumer groups on `__consumer_offsets`,
//! transactions on `__transaction_state`) stand on: an internal topic whose
//! partitions a key hashes to, the partitions of it this broker leads, and
//! for each, the state the coordinator rebuilds from its log once per
//! leader epoch and changes only by records that became durable there.
//!
//! Architecture Invariant: a coordinator decides and appends its records
//! under the partition's state lock, so the log holds them in the order
//! they were decided; it answers a request only once the records written
//! for it are durable on the ISR, and applies them to its state then (a
//! successor that loads the log sees the same). When leadership moves, the
//! loaded state is dropped: waits end with `NotCoordinator`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use strata_storage::batch::ProducerId;
use strata_storage::record::{BatchBuilder, Record};
use strata_storage::StorageError;
use tracing::{info, warn};

use crate::clock::now_ms;
use crate::controller::metadata::LeaderEpoch;
use crate::limits;
use crate::replica::partition::{Acks, AppendError, Commit, LeaderAppend, Partition};
use crate::replica::replica_manager::ReplicaManager;

/// A record of an internal topic: key, and value (`None`: a tombstone).
pub type KeyedRecord = (Vec<u8>, Option<Vec<u8>>);

/// An internal topic coordinators keep their state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InternalTopic {
    pub name: &'static str,
    pub partitions: u32,
    /// Its replication factor when the cluster has that many brokers.
    pub replication_factor: u16,
}

impl InternalTopic {
    /// The partition of `key` (a group, a transactional id): Kafka's
    /// `Utils.abs(key.hashCode()) % partitions`, with Java's String hash.
    pub fn partition_for(&self, key: &str) -> i32 {
        let hash = key.encode_utf16().fold(0i32, |hash, unit| {
            hash.wrapping_mul(31).wrapping_add(unit as i32)
        });
        (hash & 0x7fff_ffff) % self.partitions as i32
    }
}

/// Why a coordinator's partition could not serve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogError {
    /// This broker does not lead the partition (any more): the client
    /// finds the coordinator again.
    NotCoordinator,
    /// The state cannot be loaded or written now.
    Unavailable,
    /// A record did not become durable in time.
    TimedOut,
    /// A transactional write of a producer epoch older than the partition
    /// knows.
    ProducerFenced,
}

/// The state a coordinator keeps of one partition of its topic.
pub trait CoordinatorState: Sized + Send + 'static {
    type Config: Copy + Send + Sync + 'static;
    /// What the state holds, for the log line of a load ("consumer groups").
    const WHAT: &'static str;

    /// Rebuilds the state from the partition's whole log (on a blocking
    /// thread).
    fn load(partition: &Partition, config: Self::Config, now_ms: i64) -> Result<Self, LogError>;

    /// How many things it holds, for the log line of a load.
    fn count(&self) -> usize;

    /// Applies a record that became durable at `offset`; `transaction`
    /// names the producer whose transaction it was written in.
    fn apply(&mut self, record: &KeyedRecord, offset: i64, transaction: Option<ProducerId>);
}

/// A partition's state as loaded in one leader epoch.
pub struct Loaded<S> {
    pub leader_epoch: LeaderEpoch,
    pub state: S,
}

/// The lock over a partition's loaded state.
pub type LoadedSlot<S> = Arc<tokio::sync::Mutex<Option<Loaded<S>>>>;

/// A partition of the coordinator's topic that this broker leads, in one
/// leader epoch.
pub struct LedLog<S: CoordinatorState> {
    pub partition: Arc<Partition>,
    pub leader_epoch: LeaderEpoch,
    pub config: S::Config,
    pub loaded: LoadedSlot<S>,
}

impl<S: CoordinatorState> Clone for LedLog<S> {
    fn clone(&self) -> Self {
        LedLog {
            partition: Arc::clone(&self.partition),
            leader_epoch: self.leader_epoch,
            config: self.config,
            loaded: Arc::clone(&self.loaded),
        }
    }
}

impl<S: CoordinatorState> LedLog<S> {
    /// Reads the state (loading it first if this epoch has not), under the
    /// partition's lock.
    pub async fn read<T, E: From<LogError>>(&self, read: impl FnOnce(&S) -> T) -> Result<T, E> {
        let mut loaded = self.loaded.lock().await;
        let state = self.load(&mut loaded).await?;
        Ok(read(state))
    }

    /// The state, loaded from the log if this leader epoch has not yet.
    pub async fn load<'a>(&self, loaded: &'a mut Option<Loaded<S>>) -> Result<&'a mut S, LogError> {
        if self.partition.leader_epoch() != Some(self.leader_epoch) {
            return Err(LogError::NotCoordinator);
        }
        if loaded
            .as_ref()
            .is_none_or(|loaded| loaded.leader_epoch != self.leader_epoch)
        {
            let partition = Arc::clone(&self.partition);
            let config = self.config;
            let started = std::time::Instant::now();
            let state = tokio::task::spawn_blocking(move || S::load(&partition, config, now_ms()))
                .await
                .map_err(|_| LogError::Unavailable)??;
            info!(
                partition = ?self.partition,
                %self.leader_epoch,
                count = state.count(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "loaded {}",
                S::WHAT
            );
            *loaded = Some(Loaded {
                leader_epoch: self.leader_epoch,
                state,
            });
        }
        Ok(&mut loaded.as_mut().expect("loaded above").state)
    }

    /// Appends the records `decide` returns (or answers its refusal), in
    /// the same critical section that decided them, and returns once the ISR
    /// has them durably.
    pub async fn write_with<E: From<LogError>>(
        &self,
        decide: impl FnOnce(&mut S, S::Config, i64) -> Result<Vec<KeyedRecord>, E>,
    ) -> Result<(), E> {
        let (records, appended) = {
            let mut loaded = self.loaded.lock().await;
            let state = self.load(&mut loaded).await?;
            let now = now_ms();
            let records = decide(state, self.config, now)?;
            if records.is_empty() {
                return Ok(());
            }
            let appended = self.append(&records, None, now)?;
            (records, appended)
        };
        Ok(self.await_durable(&records, appended, None).await?)
    }

    /// Appends `records` as one batch; in `transaction` (a producer id and
    /// epoch) it is a transactional batch of that producer, fenced if the
    /// partition knows a newer epoch of it.
    pub fn append(
        &self,
        records: &[KeyedRecord],
        transaction: Option<(ProducerId, i16)>,
        now: i64,
    ) -> Result<LeaderAppend, LogError> {
        let mut builder = BatchBuilder::new(now);
        if let Some((producer_id, producer_epoch)) = transaction {
            builder = builder
                .producer(producer_id, producer_epoch, -1)
                .transactional();
        }
        for (key, value) in records {
            builder.push(Record {
                key: Some(key),
                value: value.as_deref(),
                headers: &[],
                timestamp_ms: None,
            });
        }
        let batch = Bytes::from(builder.build());
        let appended = match transaction {
            None => self.partition.append_as_leader(
                &batch,
                Acks::All,
                Some(self.leader_epoch),
                None,
                now,
            ),
            Some(_) => self
                .partition
                .append_for_coordinator(&batch, Some(self.leader_epoch), now),
        };
        appended.map_err(|error| match error {
            AppendError::NotLeader => LogError::NotCoordinator,
            AppendError::Storage(StorageError::Sequence(_)) => LogError::ProducerFenced,
            error => {
                warn!(partition = ?self.partition, %error, "cannot write to a coordinator's partition");
                LogError::Unavailable
            }
        })
    }

    /// Waits until `records`, appended as `appended`, are durable on the
    /// ISR, then applies them to the loaded state (a reload replays them).
    /// Leadership lost meanwhile is `NotCoordinator`: the records may be
    /// gone.
    pub async fn await_durable(
        &self,
        records: &[KeyedRecord],
        appended: LeaderAppend,
        transaction: Option<ProducerId>,
    ) -> Result<(), LogError> {
        self.await_committed(&appended).await?;
        let mut loaded = self.loaded.lock().await;
        if let Some(loaded) = loaded
            .as_mut()
            .filter(|loaded| loaded.leader_epoch == self.leader_epoch)
        {
            for (index, record) in records.iter().enumerate() {
                let offset = appended.info.first_offset + index as i64;
                loaded.state.apply(record, offset, transaction);
            }
        }
        Ok(())
    }

    /// Waits until `appended` is durable on the ISR.
    pub async fn await_committed(&self, appended: &LeaderAppend) -> Result<(), LogError> {
        // Writes to one partition wait for durability together.
        match self
            .partition
            .wait_committed(appended, limits::OFFSET_COMMIT_TIMEOUT)
            .await
        {
            Commit::Committed => Ok(()),
            Commit::LeadershipLost => Err(LogError::NotCoordinator),
            Commit::TimedOut => Err(LogError::TimedOut),
            Commit::CommittedBelowMinIsr { .. } => Err(LogError::Unavailable),
        }
    }
}

/// The partitions of a coordinator's topic this broker leads, each with
/// its state, loaded lazily.
pub struct CoordinatorLog<S: CoordinatorState> {
    replicas: Arc<ReplicaManager>,
    topic: InternalTopic,
    config: S::Config,
    loaded: Mutex<HashMap<i32, LoadedSlot<S>>>,
}

impl<S: CoordinatorState> CoordinatorLog<S> {
    pub fn new(replicas: Arc<ReplicaManager>, topic: InternalTopic, config: S::Config) -> Self {
        CoordinatorLog {
            replicas,
            topic,
            config,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    pub fn topic(&self) -> InternalTopic {
        self.topic
    }

    pub fn config(&self) -> &S::Config {
        &self.config
    }

    /// The partition holding `key`, if this broker leads it.
    pub fn led_for(&self, key: &str) -> Result<LedLog<S>, LogError> {
        self.led(self.topic.partition_for(key))
    }

    /// Partition `index`, if this broker leads it.
    pub fn led(&self, index: i32) -> Result<LedLog<S>, LogError> {
        let partition = self
            .replicas
            .partition(self.topic.name, index)
            .ok_or(LogError::NotCoordinator)?;
        let leader_epoch = partition.leader_epoch().ok_or(LogError::NotCoordinator)?;
        let loaded = Arc::clone(
            self.loaded
                .lock()
                .expect("coordinator lock")
                .entry(index)
                .or_default(),
        );
        Ok(LedLog {
            partition,
            leader_epoch,
            config: self.config,
            loaded,
        })
    }

    /// Every partition this broker leads.
    pub fn all_led(&self) -> Vec<LedLog<S>> {
        (0..self.topic.partitions as i32)
            .filter_map(|index| self.led(index).ok())
            .collect()
    }

    /// For a timer's tick: each loaded partition this broker still leads in
    /// the epoch it was loaded in, with its locked state. The state of a
    /// partition led no more is dropped, which ends every wait on it.
    pub async fn for_each_loaded(&self, mut tick: impl FnMut(&LedLog<S>, &mut S)) {
        let partitions: Vec<(i32, LoadedSlot<S>)> = self
            .loaded
            .lock()
            .expect("coordinator lock")
            .iter()
            .map(|(index, loaded)| (*index, Arc::clone(loaded)))
            .collect();
        for (index, loaded) in partitions {
            let mut loaded = loaded.lock().await;
            let Some(current) = loaded.as_mut() else {
                continue;
            };
            match self.led(index) {
                Ok(led) if led.leader_epoch == current.leader_epoch => {
                    tick(&led, &mut current.state);
                }
                _ => {
                    info!(
                        topic = self.topic.name,
                        partition = index,
                        count = current.state.count(),
                        "no longer the coordinator of this partition's {}",
                        S::WHAT
                    );
                    *loaded = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_partitions_as_in_kafka() {
        let topic = InternalTopic {
            name: "__consumer_offsets",
            partitions: 50,
            replication_factor: 3,
        };
        // Java: "a".hashCode() == 97, "ab".hashCode() == 3105, and
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE, which
        // Kafka's Utils.abs maps to 0.
        assert_eq!(topic.partition_for("a"), 97 % 50);
        assert_eq!(topic.partition_for("ab"), 3105 % 50);
        assert_eq!(topic.partition_for("polygenelubricants"), 0);
        assert_eq!(topic.partition_for(""), 0);
        for key in [
            "console-consumer-12345",
            "a-very-long-group-name-indeed",
            "é",
        ] {
            assert!((0..50).contains(&topic.partition_for(key)));
        }
    }
}
