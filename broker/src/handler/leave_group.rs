//! LeaveGroup: members leave at once instead of waiting for their session
//! to lapse, and the rest rebalance. v3+ carries several members, each
//! answered on its own.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::error_code;
use super::Context;

pub async fn handle(
    context: &Context,
    request: LeaveGroupRequest,
    api_version: i16,
) -> LeaveGroupResponse {
    let group = request.group_id.0.to_string();
    let leaving: Vec<(String, Option<String>)> = if api_version >= 3 {
        request
            .members
            .iter()
            .map(|member| {
                (
                    member.member_id.to_string(),
                    member.group_instance_id.as_ref().map(ToString::to_string),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let results = match context.groups.led_for(&group) {
        Ok(led) => led.leave(&group, &leaving).await,
        Err(code) => Err(code),
    };
    let results = match results {
        Ok(results) => results,
        Err(error) => {
            return LeaveGroupResponse::default()
                .with_error_code(error_code::for_coordinator(&error))
        }
    };
    let codes: Vec<i16> = results
        .iter()
        .map(|result| result.as_ref().err().map_or(0, error_code::for_group))
        .collect();
    if api_version < 3 {
        return LeaveGroupResponse::default().with_error_code(codes[0]);
    }
    let members = request
        .members
        .into_iter()
        .zip(codes)
        .map(|(member, code)| {
            MemberResponse::default()
                .with_member_id(member.member_id)
                .with_group_instance_id(member.group_instance_id)
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
