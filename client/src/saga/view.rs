//! Saga status as a materialized view of the event topics: any process
//! can rebuild it by reading them (read_committed) from the start. It is
//! what `logctl saga` prints, and what the saga counters and step
//! latencies are computed from.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::definition::{events_topic, saga_type_of_topic};
use super::envelope::{Envelope, EventKind};
use super::progress::{Change, SagaProgress, SagaStatus};
use crate::partitioner::partition_for_key;
use crate::{Admin, ClientConfig, Consumer, ConsumerRecord, Error, Isolation, Offset, Result};

/// One event in a saga's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    pub partition: i32,
    pub offset: i64,
    pub event: Envelope,
    pub change: Change,
}

/// One saga as its events tell it.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaRecord {
    pub saga_type: String,
    pub saga_id: String,
    pub progress: SagaProgress,
    pub timeline: Vec<TimelineEntry>,
}

impl SagaRecord {
    pub fn status(&self) -> SagaStatus {
        self.progress.status()
    }

    /// The type of the saga's latest event.
    pub fn last_event_type(&self) -> Option<&str> {
        self.timeline
            .last()
            .map(|entry| entry.event.event_type.as_str())
    }
}

/// Every saga of some saga types.
#[derive(Debug, Clone, Default)]
pub struct SagaView {
    sagas: BTreeMap<(String, String), SagaRecord>,
    /// Records in event topics that are not saga events.
    pub malformed: u64,
    /// Events of sagas whose first event was not seen (it was deleted by
    /// retention, or the saga was started wrongly).
    pub orphaned: u64,
}

impl SagaView {
    pub fn new() -> SagaView {
        SagaView::default()
    }

    /// Folds in one record of an event topic.
    pub fn apply_record(&mut self, record: &ConsumerRecord) {
        match Envelope::decode(record) {
            Ok(event) => self.apply(record.partition, record.offset, event),
            Err(_) => self.malformed += 1,
        }
    }

    pub fn apply(&mut self, partition: i32, offset: i64, event: Envelope) {
        let key = (event.saga_type.clone(), event.saga_id.clone());
        let change = match self.sagas.get_mut(&key) {
            Some(saga) => saga.progress.apply(&event),
            None if event.step_index == 0 && event.kind == EventKind::Succeeded => {
                let progress = SagaProgress::new(&event);
                self.sagas.insert(
                    key.clone(),
                    SagaRecord {
                        saga_type: event.saga_type.clone(),
                        saga_id: event.saga_id.clone(),
                        progress,
                        timeline: Vec::new(),
                    },
                );
                Change::Decisive
            }
            None => {
                self.orphaned += 1;
                return;
            }
        };
        let saga = self.sagas.get_mut(&key).expect("inserted");
        saga.timeline.push(TimelineEntry {
            partition,
            offset,
            event,
            change,
        });
    }

    pub fn sagas(&self) -> impl Iterator<Item = &SagaRecord> {
        self.sagas.values()
    }

    pub fn get(&self, saga_type: &str, saga_id: &str) -> Option<&SagaRecord> {
        self.sagas
            .get(&(saga_type.to_string(), saga_id.to_string()))
    }

    /// How many sagas of each type are in each state.
    pub fn counts(&self) -> BTreeMap<(String, SagaStatus), u64> {
        let mut counts = BTreeMap::new();
        for saga in self.sagas.values() {
            *counts
                .entry((saga.saga_type.clone(), saga.status()))
                .or_default() += 1;
        }
        counts
    }

    /// Per saga type and step: the milliseconds from each step's trigger to
    /// its outcome, sorted.
    pub fn step_latencies_ms(&self) -> BTreeMap<(String, u32, String), Vec<i64>> {
        let mut latencies: BTreeMap<(String, u32, String), Vec<i64>> = BTreeMap::new();
        for saga in self.sagas.values() {
            for (index, step) in saga.progress.steps.iter().enumerate() {
                let (Some(triggered_ms), Some(outcome)) = (step.triggered_ms, &step.outcome) else {
                    continue;
                };
                let name = saga
                    .timeline
                    .iter()
                    .find(|entry| {
                        entry.event.step_index == index as u32
                            && matches!(entry.event.kind, EventKind::Succeeded | EventKind::Failed)
                            && entry.change == Change::Decisive
                    })
                    .map(|entry| entry.event.event_type.clone())
                    .unwrap_or_default();
                latencies
                    .entry((saga.saga_type.clone(), index as u32, name))
                    .or_default()
                    .push(outcome.at_ms - triggered_ms);
            }
        }
        for values in latencies.values_mut() {
            values.sort_unstable();
        }
        latencies
    }

    /// Counters of sagas started, completed, compensated, stuck and still
    /// running, and step latency quantiles, in Prometheus' text format.
    pub fn prometheus(&self) -> String {
        let mut text = String::new();
        text.push_str("# TYPE strata_saga_started_total counter\n");
        let mut started: BTreeMap<&str, u64> = BTreeMap::new();
        for saga in self.sagas.values() {
            *started.entry(&saga.saga_type).or_default() += 1;
        }
        for (saga_type, count) in &started {
            text.push_str(&format!(
                "strata_saga_started_total{{saga=\"{saga_type}\"}} {count}\n"
            ));
        }
        text.push_str("# TYPE strata_saga_sagas gauge\n");
        for ((saga_type, status), count) in self.counts() {
            text.push_str(&format!(
                "strata_saga_sagas{{saga=\"{saga_type}\",state=\"{status}\"}} {count}\n"
            ));
        }
        text.push_str("# TYPE strata_saga_step_latency_ms summary\n");
        for ((saga_type, index, event_type), values) in self.step_latencies_ms() {
            let labels =
                format!("saga=\"{saga_type}\",step=\"{index}\",outcome_event=\"{event_type}\"");
            for quantile in [0.5, 0.99, 1.0] {
                text.push_str(&format!(
                    "strata_saga_step_latency_ms{{{labels},quantile=\"{quantile}\"}} {}\n",
                    percentile(&values, quantile)
                ));
            }
            text.push_str(&format!(
                "strata_saga_step_latency_ms_sum{{{labels}}} {}\n",
                values.iter().sum::<i64>()
            ));
            text.push_str(&format!(
                "strata_saga_step_latency_ms_count{{{labels}}} {}\n",
                values.len()
            ));
        }
        text
    }

    /// The saga types with an event topic in the cluster, with the topic's
    /// partition count.
    pub async fn saga_types(admin: &Admin) -> Result<Vec<(String, i32)>> {
        let mut types: Vec<(String, i32)> = admin
            .list_topics()
            .await?
            .iter()
            .filter_map(|topic| {
                let saga_type = saga_type_of_topic(&topic.name)?;
                Some((saga_type.to_string(), topic.partitions.len() as i32))
            })
            .collect();
        types.sort();
        Ok(types)
    }

    /// Reads the event topics of `saga_types` (every saga type when empty)
    /// to their ends.
    pub async fn read(client: &ClientConfig, saga_types: &[String]) -> Result<SagaView> {
        let admin = Admin::with_config(client.clone()).await?;
        let mut view = SagaView::new();
        for (saga_type, partition_count) in SagaView::saga_types(&admin).await? {
            if !saga_types.is_empty() && !saga_types.contains(&saga_type) {
                continue;
            }
            let partitions: Vec<i32> = (0..partition_count).collect();
            read_to_end(
                client,
                &events_topic(&saga_type),
                &partitions,
                READ_TIMEOUT,
                |record| {
                    view.apply_record(&record);
                    Ok(())
                },
            )
            .await?;
        }
        Ok(view)
    }

    /// Reads only the partitions that hold `saga_id`'s events, in every
    /// saga type.
    pub async fn read_saga(client: &ClientConfig, saga_id: &str) -> Result<SagaView> {
        let admin = Admin::with_config(client.clone()).await?;
        let mut view = SagaView::new();
        for (saga_type, partition_count) in SagaView::saga_types(&admin).await? {
            let partition = partition_for_key(saga_id.as_bytes(), partition_count);
            read_to_end(
                client,
                &events_topic(&saga_type),
                &[partition],
                READ_TIMEOUT,
                |record| {
                    if record.key.as_deref() == Some(saga_id.as_bytes()) {
                        view.apply_record(&record);
                    }
                    Ok(())
                },
            )
            .await?;
        }
        Ok(view)
    }
}

/// How long reading a topic to its end may take.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// The value at quantile `q` of sorted `values` (0 when empty).
pub fn percentile(values: &[i64], q: f64) -> i64 {
    if values.is_empty() {
        return 0;
    }
    let index = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
    values[index]
}

/// Reads `partitions` of `topic` from their start to their high
/// watermarks, read_committed, handing each record to `each`. Read_committed
/// stops before a transaction still open, so reaching the high watermark
/// also means every transaction on them has ended.
pub(crate) async fn read_to_end(
    client: &ClientConfig,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
    mut each: impl FnMut(ConsumerRecord) -> Result<()>,
) -> Result<()> {
    let mut reader = Consumer::builder_for(client)
        .isolation(Isolation::ReadCommitted)
        .build()
        .await?;
    let assignment: Vec<(&str, i32)> = partitions.iter().map(|&p| (topic, p)).collect();
    reader.assign(&assignment).await?;
    for &partition in partitions {
        reader.seek(topic, partition, Offset::Beginning)?;
    }
    let started = Instant::now();
    loop {
        for record in reader.poll(Duration::from_millis(100)).await? {
            each(record)?;
        }
        let caught_up = partitions.iter().all(|&partition| {
            match (
                reader.position(topic, partition),
                reader.high_watermark(topic, partition),
            ) {
                (Some(position), Some(high_watermark)) => position >= high_watermark,
                _ => false,
            }
        });
        if caught_up {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(Error::Timeout {
                operation: format!("reading {topic} {partitions:?} to its end"),
                after: timeout,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::progress::tests::event;
    use EventKind::{Compensated, Failed, Succeeded};

    #[test]
    fn the_view_counts_states_and_measures_steps() {
        let mut view = SagaView::new();
        view.apply(0, 0, event(0, Succeeded, 100));
        view.apply(0, 1, event(1, Succeeded, 130));
        view.apply(0, 2, event(2, Failed, 200));
        view.apply(0, 3, event(1, Compensated, 210));
        let mut orphan = event(1, Succeeded, 5);
        orphan.saga_id = "nobody".into();
        view.apply(0, 4, orphan);
        let saga = view.get("t", "s1").unwrap();
        assert_eq!(saga.status(), SagaStatus::Compensating);
        assert_eq!(saga.timeline.len(), 4);
        assert_eq!(view.orphaned, 1);
        let latencies = view.step_latencies_ms();
        assert_eq!(
            latencies[&("t".to_string(), 1, "succeeded1".to_string())],
            vec![30]
        );
        assert_eq!(
            latencies[&("t".to_string(), 2, "failed2".to_string())],
            vec![70]
        );
        view.apply(0, 5, event(0, Compensated, 220));
        let text = view.prometheus();
        assert!(
            text.contains("strata_saga_started_total{saga=\"t\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("strata_saga_sagas{saga=\"t\",state=\"compensated\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn percentiles_pick_ranks() {
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[1, 2, 3, 4], 0.5), 2);
        assert_eq!(percentile(&[1, 2, 3, 4], 0.99), 4);
    }
}
