//! `logctl saga list|describe|metrics`: every saga's state and step
//! timeline, derived from the saga event topics alone (read_committed, from
//! their start), so it needs nothing but the cluster.

use anyhow::bail;
use serde_json::json;
use strata_client::saga::{
    percentile, Change, EventKind, SagaRecord, SagaStatus, SagaView, TimelineEntry,
};

use crate::connect::Connect;
use crate::output::{print_json, print_table, say, Format};

#[derive(Debug, clap::Subcommand)]
pub enum SagaCommand {
    /// Every saga: its type, id, state, latest event and how long it has
    /// taken so far.
    List {
        /// Only sagas in this state: running, compensating, completed,
        /// compensated or stuck.
        #[arg(long)]
        state: Option<SagaStatus>,
        /// Only sagas of this type (the name in `saga.TYPE.events`).
        #[arg(long = "saga")]
        saga_type: Option<String>,
    },
    /// One saga's timeline: each event, when, from which service, and
    /// what it decided.
    Describe {
        /// The saga id.
        id: String,
    },
    /// Counters of sagas started, completed, compensated, stuck and
    /// running, and step latency quantiles, in Prometheus' text format.
    Metrics {
        /// Only sagas of this type.
        #[arg(long = "saga")]
        saga_type: Option<String>,
    },
}

pub async fn run(connect: &Connect, format: Format, command: SagaCommand) -> anyhow::Result<()> {
    let client = &connect.client;
    match command {
        SagaCommand::List { state, saga_type } => {
            let view = SagaView::read(client, &saga_type.into_iter().collect::<Vec<_>>()).await?;
            let sagas: Vec<&SagaRecord> = view
                .sagas()
                .filter(|saga| state.is_none_or(|state| saga.status() == state))
                .collect();
            match format {
                Format::Json => print_json(&json!(sagas
                    .iter()
                    .map(|saga| summary_json(saga))
                    .collect::<Vec<_>>())),
                Format::Table => {
                    let rows: Vec<Vec<String>> = sagas
                        .iter()
                        .map(|saga| {
                            vec![
                                saga.saga_type.clone(),
                                saga.saga_id.clone(),
                                saga.status().to_string(),
                                saga.last_event_type().unwrap_or("-").to_string(),
                                saga.timeline.len().to_string(),
                                seconds(saga.progress.last_event_ms - saga.progress.started_ms),
                            ]
                        })
                        .collect();
                    print_table(
                        &["SAGA", "ID", "STATE", "LAST-EVENT", "EVENTS", "TOOK"],
                        &rows,
                    );
                }
            }
        }
        SagaCommand::Describe { id } => {
            let view = SagaView::read_saga(client, &id).await?;
            let sagas: Vec<&SagaRecord> = view.sagas().collect();
            if sagas.is_empty() {
                bail!("no saga {id:?} in any saga event topic; `logctl saga list` shows the sagas there are");
            }
            for saga in sagas {
                match format {
                    Format::Json => {
                        let mut value = summary_json(saga);
                        value["timeline"] = json!(saga
                            .timeline
                            .iter()
                            .map(|entry| entry_json(entry, saga.progress.started_ms))
                            .collect::<Vec<_>>());
                        print_json(&value);
                    }
                    Format::Table => describe(saga),
                }
            }
        }
        SagaCommand::Metrics { saga_type } => {
            let view = SagaView::read(client, &saga_type.into_iter().collect::<Vec<_>>()).await?;
            match format {
                Format::Json => {
                    let counts: Vec<serde_json::Value> = view
                        .counts()
                        .into_iter()
                        .map(|((saga_type, state), count)| json!({"saga": saga_type, "state": state.as_str(), "count": count}))
                        .collect();
                    let latencies: Vec<serde_json::Value> = view
                        .step_latencies_ms()
                        .into_iter()
                        .map(|((saga_type, step, event), values)| {
                            json!({"saga": saga_type, "step": step, "outcome_event": event, "count": values.len(),
                                   "p50_ms": percentile(&values, 0.5), "p99_ms": percentile(&values, 0.99), "max_ms": values.last()})
                        })
                        .collect();
                    print_json(&json!({"sagas": counts, "step_latency": latencies}));
                }
                Format::Table => say!("{}", view.prometheus().trim_end()),
            }
        }
    }
    Ok(())
}

fn describe(saga: &SagaRecord) {
    let first = &saga.timeline[0].event;
    say!(
        "saga {} ({})  state: {}  correlation: {}  steps: {}  took: {}",
        saga.saga_id,
        saga.saga_type,
        saga.status(),
        first.correlation_id,
        first.step_count,
        seconds(saga.progress.last_event_ms - saga.progress.started_ms)
    );
    let rows: Vec<Vec<String>> = saga
        .timeline
        .iter()
        .map(|entry| {
            vec![
                format!(
                    "+{}",
                    seconds(entry.event.timestamp_ms - saga.progress.started_ms)
                ),
                format!("{}@{}", entry.partition, entry.offset),
                entry.event.step_index.to_string(),
                entry.event.event_type.clone(),
                entry.event.kind.to_string(),
                entry.event.service.clone(),
                note(entry),
            ]
        })
        .collect();
    print_table(
        &[
            "AT",
            "PARTITION@OFFSET",
            "STEP",
            "EVENT",
            "KIND",
            "SERVICE",
            "NOTE",
        ],
        &rows,
    );
}

/// What an entry's change means, with the event's reason.
fn note(entry: &TimelineEntry) -> String {
    let change = match (entry.change, entry.event.kind) {
        (Change::LateSuccess, _) => {
            Some("late: the step had already failed; undone by its service")
        }
        (Change::Ignored, EventKind::Failed) => Some("ignored: the step already had its outcome"),
        (Change::Ignored, _) => Some("ignored: a repeat"),
        (Change::Decisive, _) => None,
    };
    [change.map(str::to_string), entry.event.reason.clone()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
}

fn summary_json(saga: &SagaRecord) -> serde_json::Value {
    json!({
        "saga": saga.saga_type,
        "id": saga.saga_id,
        "state": saga.status().as_str(),
        "last_event": saga.last_event_type(),
        "events": saga.timeline.len(),
        "started_ms": saga.progress.started_ms,
        "last_event_ms": saga.progress.last_event_ms,
    })
}

fn entry_json(entry: &TimelineEntry, started_ms: i64) -> serde_json::Value {
    json!({
        "at_ms": entry.event.timestamp_ms,
        "since_start_ms": entry.event.timestamp_ms - started_ms,
        "partition": entry.partition,
        "offset": entry.offset,
        "step": entry.event.step_index,
        "event": entry.event.event_type,
        "kind": entry.event.kind.as_str(),
        "service": entry.event.service,
        "event_id": entry.event.event_id,
        "causation_id": entry.event.causation_id,
        "reason": entry.event.reason,
        "note": note(entry),
        "payload": entry.event.payload,
    })
}

fn seconds(ms: i64) -> String {
    format!("{:.3}s", ms.max(0) as f64 / 1000.0)
}
