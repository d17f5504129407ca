//! Starting sagas: step 0's success, written by the service that owns
//! step 0 once its own work is done (an order placed, say).

use std::sync::Arc;

use serde_json::Value;

use super::definition::SagaDefinition;
use super::envelope::{borrow_headers, Envelope, EventKind};
use super::service::{new_event_id, Clock, SystemClock};
use crate::partitioner::partition_for_key;
use crate::{Acks, ClientConfig, Delivery, Error, Producer, ProducerRecord, Result};

/// Writes the first event of sagas. Idempotent, acks=all: a retried start
/// is not written twice. Saga ids must be unique: a saga id that has
/// finished and been forgotten would start again.
pub struct SagaStarter {
    producer: Producer,
    definition: Arc<SagaDefinition>,
    service: String,
    topic: String,
    partition_count: i32,
}

impl SagaStarter {
    /// A starter for `definition`'s sagas, writing as `service` (the owner
    /// of step 0).
    pub async fn new(
        bootstrap: &str,
        definition: &SagaDefinition,
        service: &str,
    ) -> Result<SagaStarter> {
        SagaStarter::with_client(&ClientConfig::new(bootstrap), definition, service).await
    }

    /// As [`SagaStarter::new`], connecting as `client` says (TLS, SASL).
    pub async fn with_client(
        client: &ClientConfig,
        definition: &SagaDefinition,
        service: &str,
    ) -> Result<SagaStarter> {
        let producer = Producer::builder_for(client)
            .acks(Acks::All)
            .idempotence(true)
            .linger(std::time::Duration::from_millis(2))
            .build()
            .await?;
        let topic = definition.events_topic();
        let partition_count = producer.partitions_for(&topic).await?.len() as i32;
        if partition_count == 0 {
            return Err(Error::UnknownTopic(topic));
        }
        Ok(SagaStarter {
            producer,
            definition: Arc::new(definition.clone()),
            service: service.to_string(),
            topic,
            partition_count,
        })
    }

    /// Starts saga `saga_id` with `payload` (step 0's success payload).
    /// The returned delivery resolves once the event is acknowledged.
    pub async fn start(&self, saga_id: &str, payload: Value) -> Result<Delivery> {
        self.start_correlated(saga_id, saga_id, payload).await
    }

    /// As [`SagaStarter::start`], tagging every event of the saga with the
    /// caller's `correlation_id` (a request id, say).
    pub async fn start_correlated(
        &self,
        saga_id: &str,
        correlation_id: &str,
        payload: Value,
    ) -> Result<Delivery> {
        let start = first_event(
            &self.definition,
            saga_id,
            correlation_id,
            &self.service,
            payload,
            SystemClock.now_ms(),
        );
        let (headers, value) = start.encode();
        let headers = borrow_headers(&headers);
        let partition = partition_for_key(saga_id.as_bytes(), self.partition_count);
        self.producer
            .send(
                ProducerRecord::new(&self.topic)
                    .partition(partition)
                    .key(saga_id.as_bytes())
                    .value(&value)
                    .headers(&headers),
            )
            .await
    }

    /// Waits until every started saga's first event is acknowledged.
    pub async fn flush(&self) {
        self.producer.flush().await;
    }
}

/// The first event of saga `saga_id`: step 0's success, written by
/// `service` at `now_ms`, with step 1's deadline.
pub(crate) fn first_event(
    definition: &SagaDefinition,
    saga_id: &str,
    correlation_id: &str,
    service: &str,
    payload: Value,
    now_ms: i64,
) -> Envelope {
    let event_id = new_event_id();
    Envelope {
        saga_id: saga_id.to_string(),
        saga_type: definition.name.clone(),
        event_type: definition.steps[0].succeeded.clone(),
        causation_id: event_id.clone(),
        event_id,
        step_index: 0,
        step_count: definition.step_count(),
        kind: EventKind::Succeeded,
        correlation_id: correlation_id.to_string(),
        timestamp_ms: now_ms,
        next_deadline_ms: definition
            .steps
            .get(1)
            .and_then(|next| next.timeout)
            .map(|timeout| now_ms + timeout.as_millis() as i64),
        service: service.to_string(),
        reason: None,
        payload,
    }
}
