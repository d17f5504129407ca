//! Routes a decoded request to its handler. Every API in the supported
//! table has an arm here; the decoder refuses the rest.

use kafka_protocol::messages::{
    RequestKind, ResponseKind, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use strata_protocol::request::Request;
use strata_protocol::versions;
use tracing::Instrument;

use super::connection::Session;
use crate::handler::{self, error_code, Context};

/// The response to `request`, or `None` when the client expects none
/// (Produce with acks=0).
/// `session` says who sent it and on which listener.
pub async fn dispatch(
    context: &Context,
    request: Request,
    session: &Session,
) -> Option<ResponseKind> {
    let span = tracing::debug_span!(
        "request",
        api = ?request.api_key,
        version = request.api_version,
        correlation_id = request.correlation_id(),
        client_id = request.client_id(),
    );
    let api_version = request.api_version;
    let api_key = request.api_key;
    let started = std::time::Instant::now();
    let response = async move {
        Some(match request.body {
            RequestKind::ApiVersions(_) => {
                ResponseKind::ApiVersions(versions::api_versions_response(0))
            }
            RequestKind::Metadata(body) => ResponseKind::Metadata(
                handler::metadata::handle(context, body, api_version, &session.listener).await,
            ),
            RequestKind::Produce(body) => {
                ResponseKind::Produce(handler::produce::handle(context, body, api_version).await?)
            }
            RequestKind::Fetch(body) => {
                ResponseKind::Fetch(handler::fetch::handle(context, body, api_version).await)
            }
            RequestKind::ListOffsets(body) => {
                ResponseKind::ListOffsets(handler::list_offsets::handle(context, body, api_version))
            }
            RequestKind::OffsetForLeaderEpoch(body) => ResponseKind::OffsetForLeaderEpoch(
                handler::offset_for_leader_epoch::handle(context, body),
            ),
            RequestKind::CreateTopics(body) => ResponseKind::CreateTopics(
                handler::create_topics::handle(context, body, api_version).await,
            ),
            RequestKind::DeleteTopics(body) => ResponseKind::DeleteTopics(
                handler::delete_topics::handle(context, body, api_version).await,
            ),
            RequestKind::CreatePartitions(body) => ResponseKind::CreatePartitions(
                handler::create_partitions::handle(context, body).await,
            ),
            RequestKind::DescribeConfigs(body) => {
                ResponseKind::DescribeConfigs(handler::describe_configs::handle(context, body))
            }
            RequestKind::AlterConfigs(body) => {
                ResponseKind::AlterConfigs(handler::alter_configs::handle(context, body).await)
            }
            RequestKind::IncrementalAlterConfigs(body) => ResponseKind::IncrementalAlterConfigs(
                handler::incremental_alter_configs::handle(context, body).await,
            ),
            RequestKind::DescribeCluster(body) => ResponseKind::DescribeCluster(
                handler::describe_cluster::handle(context, body, api_version, &session.listener),
            ),
            RequestKind::FindCoordinator(body) => ResponseKind::FindCoordinator(
                handler::find_coordinator::handle(context, body, api_version, &session.listener)
                    .await,
            ),
            RequestKind::JoinGroup(body) => {
                let client = handler::join_group::Client {
                    client_id: request.header.client_id.as_deref().unwrap_or_default(),
                    client_host: &session.client_host,
                };
                ResponseKind::JoinGroup(
                    handler::join_group::handle(context, body, api_version, client).await,
                )
            }
            RequestKind::SyncGroup(body) => {
                ResponseKind::SyncGroup(handler::sync_group::handle(context, body).await)
            }
            RequestKind::ConsumerGroupHeartbeat(body) => {
                let client = handler::join_group::Client {
                    client_id: request.header.client_id.as_deref().unwrap_or_default(),
                    client_host: &session.client_host,
                };
                ResponseKind::ConsumerGroupHeartbeat(
                    handler::consumer_group_heartbeat::handle(context, body, client).await,
                )
            }
            RequestKind::ConsumerGroupDescribe(body) => ResponseKind::ConsumerGroupDescribe(
                handler::consumer_group_describe::handle(context, body).await,
            ),
            RequestKind::Heartbeat(body) => {
                ResponseKind::Heartbeat(handler::heartbeat::handle(context, body).await)
            }
            RequestKind::LeaveGroup(body) => ResponseKind::LeaveGroup(
                handler::leave_group::handle(context, body, api_version).await,
            ),
            RequestKind::OffsetCommit(body) => {
                ResponseKind::OffsetCommit(handler::offset_commit::handle(context, body).await)
            }
            RequestKind::OffsetFetch(body) => ResponseKind::OffsetFetch(
                handler::offset_fetch::handle(context, body, api_version).await,
            ),
            RequestKind::ListGroups(body) => ResponseKind::ListGroups(
                handler::list_groups::handle(context, body, api_version).await,
            ),
            RequestKind::DescribeGroups(body) => {
                ResponseKind::DescribeGroups(handler::describe_groups::handle(context, body).await)
            }
            RequestKind::DeleteGroups(body) => {
                ResponseKind::DeleteGroups(handler::delete_groups::handle(context, body).await)
            }
            RequestKind::DescribeLogDirs(body) => {
                ResponseKind::DescribeLogDirs(handler::describe_log_dirs::handle(context, body))
            }
            RequestKind::ElectLeaders(body) => {
                ResponseKind::ElectLeaders(handler::elect_leaders::handle(context, body).await)
            }
            RequestKind::AlterPartitionReassignments(body) => {
                ResponseKind::AlterPartitionReassignments(
                    handler::partition_reassignments::alter(context, body, api_version).await,
                )
            }
            RequestKind::ListPartitionReassignments(body) => {
                ResponseKind::ListPartitionReassignments(handler::partition_reassignments::list(
                    context, body,
                ))
            }
            RequestKind::OffsetDelete(body) => {
                ResponseKind::OffsetDelete(handler::offset_delete::handle(context, body).await)
            }
            RequestKind::DeleteRecords(body) => {
                ResponseKind::DeleteRecords(handler::delete_records::handle(context, body))
            }
            RequestKind::DescribeProducers(body) => {
                ResponseKind::DescribeProducers(handler::describe_producers::handle(context, body))
            }
            RequestKind::InitProducerId(body) => ResponseKind::InitProducerId(
                handler::init_producer_id::handle(context, body, api_version).await,
            ),
            RequestKind::AddPartitionsToTxn(body) => ResponseKind::AddPartitionsToTxn(
                handler::add_partitions_to_txn::handle(context, body, api_version).await,
            ),
            RequestKind::AddOffsetsToTxn(body) => ResponseKind::AddOffsetsToTxn(
                handler::add_offsets_to_txn::handle(context, body).await,
            ),
            RequestKind::EndTxn(body) => {
                ResponseKind::EndTxn(handler::end_txn::handle(context, body, api_version).await)
            }
            RequestKind::TxnOffsetCommit(body) => ResponseKind::TxnOffsetCommit(
                handler::txn_offset_commit::handle(context, body).await,
            ),
            RequestKind::WriteTxnMarkers(body) => ResponseKind::WriteTxnMarkers(
                handler::write_txn_markers::handle(context, body).await,
            ),
            RequestKind::DescribeTransactions(body) => ResponseKind::DescribeTransactions(
                handler::describe_transactions::handle(context, body).await,
            ),
            RequestKind::ListTransactions(body) => ResponseKind::ListTransactions(
                handler::list_transactions::handle(context, body).await,
            ),
            RequestKind::DescribeQuorum(body) => ResponseKind::DescribeQuorum(
                handler::describe_quorum::handle(context, body, api_version),
            ),
            RequestKind::DescribeUserScramCredentials(body) => {
                ResponseKind::DescribeUserScramCredentials(
                    handler::describe_user_scram_credentials::handle(context, body),
                )
            }
            RequestKind::AlterUserScramCredentials(body) => {
                ResponseKind::AlterUserScramCredentials(
                    handler::alter_user_scram_credentials::handle(context, body).await,
                )
            }
            // A SASL exchange happens before anything else on a SASL
            // listener (`security::sasl`); here it is out of place.
            RequestKind::SaslHandshake(_) => ResponseKind::SaslHandshake(
                SaslHandshakeResponse::default().with_error_code(error_code::ILLEGAL_SASL_STATE),
            ),
            RequestKind::SaslAuthenticate(_) => ResponseKind::SaslAuthenticate(
                SaslAuthenticateResponse::default()
                    .with_error_code(error_code::ILLEGAL_SASL_STATE)
                    .with_error_message(Some(StrBytes::from_static_str(
                        "this connection is not on a SASL listener, or has authenticated already",
                    ))),
            ),
            other => {
                unreachable!("the decoder refuses APIs missing from SUPPORTED_APIS: {other:?}")
            }
        })
    }
    .instrument(span)
    .await;
    context.metrics.record_request(api_key, started.elapsed());
    response
}
