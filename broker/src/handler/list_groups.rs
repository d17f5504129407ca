//! ListGroups: the groups this broker coordinates (clients ask every
//! broker and merge the answers).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{str_bytes, Context};
use crate::coordinator_log::LogError;

pub async fn handle(
    context: &Context,
    request: ListGroupsRequest,
    api_version: i16,
) -> ListGroupsResponse {
    let mut groups = Vec::new();
    for led in context.groups.all_led() {
        let Ok::<_, LogError>(listed) = led.read(|groups| groups.list()).await else {
            continue; // leadership moved meanwhile: the new leader lists it
        };
        for (name, state, protocol_type) in listed {
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
                group.with_group_state(str_bytes(state))
            } else {
                group
            });
        }
    }
    ListGroupsResponse::default().with_groups(groups)
}
