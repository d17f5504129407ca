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
//!
//! Transactions (with a transactional id): see `transaction.rs`. A
//! transactional producer never starts over on its own: a batch that fails
//! for good makes the open transaction abortable instead.

mod accumulator;
mod config;
mod delivery;
mod idempotence;
mod sender;
mod transaction;

use accumulator::{ClosedBatch, OpenBatch, PartitionQueue, TopicQueue};
pub use config::{Acks, ProducerBuilder, ProducerConfig};
pub use delivery::{Delivery, ProducerRecord, RecordMetadata};
use idempotence::{init_producer_id, Idempotence, ProducerIdentity};
pub use transaction::GroupMetadata;
use transaction::{Phase, Transaction, TxnCalls};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use strata_protocol::batch::{restamp_producer, ProducerId as BatchProducerId};
use strata_protocol::record::{BatchBuilder, Record};
use tokio::sync::{Notify, Semaphore};
use tracing::{debug, info, warn};

use crate::cluster::{ClientConfig, Cluster, TopicInfo};
use crate::error::{Error, Result};
use crate::partitioner::partition_for_key;

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
    /// Set when the producer is transactional.
    transaction: Option<Transaction>,
    /// A batch that failed for good during the open transaction.
    transaction_failure: Mutex<Option<Error>>,
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

impl ProducerBuilder {
    /// Connects to the cluster and starts the sender task.
    pub async fn build(self) -> Result<Producer> {
        Producer::with_config(self.config).await
    }
}

impl Producer {
    pub fn builder(bootstrap: &str) -> ProducerBuilder {
        ProducerBuilder {
            config: ProducerConfig::new(bootstrap),
        }
    }

    /// A builder whose connection settings (bootstrap, client id,
    /// timeouts, TLS and SASL) are `client`'s.
    pub fn builder_for(client: &ClientConfig) -> ProducerBuilder {
        let mut config = ProducerConfig::new("");
        config.client = client.clone();
        ProducerBuilder { config }
    }

    pub async fn with_config(config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let cluster = Cluster::connect(config.client.clone()).await?;
        let transaction = config
            .transactional_id
            .as_ref()
            .map(|id| Transaction::new(id.clone(), config.transaction_timeout));
        let idempotence = if config.idempotent() {
            // A transactional producer takes its id in init_transactions.
            let (producer_id, producer_epoch) = match transaction {
                Some(_) => (BatchProducerId::NONE, -1),
                None => init_producer_id(&cluster, config.retry_backoff).await?,
            };
            Some(Idempotence {
                identity: Mutex::new(ProducerIdentity {
                    producer_id,
                    producer_epoch,
                    generation: 0,
                    transactional: transaction.is_some(),
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
            transaction,
            transaction_failure: Mutex::new(None),
        });
        let sender = tokio::spawn(Arc::clone(&inner).run_sender());
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
        let sticky = record.partition.is_none() && record.key.is_none();
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
        if let Some(transaction) = &inner.transaction {
            self.add_to_transaction(transaction, &topic.name, partition)
                .await?;
        }
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
                    operation: "waiting for producer buffer space".to_string(),
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
        if closed && sticky {
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

    /// Takes this transactional producer's producer id (InitProducerId with
    /// its transactional id), fencing any earlier instance and aborting its
    /// open transaction. Call once, before the first transaction.
    pub async fn init_transactions(&self) -> Result<()> {
        let (transaction, idempotence) = self.transactional()?;
        let mut status = transaction.status.lock().await;
        if let Phase::Fenced(error) = &status.phase {
            return Err(error.clone());
        }
        let (producer_id, producer_epoch) = self
            .calls(transaction)
            .init_producer_id(&mut status)
            .await?;
        self.inner
            .set_identity(idempotence, producer_id, producer_epoch);
        status.reset();
        status.phase = Phase::Ready;
        info!(transactional_id = transaction.id, %producer_id, producer_epoch, "transactional producer initialized");
        Ok(())
    }

    /// Opens a transaction: records sent until it is committed or aborted
    /// become visible to `read_committed` consumers together, or never.
    pub async fn begin_transaction(&self) -> Result<()> {
        let (transaction, _) = self.transactional()?;
        let mut status = transaction.status.lock().await;
        status.require("begin a transaction", false)?;
        *self
            .inner
            .transaction_failure
            .lock()
            .expect("transaction failure") = None;
        status.phase = Phase::Open;
        Ok(())
    }

    /// Commits `offsets` (topic, partition, next offset to read) for
    /// `group` as part of the open transaction: they count once it commits.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &[(impl AsRef<str>, i32, i64)],
        group: &GroupMetadata,
    ) -> Result<()> {
        let offsets: Vec<(&str, i32, i64)> = offsets
            .iter()
            .map(|(topic, partition, offset)| (topic.as_ref(), *partition, *offset))
            .collect();
        let offsets = offsets.as_slice();
        let (transaction, idempotence) = self.transactional()?;
        let mut status = transaction.status.lock().await;
        status.require("send offsets to the transaction", true)?;
        let identity = idempotence.identity();
        let sent = self
            .calls(transaction)
            .send_offsets(
                &mut status,
                (identity.producer_id, identity.producer_epoch),
                offsets,
                group,
            )
            .await;
        if let Err(error) = &sent {
            status.fail(error.clone());
        }
        sent
    }

    /// Sends every record of the open transaction and commits it. On an
    /// error the transaction is abortable (or the producer fenced).
    pub async fn commit_transaction(&self) -> Result<()> {
        self.end_transaction(true).await
    }

    /// Aborts the open (or abortable) transaction: none of its records or
    /// offsets become visible.
    pub async fn abort_transaction(&self) -> Result<()> {
        self.end_transaction(false).await
    }

    async fn end_transaction(&self, commit: bool) -> Result<()> {
        let (transaction, idempotence) = self.transactional()?;
        let mut status = transaction.status.lock().await;
        let operation = if commit { "commit" } else { "abort" };
        match (&status.phase, commit) {
            (Phase::Open, _) | (Phase::Abortable(_), false) => {}
            _ => status.require(&format!("{operation} a transaction"), true)?,
        }
        let was = std::mem::replace(&mut status.phase, Phase::Ending);
        // Every record of the transaction has an outcome before it ends.
        self.flush().await;
        let failed = self
            .inner
            .transaction_failure
            .lock()
            .expect("transaction failure")
            .take();
        if let Some(error) = failed.clone().filter(transaction::is_fencing) {
            status.fail(error.clone());
            return Err(error);
        }
        if let (Some(error), true) = (failed, commit) {
            status.phase = was;
            status.fail(error.clone());
            return Err(Error::Transaction(format!(
                "cannot commit: a record of the transaction failed ({error}); abort it"
            )));
        }
        if status.wrote() {
            let identity = idempotence.identity();
            let ended = self
                .calls(transaction)
                .end(
                    &mut status,
                    (identity.producer_id, identity.producer_epoch),
                    commit,
                )
                .await;
            match ended {
                Ok((producer_id, producer_epoch)) => {
                    if (producer_id, producer_epoch)
                        != (identity.producer_id, identity.producer_epoch)
                    {
                        self.inner
                            .set_identity(idempotence, producer_id, producer_epoch);
                    }
                }
                Err(error) => {
                    status.phase = was;
                    status.fail(error.clone());
                    return Err(error);
                }
            }
        }
        status.reset();
        status.phase = Phase::Ready;
        Ok(())
    }

    /// Adds `partition` of `topic` to the open transaction unless it is in.
    async fn add_to_transaction(
        &self,
        transaction: &Transaction,
        topic: &Arc<str>,
        partition: i32,
    ) -> Result<()> {
        let mut status = transaction.status.lock().await;
        status.require("send", true)?;
        if status.has_partition(topic, partition) {
            return Ok(());
        }
        let identity = self
            .inner
            .identity()
            .expect("a transactional producer is idempotent");
        let added = self
            .calls(transaction)
            .add_partitions(
                &mut status,
                (identity.producer_id, identity.producer_epoch),
                &[(Arc::clone(topic), partition)],
            )
            .await;
        if let Err(error) = &added {
            status.fail(error.clone());
        }
        added
    }

    fn transactional(&self) -> Result<(&Transaction, &Idempotence)> {
        match (&self.inner.transaction, &self.inner.idempotence) {
            (Some(transaction), Some(idempotence)) => Ok((transaction, idempotence)),
            _ => Err(Error::Transaction(
                "the producer has no transactional id".to_string(),
            )),
        }
    }

    fn calls<'a>(&'a self, transaction: &'a Transaction) -> TxnCalls<'a> {
        TxnCalls {
            cluster: &self.inner.cluster,
            transaction,
            retry_backoff: self.inner.config.retry_backoff,
        }
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
                    ResponseError::UnknownProducerId if self.transaction.is_none() => {
                        idempotence.reset_wanted.store(true, Ordering::Release);
                        true
                    }
                    _ => false,
                },
                _ => false,
            };
        if retriable && batch.attempts < self.config.retries && !expired {
            batch.attempts += 1;
            batch.maybe_stored |= error.may_have_been_stored();
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
        self.failed_for_good(&error);
        batch.ack.complete(Err(error));
    }

    /// A batch failed for good: as an idempotent producer, its partition's
    /// sequence now has a gap, so the producer starts over; in a
    /// transaction, the transaction can only be aborted.
    fn failed_for_good(&self, error: &Error) {
        if self.transaction.is_some() {
            self.transaction_failure
                .lock()
                .expect("transaction failure")
                .get_or_insert_with(|| error.clone());
        } else if let Some(idempotence) = &self.idempotence {
            idempotence.reset_wanted.store(true, Ordering::Release);
        }
    }

    /// Writes as `producer_id`/`producer_epoch` from now on; batches that
    /// close after this number their sequences from 0.
    fn set_identity(
        &self,
        idempotence: &Idempotence,
        producer_id: BatchProducerId,
        producer_epoch: i16,
    ) {
        let mut identity = idempotence.identity.lock().expect("producer identity");
        *identity = ProducerIdentity {
            producer_id,
            producer_epoch,
            generation: identity.generation + 1,
            transactional: identity.transactional,
        };
    }

    /// Whether sending waits for the producer to start over.
    fn resetting(&self) -> bool {
        self.idempotence
            .as_ref()
            .is_some_and(|idempotence| idempotence.reset_wanted.load(Ordering::Acquire))
    }

    /// As an idempotent producer whose sequence has a gap, with nothing in
    /// flight: takes a new producer id and numbers every waiting batch again
    /// from sequence 0, in the order they closed. A waiting batch an earlier
    /// attempt may have stored fails instead: under a new producer id no
    /// broker could tell it from a new batch, and it would be written twice.
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
                transactional: identity.transactional,
            };
            *identity
        };
        let (mut renumbered, mut failed) = (0, 0);
        for topic in self.topic_queues() {
            for queue in &topic.partitions {
                let mut queue = queue.lock().expect("partition queue");
                // Batches that closed since the new identity was taken are
                // numbered again too, behind the older ones.
                queue.generation = identity.generation;
                queue.next_sequence = 0;
                for mut batch in std::mem::take(&mut queue.ready) {
                    if batch.maybe_stored {
                        let cause = batch.last_error.take().map(Box::new);
                        batch.ack.complete(Err(Error::MaybeStored { cause }));
                        failed += 1;
                        continue;
                    }
                    let base_sequence =
                        queue.take_sequences(identity.generation, batch.record_count);
                    let mut bytes = batch.bytes.to_vec();
                    restamp_producer(&mut bytes, producer_id, producer_epoch, base_sequence);
                    batch.bytes = Bytes::from(bytes);
                    queue.ready.push_back(batch);
                    renumbered += 1;
                }
            }
        }
        idempotence.reset_wanted.store(false, Ordering::Release);
        info!(%producer_id, producer_epoch, renumbered, failed, "idempotent producer started over under a new producer id after a batch failed for good");
        Ok(())
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
