//! The APIs Strata serves and the version range of each, as advertised in
//! ApiVersions. Clients negotiate the highest version both sides support.
//!
//! Known client traps this table answers:
//! - kafka-python guesses the broker's age from the advertised versions and
//!   falls back to the pre-v2 record format unless Produce >= 8, Fetch >= 7
//!   and Metadata >= 4 are advertised.
//! - Fetch 13 and later name topics by id only; Strata advertises up to 12.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// One supported API and its inclusive version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedApi {
    pub api_key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
}

const fn api(api_key: ApiKey, min_version: i16, max_version: i16) -> SupportedApi {
    SupportedApi {
        api_key,
        min_version,
        max_version,
    }
}

/// Every API the broker answers. An API missing here is refused at decode
/// time, so a handler never sees a request it was not written for.
pub const SUPPORTED_APIS: &[SupportedApi] = &[
    api(ApiKey::Produce, 3, 9),
    api(ApiKey::Fetch, 4, 12),
    api(ApiKey::ListOffsets, 1, 7),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::OffsetCommit, 2, 8),
    api(ApiKey::OffsetFetch, 1, 7),
    api(ApiKey::FindCoordinator, 0, 4),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    api(ApiKey::ConsumerGroupDescribe, 0, 1),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::ListGroups, 0, 4),
    api(ApiKey::ApiVersions, 0, 3),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::OffsetDelete, 0, 0),
    api(ApiKey::DescribeCluster, 0, 2),
    api(ApiKey::DescribeLogDirs, 1, 4),
    api(ApiKey::ElectLeaders, 0, 2),
    api(ApiKey::AlterPartitionReassignments, 0, 1),
    api(ApiKey::ListPartitionReassignments, 0, 0),
    api(ApiKey::InitProducerId, 0, 5),
    api(ApiKey::AddPartitionsToTxn, 0, 5),
    api(ApiKey::AddOffsetsToTxn, 0, 4),
    api(ApiKey::EndTxn, 0, 5),
    api(ApiKey::TxnOffsetCommit, 0, 4),
    api(ApiKey::WriteTxnMarkers, 1, 1),
    api(ApiKey::DescribeTransactions, 0, 0),
    api(ApiKey::ListTransactions, 0, 2),
    api(ApiKey::DescribeProducers, 0, 0),
    api(ApiKey::DescribeQuorum, 0, 2),
    // SaslHandshake v0 is followed by bare SASL tokens, v1 by
    // SaslAuthenticate requests. librdkafka counts SASL as supported only
    // if v0 is advertised, then uses v1.
    api(ApiKey::SaslHandshake, 0, 1),
    api(ApiKey::SaslAuthenticate, 0, 2),
    api(ApiKey::DescribeUserScramCredentials, 0, 0),
    api(ApiKey::AlterUserScramCredentials, 0, 0),
];

/// The supported range of `api_key`, if Strata serves it.
pub fn supported(api_key: ApiKey) -> Option<SupportedApi> {
    SUPPORTED_APIS
        .iter()
        .copied()
        .find(|supported| supported.api_key == api_key)
}

/// An ApiVersions response listing [`SUPPORTED_APIS`].
pub fn api_versions_response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|supported| {
            ApiVersion::default()
                .with_api_key(supported.api_key as i16)
                .with_min_version(supported.min_version)
                .with_max_version(supported.max_version)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_version_is_one_the_codec_knows() {
        for supported in SUPPORTED_APIS {
            let codec = supported.api_key.valid_versions();
            assert!(
                supported.min_version <= supported.max_version,
                "{supported:?}"
            );
            assert!(
                codec.min <= supported.min_version && supported.max_version <= codec.max,
                "{supported:?}"
            );
        }
    }

    #[test]
    fn modern_clients_get_the_v2_record_format() {
        let max = |api_key| supported(api_key).unwrap().max_version;
        assert!(max(ApiKey::Produce) >= 8);
        assert!(max(ApiKey::Fetch) >= 7);
        assert!(max(ApiKey::Metadata) >= 4);
        assert!(max(ApiKey::Fetch) < 13, "Fetch 13 needs topic ids");
    }
}
