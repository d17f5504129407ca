//! IncrementalAlterConfigs: set or remove topic config overrides through the
//! controller. The whole new set is validated before it is committed, so a
//! topic never holds a config its partitions would refuse.

use std::collections::BTreeMap;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::alter_configs::{self, RESOURCE_TOPIC};
use super::error_code;
use super::{str_bytes, Context};

const OPERATION_SET: i8 = 0;
const OPERATION_DELETE: i8 = 1;

pub async fn handle(
    context: &Context,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let refuse = |code: i16, message: String| {
            response
                .clone()
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message)))
        };
        if resource.resource_type != RESOURCE_TOPIC {
            responses.push(refuse(
                error_code::INVALID_REQUEST,
                "only topic configs can be altered".to_string(),
            ));
            continue;
        }
        let name = resource.resource_name.to_string();
        let metadata = context.controller.metadata();
        let Some(topic) = metadata.topics.get(&name) else {
            responses.push(refuse(
                error_code::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic '{name}' does not exist"),
            ));
            continue;
        };
        let mut configs: BTreeMap<String, String> = topic.configs.clone();
        let mut refused = None;
        for config in &resource.configs {
            match (config.config_operation, &config.value) {
                (OPERATION_SET, Some(value)) => {
                    configs.insert(config.name.to_string(), value.to_string());
                }
                (OPERATION_DELETE, _) => {
                    configs.remove(config.name.as_str());
                }
                (OPERATION_SET, None) => {
                    refused = Some(format!("setting '{}' needs a value", config.name));
                }
                (operation, _) => {
                    refused = Some(format!(
                        "config operation {operation} on '{}' is not supported (only set and delete)",
                        config.name
                    ));
                }
            }
        }
        if let Some(message) = refused {
            responses.push(refuse(error_code::INVALID_REQUEST, message));
            continue;
        }
        let (code, message) =
            alter_configs::replace_topic_configs(context, name, configs, request.validate_only)
                .await;
        responses.push(response.with_error_code(code).with_error_message(message));
    }
    context.reconcile_replicas().await;
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
