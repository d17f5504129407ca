//! Reading the assigned partitions: resolving seeks (ListOffsets), pipelined
//! fetches (one in flight per broker, the next sent as soon as a response
//! says where its partitions reach) and decoding the buffered batches into
//! records while the next fetch is in flight.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest};
use strata_protocol::batch::{BatchHeader, BatchIter};
use strata_protocol::compression::{batch_records, DECOMPRESSED_BATCH_BYTES_MAX};
use strata_protocol::record::RecordIter;
use strata_protocol::transaction::Marker;
use tracing::debug;

use super::config::{Offset, OffsetReset};
use super::{Buffered, Consumer, ConsumerRecord, FetchDone, TopicPartition};
use crate::cluster::topic_name;
use crate::error::{Error, Result};

impl Consumer {
    /// Looks up offsets for partitions with a pending seek.
    pub(super) async fn resolve_seeks(&mut self) -> Result<()> {
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
    pub(super) async fn list_offset(
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

    pub(super) async fn list_offset_once(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<i64> {
        let leader = self.cluster.leader(topic, partition).ok_or_else(|| {
            Error::broker(
                format!("{topic}-{partition}"),
                ResponseError::LeaderNotAvailable.code(),
                None,
            )
        })?;
        self.cluster
            .list_offset(leader, topic, partition, timestamp, self.config.isolation)
            .await
    }

    /// Sends a fetch to every leader that has partitions ready to fetch and
    /// no fetch in flight.
    pub(super) async fn start_fetches(&mut self) {
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
                .with_isolation_level(self.config.isolation.wire())
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
                            operation: "Fetch".to_string(),
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
    pub(super) fn complete_fetch(&mut self, done: FetchDone) -> Result<()> {
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
                    let aborted = data
                        .aborted_transactions
                        .iter()
                        .flatten()
                        .map(|aborted| (aborted.producer_id.0, aborted.first_offset))
                        .collect();
                    self.buffered.push_back(Buffered {
                        partition: key,
                        generation,
                        records,
                        aborted,
                    });
                }
            }
        }
        Ok(())
    }

    /// The records of a buffered fetch from the partition's position on.
    /// Under `read_committed`, the batches of the aborted transactions the
    /// fetch listed are skipped (Kafka's rule: a producer's transactional
    /// batches are dropped from the first offset of its aborted transaction
    /// up to its abort marker).
    pub(super) fn decode(&mut self, buffered: Buffered) -> Result<Vec<ConsumerRecord>> {
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
        let mut aborted = buffered.aborted;
        aborted.sort_by_key(|(_, first_offset)| std::cmp::Reverse(*first_offset));
        let mut aborting: HashSet<i64> = HashSet::new();
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
            if header.is_transactional() {
                while let Some(&(producer_id, first_offset)) = aborted.last() {
                    if first_offset > header.last_offset() {
                        break;
                    }
                    aborting.insert(producer_id);
                    aborted.pop();
                }
            }
            if header.is_control() {
                if Marker::of(&header, batch) == Some(Marker::Abort) {
                    aborting.remove(&header.producer_id.0);
                }
                position = header.last_offset() + 1;
                continue;
            }
            if header.is_transactional() && aborting.contains(&header.producer_id.0) {
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
