//! Heartbeat: keeps a member's session alive; REBALANCE_IN_PROGRESS tells
//! it to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::error_code;
use super::Context;

pub async fn handle(context: &Context, request: HeartbeatRequest) -> HeartbeatResponse {
    let group = request.group_id.0.to_string();
    let answer = match context.groups.led_for(&group) {
        Ok(led) => {
            led.heartbeat(
                &group,
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id,
            )
            .await
        }
        Err(code) => Err(code),
    };
    let code = match answer {
        Ok(Ok(())) => 0,
        Ok(Err(error)) => error_code::for_group(&error),
        Err(error) => error_code::for_coordinator(&error),
    };
    HeartbeatResponse::default().with_error_code(code)
}
