//! Producer ids for InitProducerId, taken from the controller in blocks of
//! `PRODUCER_ID_BLOCK_SIZE` (a committed metadata command each), so ids
//! never repeat across brokers, restarts or controller failovers: a block is
//! handed out once, and a restarted broker always takes a new one.

use std::ops::Range;
use std::time::Duration;

use tokio::sync::Mutex;
use uuid::Uuid;

use crate::controller::client::ControllerClient;
use crate::controller::metadata::{BrokerId, MetadataCommand};
use crate::limits;

/// Why no producer id could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error("the controller did not allocate producer ids: {0}")]
    Controller(String),
    #[error(
        "the producer id block the controller allocated did not reach this broker within {0:?}"
    )]
    NotVisible(Duration),
}

pub struct ProducerIds {
    broker_id: BrokerId,
    controller: ControllerClient,
    /// What is left of the block this broker process was given.
    block: Mutex<Range<i64>>,
}

impl ProducerIds {
    pub fn new(broker_id: BrokerId, controller: ControllerClient) -> Self {
        ProducerIds {
            broker_id,
            controller,
            block: Mutex::new(0..0),
        }
    }

    /// A producer id nobody has been given before.
    pub async fn next(&self) -> Result<i64, ProducerIdError> {
        let mut block = self.block.lock().await;
        if block.is_empty() {
            *block = self.allocate().await?;
        }
        Ok(block.next().expect("a fresh block is not empty"))
    }

    async fn allocate(&self) -> Result<Range<i64>, ProducerIdError> {
        let request_id = Uuid::new_v4();
        let command = MetadataCommand::AllocateProducerIds {
            broker_id: self.broker_id,
            request_id,
        };
        match self.controller.propose(command).await {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => return Err(ProducerIdError::Controller(refused.to_string())),
            Err(error) => return Err(ProducerIdError::Controller(error.to_string())),
        }
        let mut metadata = self.controller.subscribe();
        let ours = metadata.wait_for(|metadata| {
            metadata
                .producer_id_blocks
                .get(&self.broker_id)
                .is_some_and(|block| block.request_id == request_id)
        });
        let block =
            match tokio::time::timeout(limits::PRODUCER_ID_BLOCK_VISIBLE_TIMEOUT, ours).await {
                Ok(Ok(seen)) => seen.producer_id_blocks[&self.broker_id],
                Ok(Err(closed)) => return Err(ProducerIdError::Controller(closed.to_string())),
                Err(_elapsed) => {
                    return Err(ProducerIdError::NotVisible(
                        limits::PRODUCER_ID_BLOCK_VISIBLE_TIMEOUT,
                    ))
                }
            };
        tracing::info!(
            first_producer_id = block.first_producer_id,
            count = block.count,
            "took a block of producer ids"
        );
        Ok(block.first_producer_id..block.first_producer_id + block.count)
    }
}
