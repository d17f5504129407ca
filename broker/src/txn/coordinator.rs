//! The transaction coordinator of the `__transaction_state` partitions this
//! broker leads: it runs the state machine (`state.rs`) on the
//! coordinators' common machinery (`coordinator_log.rs`: loaded per leader
//! epoch, answers once the record is durable), completes prepared
//! transactions by writing their markers (`markers.rs`), and keeps their
//! time: open transactions past `transaction.timeout.ms` are aborted,
//! idle ids expire.
//!
//! A transaction's life on the wire: InitProducerId → (AddPartitionsToTxn
//! | AddOffsetsToTxn + TxnOffsetCommit | Produce)* → EndTxn, answered once
//! `PrepareCommit`/`PrepareAbort` is durable; a task then writes the
//! markers on every partition and records `CompleteCommit`/`CompleteAbort`.
//! A coordinator that takes over loads prepared transactions and completes
//! them.

use std::sync::Arc;
use std::time::Duration;

use strata_storage::batch::{BatchHeader, BatchIter, ProducerId};
use strata_storage::compression::batch_records;
use strata_storage::record::RecordIter;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::markers::MarkerWriter;
use super::producer_ids::ProducerIds;
use super::records::{self, TRANSACTION_STATE};
use super::state::{
    Decision, Init, Producer, Transactions, TxnConfig, TxnError, TxnMetadata, TxnPartition,
};
use crate::clock::now_ms;
use crate::coordinator_log::{CoordinatorLog, CoordinatorState, KeyedRecord, LedLog, LogError};
use crate::group::records::OFFSETS;
use crate::replica::partition::Partition;
use crate::replica::replica_manager::ReplicaManager;

/// How often timeouts are checked and unfinished completions retried.
const TICK_INTERVAL: Duration = Duration::from_millis(200);
/// How often idle transactional ids are expired.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(60);
/// Pause between rounds of markers that could not all be written.
const MARKER_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Bytes read per step when loading a partition's transactions.
const LOAD_READ_BYTES: usize = 4 << 20;

/// Why a transactional request got no answer from the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnFailure {
    Log(LogError),
    Txn(TxnError),
}

impl From<LogError> for TxnFailure {
    fn from(error: LogError) -> Self {
        TxnFailure::Log(error)
    }
}

impl From<TxnError> for TxnFailure {
    fn from(error: TxnError) -> Self {
        TxnFailure::Txn(error)
    }
}

impl CoordinatorState for Transactions {
    type Config = TxnConfig;
    const WHAT: &'static str = "transactions";

    fn load(partition: &Partition, _config: TxnConfig, _now_ms: i64) -> Result<Self, LogError> {
        let mut transactions = Transactions::default();
        let mut offset = partition.log_start_offset();
        loop {
            let read = partition
                .read_to_log_end(offset, LOAD_READ_BYTES)
                .map_err(|error| {
                    warn!(partition = ?partition, %error, "cannot read the transaction log");
                    LogError::Unavailable
                })?;
            if read.records.is_empty() {
                return Ok(transactions);
            }
            for (header, batch) in BatchIter::new(&read.records) {
                offset = header.last_offset() + 1;
                replay_batch(&mut transactions, &header, batch);
            }
        }
    }

    fn count(&self) -> usize {
        Transactions::len(self)
    }

    fn apply(
        &mut self,
        (key, value): &KeyedRecord,
        _offset: i64,
        _transaction: Option<ProducerId>,
    ) {
        let (id, metadata) = records::decode(key, value.as_deref())
            .expect("records this coordinator encoded decode");
        Transactions::apply(self, &id, metadata);
    }
}

fn replay_batch(transactions: &mut Transactions, header: &BatchHeader, batch: &[u8]) {
    let records = match batch_records(batch, usize::MAX) {
        Ok(records) => records,
        Err(error) => {
            warn!(base_offset = header.base_offset, %error, "skipped an unreadable batch of the transaction log");
            return;
        }
    };
    for record in RecordIter::from_records(&records, header.record_count).flatten() {
        let Some(key) = record.key else { continue };
        match records::decode(key, record.value) {
            Ok((id, metadata)) => transactions.apply(&id, metadata),
            Err(error) => {
                warn!(base_offset = header.base_offset, %error, "skipped a record of the transaction log")
            }
        }
    }
}

type Led = LedLog<Transactions>;

/// A transactional id's state as DescribeTransactions shows it.
pub type Described = Result<TxnMetadata, TxnFailure>;

pub struct TxnCoordinator {
    log: CoordinatorLog<Transactions>,
    producer_ids: Arc<ProducerIds>,
    markers: Arc<MarkerWriter>,
}

impl TxnCoordinator {
    pub fn new(
        replicas: Arc<ReplicaManager>,
        config: TxnConfig,
        producer_ids: Arc<ProducerIds>,
        markers: Arc<MarkerWriter>,
    ) -> Self {
        TxnCoordinator {
            log: CoordinatorLog::new(replicas, TRANSACTION_STATE, config),
            producer_ids,
            markers,
        }
    }

    pub fn config(&self) -> &TxnConfig {
        self.log.config()
    }

    /// Decides under the partition's lock, appends the record the
    /// decision wrote, and answers once it is durable. A record that does
    /// not become durable leaves the id as it was.
    async fn decide<T>(
        &self,
        led: &Led,
        id: &str,
        decide: impl FnOnce(&mut Transactions, &TxnConfig, i64) -> Result<Decision<T>, TxnError>,
    ) -> Result<T, TxnFailure> {
        let (answer, record, appended) = {
            let mut loaded = led.loaded.lock().await;
            let transactions = led.load(&mut loaded).await?;
            let now = now_ms();
            let decision = decide(transactions, &led.config, now)?;
            let Some(record) = decision.record else {
                return Ok(decision.answer);
            };
            match led.append(std::slice::from_ref(&record), None, now) {
                Ok(appended) => (decision.answer, record, appended),
                Err(error) => {
                    transactions.abandon(id);
                    return Err(error.into());
                }
            }
        };
        if let Err(error) = led
            .await_durable(std::slice::from_ref(&record), appended, None)
            .await
        {
            let mut loaded = led.loaded.lock().await;
            if let Some(loaded) = loaded
                .as_mut()
                .filter(|loaded| loaded.leader_epoch == led.leader_epoch)
            {
                loaded.state.abandon(id);
            }
            return Err(error.into());
        }
        Ok(answer)
    }

    /// InitProducerId with a transactional id: a new producer id for a new
    /// id, the next epoch for a known one. An open transaction of the
    /// previous instance is aborted first (`CONCURRENT_TRANSACTIONS`: the
    /// client retries).
    pub async fn init_producer_id(
        self: &Arc<Self>,
        id: &str,
        timeout_ms: i32,
        expected: Option<Producer>,
    ) -> Result<Producer, TxnFailure> {
        let led = self.log.led_for(id)?;
        let fresh = self.producer_ids.next().await.map_err(|error| {
            warn!(%error, "cannot hand out a producer id");
            TxnFailure::Log(LogError::Unavailable)
        })?;
        let init = self
            .decide(&led, id, |txns, config, now| {
                txns.init_producer_id(id, timeout_ms, expected, fresh, config, now)
            })
            .await?;
        match init {
            Init::Ready(producer) => Ok(producer),
            Init::Fencing => {
                info!(
                    transactional_id = id,
                    "a new instance fenced the previous one; aborting its open transaction"
                );
                self.complete_prepared(&led).await;
                Err(TxnError::ConcurrentTransactions.into())
            }
        }
    }

    /// AddPartitionsToTxn.
    pub async fn add_partitions(
        &self,
        id: &str,
        producer: Producer,
        partitions: &[TxnPartition],
    ) -> Result<(), TxnFailure> {
        let led = self.log.led_for(id)?;
        self.decide(&led, id, |txns, _config, now| {
            txns.add_partitions(id, producer, partitions, now)
        })
        .await
    }

    /// AddOffsetsToTxn: the group's offsets partition joins the
    /// transaction, so the commit marker makes its offsets visible.
    pub async fn add_offsets(
        &self,
        id: &str,
        producer: Producer,
        group: &str,
    ) -> Result<(), TxnFailure> {
        let partition = (OFFSETS.name.to_string(), OFFSETS.partition_for(group));
        self.add_partitions(id, producer, &[partition]).await
    }

    /// Whether `producer`'s open transaction holds `partition`.
    pub async fn verify(
        &self,
        id: &str,
        producer: Producer,
        partition: &TxnPartition,
    ) -> Result<(), TxnFailure> {
        let led = self.log.led_for(id)?;
        let verified: Result<_, TxnFailure> =
            led.read(|txns| txns.verify(id, producer, partition)).await;
        Ok(verified??)
    }

    /// EndTxn: answered once the decision is durable; the markers follow.
    pub async fn end(
        self: &Arc<Self>,
        id: &str,
        producer: Producer,
        commit: bool,
        bump_epoch: bool,
    ) -> Result<Producer, TxnFailure> {
        let led = self.log.led_for(id)?;
        let answer = self
            .decide(&led, id, |txns, _config, now| {
                txns.end(id, producer, commit, bump_epoch, now)
            })
            .await?;
        self.complete_prepared(&led).await;
        Ok(answer)
    }

    /// Aborts `id`'s open transaction (an administrator's, or a timeout's
    /// when `started_ms` names the transaction that timed out).
    pub async fn abort(
        self: &Arc<Self>,
        id: &str,
        started_ms: Option<i64>,
    ) -> Result<(), TxnFailure> {
        let led = self.log.led_for(id)?;
        self.decide(&led, id, |txns, _config, now| {
            if started_ms.is_some_and(|started| txns.get(id).is_none_or(|m| m.start_ms != started))
            {
                return Err(TxnError::InvalidTxnState);
            }
            Ok(Decision {
                answer: (),
                record: Some(txns.abort(id, now)?),
            })
        })
        .await?;
        self.complete_prepared(&led).await;
        Ok(())
    }

    /// The metadata of each id (DescribeTransactions).
    pub async fn describe(&self, ids: &[String]) -> Vec<(String, Described)> {
        let mut described = Vec::with_capacity(ids.len());
        for id in ids {
            let found = match self.log.led_for(id) {
                Ok(led) => led
                    .read(|txns| txns.get(id).cloned())
                    .await
                    .map_err(TxnFailure::Log)
                    .and_then(|found| {
                        found.ok_or(TxnFailure::Txn(TxnError::InvalidProducerIdMapping))
                    }),
                Err(error) => Err(error.into()),
            };
            described.push((id.clone(), found));
        }
        described
    }

    /// Every transactional id this broker coordinates, with its metadata.
    pub async fn list(&self) -> Vec<(String, TxnMetadata)> {
        let mut listed = Vec::new();
        for led in self.log.all_led() {
            let read: Result<Vec<_>, LogError> = led
                .read(|txns| {
                    txns.iter()
                        .map(|(id, metadata)| (id.clone(), metadata.clone()))
                        .collect()
                })
                .await;
            listed.extend(read.unwrap_or_default());
        }
        listed
    }

    /// Starts a task for each prepared transaction of `led` that none is
    /// completing: it writes the markers, then records the completion.
    async fn complete_prepared(self: &Arc<Self>, led: &Led) {
        let prepared = {
            let mut loaded = led.loaded.lock().await;
            let Ok(txns) = led.load(&mut loaded).await else {
                return;
            };
            let prepared = txns.to_complete();
            txns.completing
                .extend(prepared.iter().map(|(id, ..)| id.clone()));
            prepared
        };
        for (id, producer, commit, partitions) in prepared {
            let (coordinator, led) = (Arc::clone(self), led.clone());
            tokio::spawn(async move {
                coordinator
                    .complete(&led, &id, producer, commit, partitions)
                    .await;
            });
        }
    }

    async fn complete(
        &self,
        led: &Led,
        id: &str,
        producer: Producer,
        commit: bool,
        mut partitions: Vec<TxnPartition>,
    ) {
        let coordinator_epoch = led.leader_epoch.0;
        let started = std::time::Instant::now();
        while !partitions.is_empty() {
            if led.partition.leader_epoch() != Some(led.leader_epoch) {
                return; // the next coordinator completes it
            }
            partitions = self
                .markers
                .write(producer, commit, coordinator_epoch, &partitions)
                .await;
            if !partitions.is_empty() {
                tokio::time::sleep(MARKER_RETRY_BACKOFF).await;
            }
        }
        let completed = self
            .decide(led, id, |txns, _config, now| {
                Ok(Decision {
                    answer: (),
                    record: txns.complete(id, producer, now),
                })
            })
            .await;
        let mut loaded = led.loaded.lock().await;
        if let Some(loaded) = loaded
            .as_mut()
            .filter(|loaded| loaded.leader_epoch == led.leader_epoch)
        {
            loaded.state.completing.remove(id);
        }
        match completed {
            Ok(()) => debug!(
                transactional_id = id,
                producer_id = producer.id,
                producer_epoch = producer.epoch,
                outcome = if commit { "committed" } else { "aborted" },
                elapsed_ms = started.elapsed().as_millis() as u64,
                "transaction completed"
            ),
            Err(error) => warn!(
                transactional_id = id,
                ?error,
                "cannot record a completed transaction; retrying"
            ),
        }
    }

    /// Every `TICK_INTERVAL` until `shutdown`: aborts open transactions
    /// past their timeout, completes prepared ones no task is completing
    /// (after a load, or a failed completion), and expires idle ids.
    pub async fn run_timers(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(TICK_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_expiry = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let now = now_ms();
            let mut timed_out = Vec::new();
            let mut prepared = Vec::new();
            self.log
                .for_each_loaded(|led, txns| {
                    timed_out.extend(txns.timed_out(now));
                    if !txns.to_complete().is_empty() {
                        prepared.push(led.clone());
                    }
                })
                .await;
            for (id, started_ms, timeout_ms) in timed_out {
                warn!(
                    transactional_id = id,
                    open_ms = now - started_ms,
                    timeout_ms,
                    "aborting a transaction open longer than its transaction.timeout.ms"
                );
                if let Err(error) = self.abort(&id, Some(started_ms)).await {
                    warn!(
                        transactional_id = id,
                        ?error,
                        "cannot abort a timed-out transaction"
                    );
                }
            }
            for led in prepared {
                self.complete_prepared(&led).await;
            }
            if last_expiry.elapsed() >= EXPIRY_INTERVAL {
                last_expiry = tokio::time::Instant::now();
                for led in self.log.all_led() {
                    let read: Result<_, LogError> =
                        led.read(|txns| txns.expired(self.config(), now)).await;
                    for id in read.unwrap_or_default() {
                        let expired = self
                            .decide(&led, &id, |txns, config, now| {
                                Ok(txns.expire(&id, config, now))
                            })
                            .await;
                        match expired {
                            Ok(()) => info!(
                                transactional_id = id,
                                "expired an idle transactional id (transactional.id.expiration.ms)"
                            ),
                            Err(error) => warn!(
                                transactional_id = id,
                                ?error,
                                "cannot expire an idle transactional id"
                            ),
                        }
                    }
                }
            }
        }
    }
}
