//! What a producer is configured with, and the builder that sets it.

use std::time::Duration;

use strata_protocol::batch::Compression;

use super::accumulator::DUPLICATE_WINDOW_BATCHES;
use crate::cluster::ClientConfig;
use crate::error::{Error, Result};

/// When a produce request is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Fire and forget: no response, no offsets.
    None,
    /// When the leader has appended the batch.
    Leader,
    /// When every in-sync replica has the batch durably.
    All,
}

impl Acks {
    pub(super) fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Producer settings. Defaults suit throughput with bounded latency.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub client: ClientConfig,
    pub acks: Acks,
    /// How long an open batch waits for more records before it is sent.
    pub linger: Duration,
    /// Codec for each batch's records; consumers of any Kafka client read
    /// them back.
    pub compression: Compression,
    /// A batch closes when the next record would take it past this size.
    pub batch_bytes: usize,
    /// Bytes of records accepted but not yet acknowledged; `send` waits
    /// while they would exceed it.
    pub buffer_bytes: usize,
    /// How long `send` waits for buffer space before failing.
    pub send_wait_max: Duration,
    /// Requests in flight per broker.
    pub in_flight_max: usize,
    /// Attempts after the first for a batch that failed with a retriable
    /// error. Unbounded by default, as in Kafka since KIP-91: the delivery
    /// timeout bounds a batch instead, so a leader election that takes
    /// longer than a few backoffs does not fail the records.
    pub retries: u32,
    pub retry_backoff: Duration,
    /// A batch not acknowledged this long after it closed fails.
    pub delivery_timeout: Duration,
    /// Idempotent writes (see the module docs). `None`: on when the other
    /// settings allow it (acks=all, at most 5 requests in flight, retries),
    /// as Kafka's clients decide; `Some(true)` with settings that do not
    /// allow it is a configuration error.
    pub idempotence: Option<bool>,
    /// Makes the producer transactional (see `transaction.rs`): one live
    /// instance per id; a new one fences the old.
    pub transactional_id: Option<String>,
    /// How long a transaction may stay open before its coordinator aborts
    /// it (`transaction.timeout.ms`).
    pub transaction_timeout: Duration,
}

impl ProducerConfig {
    pub fn new(bootstrap: &str) -> ProducerConfig {
        ProducerConfig {
            client: ClientConfig::new(bootstrap),
            acks: Acks::All,
            linger: Duration::from_millis(5),
            compression: Compression::None,
            batch_bytes: 256 << 10,
            buffer_bytes: 64 << 20,
            send_wait_max: Duration::from_secs(60),
            in_flight_max: 5,
            retries: u32::MAX,
            retry_backoff: Duration::from_millis(100),
            delivery_timeout: Duration::from_secs(120),
            idempotence: None,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }

    /// Whether this producer writes idempotently.
    pub fn idempotent(&self) -> bool {
        self.transactional_id.is_some()
            || self
                .idempotence
                .unwrap_or_else(|| self.allows_idempotence())
    }

    pub(super) fn allows_idempotence(&self) -> bool {
        self.acks == Acks::All && self.in_flight_max <= DUPLICATE_WINDOW_BATCHES && self.retries > 0
    }

    pub(super) fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(what.to_string()));
        if self.batch_bytes == 0 || self.batch_bytes > u32::MAX as usize {
            return bad("batch_bytes must be between 1 and 4 GiB");
        }
        if self.buffer_bytes < self.batch_bytes || self.buffer_bytes > u32::MAX as usize {
            return bad("buffer_bytes must be at least batch_bytes and at most 4 GiB");
        }
        if self.in_flight_max == 0 {
            return bad("in_flight_max must be at least 1");
        }
        if self.idempotence == Some(true) && !self.allows_idempotence() {
            return bad("idempotence needs acks=all, retries and at most 5 requests in flight");
        }
        if let Some(id) = &self.transactional_id {
            if id.is_empty() {
                return bad("a transactional id must not be empty");
            }
            if self.idempotence == Some(false) || !self.allows_idempotence() {
                return bad("a transactional producer is idempotent: it needs acks=all, retries and at most 5 requests in flight");
            }
        }
        Ok(())
    }
}

/// Builds a [`Producer`].
///
/// ```no_run
/// # async fn run() -> Result<(), strata_client::Error> {
/// use std::time::Duration;
/// use strata_client::{Acks, Producer, ProducerRecord};
///
/// let producer = Producer::builder("127.0.0.1:9092")
///     .acks(Acks::All)
///     .linger(Duration::from_millis(2))
///     .build()
///     .await?;
/// let delivery = producer.send(ProducerRecord::new("orders").key(b"order-7").value(b"paid")).await?;
/// let metadata = delivery.await?;
/// println!("partition {} offset {:?}", metadata.partition, metadata.offset);
/// producer.close().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ProducerBuilder {
    pub(super) config: ProducerConfig,
}

impl ProducerBuilder {
    pub fn client_id(mut self, client_id: &str) -> Self {
        self.config.client.client_id = client_id.to_string();
        self
    }
    /// TLS and SASL settings of every connection.
    pub fn security(mut self, security: crate::Security) -> Self {
        self.config.client.security = security;
        self
    }
    pub fn acks(mut self, acks: Acks) -> Self {
        self.config.acks = acks;
        self
    }
    pub fn linger(mut self, linger: Duration) -> Self {
        self.config.linger = linger;
        self
    }
    pub fn compression(mut self, compression: Compression) -> Self {
        self.config.compression = compression;
        self
    }
    pub fn batch_bytes(mut self, batch_bytes: usize) -> Self {
        self.config.batch_bytes = batch_bytes;
        self
    }
    pub fn buffer_bytes(mut self, buffer_bytes: usize) -> Self {
        self.config.buffer_bytes = buffer_bytes;
        self
    }
    pub fn send_wait_max(mut self, wait: Duration) -> Self {
        self.config.send_wait_max = wait;
        self
    }
    pub fn in_flight_max(mut self, in_flight_max: usize) -> Self {
        self.config.in_flight_max = in_flight_max;
        self
    }
    pub fn retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.config.retries = retries;
        self.config.retry_backoff = backoff;
        self
    }
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.config.delivery_timeout = timeout;
        self
    }
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.client.request_timeout = timeout;
        self
    }
    /// Turns idempotent writes on or off (by default on where the other
    /// settings allow them).
    pub fn idempotence(mut self, idempotence: bool) -> Self {
        self.config.idempotence = Some(idempotence);
        self
    }

    /// Makes the producer transactional under `id`.
    pub fn transactional_id(mut self, id: &str) -> Self {
        self.config.transactional_id = Some(id.to_string());
        self
    }
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.config.transaction_timeout = timeout;
        self
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }
}
