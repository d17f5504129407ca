//! An idempotent producer's identity (producer id, epoch and generation)
//! and how it takes one from the cluster.

use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{InitProducerIdRequest, ProducerId};
use strata_protocol::batch::ProducerId as BatchProducerId;
use tracing::debug;

use crate::cluster::{Cluster, Target};
use crate::error::{check, Result};

/// The producer id and epoch an idempotent producer writes under, and its
/// generation: how many times it had to take a new one; a transactional
/// producer marks its batches as part of its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProducerIdentity {
    pub(super) producer_id: BatchProducerId,
    pub(super) producer_epoch: i16,
    pub(super) generation: u64,
    pub(super) transactional: bool,
}

/// An idempotent producer's identity and whether it must start over.
pub(super) struct Idempotence {
    pub(super) identity: Mutex<ProducerIdentity>,
    /// A batch failed for good, leaving a gap in its partition's sequence:
    /// the sender takes a new producer id once nothing is in flight.
    pub(super) reset_wanted: AtomicBool,
}

impl Idempotence {
    pub(super) fn identity(&self) -> ProducerIdentity {
        *self.identity.lock().expect("producer identity")
    }
}

/// A producer id for a new idempotent producer (InitProducerId), asked of
/// any broker; retriable refusals are asked again until the request
/// timeout.
pub(super) async fn init_producer_id(
    cluster: &Cluster,
    retry_backoff: Duration,
) -> Result<(BatchProducerId, i16)> {
    let request = InitProducerIdRequest::default()
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let deadline = Instant::now() + cluster.config().request_timeout;
    loop {
        let answer: Result<(BatchProducerId, i16)> = async {
            let response = cluster.call(Target::Any, &request).await?.response;
            check(|| "InitProducerId".to_string(), response.error_code, None)?;
            Ok((
                BatchProducerId(response.producer_id.0),
                response.producer_epoch,
            ))
        }
        .await;
        match answer {
            Err(error) if error.is_retriable() && Instant::now() < deadline => {
                debug!(%error, "asking for a producer id again");
                tokio::time::sleep(retry_backoff).await;
            }
            answer => return answer,
        }
    }
}
