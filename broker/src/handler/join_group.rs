//! JoinGroup: a consumer enters its group's next generation. The answer
//! waits until the rebalance completes: every member rejoined, or the
//! rebalance timeout passed. The leader's answer lists every member.

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::error_code;
use super::{str_bytes, Context};
use crate::group::classic::{GroupError, JoinRequest};

/// Who sent the request, as DescribeGroups shows it.
pub struct Client<'a> {
    pub client_id: &'a str,
    pub client_host: &'a str,
}

pub async fn handle(
    context: &Context,
    request: JoinGroupRequest,
    api_version: i16,
    client: Client<'_>,
) -> JoinGroupResponse {
    let group = request.group_id.0.to_string();
    let refused = JoinGroupResponse::default().with_member_id(request.member_id.clone());
    if group.is_empty() {
        return refused.with_error_code(error_code::INVALID_GROUP_ID);
    }
    let led = match context.groups.led_for(&group) {
        Ok(led) => led,
        Err(error) => return refused.with_error_code(error_code::for_coordinator(&error)),
    };
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(ToString::to_string),
        client_id: client.client_id.to_string(),
        client_host: client.client_host.to_string(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: it is the session timeout.
        rebalance_timeout_ms: if api_version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|protocol| (protocol.name.to_string(), protocol.metadata.clone()))
            .collect(),
        require_known_member_id: api_version >= 4,
    };
    match led.join(&group, join).await {
        Ok(Ok(joined)) => JoinGroupResponse::default()
            .with_generation_id(joined.generation)
            .with_protocol_type(Some(str_bytes(joined.protocol_type)))
            .with_protocol_name(Some(str_bytes(joined.protocol)))
            .with_leader(str_bytes(joined.leader))
            .with_skip_assignment(joined.skip_assignment)
            .with_member_id(str_bytes(joined.member_id))
            .with_members(
                joined
                    .members
                    .into_iter()
                    .map(|member| {
                        JoinGroupResponseMember::default()
                            .with_member_id(str_bytes(member.member_id))
                            .with_group_instance_id(member.group_instance_id.map(str_bytes))
                            .with_metadata(member.metadata)
                    })
                    .collect(),
            ),
        Ok(Err(error)) => {
            let refused = refused.with_error_code(error_code::for_group(&error));
            match error {
                // The id to rejoin with (KIP-394).
                GroupError::MemberIdRequired(member_id) => {
                    refused.with_member_id(str_bytes(member_id))
                }
                _ => refused,
            }
        }
        Err(error) => refused.with_error_code(error_code::for_coordinator(&error)),
    }
}
