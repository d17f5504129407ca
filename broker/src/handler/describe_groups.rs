//! DescribeGroups: each group's state, protocol and members as its
//! coordinator knows them; a group with neither members nor records is
//! `Dead`.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{str_bytes, Context};
use crate::group::classic::{DescribedMember, GroupState};

pub async fn handle(context: &Context, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let group = group_id.0.to_string();
        let described = DescribedGroup::default().with_group_id(group_id);
        let found = match context.groups.led_for(&group) {
            Ok(led) => {
                led.read(|groups| {
                    let (state, protocol_type) = groups.summary(&group)?;
                    let (protocol, members) = groups
                        .classic(&group)
                        .map(|classic| (classic.protocol().to_string(), classic.describe()))
                        .unwrap_or_default();
                    Some((state, protocol_type, protocol, members))
                })
                .await
            }
            Err(code) => Err(code),
        };
        groups.push(match found {
            Ok(Some((state, protocol_type, protocol, members))) => described
                .with_group_state(str_bytes(state.name()))
                .with_protocol_type(str_bytes(protocol_type))
                .with_protocol_data(str_bytes(if state == GroupState::Stable {
                    protocol
                } else {
                    String::new()
                }))
                .with_members(members.into_iter().map(member).collect()),
            Ok(None) => described.with_group_state(str_bytes("Dead")),
            Err(code) => described.with_error_code(code),
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
