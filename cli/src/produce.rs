//! `logctl produce`: one record per line of stdin, then a summary.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use strata_client::{Acks, Compression, Delivery, Header, ProducerRecord};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::connect::Connect;
use crate::output::{print_json, print_table, say, Format};

/// Deliveries awaited in the background before the oldest is checked; keeps
/// memory flat for long inputs.
const DELIVERIES_PENDING_MAX: usize = 100_000;

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// The topic to write to.
    topic: String,
    /// Send every record to this partition (default: by key, or sticky).
    #[arg(short, long)]
    partition: Option<i32>,
    /// The key of every record.
    #[arg(short, long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// 0: no acknowledgement, 1: the leader's, all: every in-sync replica's.
    #[arg(long, default_value = "all", value_parser = ["0", "1", "all"])]
    acks: String,
    /// Codec for the records: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Require idempotent writes (a retry is never stored twice). They are
    /// on by default with --acks all; this refuses other acks.
    #[arg(long)]
    idempotent: bool,
    /// A header on every record, KEY=VALUE; repeat for more.
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Give up on a record not acknowledged within this long, reporting
    /// why its last attempt failed.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    delivery_timeout_ms: u64,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    crate::output::key_value(text, "header")
}

#[derive(Default)]
struct PartitionSummary {
    records: u64,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
}

pub async fn run(connect: &Connect, format: Format, args: ProduceArgs) -> anyhow::Result<()> {
    let acks = match args.acks.as_str() {
        "0" => Acks::None,
        "1" => Acks::Leader,
        _ => Acks::All,
    };
    let mut producer = connect
        .producer()
        .acks(acks)
        .compression(args.compression)
        .delivery_timeout(Duration::from_millis(args.delivery_timeout_ms));
    if args.idempotent {
        producer = producer.idempotence(true);
    }
    let producer = producer.build().await?;
    // Refuse an unknown topic before reading any input.
    producer.partitions_for(&args.topic).await?;
    let headers: Vec<Header<'_>> = args
        .headers
        .iter()
        .map(|(key, value)| Header {
            key,
            value: Some(value.as_bytes()),
        })
        .collect();
    let started = Instant::now();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut pending: VecDeque<Delivery> = VecDeque::new();
    let mut summary: BTreeMap<i32, PartitionSummary> = BTreeMap::new();
    let mut bytes = 0u64;
    while let Some(line) = lines.next_line().await.context("cannot read stdin")? {
        let (key, value) = match (&args.key, &args.key_separator) {
            (Some(key), _) => (Some(key.as_str()), line.as_str()),
            (None, Some(separator)) => match line.split_once(separator.as_str()) {
                Some((key, value)) => (Some(key), value),
                None => (None, line.as_str()),
            },
            (None, None) => (None, line.as_str()),
        };
        bytes += value.len() as u64;
        let mut record = ProducerRecord::new(&args.topic)
            .value(value.as_bytes())
            .headers(&headers);
        if let Some(key) = key {
            record = record.key(key.as_bytes());
        }
        if let Some(partition) = args.partition {
            record = record.partition(partition);
        }
        pending.push_back(producer.send(record).await?);
        if pending.len() >= DELIVERIES_PENDING_MAX {
            settle(pending.pop_front().expect("non-empty"), &mut summary).await?;
        }
    }
    producer.flush().await;
    for delivery in pending {
        settle(delivery, &mut summary).await?;
    }
    producer.close().await?;
    let records: u64 = summary.values().map(|partition| partition.records).sum();
    let seconds = started.elapsed().as_secs_f64();
    match format {
        Format::Json => print_json(&json!({
            "topic": args.topic,
            "records": records,
            "bytes": bytes,
            "seconds": seconds,
            "partitions": summary.iter().map(|(partition, summary)| json!({
                "partition": partition,
                "records": summary.records,
                "first_offset": summary.first_offset,
                "last_offset": summary.last_offset,
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            say!(
                "produced {records} records ({bytes} bytes) to {} in {:.3} s",
                args.topic,
                Duration::from_secs_f64(seconds).as_secs_f64()
            );
            let offset =
                |offset: Option<i64>| offset.map_or("-".to_string(), |offset| offset.to_string());
            let rows: Vec<Vec<String>> = summary
                .iter()
                .map(|(partition, summary)| {
                    vec![
                        partition.to_string(),
                        summary.records.to_string(),
                        offset(summary.first_offset),
                        offset(summary.last_offset),
                    ]
                })
                .collect();
            print_table(
                &["PARTITION", "RECORDS", "FIRST-OFFSET", "LAST-OFFSET"],
                &rows,
            );
        }
    }
    Ok(())
}

async fn settle(
    delivery: Delivery,
    summary: &mut BTreeMap<i32, PartitionSummary>,
) -> anyhow::Result<()> {
    let metadata = delivery.await.context("a record was not acknowledged")?;
    let partition = summary.entry(metadata.partition).or_default();
    partition.records += 1;
    if let Some(offset) = metadata.offset {
        partition.first_offset = Some(
            partition
                .first_offset
                .map_or(offset, |first| first.min(offset)),
        );
        partition.last_offset = Some(
            partition
                .last_offset
                .map_or(offset, |last| last.max(offset)),
        );
    }
    Ok(())
}
