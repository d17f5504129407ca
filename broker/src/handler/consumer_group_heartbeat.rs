//! ConsumerGroupHeartbeat (KIP-848): a consumer-protocol member joins,
//! stays, or leaves, and learns the partitions it is to own; the
//! coordinator's assignor decides them (see `group/consumer.rs`).

use std::collections::BTreeSet;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use super::error_code;
use super::join_group::Client;
use super::{str_bytes, Context};
use crate::group::assignor::{self, Topics};
use crate::group::consumer::HeartbeatRequest;
use crate::group::OFFSETS_TOPIC;

pub async fn handle(
    context: &Context,
    request: ConsumerGroupHeartbeatRequest,
    client: Client<'_>,
) -> ConsumerGroupHeartbeatResponse {
    let response = ConsumerGroupHeartbeatResponse::default()
        .with_heartbeat_interval_ms(context.groups.config().consumer_heartbeat_interval_ms);
    let group = request.group_id.0.to_string();
    if group.is_empty() {
        return response
            .with_error_code(error_code::INVALID_REQUEST)
            .with_error_message(Some(str_bytes("GroupId must not be empty")));
    }
    let led = match context.groups.led_for(&group) {
        Ok(led) => led,
        Err(error) => return response.with_error_code(error_code::for_coordinator(&error)),
    };
    let topics = topics(context);
    let heartbeat = HeartbeatRequest {
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.map(|id| id.to_string()),
        rack_id: request.rack_id.map(|id| id.to_string()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_names: request
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|name| name.0.to_string()).collect()),
        subscribed_regex: request
            .subscribed_topic_regex
            .map(|regex| regex.to_string()),
        server_assignor: request.server_assignor.map(|name| name.to_string()),
        owned: request.topic_partitions.map(|owned| {
            owned
                .into_iter()
                .map(|topic| {
                    let partitions: BTreeSet<i32> = topic.partitions.into_iter().collect();
                    (topic.topic_id, partitions)
                })
                .collect()
        }),
        client_id: client.client_id.to_string(),
        client_host: client.client_host.to_string(),
    };
    match led.consumer_heartbeat(&group, heartbeat, &topics).await {
        Ok(Ok(beat)) => response
            .with_member_id(Some(str_bytes(beat.member_id)))
            .with_member_epoch(beat.member_epoch)
            .with_assignment(beat.assignment.map(assignment)),
        Ok(Err(error)) => response
            .with_error_code(error_code::for_group(&error))
            .with_error_message(error.message().map(str_bytes)),
        Err(error) => response.with_error_code(error_code::for_coordinator(&error)),
    }
}

/// Every topic a member may subscribe to, by name: its id and partitions.
pub(crate) fn topics(context: &Context) -> Topics {
    context
        .controller
        .metadata()
        .topics
        .iter()
        .filter(|(name, _)| name.as_str() != OFFSETS_TOPIC)
        .map(|(name, topic)| {
            (
                name.clone(),
                (topic.topic_id, topic.partitions.len() as u32),
            )
        })
        .collect()
}

fn assignment(assigned: assignor::Assignment) -> Assignment {
    Assignment::default().with_topic_partitions(
        assigned
            .into_iter()
            .map(|(topic_id, partitions)| {
                TopicPartitions::default()
                    .with_topic_id(topic_id)
                    .with_partitions(partitions.into_iter().collect())
            })
            .collect(),
    )
}
