//! `logbench consume`.

use std::time::{Duration, Instant};

use anyhow::bail;
use strata_client::{Admin, Consumer, Offset};

use crate::report::{self, Report};

/// A consumer that receives nothing for this long ends the run with an error.
const IDLE_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// The topic to read from its start.
    #[arg(long)]
    topic: String,
    /// Messages to read in total, waiting up to 30 s for them to be
    /// readable (default: everything up to the high watermark once it has
    /// stopped moving).
    #[arg(short = 'n', long)]
    messages: Option<u64>,
    /// Consumers, each reading its share of the partitions.
    #[arg(long, default_value_t = 1)]
    consumers: u32,
}

/// How long the records asked for may take to become readable (an
/// `acks=1` run just before leaves the last ones below the high watermark
/// until they are flushed, within the topic's `flush.ms`).
const READABLE_WAIT_MAX: Duration = Duration::from_secs(30);

/// The high watermark counts as settled once it has not moved for this long.
const SETTLED_AFTER: Duration = Duration::from_millis(1500);

pub async fn run(bootstrap: &str, args: ConsumeArgs) -> anyhow::Result<Report> {
    let admin = Admin::connect(bootstrap).await?;
    let (description, wanted) = readable(&admin, &args).await?;
    let partitions: Vec<i32> = description
        .topic
        .partitions
        .iter()
        .map(|p| p.partition)
        .collect();
    let consumer_count = (args.consumers as usize).clamp(1, partitions.len());
    let bar = report::progress(wanted);
    let remaining = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(wanted as i64));
    let mut consumers = Vec::new();
    for index in 0..consumer_count {
        let mut consumer = Consumer::builder(bootstrap)
            .client_id("logbench")
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
        consumers.push(consumer);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut consumer in consumers {
        let remaining = std::sync::Arc::clone(&remaining);
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let mut latency = report::histogram();
            let mut bytes = 0u64;
            let mut messages = 0u64;
            let mut last_record = Instant::now();
            while remaining.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                let polled = Instant::now();
                let records = consumer.poll(Duration::from_millis(200)).await?;
                if records.is_empty() {
                    if last_record.elapsed() > IDLE_MAX {
                        bail!(
                            "no records for {IDLE_MAX:?} with {} still to read",
                            remaining.load(std::sync::atomic::Ordering::Relaxed)
                        );
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
                remaining.fetch_sub(count as i64, std::sync::atomic::Ordering::Relaxed);
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
    })
}

/// The topic's description once the records to read are readable, and how
/// many to read: `-n` of them (waiting for them to reach the high
/// watermark), or all below a high watermark that has stopped moving.
async fn readable(
    admin: &Admin,
    args: &ConsumeArgs,
) -> anyhow::Result<(strata_client::TopicDescription, u64)> {
    let started = Instant::now();
    let mut last: Option<(u64, Instant)> = None;
    loop {
        let description = admin.describe_topic(&args.topic).await?;
        let mut available = 0u64;
        for offsets in &description.offsets {
            let offsets = offsets
                .as_ref()
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            available += (offsets.high_watermark - offsets.log_start_offset) as u64;
        }
        let settled = match last {
            Some((before, since)) if before == available => since.elapsed() >= SETTLED_AFTER,
            _ => {
                last = Some((available, Instant::now()));
                false
            }
        };
        match args.messages {
            Some(wanted) if available >= wanted => return Ok((description, wanted)),
            None if settled || started.elapsed() >= READABLE_WAIT_MAX => {
                return Ok((description, available))
            }
            Some(wanted) if started.elapsed() >= READABLE_WAIT_MAX => bail!(
                "{} holds {available} readable messages after {READABLE_WAIT_MAX:?}, fewer than the {wanted} asked for",
                args.topic
            ),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
