//! `logbench e2e`: a fixed-rate producer and a consumer in one process.
//! Each value starts with the nanoseconds (since the run's start) at which it
//! was scheduled; the consumer measures from there.

use std::time::{Duration, Instant};

use anyhow::bail;
use strata_client::{Acks, ClientConfig, Consumer, Offset, Producer, ProducerRecord};

use crate::report::{self, Report};
use crate::CreateArgs;

/// How long after the last scheduled send the consumer may still wait.
const DRAIN_MAX: Duration = Duration::from_secs(30);
/// The send loop wakes this often to send what has come due.
const TICK: Duration = Duration::from_millis(1);

#[derive(Debug, clap::Args)]
pub struct E2eArgs {
    /// The topic to write to and read from.
    #[arg(long)]
    topic: String,
    #[command(flatten)]
    create: CreateArgs,
    /// Target send rate.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// How long to produce for.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Bytes of each message's value (at least 8).
    #[arg(short = 's', long = "size", default_value_t = 1024)]
    size_bytes: usize,
    /// How long a batch waits for more records before it is sent.
    #[arg(long, default_value_t = 1)]
    linger_ms: u64,
    /// 0, 1 or all.
    #[arg(long, default_value = "1", value_parser = crate::parse_acks)]
    acks: Acks,
}

pub async fn run(client: &ClientConfig, args: E2eArgs) -> anyhow::Result<Report> {
    if args.size_bytes < 8 {
        bail!("--size must be at least 8 bytes: each value carries its send time");
    }
    args.create.apply(client, &args.topic).await?;
    let total = args.rate * args.seconds;
    let producer = Producer::builder_for(client)
        .acks(args.acks)
        .linger(Duration::from_millis(args.linger_ms))
        .build()
        .await?;
    let partitions = producer.partitions_for(&args.topic).await?;
    let mut consumer = Consumer::builder_for(client)
        .fetch_wait_max(Duration::from_millis(100))
        .build()
        .await?;
    consumer.assign_topic(&args.topic).await?;
    for partition in &partitions {
        consumer.seek(&args.topic, partition.partition, Offset::End)?;
    }
    // Resolve the end offsets before the clock starts.
    consumer.poll(Duration::from_millis(1)).await?;

    let started = Instant::now();
    let bar = report::progress(total);
    let consumer_task = tokio::spawn({
        let bar = bar.clone();
        async move {
            let mut latency = report::histogram();
            let mut received = 0u64;
            let deadline = started + Duration::from_secs(args.seconds) + DRAIN_MAX;
            while received < total {
                if Instant::now() > deadline {
                    bail!("only {received} of {total} messages arrived");
                }
                for record in consumer.poll(Duration::from_millis(100)).await? {
                    let value = record.value.unwrap_or_default();
                    let scheduled_ns = u64::from_be_bytes(value[..8].try_into()?);
                    let scheduled = started + Duration::from_nanos(scheduled_ns);
                    report::record(&mut latency, scheduled.elapsed());
                    received += 1;
                }
                bar.set_position(received);
            }
            anyhow::Ok(latency)
        }
    });

    let mut value = crate::produce::payload(args.size_bytes);
    let mut deliveries = Vec::with_capacity(total as usize);
    let interval_ns = 1e9 / args.rate as f64;
    let mut sent = 0u64;
    while sent < total {
        let due = ((started.elapsed().as_nanos() as f64 / interval_ns) as u64 + 1).min(total);
        while sent < due {
            let scheduled_ns = (sent as f64 * interval_ns) as u64;
            value[..8].copy_from_slice(&scheduled_ns.to_be_bytes());
            deliveries.push(
                producer
                    .send(ProducerRecord::new(&args.topic).value(&value))
                    .await?,
            );
            sent += 1;
        }
        tokio::time::sleep(TICK).await;
    }
    producer.flush().await;
    for delivery in deliveries {
        delivery.await?;
    }
    let latency = consumer_task.await??;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    producer.close().await?;
    Ok(Report {
        name: "e2e",
        messages: total,
        bytes: total * args.size_bytes as u64,
        elapsed,
        latency,
        latency_of: "scheduled send to consumer receipt",
        commits: None,
    })
}
