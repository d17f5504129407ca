//! The one place internal errors become Kafka error codes.

use kafka_protocol::ResponseError;
use strata_storage::error::SequenceError;
use strata_storage::StorageError;

use crate::controller::metadata::MetadataError;
use crate::coordinator_log::LogError;
use crate::group::classic::GroupError;
use crate::group::CoordinatorError;
use crate::replica::partition::AppendError;
use crate::txn::coordinator::TxnFailure;
use crate::txn::state::TxnError;

pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = ResponseError::UnknownTopicOrPartition.code();
pub const INVALID_RECORD: i16 = ResponseError::InvalidRecord.code();
pub const INVALID_REQUIRED_ACKS: i16 = ResponseError::InvalidRequiredAcks.code();
pub const NOT_ENOUGH_REPLICAS: i16 = ResponseError::NotEnoughReplicas.code();
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 =
    ResponseError::NotEnoughReplicasAfterAppend.code();
pub const FENCED_LEADER_EPOCH: i16 = ResponseError::FencedLeaderEpoch.code();
pub const UNKNOWN_LEADER_EPOCH: i16 = ResponseError::UnknownLeaderEpoch.code();
pub const REQUEST_TIMED_OUT: i16 = ResponseError::RequestTimedOut.code();
pub const INVALID_CONFIG: i16 = ResponseError::InvalidConfig.code();
pub const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();
pub const TOPIC_ALREADY_EXISTS: i16 = ResponseError::TopicAlreadyExists.code();
pub const UNSUPPORTED_VERSION: i16 = ResponseError::UnsupportedVersion.code();
pub const NOT_LEADER_OR_FOLLOWER: i16 = ResponseError::NotLeaderOrFollower.code();
pub const INVALID_TOPIC: i16 = ResponseError::InvalidTopicException.code();
pub const NOT_COORDINATOR: i16 = ResponseError::NotCoordinator.code();
pub const COORDINATOR_NOT_AVAILABLE: i16 = ResponseError::CoordinatorNotAvailable.code();
pub const INVALID_GROUP_ID: i16 = ResponseError::InvalidGroupId.code();
pub const UNKNOWN_MEMBER_ID: i16 = ResponseError::UnknownMemberId.code();
pub const OFFSET_METADATA_TOO_LARGE: i16 = ResponseError::OffsetMetadataTooLarge.code();
pub const UNKNOWN_TOPIC_ID: i16 = ResponseError::UnknownTopicId.code();
pub const GROUP_ID_NOT_FOUND: i16 = ResponseError::GroupIdNotFound.code();
pub const NON_EMPTY_GROUP: i16 = ResponseError::NonEmptyGroup.code();
pub const REBALANCE_IN_PROGRESS: i16 = ResponseError::RebalanceInProgress.code();
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = ResponseError::OutOfOrderSequenceNumber.code();
pub const INVALID_PRODUCER_EPOCH: i16 = ResponseError::InvalidProducerEpoch.code();
pub const UNKNOWN_PRODUCER_ID: i16 = ResponseError::UnknownProducerId.code();
pub const INVALID_REPLICATION_FACTOR: i16 = ResponseError::InvalidReplicationFactor.code();
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = ResponseError::GroupSubscribedToTopic.code();
pub const ELECTION_NOT_NEEDED: i16 = ResponseError::ElectionNotNeeded.code();
pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = ResponseError::PreferredLeaderNotAvailable.code();
pub const UNKNOWN_SERVER_ERROR: i16 = ResponseError::UnknownServerError.code();
pub const INVALID_TXN_STATE: i16 = ResponseError::InvalidTxnState.code();
pub const PRODUCER_FENCED: i16 = ResponseError::ProducerFenced.code();
pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = ResponseError::TransactionalIdNotFound.code();
pub const UNSTABLE_OFFSET_COMMIT: i16 = ResponseError::UnstableOffsetCommit.code();
pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = ResponseError::EligibleLeadersNotAvailable.code();
pub const UNSUPPORTED_SASL_MECHANISM: i16 = ResponseError::UnsupportedSaslMechanism.code();
pub const ILLEGAL_SASL_STATE: i16 = ResponseError::IllegalSaslState.code();
pub const SASL_AUTHENTICATION_FAILED: i16 = ResponseError::SaslAuthenticationFailed.code();
pub const RESOURCE_NOT_FOUND: i16 = ResponseError::ResourceNotFound.code();
pub const DUPLICATE_RESOURCE: i16 = ResponseError::DuplicateResource.code();
pub const UNACCEPTABLE_CREDENTIAL: i16 = ResponseError::UnacceptableCredential.code();

/// The code for a storage failure on one partition.
pub fn for_storage(error: &StorageError) -> i16 {
    use strata_storage::batch::BatchError;
    let code = match error {
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::InvalidBatch(invalid) => match invalid.source {
            BatchError::Crc { .. } | BatchError::Truncated { .. } => ResponseError::CorruptMessage,
            BatchError::Length { .. } => ResponseError::MessageTooLarge,
            _ => ResponseError::InvalidRecord,
        },
        StorageError::BatchTooLarge { .. } => ResponseError::RecordListTooLarge,
        StorageError::Io { .. } | StorageError::Corrupt { .. } | StorageError::Failed { .. } => {
            ResponseError::KafkaStorageError
        }
        StorageError::Sequence(refused) => {
            return match refused {
                SequenceError::OutOfOrderSequence { .. } => OUT_OF_ORDER_SEQUENCE_NUMBER,
                SequenceError::InvalidProducerEpoch { .. } => INVALID_PRODUCER_EPOCH,
                SequenceError::UnknownProducerId { .. } => UNKNOWN_PRODUCER_ID,
                SequenceError::ManyBatches { .. } => INVALID_RECORD,
            }
        }
        StorageError::OffsetNotIncreasing { .. } | StorageError::Config(_) => {
            ResponseError::UnknownServerError
        }
    };
    code.code()
}

/// The code for a leader's append that was refused.
pub fn for_append(error: &AppendError) -> i16 {
    match error {
        AppendError::NotLeader => NOT_LEADER_OR_FOLLOWER,
        AppendError::NotEnoughReplicas { .. } => NOT_ENOUGH_REPLICAS,
        AppendError::NotVerified { .. } => INVALID_TXN_STATE,
        AppendError::Storage(error) => for_storage(error),
    }
}

/// The code for a group request the coordinator refused.
pub fn for_group(error: &GroupError) -> i16 {
    let code = match error {
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
        GroupError::MemberIdRequired(_) => ResponseError::MemberIdRequired,
        GroupError::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
        GroupError::StaleMemberEpoch => ResponseError::StaleMemberEpoch,
        GroupError::UnreleasedInstanceId => ResponseError::UnreleasedInstanceId,
        GroupError::UnsupportedAssignor(_) => ResponseError::UnsupportedAssignor,
        GroupError::InvalidRegularExpression(_) => ResponseError::InvalidRegularExpression,
        GroupError::InvalidRequest(_) => ResponseError::InvalidRequest,
        // Kafka's answer to a request of one protocol for a group of the
        // other; a classic JoinGroup gets INCONSISTENT_GROUP_PROTOCOL.
        GroupError::WrongGroupType { .. } => ResponseError::GroupIdNotFound,
    };
    code.code()
}

/// The code for a group request the coordinator could not serve.
pub fn for_coordinator(error: &CoordinatorError) -> i16 {
    let code = match error {
        CoordinatorError::Group(error) => return for_group(error),
        CoordinatorError::NotCoordinator => ResponseError::NotCoordinator,
        CoordinatorError::Unavailable => ResponseError::CoordinatorNotAvailable,
        CoordinatorError::TimedOut => ResponseError::RequestTimedOut,
        CoordinatorError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        CoordinatorError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        CoordinatorError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        CoordinatorError::ProducerFenced => ResponseError::InvalidProducerEpoch,
    };
    code.code()
}

/// The code for a transactional request the coordinator refused;
/// `fenced` is what a fenced producer is told (PRODUCER_FENCED for the
/// versions that know it, INVALID_PRODUCER_EPOCH before).
pub fn for_txn(failure: &TxnFailure, fenced: i16) -> i16 {
    let code = match failure {
        TxnFailure::Log(LogError::NotCoordinator) => ResponseError::NotCoordinator,
        TxnFailure::Log(LogError::Unavailable) => ResponseError::CoordinatorNotAvailable,
        TxnFailure::Log(LogError::TimedOut) => ResponseError::RequestTimedOut,
        TxnFailure::Log(LogError::ProducerFenced) | TxnFailure::Txn(TxnError::ProducerFenced) => {
            return fenced
        }
        TxnFailure::Txn(TxnError::ConcurrentTransactions) => ResponseError::ConcurrentTransactions,
        TxnFailure::Txn(TxnError::InvalidProducerIdMapping) => {
            ResponseError::InvalidProducerIdMapping
        }
        TxnFailure::Txn(TxnError::InvalidTxnState) => ResponseError::InvalidTxnState,
        TxnFailure::Txn(TxnError::InvalidTransactionTimeout) => {
            ResponseError::InvalidTransactionTimeout
        }
    };
    code.code()
}

/// The code for a command the controller refused.
pub fn for_metadata(error: &MetadataError) -> i16 {
    let code = match error {
        MetadataError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        MetadataError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        MetadataError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        MetadataError::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
        MetadataError::InvalidReplicationFactor { .. } => ResponseError::InvalidReplicationFactor,
        MetadataError::InvalidReassignment(_) => ResponseError::InvalidReplicaAssignment,
        MetadataError::UnknownScramCredential { .. } => ResponseError::ResourceNotFound,
        MetadataError::InvalidScramCredential(_) => ResponseError::UnacceptableCredential,
        // Brokers' and the controller's own commands; a Kafka request never
        // carries them.
        MetadataError::ClusterIdSet(_)
        | MetadataError::UnknownBroker(_)
        | MetadataError::StaleIncarnation { .. }
        | MetadataError::UnknownPartition { .. }
        | MetadataError::FencedLeaderEpoch { .. }
        | MetadataError::StalePartitionEpoch { .. }
        | MetadataError::InvalidIsr { .. }
        | MetadataError::UncleanElectionDisabled(_) => ResponseError::UnknownServerError,
    };
    code.code()
}
