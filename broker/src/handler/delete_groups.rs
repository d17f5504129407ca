//! DeleteGroups: a group with no members loses its committed offsets and
//! its record (tombstones in `__consumer_offsets`).

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::Context;
use crate::group::records::Key;
use crate::server::error_code;

pub async fn handle(context: &Context, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let group = group_id.0.to_string();
        let code = delete(context, &group).await.err().unwrap_or(0);
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

async fn delete(context: &Context, group: &str) -> Result<(), i16> {
    let led = context.groups.led_for(group)?;
    let tombstones = led
        .read(|shard| {
            let records = shard.group(group)?;
            let mut keys: Vec<Key> = records
                .offsets
                .keys()
                .map(|(topic, partition)| Key::Offset {
                    group: group.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                })
                .collect();
            if records.metadata.is_some() {
                keys.push(Key::Group {
                    group: group.to_string(),
                });
            }
            Some(keys)
        })
        .await?
        .ok_or(error_code::GROUP_ID_NOT_FOUND)?;
    let tombstones: Vec<_> = tombstones.iter().map(|key| (key.encode(), None)).collect();
    led.write(&tombstones).await
}
