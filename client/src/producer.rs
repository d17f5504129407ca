//! The producer: records are appended to per-partition batches
//! (accumulators), a sender task ships full or lingered batches to each
//! partition's leader, and each record's [`Delivery`] resolves when its batch
//! is acknowledged.
//!
//! Flow: `send` reserves the record's bytes from the buffer budget (waiting
//! when the budget is spent), appends it to the partition's open batch, and
//! returns. A batch closes when the next record would not fit in
//! `batch_bytes` or when it is `linger` old; the sender task groups closed
//! batches by leader, at most one batch per partition per request and at
//! most `in_flight_max` requests per broker, and spawns one task per request.
//! The budget is released when a batch's outcome is known.
//!
//! Ordering: batches of one partition are sent in order over one connection
//! and the broker appends a connection's requests in the order it received
//! them. A retried batch goes back into its queue in the order it was
//! closed, and its partition sends nothing else until its backoff is over.
//!
//! Idempotence (on by default with acks=all, as in Kafka's clients since
//! 3.0): the producer takes a producer id (InitProducerId) when it is built,
//! and each batch gets the partition's next sequence number when it closes.
//! The broker answers a retry of a batch it already wrote with the original
//! offsets and writes nothing, so retries neither duplicate nor reorder. A
//! batch refused as out of order while an earlier batch of its partition is
//! being retried is retried behind it. A batch that fails for good leaves a
//! gap in its partition's sequence: the producer then waits until nothing is
//! in flight, takes a new producer id and numbers every waiting batch again
//! from 0 (what Kafka's clients do by bumping the epoch).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    InitProducerIdRequest, ProduceRequest, ProduceResponse, ProducerId,
};
use strata_protocol::batch::{restamp_producer, Compression};
use strata_protocol::record::{BatchBuilder, Header, Record};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::cluster::{topic_name, ClientConfig, Cluster, TopicInfo};
use crate::connection::Sent;
use crate::error::{check, Error, Result};
use crate::partitioner::partition_for_key;

/// The broker remembers each idempotent producer's last five batches per
/// partition, so a retry must be among them: an idempotent producer keeps
/// at most this many requests in flight per broker, and no partition sends
/// a batch this many past the oldest one whose outcome is not known.
const DUPLICATE_WINDOW_BATCHES: usize = 5;

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
    fn wire(self) -> i16 {
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
        }
    }

    /// Whether this producer writes idempotently.
    pub fn idempotent(&self) -> bool {
        self.idempotence
            .unwrap_or_else(|| self.allows_idempotence())
    }

    fn allows_idempotence(&self) -> bool {
        self.acks == Acks::All && self.in_flight_max <= DUPLICATE_WINDOW_BATCHES && self.retries > 0
    }

    fn validate(&self) -> Result<()> {
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
    config: ProducerConfig,
}

impl ProducerBuilder {
    pub fn client_id(mut self, client_id: &str) -> Self {
        self.config.client.client_id = client_id.to_string();
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

    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }

    /// Connects to the cluster and starts the sender task.
    pub async fn build(self) -> Result<Producer> {
        Producer::with_config(self.config).await
    }
}

/// A record to send. Its bytes are copied into a batch by `send`, so it
/// borrows what it carries.
#[derive(Debug, Clone, Copy)]
pub struct ProducerRecord<'a> {
    pub topic: &'a str,
    /// Chosen by the partitioner when `None`.
    pub partition: Option<i32>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header<'a>],
    /// Create time; now when `None`.
    pub timestamp_ms: Option<i64>,
}

impl<'a> ProducerRecord<'a> {
    pub fn new(topic: &'a str) -> Self {
        ProducerRecord {
            topic,
            partition: None,
            key: None,
            value: None,
            headers: &[],
            timestamp_ms: None,
        }
    }
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }
    pub fn value(mut self, value: &'a [u8]) -> Self {
        self.value = Some(value);
        self
    }
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
    pub fn headers(mut self, headers: &'a [Header<'a>]) -> Self {
        self.headers = headers;
        self
    }
    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    /// Upper bound of the record's size inside a batch.
    fn size_bytes(&self) -> usize {
        const RECORD_OVERHEAD_BYTES_MAX: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;
        let headers: usize = self
            .headers
            .iter()
            .map(|header| 10 + header.key.len() + header.value.map_or(0, <[u8]>::len))
            .sum();
        RECORD_OVERHEAD_BYTES_MAX
            + self.key.map_or(0, <[u8]>::len)
            + self.value.map_or(0, <[u8]>::len)
            + headers
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: i32,
    /// `None` with `acks=0`: the broker does not say.
    pub offset: Option<i64>,
    /// The record's create time, or the broker's append time when the topic
    /// uses log-append time.
    pub timestamp_ms: i64,
}

/// Resolves when the record's batch is acknowledged (or has failed).
#[derive(Debug)]
#[must_use = "a delivery reports whether the record was acknowledged"]
pub struct Delivery {
    ack: Arc<BatchAck>,
    partition: i32,
    offset_delta: i64,
    timestamp_ms: i64,
}

impl Future for Delivery {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.ack.poll_outcome(cx.waker()) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(error)) => Poll::Ready(Err(error.clone())),
            Poll::Ready(Ok(outcome)) => Poll::Ready(Ok(RecordMetadata {
                partition: self.partition,
                offset: outcome.base_offset.map(|base| base + self.offset_delta),
                timestamp_ms: outcome.log_append_time_ms.unwrap_or(self.timestamp_ms),
            })),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct BatchOutcome {
    base_offset: Option<i64>,
    log_append_time_ms: Option<i64>,
}

/// The outcome of one batch, shared by the deliveries of its records.
#[derive(Debug, Default)]
struct BatchAck {
    outcome: OnceLock<Result<BatchOutcome>>,
    wakers: Mutex<Vec<Waker>>,
}

impl BatchAck {
    fn complete(&self, outcome: Result<BatchOutcome>) {
        if self.outcome.set(outcome).is_ok() {
            for waker in std::mem::take(&mut *self.wakers.lock().expect("wakers")) {
                waker.wake();
            }
        }
    }

    fn is_complete(&self) -> bool {
        self.outcome.get().is_some()
    }

    fn poll_outcome(&self, waker: &Waker) -> Poll<&Result<BatchOutcome>> {
        if let Some(outcome) = self.outcome.get() {
            return Poll::Ready(outcome);
        }
        let mut wakers = self.wakers.lock().expect("wakers");
        // Checked again under the lock: `complete` sets, then takes the wakers.
        if let Some(outcome) = self.outcome.get() {
            return Poll::Ready(outcome);
        }
        if !wakers.iter().any(|known| known.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        Poll::Pending
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| self.poll_outcome(cx.waker()).map(drop)).await
    }
}

/// A batch that is closed: built, waiting to be sent, or in flight. Dropping
/// it before it completes (the producer went away) fails its records.
struct ClosedBatch {
    topic: Arc<str>,
    partition: i32,
    bytes: Bytes,
    ack: Arc<BatchAck>,
    _budget: OwnedSemaphorePermit,
    closed_at: Instant,
    attempts: u32,
    not_before: Instant,
    /// Its place among its partition's batches, in the order they closed.
    order: u64,
    record_count: i32,
    /// Why its last attempt failed, reported if its delivery times out.
    last_error: Option<Error>,
}

impl Drop for ClosedBatch {
    fn drop(&mut self) {
        self.ack.complete(Err(Error::Closed));
    }
}

struct OpenBatch {
    builder: BatchBuilder,
    ack: Arc<BatchAck>,
    budget: OwnedSemaphorePermit,
    opened_at: Instant,
    /// Its place among its partition's batches (they close in the order
    /// they open).
    order: u64,
}

#[derive(Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    /// Closed batches waiting to be sent, in the order they closed.
    ready: VecDeque<ClosedBatch>,
    /// Batches whose outcome is not known yet with their order, oldest
    /// first (pruned lazily).
    unacked: VecDeque<(u64, Arc<BatchAck>)>,
    /// Batches opened so far.
    opened_count: u64,
    /// As an idempotent producer: the sequence the next batch starts at,
    /// in producer generation `generation`.
    next_sequence: i32,
    generation: u64,
}

impl PartitionQueue {
    /// Closes the open batch, if any, numbering it as `identity` says, and
    /// queues it behind the others.
    fn close_open(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        now: Instant,
        identity: Option<ProducerIdentity>,
    ) {
        let Some(open) = self.open.take() else {
            return;
        };
        let record_count = open.builder.record_count() as i32;
        let mut builder = open.builder;
        if let Some(identity) = identity {
            let base_sequence = self.take_sequences(identity.generation, record_count);
            builder =
                builder.producer(identity.producer_id, identity.producer_epoch, base_sequence);
        }
        self.ready.push_back(ClosedBatch {
            topic: Arc::clone(topic),
            partition,
            bytes: Bytes::from(builder.build()),
            ack: open.ack,
            _budget: open.budget,
            closed_at: now,
            attempts: 0,
            not_before: now,
            order: open.order,
            record_count,
            last_error: None,
        });
    }

    /// The base sequence of the next `record_count` records in producer
    /// generation `generation` (a new generation starts at 0).
    fn take_sequences(&mut self, generation: u64, record_count: i32) -> i32 {
        if self.generation != generation {
            self.generation = generation;
            self.next_sequence = 0;
        }
        let base_sequence = self.next_sequence;
        // Sequences wrap at i32::MAX, as the broker expects.
        self.next_sequence =
            ((base_sequence as i64 + record_count as i64) % (i32::MAX as i64 + 1)) as i32;
        base_sequence
    }

    /// Puts a batch to retry back in the order it closed.
    fn requeue(&mut self, batch: ClosedBatch) {
        let position = self
            .ready
            .iter()
            .position(|queued| queued.order > batch.order)
            .unwrap_or(self.ready.len());
        self.ready.insert(position, batch);
    }

    /// The outcome of a new batch and its order.
    fn open_ack(&mut self) -> (Arc<BatchAck>, u64) {
        self.prune_unacked();
        self.opened_count += 1;
        let ack = Arc::new(BatchAck::default());
        self.unacked
            .push_back((self.opened_count, Arc::clone(&ack)));
        (ack, self.opened_count)
    }

    fn prune_unacked(&mut self) {
        while self
            .unacked
            .front()
            .is_some_and(|(_, ack)| ack.is_complete())
        {
            self.unacked.pop_front();
        }
    }

    /// Whether a batch closed before `ack`'s is still waiting for its
    /// outcome.
    fn has_unacked_before(&mut self, ack: &Arc<BatchAck>) -> bool {
        self.prune_unacked();
        self.unacked
            .iter()
            .take_while(|(_, earlier)| !Arc::ptr_eq(earlier, ack))
            .any(|(_, earlier)| !earlier.is_complete())
    }

    /// Whether the batch of `order` may be sent: it is fewer than
    /// `DUPLICATE_WINDOW_BATCHES` past the oldest batch without an outcome. A
    /// batch whose answer was lost is then retried before more than four
    /// later ones were written, so the broker still remembers it.
    fn may_send(&mut self, order: u64) -> bool {
        self.prune_unacked();
        self.unacked
            .front()
            .is_none_or(|(oldest, _)| order < oldest + DUPLICATE_WINDOW_BATCHES as u64)
    }
}

/// The producer id and epoch an idempotent producer writes under, and its
/// generation: how many times it had to take a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProducerIdentity {
    producer_id: i64,
    producer_epoch: i16,
    generation: u64,
}

/// An idempotent producer's identity and whether it must start over.
struct Idempotence {
    identity: Mutex<ProducerIdentity>,
    /// A batch failed for good, leaving a gap in its partition's sequence:
    /// the sender takes a new producer id once nothing is in flight.
    reset_wanted: AtomicBool,
}

impl Idempotence {
    fn identity(&self) -> ProducerIdentity {
        *self.identity.lock().expect("producer identity")
    }
}

struct TopicQueue {
    name: Arc<str>,
    partitions: Vec<Arc<Mutex<PartitionQueue>>>,
    /// Partition for records without key or partition; moves on when its
    /// batch closes (Kafka's sticky partitioner).
    sticky: AtomicUsize,
}

struct Inner {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    budget: Arc<Semaphore>,
    topics: RwLock<HashMap<Arc<str>, Arc<TopicQueue>>>,
    /// Wakes the sender: a batch closed, a batch opened (linger deadline), a
    /// request finished, or the producer is closing.
    wake: Notify,
    in_flight: Mutex<HashMap<i32, usize>>,
    closed: AtomicBool,
    /// Set when the producer writes idempotently.
    idempotence: Option<Idempotence>,
}

/// An asynchronous, batching producer. Cheap to clone; clones share batches
/// and connections.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
    _sender: Arc<SenderTask>,
}

struct SenderTask(tokio::task::JoinHandle<()>);

impl Drop for SenderTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Producer {
    pub fn builder(bootstrap: &str) -> ProducerBuilder {
        ProducerBuilder {
            config: ProducerConfig::new(bootstrap),
        }
    }

    pub async fn with_config(config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let cluster = Cluster::connect(config.client.clone()).await?;
        let idempotence = if config.idempotent() {
            let (producer_id, producer_epoch) =
                init_producer_id(&cluster, config.retry_backoff).await?;
            Some(Idempotence {
                identity: Mutex::new(ProducerIdentity {
                    producer_id,
                    producer_epoch,
                    generation: 0,
                }),
                reset_wanted: AtomicBool::new(false),
            })
        } else {
            None
        };
        let inner = Arc::new(Inner {
            cluster,
            budget: Arc::new(Semaphore::new(config.buffer_bytes)),
            config,
            topics: RwLock::new(HashMap::new()),
            wake: Notify::new(),
            in_flight: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            idempotence,
        });
        let sender = tokio::spawn(run_sender(Arc::clone(&inner)));
        Ok(Producer {
            inner,
            _sender: Arc::new(SenderTask(sender)),
        })
    }

    /// Adds `record` to its partition's batch and returns once it is
    /// buffered; the returned [`Delivery`] resolves when it is acknowledged.
    /// Waits while the buffer budget is spent (at most `send_wait_max`).
    pub async fn send(&self, record: ProducerRecord<'_>) -> Result<Delivery> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let size_bytes = record.size_bytes();
        if size_bytes > inner.config.buffer_bytes {
            return Err(Error::RecordTooLarge {
                size_bytes,
                limit_bytes: inner.config.buffer_bytes,
            });
        }
        let topic = self.topic_queue(record.topic).await?;
        let partition_count = topic.partitions.len() as i32;
        let partition = match (record.partition, record.key) {
            (Some(partition), _) if (0..partition_count).contains(&partition) => partition,
            (Some(partition), _) => {
                return Err(Error::UnknownPartition {
                    topic: record.topic.to_string(),
                    partition,
                })
            }
            (None, Some(key)) => partition_for_key(key, partition_count),
            (None, None) => (topic.sticky.load(Ordering::Relaxed) % topic.partitions.len()) as i32,
        };
        let budget = match Arc::clone(&inner.budget).try_acquire_many_owned(size_bytes as u32) {
            Ok(permit) => permit,
            Err(_) => {
                let wait = inner.config.send_wait_max;
                tokio::time::timeout(
                    wait,
                    Arc::clone(&inner.budget).acquire_many_owned(size_bytes as u32),
                )
                .await
                .map_err(|_elapsed| Error::Timeout {
                    operation: "waiting for producer buffer space",
                    after: wait,
                })?
                .map_err(|_closed| Error::Closed)?
            }
        };
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        let batch_record = Record {
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp_ms: Some(timestamp_ms),
        };

        let mut queue = topic.partitions[partition as usize]
            .lock()
            .expect("partition queue");
        let mut opened = false;
        let mut closed = false;
        if let Some(open) = &queue.open {
            if open.builder.size_bytes() + size_bytes > inner.config.batch_bytes {
                queue.close_open(&topic.name, partition, Instant::now(), inner.identity());
                closed = true;
            }
        }
        let open = match &mut queue.open {
            Some(open) => {
                open.budget.merge(budget);
                open
            }
            None => {
                opened = true;
                let (ack, order) = queue.open_ack();
                queue.open.insert(OpenBatch {
                    builder: BatchBuilder::with_capacity(
                        timestamp_ms,
                        inner.config.batch_bytes.min(size_bytes.max(16 << 10)),
                    )
                    .compression(inner.config.compression),
                    ack,
                    budget,
                    opened_at: Instant::now(),
                    order,
                })
            }
        };
        let offset_delta = open.builder.record_count() as i64;
        open.builder.push(batch_record);
        let delivery = Delivery {
            ack: Arc::clone(&open.ack),
            partition,
            offset_delta,
            timestamp_ms,
        };
        drop(queue);
        if closed && record.partition.is_none() && record.key.is_none() {
            topic.sticky.fetch_add(1, Ordering::Relaxed);
        }
        if opened || closed {
            inner.wake.notify_one();
        }
        Ok(delivery)
    }

    /// The partitions of `topic` (from cached metadata, fetched when not
    /// cached); [`Error::UnknownTopic`] when the cluster has no such topic.
    pub async fn partitions_for(&self, topic: &str) -> Result<Vec<crate::PartitionInfo>> {
        Ok(self.inner.cluster.topic(topic).await?.partitions.clone())
    }

    /// Sends every buffered record now and waits until all records sent
    /// before this call have an outcome.
    pub async fn flush(&self) {
        let now = Instant::now();
        let mut waiting = Vec::new();
        let topics = self.inner.topic_queues();
        for topic in topics {
            for (partition, queue) in topic.partitions.iter().enumerate() {
                let mut queue = queue.lock().expect("partition queue");
                queue.close_open(&topic.name, partition as i32, now, self.inner.identity());
                waiting.extend(
                    queue
                        .unacked
                        .iter()
                        .map(|(_, ack)| ack)
                        .filter(|ack| !ack.is_complete())
                        .cloned(),
                );
            }
        }
        self.inner.wake.notify_one();
        for ack in waiting {
            ack.wait().await;
        }
    }

    /// Refuses new records, sends and waits for everything buffered, and
    /// stops the sender. Records that fail are reported on their deliveries.
    pub async fn close(self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.flush().await;
        Ok(())
    }

    /// The queues of `topic`, created (from metadata) on first use.
    async fn topic_queue(&self, topic: &str) -> Result<Arc<TopicQueue>> {
        if let Some(queue) = self.inner.topics.read().expect("topics").get(topic) {
            return Ok(Arc::clone(queue));
        }
        // A lost metadata answer is asked again, for as long as `send` may
        // wait; an unknown topic is an answer.
        let deadline = Instant::now() + self.inner.config.send_wait_max;
        loop {
            match self.inner.cluster.topic(topic).await {
                Ok(info) => return Ok(self.inner.topic_queue_for(&info)),
                Err(error) if error.is_retriable() && Instant::now() < deadline => {
                    debug!(topic, %error, "asking for the topic's metadata again");
                    tokio::time::sleep(self.inner.config.retry_backoff).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl Inner {
    /// The queues of every topic used so far, taken out of the map's lock.
    fn topic_queues(&self) -> Vec<Arc<TopicQueue>> {
        self.topics
            .read()
            .expect("topics")
            .values()
            .cloned()
            .collect()
    }

    /// The queues for `info`'s topic, grown when the topic gained partitions.
    fn topic_queue_for(&self, info: &TopicInfo) -> Arc<TopicQueue> {
        let mut topics = self.topics.write().expect("topics");
        let existing = topics.get(info.name.as_str());
        if let Some(queue) =
            existing.filter(|queue| queue.partitions.len() >= info.partitions.len())
        {
            return Arc::clone(queue);
        }
        let mut partitions = existing
            .map(|queue| queue.partitions.clone())
            .unwrap_or_default();
        partitions.resize_with(info.partitions.len().max(1), Default::default);
        let name: Arc<str> = Arc::from(info.name.as_str());
        let queue = Arc::new(TopicQueue {
            name: Arc::clone(&name),
            partitions,
            sticky: AtomicUsize::new(existing.map_or(now_ms() as usize, |queue| {
                queue.sticky.load(Ordering::Relaxed)
            })),
        });
        topics.insert(name, Arc::clone(&queue));
        queue
    }

    /// The producer identity a closing batch is numbered under, if
    /// idempotent.
    fn identity(&self) -> Option<ProducerIdentity> {
        self.idempotence.as_ref().map(Idempotence::identity)
    }

    fn partition_queue(&self, topic: &str, partition: i32) -> Option<Arc<Mutex<PartitionQueue>>> {
        self.topics
            .read()
            .expect("topics")
            .get(topic)
            .map(|topic| Arc::clone(&topic.partitions[partition as usize]))
    }

    /// Retries `batch` after a backoff if `error` allows it and its time is
    /// not up; fails it otherwise. An idempotent producer also retries a
    /// batch refused as out of order behind an earlier one still being
    /// retried, and one whose producer the broker no longer knows (after
    /// taking a new producer id).
    fn fail_or_retry(self: &Arc<Self>, mut batch: ClosedBatch, error: Error) {
        let now = Instant::now();
        let expired = now.duration_since(batch.closed_at) >= self.config.delivery_timeout;
        let Some(queue) = self.partition_queue(&batch.topic, batch.partition) else {
            batch.ack.complete(Err(error));
            return;
        };
        let mut queue = queue.lock().expect("partition queue");
        let retriable = error.is_retriable()
            || match (&self.idempotence, &error) {
                (Some(idempotence), Error::Broker { error, .. }) => match error {
                    // Behind a batch still being retried, or about to be
                    // numbered again.
                    ResponseError::OutOfOrderSequenceNumber => {
                        queue.has_unacked_before(&batch.ack)
                            || idempotence.reset_wanted.load(Ordering::Acquire)
                    }
                    ResponseError::UnknownProducerId => {
                        idempotence.reset_wanted.store(true, Ordering::Release);
                        true
                    }
                    _ => false,
                },
                _ => false,
            };
        if retriable && batch.attempts < self.config.retries && !expired {
            batch.attempts += 1;
            batch.not_before = now + self.config.retry_backoff;
            debug!(topic = %batch.topic, partition = batch.partition, attempt = batch.attempts, %error, "retrying batch");
            batch.last_error = Some(error);
            queue.requeue(batch);
            drop(queue);
            self.wake.notify_one();
            return;
        }
        drop(queue);
        warn!(topic = %batch.topic, partition = batch.partition, %error, "batch failed");
        self.failed_for_good();
        batch.ack.complete(Err(error));
    }

    /// A batch failed for good: as an idempotent producer, its partition's
    /// sequence now has a gap, so the producer starts over.
    fn failed_for_good(&self) {
        if let Some(idempotence) = &self.idempotence {
            idempotence.reset_wanted.store(true, Ordering::Release);
        }
    }

    /// Whether sending waits for the producer to start over.
    fn resetting(&self) -> bool {
        self.idempotence
            .as_ref()
            .is_some_and(|idempotence| idempotence.reset_wanted.load(Ordering::Acquire))
    }

    /// As an idempotent producer whose sequence has a gap, with nothing in
    /// flight: takes a new producer id and numbers every waiting batch again
    /// from sequence 0, in the order they closed.
    async fn start_over(&self) -> Result<()> {
        let idempotence = self.idempotence.as_ref().expect("idempotent");
        let (producer_id, producer_epoch) =
            init_producer_id(&self.cluster, self.config.retry_backoff).await?;
        let identity = {
            let mut identity = idempotence.identity.lock().expect("producer identity");
            *identity = ProducerIdentity {
                producer_id,
                producer_epoch,
                generation: identity.generation + 1,
            };
            *identity
        };
        let mut renumbered = 0;
        for topic in self.topic_queues() {
            for queue in &topic.partitions {
                let mut queue = queue.lock().expect("partition queue");
                // Batches that closed since the new identity was taken are
                // numbered again too, behind the older ones.
                queue.generation = identity.generation;
                queue.next_sequence = 0;
                for index in 0..queue.ready.len() {
                    let record_count = queue.ready[index].record_count;
                    let base_sequence = queue.take_sequences(identity.generation, record_count);
                    let batch = &mut queue.ready[index];
                    let mut bytes = batch.bytes.to_vec();
                    restamp_producer(&mut bytes, producer_id, producer_epoch, base_sequence);
                    batch.bytes = Bytes::from(bytes);
                    renumbered += 1;
                }
            }
        }
        idempotence.reset_wanted.store(false, Ordering::Release);
        info!(producer_id, producer_epoch, renumbered, "idempotent producer started over under a new producer id after a batch failed for good");
        Ok(())
    }
}

/// A producer id for a new idempotent producer (InitProducerId), asked of
/// any broker; retriable refusals are asked again until the request
/// timeout.
async fn init_producer_id(cluster: &Cluster, retry_backoff: Duration) -> Result<(i64, i16)> {
    let request = InitProducerIdRequest::default()
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let deadline = Instant::now() + cluster.config().request_timeout;
    loop {
        let answer: Result<(i64, i16)> = async {
            let connection = cluster.any_connection().await?;
            let response = cluster
                .timed("InitProducerId", connection.send(&request))
                .await?;
            check(|| "InitProducerId".to_string(), response.error_code, None)?;
            Ok((response.producer_id.0, response.producer_epoch))
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

/// Closes lingered batches and ships ready ones until the producer is gone.
async fn run_sender(inner: Arc<Inner>) {
    let mut refresh_at: Option<Instant> = None;
    // When an idempotent producer that must start over tries again.
    let mut start_over_at: Option<Instant> = None;
    loop {
        let nothing_in_flight = || {
            inner
                .in_flight
                .lock()
                .expect("in flight")
                .values()
                .all(|&count| count == 0)
        };
        if inner.resetting()
            && start_over_at.is_none_or(|at| at <= Instant::now())
            && nothing_in_flight()
        {
            start_over_at = match inner.start_over().await {
                Ok(()) => None,
                Err(error) => {
                    warn!(%error, "cannot take a new producer id; trying again");
                    Some(Instant::now() + inner.config.retry_backoff)
                }
            };
        }
        let now = Instant::now();
        let (requests, next_deadline, missing_leader) = collect(&inner, now);
        let sent = !requests.is_empty();
        for (broker, batches) in requests {
            *inner
                .in_flight
                .lock()
                .expect("in flight")
                .entry(broker)
                .or_default() += 1;
            // Written here, in order; only the wait for the response runs
            // apart, so batches of a partition reach the broker in order.
            let written = write_request(&inner, broker, &batches).await;
            tokio::spawn(settle(Arc::clone(&inner), broker, batches, written));
        }
        if sent {
            // More ready batches may wait behind the ones just sent.
            continue;
        }
        if !missing_leader.is_empty() && refresh_at.is_none_or(|at| at <= now) {
            refresh_at = Some(now + inner.config.retry_backoff);
            let topics: Vec<&str> = missing_leader.iter().map(|topic| &**topic).collect();
            match inner.cluster.refresh(&topics).await {
                Ok(results) => {
                    for info in results.into_iter().flatten() {
                        inner.topic_queue_for(&info);
                    }
                }
                Err(error) => debug!(%error, "metadata refresh failed"),
            }
            continue;
        }
        let deadline = [
            next_deadline,
            refresh_at.filter(|_| !missing_leader.is_empty()),
            start_over_at.filter(|_| inner.resetting()),
        ]
        .into_iter()
        .flatten()
        .min();
        match deadline {
            Some(deadline) => {
                tokio::select! {
                    _ = inner.wake.notified() => {}
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
            None => inner.wake.notified().await,
        }
    }
}

type Requests = HashMap<i32, Vec<ClosedBatch>>;

/// Closes batches whose linger expired and takes sendable batches, grouped
/// by leader. Returns them, the next time something becomes due, and the
/// topics with a partition whose leader is unknown.
fn collect(inner: &Inner, now: Instant) -> (Requests, Option<Instant>, Vec<Arc<str>>) {
    let mut requests: Requests = HashMap::new();
    let mut next_deadline: Option<Instant> = None;
    let mut missing_leader = Vec::new();
    let mut due = |at: Instant| next_deadline = Some(next_deadline.map_or(at, |d| d.min(at)));
    let in_flight = inner.in_flight.lock().expect("in flight").clone();
    // An idempotent producer starting over sends nothing until it has.
    let resetting = inner.resetting();
    let topics = inner.topic_queues();
    for topic in topics {
        let info = inner.cluster.cached_topic(&topic.name);
        for (partition, queue) in topic.partitions.iter().enumerate() {
            let mut queue = queue.lock().expect("partition queue");
            if let Some(open) = &queue.open {
                let close_at = open.opened_at + inner.config.linger;
                if close_at <= now {
                    queue.close_open(&topic.name, partition as i32, now, inner.identity());
                } else {
                    due(close_at);
                }
            }
            let Some(front) = queue.ready.front() else {
                continue;
            };
            if now.duration_since(front.closed_at) >= inner.config.delivery_timeout {
                let batch = queue.ready.pop_front().expect("checked");
                inner.failed_for_good();
                batch.ack.complete(Err(Error::DeliveryTimeout {
                    after: inner.config.delivery_timeout,
                    last_error: batch.last_error.clone().map(Box::new),
                }));
                continue;
            }
            if resetting {
                // Sent once the producer has started over; its delivery
                // timeout still runs.
                due(front.closed_at + inner.config.delivery_timeout);
                continue;
            }
            if front.not_before > now {
                due(front.not_before);
                continue;
            }
            let order = front.order;
            if !queue.may_send(order) {
                // Sent when an earlier batch's outcome is known (settle
                // wakes the sender).
                continue;
            }
            let leader = info
                .as_ref()
                .and_then(|info| info.partitions.get(partition))
                .and_then(|partition| partition.leader);
            let Some(leader) = leader else {
                if !missing_leader.contains(&topic.name) {
                    missing_leader.push(Arc::clone(&topic.name));
                }
                continue;
            };
            if in_flight.get(&leader).copied().unwrap_or(0) >= inner.config.in_flight_max {
                continue;
            }
            let batch = queue.ready.pop_front().expect("checked");
            requests.entry(leader).or_default().push(batch);
        }
    }
    // One request per broker per round; a broker with more ready batches
    // gets the rest next round, bounded by `in_flight_max`.
    (requests, next_deadline, missing_leader)
}

/// Waits for the response to a written request and settles each batch.
async fn settle(
    inner: Arc<Inner>,
    broker: i32,
    batches: Vec<ClosedBatch>,
    written: Result<Written>,
) {
    let outcome = match written {
        Ok(Written::Acknowledged(sent)) => inner
            .cluster
            .timed("Produce", sent.response())
            .await
            .map(|response| Some(partition_outcomes(response))),
        Ok(Written::Unacknowledged) => Ok(None),
        Err(error) => Err(error),
    };
    match outcome {
        Err(error) => {
            for batch in batches {
                inner.fail_or_retry(batch, error.clone());
            }
            if matches!(error, Error::Io { .. }) {
                let _ = inner.cluster.refresh(&[]).await;
            }
        }
        Ok(None) => {
            for batch in batches {
                batch.ack.complete(Ok(BatchOutcome {
                    base_offset: None,
                    log_append_time_ms: None,
                }));
            }
        }
        Ok(Some(outcomes)) => {
            let mut refresh = false;
            for batch in batches {
                let outcome = outcomes
                    .iter()
                    .find(|(topic, partition, _)| {
                        **topic == *batch.topic && *partition == batch.partition
                    })
                    .map(|(_, _, outcome)| outcome);
                match outcome {
                    Some(Ok(outcome)) => batch.ack.complete(Ok(*outcome)),
                    Some(Err(error)) => {
                        refresh |=
                            matches!(error, Error::Broker { error, .. } if needs_metadata(*error));
                        inner.fail_or_retry(batch, error.clone());
                    }
                    None => {
                        let error = Error::Protocol {
                            address: format!("broker {broker}"),
                            reason: format!("no result for {}-{}", batch.topic, batch.partition),
                        };
                        inner.fail_or_retry(batch, error);
                    }
                }
            }
            if refresh {
                let _ = inner.cluster.refresh(&[]).await;
            }
        }
    }
    *inner
        .in_flight
        .lock()
        .expect("in flight")
        .entry(broker)
        .or_default() -= 1;
    inner.wake.notify_one();
}

fn needs_metadata(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::NotLeaderOrFollower
            | ResponseError::UnknownTopicOrPartition
            | ResponseError::LeaderNotAvailable
            | ResponseError::FencedLeaderEpoch
    )
}

type PartitionOutcomes = Vec<(String, i32, Result<BatchOutcome>)>;

/// A produce request on the wire.
enum Written {
    Acknowledged(Sent<ProduceRequest>),
    /// acks=0: no response will come.
    Unacknowledged,
}

/// Writes one produce request holding `batches` to `broker`.
async fn write_request(inner: &Inner, broker: i32, batches: &[ClosedBatch]) -> Result<Written> {
    let connection = inner.cluster.connection(broker).await?;
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for batch in batches {
        let data = PartitionProduceData::default()
            .with_index(batch.partition)
            .with_records(Some(batch.bytes.clone()));
        match topics
            .iter_mut()
            .find(|topic| *topic.name.0 == *batch.topic)
        {
            Some(topic) => topic.partition_data.push(data),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(topic_name(&batch.topic))
                    .with_partition_data(vec![data]),
            ),
        }
    }
    let timeout = inner.config.client.request_timeout;
    let request = ProduceRequest::default()
        .with_acks(inner.config.acks.wire())
        .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
        .with_topic_data(topics);
    if inner.config.acks == Acks::None {
        connection.send_without_response(&request).await?;
        return Ok(Written::Unacknowledged);
    }
    Ok(Written::Acknowledged(connection.start(&request).await?))
}

fn partition_outcomes(response: ProduceResponse) -> PartitionOutcomes {
    let mut outcomes = Vec::new();
    for topic in response.responses {
        for partition in topic.partition_responses {
            let outcome = if partition.error_code == 0 {
                Ok(BatchOutcome {
                    base_offset: Some(partition.base_offset),
                    log_append_time_ms: (partition.log_append_time_ms >= 0)
                        .then_some(partition.log_append_time_ms),
                })
            } else {
                Err(Error::broker(
                    format!("produce to {}-{}", topic.name.0, partition.index),
                    partition.error_code,
                    partition.error_message.map(|message| message.to_string()),
                ))
            };
            outcomes.push((topic.name.0.to_string(), partition.index, outcome));
        }
    }
    outcomes
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
