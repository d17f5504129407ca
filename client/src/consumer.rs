//! The consumer (without groups): assign partitions, seek, poll.
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
use tracing::debug;

use crate::cluster::{topic_name, ClientConfig, Cluster};
use crate::error::{Error, Result};

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

/// Reads assigned partitions. Not shared between tasks: `poll` takes `&mut`.
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
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
        Ok(Consumer {
            cluster,
            config,
            partitions: BTreeMap::new(),
            fetches: JoinSet::new(),
            brokers_fetching: HashSet::new(),
            buffered: VecDeque::new(),
            metadata_stale: false,
        })
    }

    /// Replaces the assignment. Partitions kept keep their positions; new
    /// ones start where the offset-reset policy says (or where `seek` puts
    /// them). Unknown topics and partitions are refused.
    pub async fn assign(&mut self, partitions: &[(&str, i32)]) -> Result<()> {
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
            let state = self.partitions.remove(&key).unwrap_or(PartitionState {
                position: None,
                fetch_position: None,
                pending_seek: match self.config.offset_reset {
                    OffsetReset::Earliest => Some(Offset::Beginning),
                    OffsetReset::Latest | OffsetReset::None => Some(Offset::End),
                },
                generation: 0,
                in_flight: false,
                high_watermark: -1,
            });
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

    /// Returns the next records, waiting up to `timeout` for some; an empty
    /// vector when none arrived in time.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
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
