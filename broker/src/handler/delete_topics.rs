//! DeleteTopics: commit the deletions; partitions here close and their
//! directories go.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};

use super::error_code;
use super::{commit, str_bytes, Context};
use crate::controller::metadata::MetadataCommand;
use crate::group::OFFSETS_TOPIC;

pub async fn handle(
    context: &Context,
    request: DeleteTopicsRequest,
    api_version: i16,
) -> DeleteTopicsResponse {
    // v0-5 list names; v6 lists topics by name or id.
    let mut names: Vec<TopicName> = request.topic_names;
    for topic in request.topics {
        match topic.name {
            Some(name) => names.push(name),
            None => {
                let metadata = context.controller.metadata();
                if let Some(record) = metadata
                    .topics
                    .values()
                    .find(|record| record.topic_id == topic.topic_id)
                {
                    names.push(TopicName(str_bytes(record.name.clone())));
                }
            }
        }
    }
    let mut results = Vec::with_capacity(names.len());
    for name in names {
        let command = MetadataCommand::DeleteTopic {
            name: name.0.to_string(),
        };
        let result = DeletableTopicResult::default().with_name(Some(name.clone()));
        if name.0.as_str() == OFFSETS_TOPIC {
            results.push(
                result
                    .with_error_code(error_code::INVALID_TOPIC)
                    .with_error_message(Some(str_bytes(
                        "__consumer_offsets holds every group's committed offsets and cannot be deleted",
                    ))),
            );
            continue;
        }
        let committed = commit(context, command).await;
        results.push(
            result
                .with_error_code(committed.error_code)
                .with_error_message(committed.error_message),
        );
    }
    context.reconcile_replicas().await;
    if api_version < 5 {
        results
            .iter_mut()
            .for_each(|result| result.error_message = None);
    }
    DeleteTopicsResponse::default().with_responses(results)
}
