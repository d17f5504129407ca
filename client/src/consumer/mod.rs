//! The consumer: assign partitions yourself (`assign`, `seek`), or join a
//! consumer group and `subscribe` to topics, and the group shares their
//! partitions among its members (see `group.rs`), resuming each from the
//! group's committed offset.
//!
//! In a group, `poll` also keeps the membership: it rejoins when the
//! coordinator asks (the heartbeat task raises the flag), hands back what
//! the new assignment takes away (committing its positions first when
//! auto-commit is on) and starts what it adds. With the cooperative assignor
//! (the default) partitions the member keeps are consumed throughout; an
//! eager assignor gives everything back before each rebalance.
//!
//! Fetches are pipelined: when a fetch response arrives, the positions it
//! reaches are known from the batch headers alone, so the next fetch to that
//! broker is sent at once, and the records are decoded while it is in flight.
//! Each partition has two positions: `position`, the next offset `poll`
//! returns, and `fetch_position`, the next offset requested. A seek bumps the
//! partition's generation, so data from fetches sent before it is dropped.

mod config;
mod fetcher;
mod rebalance;

pub use config::{ConsumerBuilder, ConsumerConfig, Isolation, Offset, OffsetReset};

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::FetchResponse;
use tokio::task::JoinSet;

use crate::cluster::{ClientConfig, Cluster};
use crate::error::{Error, Result};
use crate::group::Membership;
use crate::producer::GroupMetadata;

/// A record as the consumer returns it; key, value and headers share the
/// fetched response's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

type TopicPartition = (Arc<str>, i32);

#[derive(Debug)]
struct PartitionState {
    position: Option<i64>,
    fetch_position: Option<i64>,
    pending_seek: Option<Offset>,
    generation: u64,
    in_flight: bool,
    high_watermark: i64,
}

impl PartitionState {
    fn starting_at(offset: Offset) -> PartitionState {
        PartitionState {
            position: None,
            fetch_position: None,
            pending_seek: Some(offset),
            generation: 0,
            in_flight: false,
            high_watermark: -1,
        }
    }
}

struct FetchDone {
    broker: i32,
    /// Partitions the fetch asked for, with their generation at the time.
    asked: Vec<(TopicPartition, u64)>,
    response: Result<FetchResponse>,
}

struct Buffered {
    partition: TopicPartition,
    generation: u64,
    records: Bytes,
    /// Under `read_committed`: the aborted transactions the fetch listed,
    /// as (producer id, first offset).
    aborted: Vec<(i64, i64)>,
}

/// A change of a group member's partitions, as `poll` makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalance {
    /// Now this member's, starting at the group's committed offsets.
    Assigned(Vec<(String, i32)>),
    /// Handed back in a rebalance (positions committed first when
    /// auto-commit is on).
    Revoked(Vec<(String, i32)>),
    /// Taken while this member was out of the group: another member may
    /// already own them, so nothing was committed.
    Lost(Vec<(String, i32)>),
}

/// Behind a mutex only so the consumer stays `Sync` (futures holding
/// `&Consumer` can move between threads); `poll` has it to itself.
type RebalanceListener = std::sync::Mutex<Box<dyn FnMut(&Rebalance) + Send>>;

/// Reads assigned partitions. Not shared between tasks: `poll` takes `&mut`.
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    membership: Option<Arc<Membership>>,
    /// Topics subscribed to through the group.
    subscription: Vec<String>,
    /// The next `poll` joins the group first.
    join_needed: bool,
    last_commit: Instant,
    listener: Option<RebalanceListener>,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    fetches: JoinSet<FetchDone>,
    brokers_fetching: HashSet<i32>,
    buffered: VecDeque<Buffered>,
    metadata_stale: bool,
}

impl ConsumerBuilder {
    pub async fn build(self) -> Result<Consumer> {
        Consumer::with_config(self.config).await
    }
}

impl Consumer {
    pub fn builder(bootstrap: &str) -> ConsumerBuilder {
        ConsumerBuilder {
            config: ConsumerConfig::new(bootstrap),
        }
    }

    /// A builder whose connection settings (bootstrap, client id,
    /// timeouts, TLS and SASL) are `client`'s.
    pub fn builder_for(client: &ClientConfig) -> ConsumerBuilder {
        let mut config = ConsumerConfig::new("");
        config.client = client.clone();
        ConsumerBuilder { config }
    }

    pub async fn with_config(config: ConsumerConfig) -> Result<Consumer> {
        let cluster = Cluster::connect(config.client.clone()).await?;
        let membership = if config.group.group_id.is_empty() {
            None
        } else {
            Some(Arc::new(Membership::new(
                Arc::clone(&cluster),
                config.group.clone(),
            )?))
        };
        Ok(Consumer {
            cluster,
            config,
            membership,
            subscription: Vec::new(),
            join_needed: false,
            last_commit: Instant::now(),
            listener: None,
            partitions: BTreeMap::new(),
            fetches: JoinSet::new(),
            brokers_fetching: HashSet::new(),
            buffered: VecDeque::new(),
            metadata_stale: false,
        })
    }

    /// Replaces the assignment. Partitions kept keep their positions; new
    /// ones start where the offset-reset policy says (or where `seek` puts
    /// them). Unknown topics and partitions are refused, and so is a
    /// consumer that subscribed through its group.
    pub async fn assign(&mut self, partitions: &[(&str, i32)]) -> Result<()> {
        if !self.subscription.is_empty() {
            return Err(Error::Config(
                "this consumer subscribed through its group; its group assigns its partitions"
                    .to_string(),
            ));
        }
        let mut assigned = BTreeMap::new();
        for &(topic, partition) in partitions {
            let info = self.cluster.topic(topic).await?;
            if partition < 0 || partition as usize >= info.partitions.len() {
                return Err(Error::UnknownPartition {
                    topic: topic.to_string(),
                    partition,
                });
            }
            let key: TopicPartition = (Arc::from(topic), partition);
            let state = self
                .partitions
                .remove(&key)
                .unwrap_or_else(|| PartitionState::starting_at(self.reset_offset()));
            assigned.insert(key, state);
        }
        self.partitions = assigned;
        self.buffered
            .retain(|buffered| self.partitions.contains_key(&buffered.partition));
        Ok(())
    }

    /// Every partition of `topic`.
    pub async fn assign_topic(&mut self, topic: &str) -> Result<()> {
        let info = self.cluster.topic(topic).await?;
        let partitions: Vec<(&str, i32)> = info
            .partitions
            .iter()
            .map(|partition| (topic, partition.partition))
            .collect();
        self.assign(&partitions).await
    }

    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.partitions
            .keys()
            .map(|(topic, partition)| (topic.to_string(), *partition))
            .collect()
    }

    /// Moves the position of an assigned partition; takes effect at the next
    /// `poll`.
    pub fn seek(&mut self, topic: &str, partition: i32, offset: Offset) -> Result<()> {
        let state = self
            .partitions
            .get_mut(&(Arc::from(topic), partition))
            .ok_or_else(|| Error::Config(format!("{topic}-{partition} is not assigned")))?;
        state.generation += 1;
        state.position = None;
        state.fetch_position = None;
        state.pending_seek = Some(offset);
        Ok(())
    }

    /// The next offset `poll` returns for the partition, once known.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.partitions
            .get(&(Arc::from(topic), partition))
            .and_then(|state| state.position)
    }

    /// The high watermark seen in the partition's last fetch.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.partitions
            .get(&(Arc::from(topic), partition))
            .map(|state| state.high_watermark)
            .filter(|&high_watermark| high_watermark >= 0)
    }

    /// Where a partition without a position starts.
    fn reset_offset(&self) -> Offset {
        match self.config.offset_reset {
            OffsetReset::Earliest => Offset::Beginning,
            OffsetReset::Latest | OffsetReset::None => Offset::End,
        }
    }

    /// Joins the group and consumes `topics`, sharing their partitions with
    /// the group's other members; the next `poll` joins.
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<()> {
        if self.membership.is_none() {
            return Err(Error::Config(
                "subscribe needs a group: set group_id when building the consumer".to_string(),
            ));
        }
        if topics.is_empty() {
            return Err(Error::Config("subscribe to at least one topic".to_string()));
        }
        if self.subscription.is_empty() {
            self.partitions.clear();
            self.buffered.clear();
        }
        self.subscription = topics.iter().map(ToString::to_string).collect();
        self.subscription.sort();
        self.subscription.dedup();
        self.join_needed = true;
        Ok(())
    }

    /// Called with every change of this member's partitions, inside `poll`.
    pub fn on_rebalance(&mut self, listener: impl FnMut(&Rebalance) + Send + 'static) {
        self.listener = Some(std::sync::Mutex::new(Box::new(listener)));
    }

    /// The group as a transactional producer commits this consumer's
    /// offsets for it (`Producer::send_offsets_to_transaction`), once
    /// joined.
    pub fn group_metadata(&self) -> Option<GroupMetadata> {
        let (member_id, generation) = self.group_member()?;
        Some(GroupMetadata {
            group_id: self.config.group.group_id.clone(),
            generation,
            member_id,
            group_instance_id: self.config.group.group_instance_id.clone(),
        })
    }

    /// This member's id and generation in its group, once joined.
    pub fn group_member(&self) -> Option<(String, i32)> {
        let membership = self.membership.as_ref()?;
        let generation = membership.generation();
        (generation >= 0).then(|| (membership.member_id(), generation))
    }

    /// Commits the positions of every assigned partition (the offsets after
    /// the records `poll` returned) to the group, and waits for the answer.
    pub async fn commit(&mut self) -> Result<()> {
        let offsets = self.positions(None);
        self.membership()?.commit(&offsets).await?;
        self.last_commit = Instant::now();
        Ok(())
    }

    /// As [`Self::commit`], without waiting: the returned task reports how
    /// the commit went.
    pub fn commit_async(&mut self) -> Result<tokio::task::JoinHandle<Result<()>>> {
        let offsets = self.positions(None);
        let membership = Arc::clone(self.membership()?);
        self.last_commit = Instant::now();
        Ok(tokio::spawn(
            async move { membership.commit(&offsets).await },
        ))
    }

    /// Commits explicit offsets (the next offset to read of each partition).
    pub async fn commit_offsets(&self, offsets: &[(&str, i32, i64)]) -> Result<()> {
        let offsets: Vec<((String, i32), i64)> = offsets
            .iter()
            .map(|&(topic, partition, offset)| ((topic.to_string(), partition), offset))
            .collect();
        self.membership()?.commit(&offsets).await
    }

    /// Whether committed offsets are read only once no transaction is
    /// about to change them (read_committed readers, KIP-447).
    fn require_stable(&self) -> bool {
        self.config.isolation == Isolation::ReadCommitted
    }

    /// The group's committed offset of a partition, if any.
    pub async fn committed(&self, topic: &str, partition: i32) -> Result<Option<i64>> {
        let key = (topic.to_string(), partition);
        let committed = self
            .membership()?
            .committed(Some(std::slice::from_ref(&key)), self.require_stable())
            .await?;
        Ok(committed.get(&key).copied())
    }

    /// Leaves the group (committing first when auto-commit is on), so the
    /// others take this member's partitions at once.
    pub async fn close(mut self) -> Result<()> {
        let Some(membership) = self.membership.clone() else {
            return Ok(());
        };
        if membership.take_fenced() {
            // Out of the group already: nothing to commit or leave.
            let lost = self.assignment();
            membership.reset();
            self.notify(Rebalance::Lost(lost));
            return Ok(());
        }
        if !self.subscription.is_empty() && membership.generation() >= 0 {
            if self.config.auto_commit_interval.is_some() {
                self.commit_positions(None).await;
            }
            let owned = self.assignment();
            self.notify(Rebalance::Revoked(owned));
        }
        membership.leave().await
    }

    /// Waiting in poll is polling: only time spent outside it counts
    /// towards the maximum poll interval.
    fn mark_polled(&self) {
        if let Some(membership) = &self.membership {
            membership.polled();
        }
    }

    fn membership(&self) -> Result<&Arc<Membership>> {
        self.membership.as_ref().ok_or_else(|| {
            Error::Config("commits need a group: set group_id when building the consumer".into())
        })
    }

    /// (topic, partition, position) of every assigned partition with a
    /// position: the offsets to commit for what `poll` returned, as
    /// `Producer::send_offsets_to_transaction` takes them.
    pub fn assigned_positions(&self) -> Vec<(String, i32, i64)> {
        self.positions(None)
            .into_iter()
            .map(|((topic, partition), position)| (topic, partition, position))
            .collect()
    }

    /// (partition, position) of the assigned partitions with a position,
    /// all or only `of`.
    fn positions(&self, of: Option<&[(String, i32)]>) -> Vec<((String, i32), i64)> {
        self.partitions
            .iter()
            .filter(|((topic, partition), _)| {
                of.is_none_or(|of| of.iter().any(|(t, p)| **t == **topic && p == partition))
            })
            .filter_map(|((topic, partition), state)| {
                Some(((topic.to_string(), *partition), state.position?))
            })
            .collect()
    }

    /// Returns the next records, waiting up to `timeout` for some; an empty
    /// vector when none arrived in time.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        self.mark_polled();
        self.maintain_group().await?;
        let deadline = Instant::now() + timeout;
        loop {
            self.mark_polled();
            self.resolve_seeks().await?;
            self.start_fetches().await;
            while let Some(buffered) = self.buffered.pop_front() {
                let records = self.decode(buffered)?;
                if !records.is_empty() {
                    return Ok(records);
                }
            }
            let next = tokio::time::timeout_at(deadline.into(), self.fetches.join_next());
            match next.await {
                Err(_elapsed) => return Ok(Vec::new()),
                Ok(None) => {
                    // Nothing in flight: every partition waits for a leader
                    // or a position. Back off briefly before trying again.
                    let pause = Duration::from_millis(100)
                        .min(deadline.saturating_duration_since(Instant::now()));
                    if pause.is_zero() {
                        return Ok(Vec::new());
                    }
                    tokio::time::sleep(pause).await;
                }
                Ok(Some(done)) => {
                    let done = done.expect("fetch tasks do not panic");
                    self.complete_fetch(done)?;
                }
            }
        }
    }
}
