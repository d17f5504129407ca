//! ConsumerGroupDescribe (KIP-848): a consumer-protocol group's epochs,
//! assignor and members, each with what it owns and what it is heading
//! for. A classic group, or none, is GROUP_ID_NOT_FOUND.

use std::collections::HashMap;

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};
use uuid::Uuid;

use super::error_code;
use super::{str_bytes, Context};
use crate::group::assignor;
use crate::group::classic::GroupError;

pub async fn handle(
    context: &Context,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let names = context.controller.metadata().topic_names();
    let mut described = Vec::with_capacity(request.group_ids.len());
    for group_id in request.group_ids {
        let group = group_id.0.to_string();
        let answer = DescribedGroup::default().with_group_id(group_id);
        let read = match context.groups.led_for(&group) {
            Ok(led) => {
                led.read(|groups| {
                    let consumer = groups.consumer(&group)?;
                    Some(
                        answer
                            .clone()
                            .with_group_state(str_bytes(consumer.state_name()))
                            .with_group_epoch(consumer.group_epoch())
                            .with_assignment_epoch(consumer.assignment_epoch())
                            .with_assignor_name(str_bytes(consumer.assignor()))
                            .with_members(
                                consumer
                                    .describe()
                                    .into_iter()
                                    .map(|described| {
                                        let member = described.member;
                                        Member::default()
                                            .with_member_id(str_bytes(member.member_id.clone()))
                                            .with_instance_id(
                                                member.instance_id.clone().map(str_bytes),
                                            )
                                            .with_rack_id(member.rack_id.clone().map(str_bytes))
                                            .with_member_epoch(member.member_epoch)
                                            .with_client_id(str_bytes(member.client_id.clone()))
                                            .with_client_host(str_bytes(member.client_host.clone()))
                                            .with_subscribed_topic_names(
                                                member
                                                    .subscribed_names
                                                    .iter()
                                                    .map(|name| TopicName(str_bytes(name.clone())))
                                                    .collect(),
                                            )
                                            .with_subscribed_topic_regex(
                                                member.subscribed_regex.clone().map(str_bytes),
                                            )
                                            .with_assignment(assignment(&member.assigned, &names))
                                            .with_target_assignment(assignment(
                                                &described.target,
                                                &names,
                                            ))
                                    })
                                    .collect(),
                            ),
                    )
                })
                .await
            }
            Err(code) => Err(code),
        };
        described.push(match read {
            Ok(Some(group)) => group,
            Ok(None) => {
                let error = GroupError::WrongGroupType {
                    group: group.clone(),
                    protocol: "consumer",
                };
                answer
                    .with_error_code(error_code::for_group(&error))
                    .with_error_message(error.message().map(str_bytes))
            }
            Err(error) => answer.with_error_code(error_code::for_coordinator(&error)),
        });
    }
    ConsumerGroupDescribeResponse::default().with_groups(described)
}

fn assignment(assigned: &assignor::Assignment, names: &HashMap<Uuid, String>) -> Assignment {
    Assignment::default().with_topic_partitions(
        assigned
            .iter()
            .map(|(topic_id, partitions)| {
                TopicPartitions::default()
                    .with_topic_id(*topic_id)
                    .with_topic_name(TopicName(str_bytes(
                        names.get(topic_id).cloned().unwrap_or_default(),
                    )))
                    .with_partitions(partitions.iter().copied().collect())
            })
            .collect(),
    )
}
