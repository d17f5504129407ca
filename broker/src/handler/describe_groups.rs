//! DescribeGroups: each group's state, protocol and members as its
//! coordinator knows them; a group with neither members nor records is
//! `Dead`. A consumer-protocol (KIP-848) group's members are shown as a
//! classic consumer group's would be (subscription and assignment in the
//! consumer protocol's layout, version 0), so tools that know only
//! DescribeGroups still see who owns what.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, DescribeGroupsRequest,
    DescribeGroupsResponse, TopicName,
};
use kafka_protocol::protocol::Encodable;
use uuid::Uuid;

use super::{error_code, str_bytes, Context};
use crate::group::classic::DescribedMember;
use crate::group::consumer::ConsumerGroup;

pub async fn handle(context: &Context, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let names = context.controller.metadata().topic_names();
    let mut groups = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let group = group_id.0.to_string();
        let described = DescribedGroup::default().with_group_id(group_id);
        let found = match context.groups.led_for(&group) {
            Ok(led) => {
                led.read(|groups| {
                    let (state, protocol_type) = groups.summary(&group)?;
                    let (protocol, members) = match groups.consumer(&group) {
                        Some(consumer) => (
                            consumer.assignor().to_string(),
                            consumer_members(consumer, &names),
                        ),
                        None => groups
                            .classic(&group)
                            .map(|classic| (classic.protocol().to_string(), classic.describe()))
                            .unwrap_or_default(),
                    };
                    Some((state, protocol_type, protocol, members))
                })
                .await
            }
            Err(code) => Err(code),
        };
        groups.push(match found {
            Ok(Some((state, protocol_type, protocol, members))) => described
                .with_group_state(str_bytes(state))
                .with_protocol_type(str_bytes(protocol_type))
                .with_protocol_data(str_bytes(if state == "Stable" {
                    protocol
                } else {
                    String::new()
                }))
                .with_members(members.into_iter().map(member).collect()),
            Ok(None) => described.with_group_state(str_bytes("Dead")),
            Err(error) => described.with_error_code(error_code::for_coordinator(&error)),
        });
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

fn member(member: DescribedMember) -> DescribedGroupMember {
    DescribedGroupMember::default()
        .with_member_id(str_bytes(member.member_id))
        .with_group_instance_id(member.group_instance_id.map(str_bytes))
        .with_client_id(str_bytes(member.client_id))
        .with_client_host(str_bytes(member.client_host))
        .with_member_metadata(member.metadata)
        .with_member_assignment(member.assignment)
}

fn consumer_members(
    consumer: &ConsumerGroup,
    names: &HashMap<Uuid, String>,
) -> Vec<DescribedMember> {
    let name = |topic_id: &Uuid| names.get(topic_id).cloned().unwrap_or_default();
    consumer
        .describe()
        .into_iter()
        .map(|described| {
            let member = described.member;
            let subscription = ConsumerProtocolSubscription::default().with_topics(
                member
                    .subscribed_names
                    .iter()
                    .cloned()
                    .map(str_bytes)
                    .collect(),
            );
            let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
                member
                    .assigned
                    .iter()
                    .map(|(topic_id, partitions)| {
                        TopicPartition::default()
                            .with_topic(TopicName(str_bytes(name(topic_id))))
                            .with_partitions(partitions.iter().copied().collect())
                    })
                    .collect(),
            );
            DescribedMember {
                member_id: member.member_id.clone(),
                group_instance_id: member.instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                metadata: versioned(&subscription),
                assignment: versioned(&assignment),
            }
        })
        .collect()
}

/// `message` in the consumer protocol's layout: an i16 version (0), then
/// the message at that version.
fn versioned(message: &impl Encodable) -> Bytes {
    let mut bytes = BytesMut::new();
    bytes.put_i16(0);
    message
        .encode(&mut bytes, 0)
        .expect("version 0 encodes every field set here");
    bytes.freeze()
}
