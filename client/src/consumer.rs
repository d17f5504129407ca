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

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use strata_protocol::batch::{BatchHeader, BatchIter};
use strata_protocol::compression::{batch_records, DECOMPRESSED_BATCH_BYTES_MAX};
use strata_protocol::record::RecordIter;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::assignor::Assignor;
use crate::cluster::{topic_name, ClientConfig, Cluster};
use crate::error::{Error, Result};
use crate::group::{GroupConfig, Membership};

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// The log start offset.
    Beginning,
    /// The high watermark: only records produced from now on.
    End,
    At(i64),
    /// The first offset whose timestamp is at or after this (ms since the
    /// epoch); the end when there is none.
    Timestamp(i64),
    /// This many records before the high watermark (the last N), or the
    /// log start when the log holds fewer.
    FromEnd(u64),
}

/// What to do when the position is not in the log (never set, or deleted by
/// retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Report [`Error::OffsetOutOfRange`] from `poll`.
    None,
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub client: ClientConfig,
    /// How long the broker may hold a fetch waiting for `fetch_min_bytes`.
    pub fetch_wait_max: Duration,
    pub fetch_min_bytes: i32,
    /// Bytes per fetch response.
    pub fetch_max_bytes: i32,
    /// Bytes per partition per fetch response.
    pub partition_fetch_bytes: i32,
    pub offset_reset: OffsetReset,
    /// Check each batch's CRC-32C before returning its records.
    pub check_crcs: bool,
    /// The consumer group; an empty group id is none (no `subscribe`, no
    /// commits).
    pub group: GroupConfig,
    /// In a group: commit the positions of what `poll` returned this often
    /// (at the next `poll`), and before partitions are handed back. `None`:
    /// only `commit` commits.
    pub auto_commit_interval: Option<Duration>,
}

impl ConsumerConfig {
    pub fn new(bootstrap: &str) -> ConsumerConfig {
        ConsumerConfig {
            client: ClientConfig::new(bootstrap),
            fetch_wait_max: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 << 20,
            partition_fetch_bytes: 1 << 20,
            offset_reset: OffsetReset::Latest,
            check_crcs: true,
            group: GroupConfig::new(""),
            auto_commit_interval: Some(Duration::from_secs(5)),
        }
    }
}

/// Builds a [`Consumer`].
///
/// ```no_run
/// # async fn run() -> Result<(), strata_client::Error> {
/// use std::time::Duration;
/// use strata_client::{Consumer, Offset};
///
/// let mut consumer = Consumer::builder("127.0.0.1:9092").build().await?;
/// consumer.assign(&[("orders", 0)]).await?;
/// consumer.seek("orders", 0, Offset::Beginning)?;
/// for record in consumer.poll(Duration::from_secs(1)).await? {
///     println!("{} {:?}", record.offset, record.value);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConsumerBuilder {
    config: ConsumerConfig,
}

impl ConsumerBuilder {
    pub fn client_id(mut self, client_id: &str) -> Self {
        self.config.client.client_id = client_id.to_string();
        self
    }
    pub fn fetch_wait_max(mut self, wait: Duration) -> Self {
        self.config.fetch_wait_max = wait;
        self
    }
    pub fn fetch_min_bytes(mut self, bytes: i32) -> Self {
        self.config.fetch_min_bytes = bytes;
        self
    }
    pub fn fetch_max_bytes(mut self, bytes: i32) -> Self {
        self.config.fetch_max_bytes = bytes;
        self
    }
    pub fn partition_fetch_bytes(mut self, bytes: i32) -> Self {
        self.config.partition_fetch_bytes = bytes;
        self
    }
    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.config.offset_reset = reset;
        self
    }
    pub fn check_crcs(mut self, check: bool) -> Self {
        self.config.check_crcs = check;
        self
    }
    /// Joins consumer group `group_id` (on `subscribe`) and commits there.
    pub fn group_id(mut self, group_id: &str) -> Self {
        self.config.group.group_id = group_id.to_string();
        self
    }
    /// Static membership: a restart within the session keeps the
    /// partitions, with no rebalance.
    pub fn group_instance_id(mut self, instance_id: &str) -> Self {
        self.config.group.group_instance_id = Some(instance_id.to_string());
        self
    }
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.config.group.session_timeout = timeout;
        self
    }
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.group.heartbeat_interval = interval;
        self
    }
    /// The longest processing between two polls (`max.poll.interval.ms`,
    /// default 5 minutes): a member that does not poll for this long leaves
    /// the group, and its next poll finds its partitions lost and rejoins.
    pub fn rebalance_timeout(mut self, timeout: Duration) -> Self {
        self.config.group.rebalance_timeout = timeout;
        self
    }
    /// In order of preference. The member rebalances cooperatively only if
    /// every one is cooperative (the default: cooperative-sticky alone).
    pub fn assignors(mut self, assignors: &[Assignor]) -> Self {
        self.config.group.assignors = assignors.to_vec();
        self
    }
    /// `None`: commit only with `commit`.
    pub fn auto_commit(mut self, interval: Option<Duration>) -> Self {
        self.config.auto_commit_interval = interval;
        self
    }
    pub async fn build(self) -> Result<Consumer> {
        Consumer::with_config(self.config).await
    }
}

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

impl Consumer {
    pub fn builder(bootstrap: &str) -> ConsumerBuilder {
        ConsumerBuilder {
            config: ConsumerConfig::new(bootstrap),
        }
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

    /// The group's committed offset of a partition, if any.
    pub async fn committed(&self, topic: &str, partition: i32) -> Result<Option<i64>> {
        let key = (topic.to_string(), partition);
        let committed = self
            .membership()?
            .committed(Some(std::slice::from_ref(&key)))
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

    /// Commits positions for auto-commit: a failure is logged, the records
    /// come again (at least once).
    async fn commit_positions(&mut self, of: Option<&[(String, i32)]>) {
        let offsets = self.positions(of);
        if let Some(membership) = &self.membership {
            if let Err(error) = membership.commit(&offsets).await {
                warn!(group = membership.group_id(), %error, "auto-commit failed; the records since the last commit will be read again");
            }
        }
        self.last_commit = Instant::now();
    }

    fn notify(&mut self, event: Rebalance) {
        if let Some(listener) = &mut self.listener {
            (listener.get_mut().expect("rebalance listener"))(&event);
        }
    }

    /// Keeps the group membership current: acts on a fence or a rebalance
    /// the heartbeat task saw, joins when needed, auto-commits when due.
    async fn maintain_group(&mut self) -> Result<()> {
        let Some(membership) = self.membership.clone() else {
            return Ok(());
        };
        if self.subscription.is_empty() {
            return Ok(());
        }
        if membership.take_fenced() {
            let lost = self.assignment();
            self.partitions.clear();
            self.buffered.clear();
            membership.reset();
            self.notify(Rebalance::Lost(lost));
            self.join_needed = true;
        }
        while self.join_needed || membership.rejoin_requested() {
            self.rebalance(&membership).await?;
        }
        if let Some(interval) = self.config.auto_commit_interval {
            if self.last_commit.elapsed() >= interval {
                self.commit_positions(None).await;
            }
        }
        Ok(())
    }

    /// One join: gives back what the assignment no longer holds, starts
    /// what it adds (at the committed offsets).
    async fn rebalance(&mut self, membership: &Membership) -> Result<()> {
        let cooperative = self
            .config
            .group
            .assignors
            .iter()
            .all(|assignor| assignor.is_cooperative());
        let auto_commit = self.config.auto_commit_interval.is_some();
        if !cooperative && !self.partitions.is_empty() {
            if auto_commit {
                self.commit_positions(None).await;
            }
            let revoked = self.assignment();
            self.partitions.clear();
            self.buffered.clear();
            self.notify(Rebalance::Revoked(revoked));
        }
        let owned = self.assignment();
        let assigned = membership.join(&self.subscription, &owned).await?;
        let revoked: Vec<(String, i32)> = owned
            .iter()
            .filter(|partition| !assigned.contains(partition))
            .cloned()
            .collect();
        let added: Vec<(String, i32)> = assigned
            .iter()
            .filter(|partition| !owned.contains(partition))
            .cloned()
            .collect();
        if !revoked.is_empty() {
            if auto_commit {
                self.commit_positions(Some(&revoked)).await;
            }
            self.partitions.retain(|(topic, partition), _| {
                !revoked
                    .iter()
                    .any(|(t, p)| **topic == **t && partition == p)
            });
            let partitions = &self.partitions;
            self.buffered
                .retain(|buffered| partitions.contains_key(&buffered.partition));
            self.notify(Rebalance::Revoked(revoked.clone()));
        }
        if !added.is_empty() {
            let committed = membership.committed(Some(&added)).await?;
            for key in &added {
                let start = committed
                    .get(key)
                    .map_or_else(|| self.reset_offset(), |&offset| Offset::At(offset));
                self.partitions.insert(
                    (Arc::from(key.0.as_str()), key.1),
                    PartitionState::starting_at(start),
                );
            }
            self.notify(Rebalance::Assigned(added));
        }
        // Cooperative: what this member gave up goes to its new owner in
        // the next round, which this member's rejoin starts.
        self.join_needed = cooperative && !revoked.is_empty();
        Ok(())
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

    /// Looks up offsets for partitions with a pending seek.
    async fn resolve_seeks(&mut self) -> Result<()> {
        let pending: Vec<(TopicPartition, Offset)> = self
            .partitions
            .iter()
            .filter_map(|(key, state)| state.pending_seek.map(|seek| (key.clone(), seek)))
            .collect();
        for (key, seek) in pending {
            let offset = match seek {
                Offset::At(offset) => offset,
                Offset::Beginning => self.list_offset(&key, -2).await?,
                Offset::End => self.list_offset(&key, -1).await?,
                Offset::Timestamp(timestamp_ms) => {
                    match self.list_offset(&key, timestamp_ms).await? {
                        -1 => self.list_offset(&key, -1).await?,
                        offset => offset,
                    }
                }
                Offset::FromEnd(count) => {
                    let end = self.list_offset(&key, -1).await?;
                    let start = self.list_offset(&key, -2).await?;
                    end.saturating_sub(count.min(i64::MAX as u64) as i64)
                        .max(start)
                }
            };
            let state = self.partitions.get_mut(&key).expect("assigned");
            state.pending_seek = None;
            state.position = Some(offset);
            state.fetch_position = Some(offset);
        }
        Ok(())
    }

    /// ListOffsets for one partition: `-2` earliest, `-1` latest, else a
    /// timestamp. Returns the offset (`-1` when no record is that recent).
    async fn list_offset(
        &self,
        (topic, partition): &TopicPartition,
        timestamp: i64,
    ) -> Result<i64> {
        let mut attempts = 0;
        loop {
            let result = self.list_offset_once(topic, *partition, timestamp).await;
            match result {
                Err(error) if error.is_retriable() && attempts < 5 => {
                    attempts += 1;
                    debug!(%error, "retrying ListOffsets");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    self.cluster.refresh(&[topic]).await?;
                }
                other => return other,
            }
        }
    }

    async fn list_offset_once(&self, topic: &str, partition: i32, timestamp: i64) -> Result<i64> {
        let leader = self.cluster.leader(topic, partition).ok_or_else(|| {
            Error::broker(
                format!("{topic}-{partition}"),
                ResponseError::LeaderNotAvailable.code(),
                None,
            )
        })?;
        self.cluster
            .list_offset(leader, topic, partition, timestamp)
            .await
    }

    /// Sends a fetch to every leader that has partitions ready to fetch and
    /// no fetch in flight.
    async fn start_fetches(&mut self) {
        if self.metadata_stale {
            let topics: Vec<Arc<str>> = self
                .partitions
                .keys()
                .map(|(topic, _)| Arc::clone(topic))
                .collect();
            let topics: Vec<&str> = topics.iter().map(|topic| &**topic).collect();
            if self.cluster.refresh(&topics).await.is_ok() {
                self.metadata_stale = false;
            }
        }
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, u64, i64)>> = BTreeMap::new();
        for (key, state) in &self.partitions {
            let Some(fetch_position) = state.fetch_position else {
                continue;
            };
            if state.in_flight {
                continue;
            }
            let Some(leader) = self.cluster.leader(&key.0, key.1) else {
                self.metadata_stale = true;
                continue;
            };
            if self.brokers_fetching.contains(&leader) {
                continue;
            }
            by_leader.entry(leader).or_default().push((
                key.clone(),
                state.generation,
                fetch_position,
            ));
        }
        for (leader, partitions) in by_leader {
            let mut topics: Vec<FetchTopic> = Vec::new();
            for ((topic, partition), _, fetch_position) in &partitions {
                let fetch = FetchPartition::default()
                    .with_partition(*partition)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(*fetch_position)
                    .with_last_fetched_epoch(-1)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(self.config.partition_fetch_bytes);
                match topics.iter_mut().find(|t| *t.topic.0 == **topic) {
                    Some(t) => t.partitions.push(fetch),
                    None => topics.push(
                        FetchTopic::default()
                            .with_topic(topic_name(topic))
                            .with_partitions(vec![fetch]),
                    ),
                }
            }
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(self.config.fetch_wait_max.as_millis() as i32)
                .with_min_bytes(self.config.fetch_min_bytes)
                .with_max_bytes(self.config.fetch_max_bytes)
                .with_session_id(0)
                .with_session_epoch(-1)
                .with_topics(topics);
            for (key, _, _) in &partitions {
                self.partitions.get_mut(key).expect("assigned").in_flight = true;
            }
            self.brokers_fetching.insert(leader);
            let cluster = Arc::clone(&self.cluster);
            let asked = partitions
                .into_iter()
                .map(|(key, generation, _)| (key, generation))
                .collect();
            let wait = self.config.fetch_wait_max;
            self.fetches.spawn(async move {
                let response = async {
                    let connection = cluster.connection(leader).await?;
                    let after = cluster.config().request_timeout + wait;
                    tokio::time::timeout(after, connection.send(&request))
                        .await
                        .map_err(|_elapsed| Error::Timeout {
                            operation: "Fetch",
                            after,
                        })?
                }
                .await;
                FetchDone {
                    broker: leader,
                    asked,
                    response,
                }
            });
        }
    }

    /// Takes in a fetch response: advances fetch positions past the whole
    /// batches it holds and buffers the data for decoding.
    fn complete_fetch(&mut self, done: FetchDone) -> Result<()> {
        self.brokers_fetching.remove(&done.broker);
        for (key, _) in &done.asked {
            if let Some(state) = self.partitions.get_mut(key) {
                state.in_flight = false;
            }
        }
        let response = match done.response {
            Ok(response) => response,
            Err(error) if error.is_retriable() => {
                debug!(%error, broker = done.broker, "fetch failed; retrying");
                self.metadata_stale = true;
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        crate::error::check(|| "fetch".to_string(), response.error_code, None)?;
        for topic in response.responses {
            for data in topic.partitions {
                let key: TopicPartition = (Arc::from(&*topic.topic.0), data.partition_index);
                let Some(generation) = done
                    .asked
                    .iter()
                    .find(|(asked, _)| *asked == key)
                    .map(|(_, generation)| *generation)
                else {
                    continue;
                };
                let Some(state) = self.partitions.get_mut(&key) else {
                    continue;
                };
                if state.generation != generation {
                    continue;
                }
                match ResponseError::try_from_code(data.error_code) {
                    None if data.error_code == 0 => {}
                    Some(ResponseError::OffsetOutOfRange) => {
                        let offset = state.fetch_position.unwrap_or(-1);
                        state.generation += 1;
                        state.position = None;
                        state.fetch_position = None;
                        state.pending_seek = match self.config.offset_reset {
                            OffsetReset::Earliest => Some(Offset::Beginning),
                            OffsetReset::Latest => Some(Offset::End),
                            OffsetReset::None => {
                                return Err(Error::OffsetOutOfRange {
                                    topic: key.0.to_string(),
                                    partition: key.1,
                                    offset,
                                })
                            }
                        };
                        continue;
                    }
                    Some(error) if error.is_retriable() => {
                        debug!(%error, topic = %key.0, partition = key.1, "fetch partition error; retrying");
                        self.metadata_stale = true;
                        continue;
                    }
                    _ => {
                        return Err(Error::broker(
                            format!("fetch {}-{}", key.0, key.1),
                            data.error_code,
                            None,
                        ))
                    }
                }
                state.high_watermark = data.high_watermark;
                let records = data.records.unwrap_or_default();
                let mut next = None;
                for (header, _) in BatchIter::new(&records) {
                    next = Some(header.last_offset() + 1);
                }
                if let Some(next) = next {
                    if next > state.fetch_position.unwrap_or(i64::MIN) {
                        state.fetch_position = Some(next);
                    }
                    self.buffered.push_back(Buffered {
                        partition: key,
                        generation,
                        records,
                    });
                }
            }
        }
        Ok(())
    }

    /// The records of a buffered fetch from the partition's position on.
    fn decode(&mut self, buffered: Buffered) -> Result<Vec<ConsumerRecord>> {
        let Some(state) = self.partitions.get_mut(&buffered.partition) else {
            return Ok(Vec::new());
        };
        if state.generation != buffered.generation {
            return Ok(Vec::new());
        }
        let (topic, partition) = &buffered.partition;
        let mut position = state.position.unwrap_or(0);
        let bytes = &buffered.records;
        let mut records = Vec::new();
        let corrupt = |offset: i64, reason: String| Error::CorruptBatch {
            topic: topic.to_string(),
            partition: *partition,
            offset,
            reason,
        };
        for (header, batch) in BatchIter::new(bytes) {
            if header.last_offset() < position {
                continue;
            }
            if self.config.check_crcs {
                BatchHeader::validate(batch, usize::MAX)
                    .map_err(|error| corrupt(header.base_offset, error.to_string()))?;
            }
            if header.is_control() {
                position = header.last_offset() + 1;
                continue;
            }
            // Records borrow the fetched bytes; decompressed records share a
            // buffer of their own.
            let backing = match batch_records(batch, DECOMPRESSED_BATCH_BYTES_MAX)
                .map_err(|error| corrupt(header.base_offset, error.to_string()))?
            {
                Cow::Borrowed(records) => bytes.slice_ref(records),
                Cow::Owned(records) => Bytes::from(records),
            };
            for record in RecordIter::from_records(&backing, header.record_count) {
                let record =
                    record.map_err(|reason| corrupt(header.base_offset, reason.to_string()))?;
                let offset = header.base_offset + record.offset_delta;
                if offset < position {
                    continue;
                }
                let timestamp_ms = if header.is_log_append_time() {
                    header.max_timestamp
                } else {
                    header.base_timestamp + record.timestamp_delta
                };
                records.push(ConsumerRecord {
                    topic: Arc::clone(topic),
                    partition: *partition,
                    offset,
                    timestamp_ms,
                    key: record.key.map(|key| backing.slice_ref(key)),
                    value: record.value.map(|value| backing.slice_ref(value)),
                    headers: record
                        .headers()
                        .map(|header| {
                            (
                                header.key.to_string(),
                                header.value.map(|value| backing.slice_ref(value)),
                            )
                        })
                        .collect(),
                });
            }
            position = header.last_offset() + 1;
        }
        state.position = Some(position);
        Ok(records)
    }
}
