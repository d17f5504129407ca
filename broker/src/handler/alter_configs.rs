//! AlterConfigs, the form before IncrementalAlterConfigs (librdkafka's
//! `alter_configs` and kafka-python's use it): the configs given become the
//! topic's whole set of overrides; any override not given goes back to its
//! default, as in Kafka.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::error_code;
use super::{commit, str_bytes, Committed, Context};
use crate::controller::metadata::MetadataCommand;
use crate::topic_config::TopicConfig;

pub const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

pub async fn handle(context: &Context, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let (code, message) = match resource.resource_type {
            RESOURCE_TOPIC => {
                let mut configs = BTreeMap::new();
                let mut refused = None;
                for config in &resource.configs {
                    match &config.value {
                        Some(value) => {
                            configs.insert(config.name.to_string(), value.to_string());
                        }
                        None => refused = Some(format!("'{}' needs a value", config.name)),
                    }
                }
                match refused {
                    Some(message) => (error_code::INVALID_REQUEST, Some(str_bytes(message))),
                    None => {
                        let name = resource.resource_name.to_string();
                        replace_topic_configs(context, name, configs, request.validate_only).await
                    }
                }
            }
            RESOURCE_BROKER => (
                error_code::INVALID_REQUEST,
                Some(str_bytes(
                    "broker configs are logd's flags and config file; they cannot be altered at run time",
                )),
            ),
            other => (
                error_code::INVALID_REQUEST,
                Some(str_bytes(format!("configs of resource type {other} cannot be altered"))),
            ),
        };
        responses.push(response.with_error_code(code).with_error_message(message));
    }
    context.reconcile_replicas().await;
    AlterConfigsResponse::default().with_responses(responses)
}

/// Makes `configs` the overrides of topic `name` once the whole set is
/// valid (checks only, with `validate_only`): the error code and message.
pub async fn replace_topic_configs(
    context: &Context,
    name: String,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> (i16, Option<StrBytes>) {
    if !context.controller.metadata().topics.contains_key(&name) {
        return (
            error_code::UNKNOWN_TOPIC_OR_PARTITION,
            Some(str_bytes(format!("topic '{name}' does not exist"))),
        );
    }
    if let Err(error) = TopicConfig::from_overrides(&configs) {
        return (
            error_code::INVALID_CONFIG,
            Some(str_bytes(error.to_string())),
        );
    }
    if validate_only {
        return (0, None);
    }
    let committed: Committed = commit(
        context,
        MetadataCommand::AlterTopicConfigs { name, configs },
    )
    .await;
    (committed.error_code, committed.error_message)
}
