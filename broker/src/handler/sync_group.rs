//! SyncGroup: the leader hands in the assignment it computed; every member
//! gets its own share once the leader's has arrived and the group's record
//! is durable.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::error_code;
use super::{str_bytes, Context};
use crate::group::classic::SyncRequest;

pub async fn handle(context: &Context, request: SyncGroupRequest) -> SyncGroupResponse {
    let group = request.group_id.0.to_string();
    let led = match context.groups.led_for(&group) {
        Ok(led) => led,
        Err(error) => {
            return SyncGroupResponse::default()
                .with_error_code(error_code::for_coordinator(&error))
        }
    };
    let protocol_type = request.protocol_type.as_ref().map(ToString::to_string);
    let protocol = request.protocol_name.as_ref().map(ToString::to_string);
    let sync = SyncRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(ToString::to_string),
        generation: request.generation_id,
        protocol_type: protocol_type.clone(),
        protocol: protocol.clone(),
        assignments: request
            .assignments
            .into_iter()
            .map(|assignment| (assignment.member_id.to_string(), assignment.assignment))
            .collect(),
    };
    match led.sync(&group, sync).await {
        Ok(Ok(assignment)) => SyncGroupResponse::default()
            .with_protocol_type(protocol_type.map(str_bytes))
            .with_protocol_name(protocol.map(str_bytes))
            .with_assignment(assignment),
        Ok(Err(error)) => {
            SyncGroupResponse::default().with_error_code(error_code::for_group(&error))
        }
        Err(error) => {
            SyncGroupResponse::default().with_error_code(error_code::for_coordinator(&error))
        }
    }
}
