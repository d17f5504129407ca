//! CreatePartitions: grow a topic through the controller.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::error_code;
use super::{commit, str_bytes, Committed, Context};
use crate::controller::metadata::MetadataCommand;

pub async fn handle(
    context: &Context,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        if topic.assignments.is_some() {
            results.push(result.with_error_code(error_code::INVALID_REQUEST).with_error_message(Some(str_bytes(
                "manual replica assignments are not supported; give only the new partition count",
            ))));
            continue;
        }
        let command = MetadataCommand::CreatePartitions {
            name: topic.name.0.to_string(),
            partition_count: topic.count.max(0) as u32,
        };
        let committed = if request.validate_only {
            // Apply to a copy: the same checks, nothing committed.
            Committed::from((*context.controller.metadata()).clone().apply(command))
        } else {
            commit(context, command).await
        };
        results.push(
            result
                .with_error_code(committed.error_code)
                .with_error_message(committed.error_message),
        );
    }
    context.reconcile_replicas().await;
    CreatePartitionsResponse::default().with_results(results)
}
