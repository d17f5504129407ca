//! DeleteGroups: a group with no members loses its committed offsets and
//! its record (tombstones in `__consumer_offsets`); one with members is
//! refused with NON_EMPTY_GROUP.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::{error_code, Context};

pub async fn handle(context: &Context, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let group = group_id.0.to_string();
        let deleted = match context.groups.led_for(&group) {
            Ok(led) => led.delete(&group).await,
            Err(code) => Err(code),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(
                    deleted.map_or_else(|error| error_code::for_coordinator(&error), |()| 0),
                ),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
