//! `logctl producer list TOPIC`: the idempotent producers each partition's
//! leader knows.

use serde_json::json;

use crate::connect::Connect;
use crate::output::{print_json, print_table, Format};

#[derive(Debug, clap::Subcommand)]
pub enum ProducerCommand {
    /// Per partition: producer id, epoch, last sequence, last timestamp
    /// and the start of its open transaction, of every idempotent producer
    /// its leader remembers.
    List {
        /// The topic whose partitions are asked.
        topic: String,
    },
}

pub async fn run(
    connect: &Connect,
    format: Format,
    command: ProducerCommand,
) -> anyhow::Result<()> {
    let ProducerCommand::List { topic } = command;
    let admin = connect.admin().await?;
    let producers = admin.describe_producers(&topic).await?;
    match format {
        Format::Json => print_json(&json!(producers
            .iter()
            .map(|producer| json!({
                "topic": topic,
                "partition": producer.partition,
                "producer_id": producer.producer_id,
                "producer_epoch": producer.producer_epoch,
                "last_sequence": producer.last_sequence,
                "last_timestamp": producer.last_timestamp_ms,
                "txn_start_offset": producer.txn_start_offset,
            }))
            .collect::<Vec<_>>())),
        Format::Table => {
            let rows: Vec<Vec<String>> = producers
                .iter()
                .map(|producer| {
                    vec![
                        producer.partition.to_string(),
                        producer.producer_id.to_string(),
                        producer.producer_epoch.to_string(),
                        producer.last_sequence.to_string(),
                        producer.last_timestamp_ms.to_string(),
                        producer
                            .txn_start_offset
                            .map_or_else(|| "-".to_string(), |offset| offset.to_string()),
                    ]
                })
                .collect();
            print_table(
                &[
                    "PARTITION",
                    "PRODUCER-ID",
                    "EPOCH",
                    "LAST-SEQUENCE",
                    "LAST-TIMESTAMP",
                    "TXN-START",
                ],
                &rows,
            );
        }
    }
    Ok(())
}
