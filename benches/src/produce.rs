//! `logbench produce`.

use std::time::{Duration, Instant};

use strata_client::{Acks, Delivery, Producer, ProducerRecord};
use tokio::sync::mpsc;

use crate::report::{self, Report};
use crate::CreateArgs;

/// Deliveries queued between a producer's send loop and its ack collector.
const DELIVERY_QUEUE_MAX: usize = 1 << 20;
/// Progress is reported in steps of this many acknowledged messages.
const PROGRESS_STEP: u64 = 4096;

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    #[arg(long)]
    topic: String,
    #[command(flatten)]
    create: CreateArgs,
    /// Messages in total, over all producers.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    messages: u64,
    /// Bytes of each message's value.
    #[arg(short = 's', long = "size", default_value_t = 1024)]
    size_bytes: usize,
    #[arg(long, default_value_t = 1)]
    producers: u32,
    #[arg(long, default_value_t = 1_000_000)]
    batch_bytes: usize,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Bytes a producer may hold unacknowledged.
    #[arg(long, default_value_t = 64 << 20)]
    buffer_bytes: usize,
    #[arg(long, default_value = "1", value_parser = crate::parse_acks)]
    acks: Acks,
    /// Produce requests in flight per broker and producer.
    #[arg(long, default_value_t = 5)]
    in_flight: usize,
}

pub async fn run(bootstrap: &str, args: ProduceArgs) -> anyhow::Result<Report> {
    args.create.apply(bootstrap, &args.topic).await?;
    let value = payload(args.size_bytes);
    let bar = report::progress(args.messages);
    let mut producers = Vec::new();
    for _ in 0..args.producers {
        let producer = Producer::builder(bootstrap)
            .client_id("logbench")
            .acks(args.acks)
            .batch_bytes(args.batch_bytes)
            .linger(Duration::from_millis(args.linger_ms))
            .buffer_bytes(args.buffer_bytes)
            .in_flight_max(args.in_flight)
            .build()
            .await?;
        producer.partitions_for(&args.topic).await?;
        producers.push(producer);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (index, producer) in producers.into_iter().enumerate() {
        let share = args.messages / u64::from(args.producers)
            + u64::from((index as u64) < args.messages % u64::from(args.producers));
        let topic = args.topic.clone();
        let value = value.clone();
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let (sender, mut receiver) = mpsc::channel::<(Instant, Delivery)>(DELIVERY_QUEUE_MAX);
            let collector = tokio::spawn(async move {
                let mut latency = report::histogram();
                let mut acknowledged = 0u64;
                while let Some((sent_at, delivery)) = receiver.recv().await {
                    delivery.await?;
                    report::record(&mut latency, sent_at.elapsed());
                    acknowledged += 1;
                    if acknowledged.is_multiple_of(PROGRESS_STEP) {
                        bar.inc(PROGRESS_STEP);
                    }
                }
                anyhow::Ok(latency)
            });
            for _ in 0..share {
                let sent_at = Instant::now();
                let delivery = producer
                    .send(ProducerRecord::new(&topic).value(&value))
                    .await?;
                if sender.send((sent_at, delivery)).await.is_err() {
                    break;
                }
            }
            drop(sender);
            producer.flush().await;
            let latency = collector.await??;
            producer.close().await?;
            anyhow::Ok(latency)
        }));
    }
    let mut latency = report::histogram();
    for task in tasks {
        latency.add(task.await??)?;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(Report {
        name: "produce",
        messages: args.messages,
        bytes: args.messages * args.size_bytes as u64,
        elapsed,
        latency,
        latency_of: "send to acknowledgement",
    })
}

/// A value of `size_bytes` that does not compress: xorshift bytes.
pub fn payload(size_bytes: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..size_bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
