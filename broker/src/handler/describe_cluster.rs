//! DescribeCluster: brokers, cluster id, controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{str_bytes, Context};

pub fn handle(context: &Context, _request: DescribeClusterRequest) -> DescribeClusterResponse {
    let metadata = context.controller.metadata();
    let brokers = metadata
        .alive_broker_records()
        .map(|broker| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(broker.broker_id))
                .with_host(str_bytes(broker.host.clone()))
                .with_port(broker.port as i32)
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(context.cluster_id.clone()))
        .with_controller_id(BrokerId(context.broker_id))
        .with_brokers(brokers)
}
