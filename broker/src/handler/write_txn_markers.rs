//! WriteTxnMarkers: a transaction coordinator ends transactions on the
//! partitions this broker leads; each partition is answered once its
//! marker is durable on the ISR.

use futures::future::join_all;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use strata_storage::transaction::Marker;

use super::Context;
use crate::txn::state::Producer;

pub async fn handle(context: &Context, request: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let markers = request.markers.into_iter().map(|marker| async move {
        let producer = Producer {
            id: marker.producer_id.0,
            epoch: marker.producer_epoch,
        };
        let kind = if marker.transaction_result {
            Marker::Commit
        } else {
            Marker::Abort
        };
        let topics = marker.topics.into_iter().map(|topic| async move {
            let partitions = topic.partition_indexes.iter().map(|index| {
                let partition = (topic.name.0.to_string(), *index);
                async move {
                    let code = context
                        .markers
                        .write_here(kind, producer, marker.coordinator_epoch, &partition)
                        .await;
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(partition.1)
                        .with_error_code(code)
                }
            });
            WritableTxnMarkerTopicResult::default()
                .with_name(topic.name.clone())
                .with_partitions(join_all(partitions).await)
        });
        WritableTxnMarkerResult::default()
            .with_producer_id(marker.producer_id)
            .with_topics(join_all(topics).await)
    });
    WriteTxnMarkersResponse::default().with_markers(join_all(markers).await)
}
