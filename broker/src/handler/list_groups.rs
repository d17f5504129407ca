//! ListGroups: the groups this broker coordinates (clients ask every
//! broker and merge the answers).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{str_bytes, Context};
use crate::group::shard::GroupRecords;

/// The state ListGroups and DescribeGroups give a group on record: without
/// members served yet, every one is `Empty`.
pub const GROUP_STATE: &str = "Empty";

/// The group's protocol type, `""` if it never had members.
pub fn protocol_type(records: &GroupRecords) -> String {
    records
        .metadata
        .as_ref()
        .map_or_else(String::new, |(group, _)| group.protocol_type.clone())
}

pub async fn handle(
    context: &Context,
    request: ListGroupsRequest,
    api_version: i16,
) -> ListGroupsResponse {
    let mut groups = Vec::new();
    for led in context.groups.all_led() {
        let listed = led
            .read(|shard| {
                shard
                    .groups()
                    .map(|(name, records)| (name.clone(), protocol_type(records), GROUP_STATE))
                    .collect::<Vec<_>>()
            })
            .await;
        let Ok(listed) = listed else {
            continue; // leadership moved meanwhile: the new leader lists it
        };
        for (name, protocol_type, state) in listed {
            if !request.states_filter.is_empty()
                && !request
                    .states_filter
                    .iter()
                    .any(|wanted| wanted.as_str() == state)
            {
                continue;
            }
            let group = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(name)))
                .with_protocol_type(str_bytes(protocol_type));
            groups.push(if api_version >= 4 {
                group.with_group_state(str_bytes(state.to_string()))
            } else {
                group
            });
        }
    }
    ListGroupsResponse::default().with_groups(groups)
}
