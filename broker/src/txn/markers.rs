//! Transaction markers: the coordinator ends a transaction on every
//! partition it wrote to, on each partition's leader (this broker's
//! partitions directly, another broker's with WriteTxnMarkers), and the
//! leader appends the control batch and answers once it is durable on the
//! ISR. On `__consumer_offsets` the group coordinator writes the marker, so
//! the transaction's staged offsets take effect (or go) with it.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId as WireProducerId, TopicName, WriteTxnMarkersRequest};
use strata_storage::batch::ProducerId;
use strata_storage::error::SequenceError;
use strata_storage::transaction::Marker;
use strata_storage::StorageError;
use tracing::debug;

use super::state::{Producer, TxnPartition};
use crate::clock::now_ms;
use crate::controller::client::ControllerClient;
use crate::controller::metadata::{BrokerId, NO_LEADER};
use crate::group::{GroupCoordinator, OFFSETS_TOPIC};
use crate::handler::error_code;
use crate::limits;
use crate::peers::Peers;
use crate::replica::partition::{AppendError, Commit};
use crate::replica::replica_manager::ReplicaManager;

const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// Writes markers here and on other brokers.
pub struct MarkerWriter {
    me: BrokerId,
    controller: ControllerClient,
    replicas: Arc<ReplicaManager>,
    groups: Arc<GroupCoordinator>,
    peers: Arc<Peers>,
}

impl MarkerWriter {
    pub fn new(
        me: BrokerId,
        controller: ControllerClient,
        replicas: Arc<ReplicaManager>,
        groups: Arc<GroupCoordinator>,
        peers: Arc<Peers>,
    ) -> Self {
        MarkerWriter {
            me,
            controller,
            replicas,
            groups,
            peers,
        }
    }

    /// Writes the marker ending `producer`'s transaction on each of
    /// `partitions`; returns those to try again (no leader now, a leader
    /// that did not answer). A partition whose topic is gone needs none.
    pub async fn write(
        &self,
        producer: Producer,
        commit: bool,
        coordinator_epoch: i32,
        partitions: &[TxnPartition],
    ) -> Vec<TxnPartition> {
        let marker = if commit {
            Marker::Commit
        } else {
            Marker::Abort
        };
        let mut by_leader: BTreeMap<BrokerId, Vec<TxnPartition>> = BTreeMap::new();
        let mut retry = Vec::new();
        let addresses = {
            let metadata = self.controller.metadata();
            for partition in partitions {
                let Some(topic) = metadata.topics.get(&partition.0) else {
                    continue; // deleted: nothing left to mark
                };
                if partition.1 < 0 || partition.1 as usize >= topic.partitions.len() {
                    continue;
                }
                match metadata
                    .partition(&partition.0, partition.1)
                    .map(|p| p.leader)
                {
                    Some(leader) if leader != NO_LEADER => {
                        by_leader.entry(leader).or_default().push(partition.clone())
                    }
                    _ => retry.push(partition.clone()),
                }
            }
            by_leader
                .keys()
                .map(|broker| {
                    let address = metadata
                        .brokers
                        .get(broker)
                        .map(|b| format!("{}:{}", b.host, b.port));
                    (*broker, address)
                })
                .collect::<BTreeMap<_, _>>()
        };
        let calls = by_leader.into_iter().map(|(leader, partitions)| {
            let address = addresses[&leader].clone();
            async move {
                let codes = if leader == self.me {
                    let writes = partitions.iter().map(|partition| {
                        self.write_here(marker, producer, coordinator_epoch, partition)
                    });
                    join_all(writes).await
                } else {
                    match address {
                        Some(address) => {
                            self.write_there(
                                leader,
                                &address,
                                commit,
                                producer,
                                coordinator_epoch,
                                &partitions,
                            )
                            .await
                        }
                        None => vec![error_code::NOT_LEADER_OR_FOLLOWER; partitions.len()],
                    }
                };
                partitions
                    .into_iter()
                    .zip(codes)
                    .filter(|(partition, code)| {
                        let done = is_done(*code);
                        if !done {
                            debug!(
                                topic = partition.0,
                                partition = partition.1,
                                code,
                                "a marker must be written again"
                            );
                        }
                        !done
                    })
                    .map(|(partition, _)| partition)
                    .collect::<Vec<_>>()
            }
        });
        for failed in join_all(calls).await {
            retry.extend(failed);
        }
        retry
    }

    async fn write_there(
        &self,
        leader: BrokerId,
        address: &str,
        commit: bool,
        producer: Producer,
        coordinator_epoch: i32,
        partitions: &[TxnPartition],
    ) -> Vec<i16> {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, index) in partitions {
            topics.entry(topic).or_default().push(*index);
        }
        let marker = WritableTxnMarker::default()
            .with_producer_id(WireProducerId(producer.id))
            .with_producer_epoch(producer.epoch)
            .with_transaction_result(commit)
            .with_coordinator_epoch(coordinator_epoch)
            .with_topics(
                topics
                    .iter()
                    .map(|(topic, indexes)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(crate::handler::str_bytes(*topic)))
                            .with_partition_indexes(indexes.clone())
                    })
                    .collect(),
            );
        let request = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
        let response = self
            .peers
            .call(
                leader,
                address,
                WRITE_TXN_MARKERS_VERSION,
                &request,
                limits::TXN_MARKER_TIMEOUT,
            )
            .await;
        let Ok(response) = response else {
            return vec![error_code::REQUEST_TIMED_OUT; partitions.len()];
        };
        let answered: BTreeMap<(String, i32), i16> = response
            .markers
            .iter()
            .flat_map(|marker| &marker.topics)
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .map(|p| ((topic.name.0.to_string(), p.partition_index), p.error_code))
            })
            .collect();
        partitions
            .iter()
            .map(|partition| {
                answered
                    .get(partition)
                    .copied()
                    .unwrap_or(error_code::UNKNOWN_SERVER_ERROR)
            })
            .collect()
    }

    /// Writes one marker on a partition this broker leads, durably; the
    /// Kafka code of the outcome.
    pub async fn write_here(
        &self,
        marker: Marker,
        producer: Producer,
        coordinator_epoch: i32,
        (topic, index): &TxnPartition,
    ) -> i16 {
        let producer_id = ProducerId(producer.id);
        if topic == OFFSETS_TOPIC {
            return match self.groups.led(*index) {
                Ok(led) => match led
                    .end_transaction(producer_id, producer.epoch, marker, coordinator_epoch)
                    .await
                {
                    Ok(()) => 0,
                    Err(error) => error_code::for_coordinator(&error),
                },
                Err(_) => error_code::NOT_LEADER_OR_FOLLOWER,
            };
        }
        let Some(partition) = self.replicas.partition(topic, *index) else {
            let exists = self
                .controller
                .metadata()
                .partition(topic, *index)
                .is_some();
            return if exists {
                error_code::NOT_LEADER_OR_FOLLOWER
            } else {
                error_code::UNKNOWN_TOPIC_OR_PARTITION
            };
        };
        let appended = match partition.append_marker(
            marker,
            producer_id,
            producer.epoch,
            coordinator_epoch,
            None,
            now_ms(),
        ) {
            Ok(appended) => appended,
            Err(error) => return for_marker(&error),
        };
        match partition
            .wait_committed(&appended, limits::TXN_MARKER_TIMEOUT)
            .await
        {
            // On every ISR member durably: done, even below min ISR.
            Commit::Committed | Commit::CommittedBelowMinIsr { .. } => 0,
            Commit::LeadershipLost => error_code::NOT_LEADER_OR_FOLLOWER,
            Commit::TimedOut => error_code::REQUEST_TIMED_OUT,
        }
    }
}

/// The code of a marker a partition refused.
fn for_marker(error: &AppendError) -> i16 {
    match error {
        AppendError::Storage(StorageError::Sequence(SequenceError::InvalidProducerEpoch {
            ..
        })) => error_code::INVALID_PRODUCER_EPOCH,
        error => error_code::for_append(error),
    }
}

/// Whether a marker answered with `code` needs no retry: written, its
/// partition gone, or a newer epoch of the producer already ended its
/// transaction there.
fn is_done(code: i16) -> bool {
    code == 0
        || code == error_code::UNKNOWN_TOPIC_OR_PARTITION
        || code == error_code::INVALID_PRODUCER_EPOCH
}
