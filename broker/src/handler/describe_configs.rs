//! DescribeConfigs: a topic's effective configs (overrides marked as such),
//! or a broker's settings.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::error_code;
use super::{str_bytes, Context};
use crate::topic_config::TopicConfig;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's config sources: set on the topic, or the default.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

pub fn handle(context: &Context, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let metadata = context.controller.metadata();
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let wanted = |key: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|wanted| wanted.as_str() == key))
            };
            match resource.resource_type {
                RESOURCE_TOPIC => {
                    let Some(topic) = metadata.topics.get(resource.resource_name.as_str()) else {
                        return result
                            .with_error_code(error_code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_error_message(Some(str_bytes(format!(
                                "topic '{}' does not exist",
                                resource.resource_name
                            ))));
                    };
                    let config = TopicConfig::from_overrides(&topic.configs).unwrap_or_default();
                    let configs = config
                        .entries()
                        .into_iter()
                        .filter(|(key, _)| wanted(key))
                        .map(|(key, value)| {
                            let source = if topic.configs.contains_key(key) {
                                SOURCE_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            };
                            DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(key))
                                .with_value(Some(str_bytes(value)))
                                .with_config_source(source)
                        })
                        .collect();
                    result.with_configs(configs)
                }
                RESOURCE_BROKER => {
                    let entries = [
                        ("node.id", context.broker_id.to_string()),
                        ("advertised.listeners", context.advertised_listeners.clone()),
                    ];
                    let configs = entries
                        .into_iter()
                        .filter(|(key, _)| wanted(key))
                        .map(|(key, value)| {
                            DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(key))
                                .with_value(Some(str_bytes(value)))
                                .with_read_only(true)
                                .with_config_source(SOURCE_DEFAULT)
                        })
                        .collect();
                    result.with_configs(configs)
                }
                other => result
                    .with_error_code(error_code::INVALID_REQUEST)
                    .with_error_message(Some(str_bytes(format!(
                        "resource type {other} has no configs here"
                    )))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
