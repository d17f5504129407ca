//! `logctl consume`: print records from an offset, a time, or the end; or,
//! with `-g`, as a member of a consumer group from its committed offsets
//! (committing what it printed).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use strata_client::{Consumer, ConsumerRecord, Offset, OffsetReset};

use crate::output::Format;

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Consume as a member of this consumer group: its partitions are
    /// shared with the group's other members, reading starts at the group's
    /// committed offsets, and what is printed is committed.
    #[arg(short, long)]
    group: Option<String>,
    /// Read only this partition (default: all).
    #[arg(short, long)]
    partition: Option<i32>,
    /// Where to start: start, end, an offset N, or @UNIX_MS for a time.
    /// With -g: where partitions without a committed offset start (start or
    /// end).
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
    let mut consumer = match &args.group {
        Some(group) => group_consumer(bootstrap, group, &args).await?,
        None => {
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
            consumer
        }
    };
    if args.count == Some(0) {
        return Ok(());
    }
    let printed = print_records(&mut consumer, format, &args).await;
    if args.group.is_some() {
        // Leaves, so the group rebalances now rather than after a session.
        consumer.close().await?;
    }
    let printed = printed?;
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

/// A member of `group` subscribed to the topic.
async fn group_consumer(
    bootstrap: &str,
    group: &str,
    args: &ConsumeArgs,
) -> anyhow::Result<Consumer> {
    if args.partition.is_some() {
        bail!("-p and -g do not mix: a group assigns its members' partitions");
    }
    let reset = match args.offset {
        Offset::Beginning => OffsetReset::Earliest,
        Offset::End => OffsetReset::Latest,
        _ => bail!(
            "with -g, -o is start or end (where partitions without a committed offset begin); move a group's offsets with `logctl group reset-offsets`"
        ),
    };
    let topics = strata_client::Admin::connect(bootstrap)
        .await?
        .list_topics()
        .await?;
    if !topics.iter().any(|topic| topic.name == args.topic) {
        return Err(strata_client::Error::UnknownTopic(args.topic.clone()).into());
    }
    // Commits name exactly what was printed (see `print_records`), not
    // what was fetched.
    let mut consumer = Consumer::builder(bootstrap)
        .client_id("logctl")
        .group_id(group)
        .offset_reset(reset)
        .auto_commit(None)
        .build()
        .await?;
    consumer.subscribe(&[&args.topic])?;
    Ok(consumer)
}

/// Prints records until the count or the idle timeout; how many it printed.
/// In a group, commits after each poll the offsets after the records printed.
async fn print_records(
    consumer: &mut Consumer,
    format: Format,
    args: &ConsumeArgs,
) -> anyhow::Result<u64> {
    let idle_max = args.timeout_ms.map(Duration::from_millis);
    let mut printed = 0u64;
    let mut done = false;
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
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for record in records {
            print_record(&mut out, format, &record)?;
            next.insert(
                (record.topic.to_string(), record.partition),
                record.offset + 1,
            );
            printed += 1;
            if args.count.is_some_and(|count| printed >= count) {
                done = true;
                break;
            }
        }
        std::io::Write::flush(&mut out)?;
        if args.group.is_some() {
            let offsets: Vec<(&str, i32, i64)> = next
                .iter()
                .map(|((topic, partition), offset)| (topic.as_str(), *partition, *offset))
                .collect();
            consumer.commit_offsets(&offsets).await?;
        }
        if done {
            return Ok(printed);
        }
    }
    std::io::Write::flush(&mut out)?;
    Ok(printed)
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
