//! CreatePartitions: grow a topic through the controller.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{commit, str_bytes, Context};
use crate::controller::metadata::MetadataCommand;
use crate::server::error_code;

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
        if request.validate_only {
            let mut metadata = (*context.controller.metadata()).clone();
            results.push(match metadata.apply(command) {
                Ok(()) => result,
                Err(refused) => result
                    .with_error_code(error_code::for_metadata(&refused))
                    .with_error_message(Some(str_bytes(refused.to_string()))),
            });
            continue;
        }
        let committed = commit(context, command).await;
        results.push(
            result
                .with_error_code(committed.error_code)
                .with_error_message(committed.error_message),
        );
    }
    context.replicas.reconcile(&context.controller.metadata());
    CreatePartitionsResponse::default().with_results(results)
}
