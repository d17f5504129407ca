//! FindCoordinator: the broker leading a group's `__consumer_offsets`
//! partition (key type 0), or a transactional id's `__transaction_state`
//! partition (key type 1). Each topic is created on the first request for
//! its kind of key, as in Kafka.

use std::collections::BTreeMap;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::error_code;
use super::{commit, str_bytes, Context};
use crate::controller::metadata::{self, MetadataCommand};
use crate::coordinator_log::InternalTopic;
use crate::group::records::OFFSETS;
use crate::topic_config::{CLEANUP_POLICY, SEGMENT_BYTES};
use crate::txn::TRANSACTION_STATE;

/// `key_type` of a consumer group.
const GROUP_KEY_TYPE: i8 = 0;
/// `key_type` of a transactional id.
const TRANSACTION_KEY_TYPE: i8 = 1;

pub async fn handle(
    context: &Context,
    request: FindCoordinatorRequest,
    api_version: i16,
    listener: &str,
) -> FindCoordinatorResponse {
    let keys = if api_version >= 4 {
        request.coordinator_keys
    } else {
        vec![request.key]
    };
    let topic = match request.key_type {
        GROUP_KEY_TYPE => Ok(OFFSETS),
        TRANSACTION_KEY_TYPE => Ok(TRANSACTION_STATE),
        other => Err((
            error_code::INVALID_REQUEST,
            format!("unknown coordinator key type {other} (0: group, 1: transactional id)"),
        )),
    };
    let ready = match topic {
        Ok(topic) => ensure_topic(context, topic).await.map(|()| topic),
        Err(error) => Err(error),
    };
    let coordinators: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let found = ready
                .clone()
                .and_then(|topic| coordinator_of(context, topic, &key, listener));
            let coordinator = Coordinator::default().with_key(key);
            match found {
                Ok((node_id, host, port)) => coordinator
                    .with_node_id(BrokerId(node_id))
                    .with_host(str_bytes(host))
                    .with_port(port),
                Err((code, message)) => coordinator
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(message))),
            }
        })
        .collect();
    if api_version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let first = coordinators.into_iter().next().unwrap_or_default();
    let response = FindCoordinatorResponse::default()
        .with_error_code(first.error_code)
        .with_node_id(first.node_id)
        .with_host(first.host)
        .with_port(first.port);
    if api_version >= 1 {
        response.with_error_message(first.error_message)
    } else {
        response
    }
}

/// The leader of `key`'s partition of `topic`: id, host and port.
fn coordinator_of(
    context: &Context,
    topic: InternalTopic,
    key: &StrBytes,
    listener: &str,
) -> Result<(i32, String, i32), (i16, String)> {
    let metadata = context.controller.metadata();
    let partition = topic.partition_for(key);
    let leader = metadata
        .partition(topic.name, partition)
        .map_or(metadata::NO_LEADER, |partition| partition.leader);
    let not_available = || {
        (
            error_code::COORDINATOR_NOT_AVAILABLE,
            format!(
                "{} partition {partition} has no leader right now",
                topic.name
            ),
        )
    };
    let broker = metadata.brokers.get(&leader).ok_or_else(not_available)?;
    let (host, port) = broker.endpoint(listener).ok_or_else(not_available)?;
    Ok((leader.0, host.to_string(), port as i32))
}

/// Creates `topic` if it does not exist yet.
async fn ensure_topic(context: &Context, topic: InternalTopic) -> Result<(), (i16, String)> {
    let alive = {
        let metadata = context.controller.metadata();
        if metadata.topics.contains_key(topic.name) {
            return Ok(());
        }
        metadata.alive_brokers().len()
    };
    // Compacted: a commit, group or transaction record stays until a newer
    // one for its key (or a tombstone) replaces it; 100 MiB segments as in
    // Kafka's offsets.topic.segment.bytes and
    // transaction.state.log.segment.bytes.
    let configs = BTreeMap::from([
        (CLEANUP_POLICY.to_string(), "compact".to_string()),
        (SEGMENT_BYTES.to_string(), (100 << 20).to_string()),
    ]);
    let create = MetadataCommand::CreateTopic {
        name: topic.name.to_string(),
        topic_id: Uuid::new_v4(),
        partition_count: topic.partitions,
        replication_factor: topic.replication_factor.min(alive.max(1) as u16),
        configs,
    };
    let committed = commit(context, create).await;
    if committed.is_ok() || committed.error_code == error_code::TOPIC_ALREADY_EXISTS {
        // This broker serves the partitions it leads before it names
        // coordinators (others open theirs as the metadata reaches them;
        // clients find the coordinator again while it says it is not one).
        context.reconcile_replicas().await;
        return Ok(());
    }
    Err((
        error_code::COORDINATOR_NOT_AVAILABLE,
        format!(
            "cannot create {}: {}",
            topic.name,
            committed
                .error_message
                .as_deref()
                .unwrap_or("unknown reason")
        ),
    ))
}
