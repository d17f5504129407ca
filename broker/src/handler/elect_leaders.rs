//! ElectLeaders: give partitions back to their preferred replica (the
//! first one), or, where a topic allows it, to an out-of-sync replica.
//!
//! A preferred election is one controller command that moves every
//! partition whose preferred replica is alive and in sync but not leading
//! (what the controller does by itself with `--auto-leader-rebalance`).
//! An unclean election stays the topic's choice: it is refused unless the
//! topic has `unclean.leader.election.enable=true`, so no admin call loses
//! acknowledged records a topic asked to keep.

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};

use super::error_code;
use super::{commit, str_bytes, Context};
use crate::controller::metadata::{MetadataCommand, NO_LEADER};

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

pub async fn handle(context: &Context, request: ElectLeadersRequest) -> ElectLeadersResponse {
    let metadata = context.controller.metadata();
    // None asks for every partition.
    let wanted: Vec<(String, i32)> = match request.topic_partitions {
        Some(topics) => topics
            .into_iter()
            .flat_map(|topic| {
                let name = topic.topic.to_string();
                topic
                    .partitions
                    .into_iter()
                    .map(move |partition| (name.clone(), partition))
            })
            .collect(),
        None => metadata
            .topics
            .values()
            .flat_map(|topic| {
                (0..topic.partitions.len() as i32).map(|index| (topic.name.clone(), index))
            })
            .collect(),
    };
    let mut results: Vec<(String, i32, i16, Option<String>)> = Vec::with_capacity(wanted.len());
    match request.election_type {
        PREFERRED => {
            let alive = metadata.alive_brokers();
            let mut waiting = Vec::new();
            for (topic, partition) in wanted {
                let outcome = match metadata.partition(&topic, partition) {
                    None => Some((
                        error_code::UNKNOWN_TOPIC_OR_PARTITION,
                        "no such partition".to_string(),
                    )),
                    Some(record) if record.leader == record.replicas[0] => Some((
                        error_code::ELECTION_NOT_NEEDED,
                        format!("broker {} already leads", record.leader),
                    )),
                    Some(record)
                        if !alive.contains(&record.replicas[0])
                            || !record.isr.contains(&record.replicas[0]) =>
                    {
                        Some((
                            error_code::PREFERRED_LEADER_NOT_AVAILABLE,
                            format!(
                                "preferred replica {} is not alive and in sync",
                                record.replicas[0]
                            ),
                        ))
                    }
                    Some(_) => None,
                };
                match outcome {
                    Some((code, message)) => results.push((topic, partition, code, Some(message))),
                    None => waiting.push((topic, partition)),
                }
            }
            if !waiting.is_empty() {
                let committed = commit(context, MetadataCommand::ElectPreferredLeaders).await;
                let after = context.controller.metadata();
                for (topic, partition) in waiting {
                    let elected = after
                        .partition(&topic, partition)
                        .is_some_and(|record| record.leader == record.replicas[0]);
                    let (code, message) = if elected {
                        (0, None)
                    } else if !committed.is_ok() {
                        (
                            committed.error_code,
                            committed.error_message.as_ref().map(ToString::to_string),
                        )
                    } else {
                        (
                            error_code::PREFERRED_LEADER_NOT_AVAILABLE,
                            Some("the preferred replica left the ISR meanwhile".to_string()),
                        )
                    };
                    results.push((topic, partition, code, message));
                }
            }
        }
        UNCLEAN => {
            for (topic, partition) in wanted {
                let (code, message) = match metadata.partition(&topic, partition) {
                    None => (
                        error_code::UNKNOWN_TOPIC_OR_PARTITION,
                        Some("no such partition".to_string()),
                    ),
                    Some(record) if record.leader != NO_LEADER => (
                        error_code::ELECTION_NOT_NEEDED,
                        Some(format!("broker {} leads", record.leader)),
                    ),
                    Some(_) => {
                        let command = MetadataCommand::ElectUncleanLeader {
                            topic: topic.clone(),
                            partition: partition as u32,
                        };
                        let committed = commit(context, command).await;
                        let led = context
                            .controller
                            .metadata()
                            .partition(&topic, partition)
                            .is_some_and(|record| record.leader != NO_LEADER);
                        if led {
                            (0, None)
                        } else if committed.is_ok() {
                            (
                                error_code::ELIGIBLE_LEADERS_NOT_AVAILABLE,
                                Some("no replica is alive".to_string()),
                            )
                        } else {
                            (
                                error_code::ELIGIBLE_LEADERS_NOT_AVAILABLE,
                                committed.error_message.as_ref().map(ToString::to_string),
                            )
                        }
                    }
                };
                results.push((topic, partition, code, message));
            }
        }
        _ => return ElectLeadersResponse::default().with_error_code(error_code::INVALID_REQUEST),
    }
    context.reconcile_replicas().await;
    let mut by_topic: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, code, message) in results {
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(message.map(str_bytes));
        match by_topic
            .iter_mut()
            .find(|entry| entry.topic.as_str() == topic)
        {
            Some(entry) => entry.partition_result.push(result),
            None => by_topic.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(str_bytes(topic)))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(by_topic)
}
