//! `logctl txn list|describe|abort`: the transactions the cluster's
//! coordinators know, how long each has been open and which offsets it
//! holds back, and aborting one that hangs.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::bail;
use serde_json::json;
use strata_client::{Admin, TransactionDescription};

use crate::connect::Connect;
use crate::output::{print_json, print_table, say, Format};

#[derive(Debug, clap::Subcommand)]
pub enum TxnCommand {
    /// Every transactional id: producer, state, how long its open
    /// transaction has been open and on how many partitions.
    List {
        /// Only transactions in this state (Ongoing, PrepareCommit,
        /// PrepareAbort, CompleteCommit, CompleteAbort, Empty).
        #[arg(long)]
        state: Option<String>,
    },
    /// One transactional id: its producer, state, timeout, and per
    /// partition of its open transaction the offset it started at there,
    /// which holds `read_committed` consumers back.
    Describe {
        /// The transactional id.
        transactional_id: String,
    },
    /// Aborts a transaction. With a transactional id: its coordinator
    /// fences the producer (as a new instance of it would) and aborts its
    /// open transaction. With --topic, --partition and --producer-id
    /// instead: writes an abort marker on that partition directly, for a
    /// hanging transaction no coordinator knows any more.
    Abort {
        /// The transactional id whose open transaction to abort.
        #[arg(
            required_unless_present = "producer_id",
            conflicts_with = "producer_id"
        )]
        transactional_id: Option<String>,
        /// The partition's topic (with --producer-id).
        #[arg(long, requires = "producer_id")]
        topic: Option<String>,
        /// The partition (with --producer-id).
        #[arg(long, requires = "producer_id")]
        partition: Option<i32>,
        /// The producer whose hanging transaction to end (`logctl producer
        /// list TOPIC` shows it).
        #[arg(long, requires_all = ["topic", "partition"])]
        producer_id: Option<i64>,
        /// The producer's epoch (default: the one the partition knows).
        #[arg(long)]
        producer_epoch: Option<i16>,
    },
}

pub async fn run(connect: &Connect, format: Format, command: TxnCommand) -> anyhow::Result<()> {
    let admin = connect.admin().await?;
    match command {
        TxnCommand::List { state } => list(&admin, format, state.as_deref()).await,
        TxnCommand::Describe { transactional_id } => {
            let description = admin.describe_transaction(&transactional_id).await?;
            print_description(format, &description);
            Ok(())
        }
        TxnCommand::Abort {
            transactional_id: Some(id),
            ..
        } => {
            admin.abort_transaction(&id).await?;
            if format == Format::Table {
                say!("aborted the open transaction of {id} (its producer is fenced)");
            }
            Ok(())
        }
        TxnCommand::Abort {
            topic: Some(topic),
            partition: Some(partition),
            producer_id: Some(producer_id),
            producer_epoch,
            ..
        } => {
            let producer_epoch = match producer_epoch {
                Some(epoch) => epoch,
                None => {
                    let producers = admin.describe_producers(&topic).await?;
                    let Some(known) = producers.iter().find(|producer| {
                        producer.partition == partition && producer.producer_id == producer_id
                    }) else {
                        bail!("{topic}-{partition} knows no producer {producer_id}; `logctl producer list {topic}` shows those it knows");
                    };
                    known.producer_epoch as i16
                }
            };
            admin
                .abort_hanging_transaction(&topic, partition, producer_id, producer_epoch)
                .await?;
            if format == Format::Table {
                say!("wrote an abort marker for producer {producer_id} on {topic}-{partition}");
            }
            Ok(())
        }
        TxnCommand::Abort { .. } => unreachable!("clap requires an id or a partition"),
    }
}

async fn list(admin: &Admin, format: Format, state: Option<&str>) -> anyhow::Result<()> {
    let states: Vec<&str> = state.into_iter().collect();
    let listed = admin.list_transactions(&states).await?;
    let now = now_ms();
    let mut described = Vec::with_capacity(listed.len());
    for listing in &listed {
        // One that expired since it was listed is no longer shown.
        if let Ok(description) = admin.describe_transaction(&listing.transactional_id).await {
            described.push(description);
        }
    }
    match format {
        Format::Json => print_json(&json!(described
            .iter()
            .map(|description| description_json(description, now))
            .collect::<Vec<_>>())),
        Format::Table => {
            let rows: Vec<Vec<String>> = described
                .iter()
                .map(|description| {
                    vec![
                        description.transactional_id.clone(),
                        description.producer_id.to_string(),
                        description.producer_epoch.to_string(),
                        description.state.clone(),
                        age(description, now),
                        description.timeout_ms.to_string(),
                        description.partitions.len().to_string(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "TRANSACTIONAL-ID",
                    "PRODUCER-ID",
                    "EPOCH",
                    "STATE",
                    "OPEN-FOR",
                    "TIMEOUT-MS",
                    "PARTITIONS",
                ],
                &rows,
            );
        }
    }
    Ok(())
}

fn print_description(format: Format, description: &TransactionDescription) {
    let now = now_ms();
    match format {
        Format::Json => print_json(&description_json(description, now)),
        Format::Table => {
            say!(
                "transactional id: {}  producer: {} (epoch {})  state: {}  open for: {}  timeout: {} ms  coordinator: {}",
                description.transactional_id,
                description.producer_id,
                description.producer_epoch,
                description.state,
                age(description, now),
                description.timeout_ms,
                description.coordinator
            );
            let rows: Vec<Vec<String>> = description
                .partitions
                .iter()
                .map(|partition| {
                    vec![
                        partition.topic.clone(),
                        partition.partition.to_string(),
                        dash(partition.first_offset),
                        dash(partition.last_stable_offset),
                        dash(partition.high_watermark),
                    ]
                })
                .collect();
            print_table(
                &["TOPIC", "PARTITION", "TXN-START", "STABLE-END", "LOG-END"],
                &rows,
            );
        }
    }
}

fn description_json(description: &TransactionDescription, now: i64) -> serde_json::Value {
    json!({
        "transactional_id": description.transactional_id,
        "producer_id": description.producer_id,
        "producer_epoch": description.producer_epoch,
        "state": description.state,
        "timeout_ms": description.timeout_ms,
        "start_ms": description.start_ms,
        "open_ms": description.start_ms.map(|start| now - start),
        "coordinator": description.coordinator,
        "partitions": description.partitions.iter().map(|partition| json!({
            "topic": partition.topic,
            "partition": partition.partition,
            "txn_start_offset": partition.first_offset,
            "last_stable_offset": partition.last_stable_offset,
            "high_watermark": partition.high_watermark,
        })).collect::<Vec<_>>(),
    })
}

/// How long the open transaction has been open, as `12.3s`; `-` if none.
fn age(description: &TransactionDescription, now: i64) -> String {
    description.start_ms.map_or_else(
        || "-".to_string(),
        |start| format!("{:.1}s", (now - start).max(0) as f64 / 1000.0),
    )
}

fn dash(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_string(), |value| value.to_string())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
