//! `logctl consume`: print records from an offset, a time, or the end.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use strata_client::{Consumer, ConsumerRecord, Offset};

use crate::output::Format;

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Read only this partition (default: all).
    #[arg(short, long)]
    partition: Option<i32>,
    /// Where to start: start, end, an offset N, or @UNIX_MS for a time.
    #[arg(short, long, default_value = "start", value_parser = parse_offset)]
    offset: Offset,
    /// Stop after COUNT records.
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// Stop when no record arrived for this long (default: wait forever).
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
}

fn parse_offset(text: &str) -> Result<Offset, String> {
    match text {
        "start" | "beginning" => Ok(Offset::Beginning),
        "end" => Ok(Offset::End),
        _ => {
            if let Some(timestamp) = text.strip_prefix('@') {
                return timestamp
                    .parse()
                    .map(Offset::Timestamp)
                    .map_err(|_| format!("'{text}' is not @UNIX_MS"));
            }
            match text.parse::<i64>() {
                Ok(offset) if offset >= 0 => Ok(Offset::At(offset)),
                _ => Err(format!("'{text}' is not start, end, an offset or @UNIX_MS")),
            }
        }
    }
}

pub async fn run(bootstrap: &str, format: Format, args: ConsumeArgs) -> anyhow::Result<()> {
    let mut consumer = Consumer::builder(bootstrap)
        .client_id("logctl")
        .build()
        .await?;
    match args.partition {
        Some(partition) => consumer.assign(&[(&args.topic, partition)]).await?,
        None => consumer.assign_topic(&args.topic).await?,
    }
    for (topic, partition) in consumer.assignment() {
        consumer.seek(&topic, partition, args.offset)?;
    }
    if args.count == Some(0) {
        return Ok(());
    }
    let idle_max = args.timeout_ms.map(Duration::from_millis);
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        let wait = idle_max.map_or(Duration::from_secs(1), |idle| {
            idle.saturating_sub(last_record.elapsed())
                .max(Duration::from_millis(1))
        });
        let records = consumer.poll(wait).await?;
        if records.is_empty() {
            if idle_max.is_some_and(|idle| last_record.elapsed() >= idle) {
                break;
            }
            std::io::Write::flush(&mut out)?;
            continue;
        }
        last_record = Instant::now();
        for record in records {
            print_record(&mut out, format, &record)?;
            printed += 1;
            if args.count.is_some_and(|count| printed >= count) {
                std::io::Write::flush(&mut out)?;
                return Ok(());
            }
        }
    }
    std::io::Write::flush(&mut out)?;
    if let Some(count) = args.count {
        if printed < count {
            bail!(
                "only {printed} of {count} records arrived within {} ms",
                args.timeout_ms.unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn print_record(
    out: &mut impl std::io::Write,
    format: Format,
    record: &ConsumerRecord,
) -> std::io::Result<()> {
    let text = |bytes: &Option<bytes::Bytes>| {
        bytes
            .as_ref()
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    };
    match format {
        Format::Table => {
            out.write_all(record.value.as_deref().unwrap_or_default())?;
            out.write_all(b"\n")
        }
        Format::Json => writeln!(
            out,
            "{}",
            json!({
                "topic": &*record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp": record.timestamp_ms,
                "key": text(&record.key),
                "value": text(&record.value),
            })
        ),
    }
}
