//! DescribeGroups: each group's state and protocol as its coordinator
//! knows them; a group with no record is `Dead`.

use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::list_groups::{protocol_type, GROUP_STATE};
use super::{str_bytes, Context};

pub async fn handle(context: &Context, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let group = group_id.0.to_string();
        let described = DescribedGroup::default().with_group_id(group_id);
        let found = match context.groups.led_for(&group) {
            Ok(led) => {
                led.read(|shard| {
                    shard
                        .group(&group)
                        .map(|records| (GROUP_STATE, protocol_type(records)))
                })
                .await
            }
            Err(code) => Err(code),
        };
        groups.push(match found {
            Ok(Some((state, protocol_type))) => described
                .with_group_state(str_bytes(state.to_string()))
                .with_protocol_type(str_bytes(protocol_type)),
            Ok(None) => described.with_group_state(str_bytes("Dead".to_string())),
            Err(code) => described.with_error_code(code),
        });
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
