//! DescribeCluster: brokers, cluster id, controller. Fenced brokers are
//! listed (marked) only when a v2+ request asks for them.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};

use super::{str_bytes, Context};

pub fn handle(
    context: &Context,
    request: DescribeClusterRequest,
    api_version: i16,
    listener: &str,
) -> DescribeClusterResponse {
    let metadata = context.controller.metadata();
    let include_fenced = api_version >= 2 && request.include_fenced_brokers;
    let brokers = metadata
        .brokers
        .values()
        .filter(|broker| include_fenced || !broker.fenced)
        .filter_map(|broker| {
            let (host, port) = broker.endpoint(listener)?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(broker.broker_id.into())
                    .with_host(str_bytes(host.to_string()))
                    .with_port(port as i32)
                    .with_is_fenced(broker.fenced),
            )
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(context.cluster_id.clone()))
        .with_controller_id(context.controller_id().into())
        .with_brokers(brokers)
}
