//! CreateTopics: validate names and configs, commit through the controller,
//! open the new partitions here before answering.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use uuid::Uuid;

use super::error_code;
use super::{commit, str_bytes, Context};
use crate::controller::metadata::{validate_topic_name, MetadataCommand};
use crate::topic_config::TopicConfig;

pub async fn handle(
    context: &Context,
    request: CreateTopicsRequest,
    api_version: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        let configs: BTreeMap<String, String> = topic
            .configs
            .iter()
            .filter_map(|config| {
                config
                    .value
                    .as_ref()
                    .map(|value| (config.name.to_string(), value.to_string()))
            })
            .collect();
        if let Err(error) = validate_topic_name(&name) {
            results.push(
                result
                    .with_error_code(error_code::for_metadata(&error))
                    .with_error_message(Some(str_bytes(error.to_string()))),
            );
            continue;
        }
        if let Err(error) = TopicConfig::from_overrides(&configs) {
            results.push(
                result
                    .with_error_code(error_code::INVALID_CONFIG)
                    .with_error_message(Some(str_bytes(error.to_string()))),
            );
            continue;
        }
        if !topic.assignments.is_empty() {
            results.push(result.with_error_code(error_code::INVALID_REQUEST).with_error_message(Some(str_bytes(
                "manual replica assignments are not supported; give a partition count and replication factor",
            ))));
            continue;
        }
        let partition_count = if topic.num_partitions == -1 {
            context.topic_defaults.partitions
        } else {
            topic.num_partitions.max(0) as u32
        };
        let replication_factor = if topic.replication_factor == -1 {
            context.topic_defaults.replication_factor
        } else {
            topic.replication_factor.max(0) as u16
        };
        let result = if api_version >= 5 {
            result
                .with_num_partitions(partition_count as i32)
                .with_replication_factor(replication_factor as i16)
        } else {
            result
        };
        if request.validate_only {
            let exists = context.controller.metadata().topics.contains_key(&name);
            results.push(if exists {
                result.with_error_code(error_code::TOPIC_ALREADY_EXISTS)
            } else {
                result
            });
            continue;
        }
        let topic_id = Uuid::new_v4();
        let command = MetadataCommand::CreateTopic {
            name,
            topic_id,
            partition_count,
            replication_factor,
            configs,
        };
        let committed = commit(context, command).await;
        let result = if committed.is_ok() && api_version >= 7 {
            result.with_topic_id(topic_id)
        } else {
            result
        };
        results.push(
            result
                .with_error_code(committed.error_code)
                .with_error_message(committed.error_message),
        );
    }
    context.reconcile_replicas().await;
    CreateTopicsResponse::default().with_topics(results)
}
