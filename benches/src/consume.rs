//! `logbench consume`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use strata_client::{Admin, ClientConfig, Consumer, Isolation, Offset};

use crate::report::{self, Report};

/// A consumer that receives nothing for this long ends the run with an error.
const IDLE_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// The topic to read from its start.
    #[arg(long)]
    topic: String,
    /// Messages to read in total, waiting up to 30 s for them to be
    /// readable (default: everything up to the end of each partition, once
    /// the ends have stopped moving).
    #[arg(short = 'n', long)]
    messages: Option<u64>,
    /// Consumers, each reading its share of the partitions.
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// read_uncommitted (up to the high watermark) or read_committed
    /// (records of committed transactions, up to the last stable offset).
    #[arg(long, default_value = "read_uncommitted")]
    isolation: Isolation,
}

/// How long the records asked for may take to become readable (an
/// `acks=1` run just before leaves the last ones below the high watermark
/// until they are flushed, within the topic's `flush.ms`).
const READABLE_WAIT_MAX: Duration = Duration::from_secs(30);

/// The high watermark counts as settled once it has not moved for this long.
const SETTLED_AFTER: Duration = Duration::from_millis(1500);

pub async fn run(client: &ClientConfig, args: ConsumeArgs) -> anyhow::Result<Report> {
    let admin = Admin::with_config(client.clone()).await?;
    let readable = readable(&admin, &args).await?;
    let partitions: Vec<i32> = readable.ends.keys().copied().collect();
    let consumer_count = (args.consumers as usize).clamp(1, partitions.len());
    let bar = report::progress(args.messages.unwrap_or(readable.offsets));
    // With -n, how many records are left to read; without, unbounded.
    let remaining = Arc::new(AtomicI64::new(
        args.messages.map_or(i64::MAX, |wanted| wanted as i64),
    ));
    let mut consumers = Vec::new();
    for index in 0..consumer_count {
        let mut consumer = Consumer::builder_for(client)
            .isolation(args.isolation)
            .build()
            .await?;
        let mine: Vec<(&str, i32)> = partitions
            .iter()
            .skip(index)
            .step_by(consumer_count)
            .map(|&partition| (args.topic.as_str(), partition))
            .collect();
        consumer.assign(&mine).await?;
        for &(topic, partition) in &mine {
            consumer.seek(topic, partition, Offset::Beginning)?;
        }
        let ends: Vec<(i32, i64)> = mine
            .iter()
            .map(|&(_, partition)| (partition, readable.ends[&partition]))
            .collect();
        consumers.push((consumer, ends));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (mut consumer, ends) in consumers {
        let remaining = Arc::clone(&remaining);
        let bar = bar.clone();
        let topic = args.topic.clone();
        let to_the_end = args.messages.is_none();
        tasks.push(tokio::spawn(async move {
            let mut latency = report::histogram();
            let mut bytes = 0u64;
            let mut messages = 0u64;
            let mut last_record = Instant::now();
            // Done at the count asked for, or at the end of every partition
            // (positions step over transaction markers and aborted records,
            // which offsets count and records do not).
            let done = |consumer: &Consumer| {
                remaining.load(Ordering::Relaxed) <= 0
                    || (to_the_end
                        && ends.iter().all(|&(partition, end)| {
                            consumer
                                .position(&topic, partition)
                                .is_some_and(|position| position >= end)
                        }))
            };
            while !done(&consumer) {
                let polled = Instant::now();
                let records = consumer.poll(Duration::from_millis(200)).await?;
                if records.is_empty() {
                    if last_record.elapsed() > IDLE_MAX {
                        bail!("no records for {IDLE_MAX:?} before the end of the topic");
                    }
                    continue;
                }
                report::record(&mut latency, polled.elapsed());
                last_record = Instant::now();
                let count = records.len() as u64;
                bytes += records
                    .iter()
                    .map(|record| record.value.as_ref().map_or(0, |value| value.len() as u64))
                    .sum::<u64>();
                messages += count;
                remaining.fetch_sub(count as i64, Ordering::Relaxed);
                bar.inc(count);
            }
            anyhow::Ok((latency, messages, bytes))
        }));
    }
    let mut latency = report::histogram();
    let (mut messages, mut bytes) = (0, 0);
    for task in tasks {
        let (histogram, count, size) = task.await??;
        latency.add(histogram)?;
        messages += count;
        bytes += size;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(Report {
        name: "consume",
        messages,
        bytes,
        elapsed,
        latency,
        latency_of: "each poll that returned records",
        commits: None,
    })
}

/// Where reading ends: per partition, the offset it reads up to.
struct Readable {
    ends: BTreeMap<i32, i64>,
    /// Offsets below the ends (records, and transaction markers if any).
    offsets: u64,
}

/// Where each partition ends for this run, once the records to read are
/// readable: with `-n`, once that many offsets are (the count ends the
/// run); without, once the high watermarks (last stable offsets for
/// read_committed) have stopped moving.
async fn readable(admin: &Admin, args: &ConsumeArgs) -> anyhow::Result<Readable> {
    let started = Instant::now();
    let mut last: Option<(u64, Instant)> = None;
    loop {
        let description = admin.describe_topic(&args.topic).await?;
        let mut ends = BTreeMap::new();
        let mut available = 0u64;
        for (partition, offsets) in description
            .topic
            .partitions
            .iter()
            .zip(&description.offsets)
        {
            let offsets = offsets
                .as_ref()
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            let end = match args.isolation {
                Isolation::ReadUncommitted => offsets.high_watermark,
                Isolation::ReadCommitted => offsets.last_stable_offset,
            };
            ends.insert(partition.partition, end);
            available += (end - offsets.log_start_offset).max(0) as u64;
        }
        let settled = match last {
            Some((before, since)) if before == available => since.elapsed() >= SETTLED_AFTER,
            _ => {
                last = Some((available, Instant::now()));
                false
            }
        };
        let readable = Readable {
            ends,
            offsets: available,
        };
        match args.messages {
            Some(wanted) if available >= wanted => return Ok(readable),
            None if settled || started.elapsed() >= READABLE_WAIT_MAX => return Ok(readable),
            Some(wanted) if started.elapsed() >= READABLE_WAIT_MAX => bail!(
                "{} holds {available} readable messages after {READABLE_WAIT_MAX:?}, fewer than the {wanted} asked for",
                args.topic
            ),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
