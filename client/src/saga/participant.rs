//! The runtime of one instance of a service: a read_committed member of
//! the service's consumer group on the saga's event topic, and a
//! transactional producer. Each round reads a batch of events, runs the
//! handlers they call for, and commits in one transaction the events the
//! handlers produced, the changed saga states (to the service's compacted
//! state topic, same partition as the events) and the input offsets. A
//! crash or a rebalance therefore neither loses nor repeats a step: what
//! was not committed is aborted and read again from the committed offsets
//! and states.
//!
//! Architecture Invariant: the in-memory states of a partition are exactly
//! the state topic's records up to the partition's committed offset. They
//! are restored from the state topic when the partition is assigned (after
//! every transaction that may still change them has ended) and thrown away
//! when a transaction fails.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::decision::{SagaState, Work};
use super::envelope::{borrow_headers, Envelope, EventKind};
use super::service::{Clock, Output, RetryPolicy, Service, SystemClock};
use super::view::read_to_end;
use crate::{
    ClientConfig, Consumer, ConsumerRecord, Error, Isolation, Offset, OffsetReset, Producer,
    ProducerRecord, ResponseError, Result,
};

/// How an instance runs.
#[derive(Debug, Clone)]
pub struct ParticipantConfig {
    /// Bootstrap brokers, TLS and SASL.
    pub client: ClientConfig,
    /// Stable across restarts of the same instance: its static group
    /// membership and its transactional id, so a restarted instance fences
    /// its predecessor and takes its partitions back at once.
    pub instance_id: String,
    /// How long a round gathers events before it commits.
    pub commit_interval: Duration,
    /// The most events one round (one transaction) handles.
    pub events_per_round_max: usize,
    pub retry: RetryPolicy,
    /// How long past a step's deadline its watcher waits before failing
    /// the step, for a success written just before the deadline to land.
    pub deadline_grace: Duration,
    pub transaction_timeout: Duration,
    pub session_timeout: Duration,
    /// How long restoring a partition's states may wait for transactions
    /// still open on it.
    pub restore_timeout: Duration,
}

impl ParticipantConfig {
    pub fn new(bootstrap: &str, instance_id: &str) -> ParticipantConfig {
        ParticipantConfig {
            client: ClientConfig::new(bootstrap),
            instance_id: instance_id.to_string(),
            commit_interval: Duration::from_millis(20),
            events_per_round_max: 5_000,
            retry: RetryPolicy::default(),
            deadline_grace: Duration::from_secs(5),
            transaction_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(6),
            restore_timeout: Duration::from_secs(60),
        }
    }
}

/// Counters of one instance since it started.
#[derive(Debug, Default)]
pub struct ParticipantMetrics {
    pub events_read: AtomicU64,
    pub steps_succeeded: AtomicU64,
    /// Steps failed by their action (deadlines are counted apart).
    pub steps_failed: AtomicU64,
    pub deadlines_fired: AtomicU64,
    pub compensations: AtomicU64,
    /// Steps or compensations given up on (each also dead-lettered).
    pub stuck: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub transactions_committed: AtomicU64,
    pub transactions_aborted: AtomicU64,
    pub sagas_in_memory: AtomicU64,
}

impl ParticipantMetrics {
    /// The counters in Prometheus' text format, labelled with `service`.
    pub fn prometheus(&self, service: &str) -> String {
        let counters = [
            ("events_read", &self.events_read),
            ("steps_succeeded", &self.steps_succeeded),
            ("steps_failed", &self.steps_failed),
            ("deadlines_fired", &self.deadlines_fired),
            ("compensations", &self.compensations),
            ("stuck", &self.stuck),
            ("dead_lettered", &self.dead_lettered),
            ("transactions_committed", &self.transactions_committed),
            ("transactions_aborted", &self.transactions_aborted),
            ("sagas_in_memory", &self.sagas_in_memory),
        ];
        counters
            .iter()
            .map(|(name, value)| {
                format!(
                    "strata_saga_participant_{name}{{service=\"{service}\"}} {}\n",
                    value.load(Ordering::Relaxed)
                )
            })
            .collect()
    }
}

/// One instance of a service.
pub struct Participant {
    service: Service,
    config: ParticipantConfig,
    metrics: Arc<ParticipantMetrics>,
}

impl Participant {
    pub fn new(service: Service, config: ParticipantConfig) -> Participant {
        Participant {
            service,
            config,
            metrics: Arc::default(),
        }
    }

    pub fn metrics(&self) -> Arc<ParticipantMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Runs until an error it cannot get past: another instance with the
    /// same id fenced this one, or the cluster is unreachable for good.
    /// Stop it by dropping the future (what it had not committed is
    /// aborted and done again by whoever takes its partitions).
    pub async fn run(self) -> Result<()> {
        let mut runtime = Runtime::start(self).await?;
        loop {
            runtime.round().await?;
        }
    }
}

/// A record to write in the round's transaction.
struct Outgoing {
    topic: Arc<str>,
    partition: i32,
    key: String,
    headers: Vec<(&'static str, String)>,
    value: Option<Vec<u8>>,
}

/// A partition's sagas, by id.
type Sagas = HashMap<String, SagaState>;

struct Runtime {
    service: Service,
    config: ParticipantConfig,
    metrics: Arc<ParticipantMetrics>,
    consumer: Consumer,
    producer: Producer,
    events_topic: Arc<str>,
    state_topic: Arc<str>,
    dead_letter_topic: Arc<str>,
    owned: Vec<u32>,
    /// By partition of the event topic: exactly the assigned partitions.
    sagas: BTreeMap<i32, Sagas>,
    /// States changed in this round.
    changed: BTreeSet<(i32, String)>,
    outgoing: Vec<Outgoing>,
    last_due_scan: Instant,
}

/// How often the states are scanned for deadlines and retries.
const DUE_SCAN_INTERVAL: Duration = Duration::from_millis(100);

fn is_fenced(error: &Error) -> bool {
    matches!(
        error,
        Error::Broker {
            error: ResponseError::ProducerFenced
                | ResponseError::InvalidProducerEpoch
                | ResponseError::FencedInstanceId
                | ResponseError::TransactionalIdAuthorizationFailed,
            ..
        }
    )
}

impl Runtime {
    async fn start(participant: Participant) -> Result<Runtime> {
        let Participant {
            service,
            config,
            metrics,
        } = participant;
        let owned = service.owned_steps();
        if owned.is_empty() {
            return Err(Error::Config(format!(
                "service {:?} owns no step of saga {:?}",
                service.name(),
                service.definition().name
            )));
        }
        let definition = service.definition();
        let group_id = definition.group_id(service.name());
        let transactional_id = format!("{group_id}.{}", config.instance_id);
        let producer = Producer::builder_for(&config.client)
            .transactional_id(&transactional_id)
            .transaction_timeout(config.transaction_timeout)
            .linger(Duration::from_millis(1))
            .build()
            .await?;
        producer.init_transactions().await?;
        let mut consumer = Consumer::builder_for(&config.client)
            .group_id(&group_id)
            .group_instance_id(&config.instance_id)
            .session_timeout(config.session_timeout)
            .isolation(Isolation::ReadCommitted)
            .offset_reset(OffsetReset::Earliest)
            .auto_commit(None)
            .build()
            .await?;
        let events_topic: Arc<str> = definition.events_topic().into();
        consumer.subscribe(&[&events_topic])?;
        Ok(Runtime {
            state_topic: definition.state_topic(service.name()).into(),
            dead_letter_topic: definition.dead_letter_topic().into(),
            events_topic,
            owned,
            service,
            config,
            metrics,
            consumer,
            producer,
            sagas: BTreeMap::new(),
            changed: BTreeSet::new(),
            outgoing: Vec::new(),
            last_due_scan: Instant::now(),
        })
    }

    /// One round: read, handle, commit.
    async fn round(&mut self) -> Result<()> {
        let records = self.gather().await?;
        self.follow_assignment().await?;
        let read = records.len();
        self.handle(records).await;
        if read == 0 && self.outgoing.is_empty() && self.changed.is_empty() {
            return Ok(());
        }
        self.metrics
            .events_read
            .fetch_add(read as u64, Ordering::Relaxed);
        self.write_states();
        match self.commit().await {
            Ok(()) => {
                self.metrics
                    .transactions_committed
                    .fetch_add(1, Ordering::Relaxed);
                let in_memory: usize = self.sagas.values().map(HashMap::len).sum();
                self.metrics
                    .sagas_in_memory
                    .store(in_memory as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(error) if is_fenced(&error) => Err(error),
            Err(error) => {
                self.metrics
                    .transactions_aborted
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "saga round failed; aborting and starting again from the committed offsets and states");
                if let Err(abort_error) = self.producer.abort_transaction().await {
                    if is_fenced(&abort_error) {
                        return Err(abort_error);
                    }
                    tracing::warn!(error = %abort_error, "abort failed");
                }
                self.reset().await
            }
        }
    }

    /// Reads events for up to one commit interval once the first arrive.
    async fn gather(&mut self) -> Result<Vec<ConsumerRecord>> {
        let mut records = Vec::new();
        let mut first_at: Option<Instant> = None;
        loop {
            let wait = match first_at {
                None => DUE_SCAN_INTERVAL,
                Some(first_at) => {
                    let left = self
                        .config
                        .commit_interval
                        .saturating_sub(first_at.elapsed());
                    if left.is_zero() || records.len() >= self.config.events_per_round_max {
                        return Ok(records);
                    }
                    left
                }
            };
            match self.consumer.poll(wait).await {
                Ok(batch) if batch.is_empty() && first_at.is_none() => return Ok(records),
                Ok(batch) => {
                    first_at.get_or_insert_with(Instant::now);
                    records.extend(batch);
                }
                Err(error) if is_fenced(&error) => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, "saga poll failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if !records.is_empty() {
                        return Ok(records);
                    }
                }
            }
        }
    }

    /// Drops the states of partitions no longer assigned and restores
    /// those of new ones.
    async fn follow_assignment(&mut self) -> Result<()> {
        let assigned: BTreeSet<i32> = self
            .consumer
            .assignment()
            .into_iter()
            .filter(|(topic, _)| **topic == *self.events_topic)
            .map(|(_, partition)| partition)
            .collect();
        self.sagas
            .retain(|partition, _| assigned.contains(partition));
        let added: Vec<i32> = assigned
            .into_iter()
            .filter(|partition| !self.sagas.contains_key(partition))
            .collect();
        if !added.is_empty() {
            tracing::info!(partitions = ?added, "restoring saga states");
            let restored = self.restore(&added).await?;
            self.sagas.extend(restored);
        }
        Ok(())
    }

    /// Reads `partitions` of the state topic to their end.
    async fn restore(&self, partitions: &[i32]) -> Result<BTreeMap<i32, Sagas>> {
        let mut restored: BTreeMap<i32, Sagas> =
            partitions.iter().map(|&p| (p, Sagas::new())).collect();
        let topic = &*self.state_topic;
        read_to_end(
            &self.config.client,
            topic,
            partitions,
            self.config.restore_timeout,
            |record| {
                let Some(key) = record
                    .key
                    .as_ref()
                    .and_then(|key| std::str::from_utf8(key).ok())
                else {
                    return Ok(());
                };
                let sagas = restored.get_mut(&record.partition).expect("assigned");
                match &record.value {
                    None => {
                        sagas.remove(key);
                    }
                    Some(value) => {
                        let state =
                            serde_json::from_slice::<SagaState>(value).map_err(|error| {
                                Error::Protocol {
                                    address: format!("{topic}-{}", record.partition),
                                    reason: format!(
                                "saga state of {key:?} at offset {} does not decode: {error}",
                                record.offset
                            ),
                                }
                            })?;
                        sagas.insert(key.to_string(), state);
                    }
                }
                Ok(())
            },
        )
        .await?;
        Ok(restored)
    }

    /// Throws the round away: states and positions go back to what was
    /// committed.
    async fn reset(&mut self) -> Result<()> {
        self.sagas.clear();
        self.changed.clear();
        self.outgoing.clear();
        for (topic, partition) in self.consumer.assignment() {
            let offset = self
                .consumer
                .committed(&topic, partition)
                .await?
                .map_or(Offset::Beginning, Offset::At);
            self.consumer.seek(&topic, partition, offset)?;
        }
        self.follow_assignment().await
    }

    /// Handles the round's events and whatever deadlines and retries are
    /// due. Each saga's events are handled in order; different sagas run
    /// concurrently, so that one saga's retries and backoff do not hold up
    /// the others.
    async fn handle(&mut self, records: Vec<ConsumerRecord>) {
        let mut batches: BTreeMap<(i32, String), Vec<Envelope>> = BTreeMap::new();
        for record in records {
            if !self.sagas.contains_key(&record.partition) {
                continue; // Revoked while this round gathered.
            }
            match Envelope::decode(&record) {
                Ok(event) if event.saga_type == self.service.definition().name => {
                    batches
                        .entry((record.partition, event.saga_id.clone()))
                        .or_default()
                        .push(event);
                }
                Ok(event) => {
                    let reason = format!(
                        "an event of saga type {:?} in this saga's topic",
                        event.saga_type
                    );
                    self.dead_letter_record(&record, &reason);
                }
                Err(malformed) => self.dead_letter_record(&record, &malformed.to_string()),
            }
        }
        let grace_ms = self.config.deadline_grace.as_millis() as i64;
        if self.last_due_scan.elapsed() >= DUE_SCAN_INTERVAL {
            self.last_due_scan = Instant::now();
            let now_ms = SystemClock.now_ms();
            for (&partition, sagas) in &self.sagas {
                for (id, state) in sagas {
                    if !state.due(now_ms, grace_ms).is_empty() {
                        batches.entry((partition, id.clone())).or_default();
                    }
                }
            }
        }
        let service = &self.service;
        let retry = &self.config.retry;
        let owned = &self.owned;
        let sagas = &mut self.sagas;
        let runs: Vec<_> = batches
            .into_iter()
            .map(|((partition, saga_id), events)| {
                let state = sagas
                    .get_mut(&partition)
                    .and_then(|sagas| sagas.remove(&saga_id));
                async move {
                    let (state, outputs, counts) =
                        run_saga(service, owned, retry, state, events, grace_ms).await;
                    (partition, saga_id, state, outputs, counts)
                }
            })
            .collect();
        for (partition, saga_id, state, outputs, counts) in futures::future::join_all(runs).await {
            counts.add_to(&self.metrics);
            if let Some(state) = state {
                self.sagas
                    .get_mut(&partition)
                    .expect("assigned")
                    .insert(saga_id.clone(), state);
                self.changed.insert((partition, saga_id.clone()));
            }
            self.queue(partition, &saga_id, outputs);
        }
    }

    /// Queues what handlers produced for the round's transaction.
    fn queue(&mut self, partition: i32, saga_id: &str, outputs: Vec<Output>) {
        for output in outputs {
            let (topic, headers, value) = match output {
                Output::Event(event) => {
                    let (headers, value) = event.encode();
                    (&self.events_topic, headers, value)
                }
                Output::DeadLetter {
                    event,
                    reason,
                    attempts,
                } => {
                    let (mut headers, value) = event.encode();
                    headers.push((DEAD_LETTER_REASON, reason));
                    headers.push((DEAD_LETTER_SERVICE, self.service.name().to_string()));
                    headers.push((DEAD_LETTER_ATTEMPTS, attempts.to_string()));
                    (&self.dead_letter_topic, headers, value)
                }
            };
            self.outgoing.push(Outgoing {
                topic: Arc::clone(topic),
                partition,
                key: saga_id.to_string(),
                headers,
                value: Some(value),
            });
        }
    }

    /// A record that is not an event of this saga goes to the dead-letter
    /// topic as it was, with the reason.
    fn dead_letter_record(&mut self, record: &ConsumerRecord, reason: &str) {
        tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, reason, "not a saga event; dead-lettered");
        self.metrics.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let mut headers: Vec<(&'static str, String)> = vec![
            (DEAD_LETTER_REASON, reason.to_string()),
            (DEAD_LETTER_SERVICE, self.service.name().to_string()),
            (DEAD_LETTER_OFFSET, record.offset.to_string()),
        ];
        headers.extend(record.headers.iter().filter_map(|(key, value)| {
            let value = std::str::from_utf8(value.as_deref()?).ok()?;
            Some((known_header(key)?, value.to_string()))
        }));
        self.outgoing.push(Outgoing {
            topic: Arc::clone(&self.dead_letter_topic),
            partition: record.partition,
            key: record
                .key
                .as_ref()
                .map(|key| String::from_utf8_lossy(key).into_owned())
                .unwrap_or_default(),
            headers,
            value: record.value.as_ref().map(|value| value.to_vec()),
        });
    }

    /// Queues the changed states: a finished saga's state is deleted (a
    /// tombstone) and forgotten.
    fn write_states(&mut self) {
        for (partition, saga_id) in std::mem::take(&mut self.changed) {
            let Some(sagas) = self.sagas.get_mut(&partition) else {
                continue;
            };
            let value = match sagas.get(&saga_id) {
                None => continue,
                Some(state) if state.finished() => {
                    sagas.remove(&saga_id);
                    None
                }
                Some(state) => Some(serde_json::to_vec(state).expect("a saga state serializes")),
            };
            self.outgoing.push(Outgoing {
                topic: Arc::clone(&self.state_topic),
                partition,
                key: saga_id,
                headers: Vec::new(),
                value,
            });
        }
    }

    /// Writes the round's records and input offsets in one transaction.
    async fn commit(&mut self) -> Result<()> {
        let Some(group) = self.consumer.group_metadata() else {
            return Err(Error::Transaction(
                "not a group member: nothing can be committed".into(),
            ));
        };
        self.producer.begin_transaction().await?;
        let mut deliveries = Vec::with_capacity(self.outgoing.len());
        for outgoing in self.outgoing.drain(..) {
            let headers = borrow_headers(&outgoing.headers);
            let mut record = ProducerRecord::new(&outgoing.topic)
                .partition(outgoing.partition)
                .key(outgoing.key.as_bytes())
                .headers(&headers);
            if let Some(value) = &outgoing.value {
                record = record.value(value);
            }
            deliveries.push(self.producer.send(record).await?);
        }
        self.producer
            .send_offsets_to_transaction(&self.consumer.assigned_positions(), &group)
            .await?;
        self.producer.commit_transaction().await?;
        for delivery in deliveries {
            delivery.await?;
        }
        Ok(())
    }
}

/// What one saga's run in a round did, for the counters.
#[derive(Debug, Default)]
struct Counts {
    steps_succeeded: u64,
    steps_failed: u64,
    deadlines_fired: u64,
    compensations: u64,
    stuck: u64,
    dead_lettered: u64,
}

impl Counts {
    fn count(&mut self, work: Work, outputs: &[Output]) {
        for output in outputs {
            let counter = match (work, output) {
                (_, Output::DeadLetter { .. }) => &mut self.dead_lettered,
                (_, Output::Event(event)) if event.kind == EventKind::Stuck => &mut self.stuck,
                (Work::FireDeadline { .. }, _) => &mut self.deadlines_fired,
                (Work::Compensate { .. }, _) => &mut self.compensations,
                (Work::Act { .. }, Output::Event(event)) if event.kind == EventKind::Succeeded => {
                    &mut self.steps_succeeded
                }
                (Work::Act { .. }, _) => &mut self.steps_failed,
            };
            *counter += 1;
        }
    }

    fn add_to(&self, metrics: &ParticipantMetrics) {
        for (counter, value) in [
            (&metrics.steps_succeeded, self.steps_succeeded),
            (&metrics.steps_failed, self.steps_failed),
            (&metrics.deadlines_fired, self.deadlines_fired),
            (&metrics.compensations, self.compensations),
            (&metrics.stuck, self.stuck),
            (&metrics.dead_lettered, self.dead_lettered),
        ] {
            counter.fetch_add(value, Ordering::Relaxed);
        }
    }
}

/// Runs one saga's part of a round: its events in order (the saga's state
/// is made from its first event, if this is it; events of a saga this
/// service does not know are ones it has finished), then whatever is due.
async fn run_saga(
    service: &Service,
    owned: &[u32],
    retry: &RetryPolicy,
    mut state: Option<SagaState>,
    events: Vec<Envelope>,
    grace_ms: i64,
) -> (Option<SagaState>, Vec<Output>, Counts) {
    let mut outputs = Vec::new();
    let mut counts = Counts::default();
    for event in &events {
        let first = state.is_none();
        if first {
            state = SagaState::begin(event, owned);
        }
        let Some(state) = state.as_mut() else {
            continue;
        };
        for work in state.observe(event, first, SystemClock.now_ms()) {
            let done = service.perform(state, work, &SystemClock, retry).await;
            counts.count(work, &done);
            outputs.extend(done);
        }
    }
    if let Some(state) = state.as_mut() {
        for work in state.due(SystemClock.now_ms(), grace_ms) {
            let done = service.perform(state, work, &SystemClock, retry).await;
            counts.count(work, &done);
            outputs.extend(done);
        }
    }
    (state, outputs, counts)
}

/// Headers a dead-lettered record carries besides its own.
pub const DEAD_LETTER_REASON: &str = "dead-letter-reason";
pub const DEAD_LETTER_SERVICE: &str = "dead-letter-service";
pub const DEAD_LETTER_ATTEMPTS: &str = "dead-letter-attempts";
pub const DEAD_LETTER_OFFSET: &str = "dead-letter-offset";

/// The envelope's header names, which a malformed record's headers are
/// copied under (the producer takes `'static` names).
fn known_header(key: &str) -> Option<&'static str> {
    use super::envelope::header::*;
    [
        SAGA_ID,
        SAGA_TYPE,
        EVENT_TYPE,
        EVENT_ID,
        STEP_INDEX,
        STEP_COUNT,
        KIND,
        CAUSATION_ID,
        CORRELATION_ID,
        TIMESTAMP_MS,
        NEXT_DEADLINE_MS,
        SERVICE,
        REASON,
    ]
    .into_iter()
    .find(|name| *name == key)
}
