//! `logbench produce`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use strata_client::{Acks, ClientConfig, Compression, Delivery, Producer, ProducerRecord};
use tokio::sync::mpsc;

use crate::report::{self, Report};
use crate::CreateArgs;

/// Deliveries queued between a producer's send loop and its ack collector.
const DELIVERY_QUEUE_MAX: usize = 1 << 20;
/// Deliveries travel to the collector in chunks of this many.
const CHUNK_LEN: usize = 1024;

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// The topic to write to.
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
    /// Producers, each sending its share of the messages.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// The most bytes one batch holds.
    #[arg(long, default_value_t = 1_000_000)]
    batch_bytes: usize,
    /// How long a batch waits for more records before it is sent.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Bytes a producer may hold unacknowledged.
    #[arg(long, default_value_t = 64 << 20)]
    buffer_bytes: usize,
    /// 0, 1 or all.
    #[arg(long, default_value = "1", value_parser = crate::parse_acks)]
    acks: Acks,
    /// Codec for the records: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Produce requests in flight per broker and producer.
    #[arg(long, default_value_t = 5)]
    in_flight: usize,
    /// Idempotent writes: true or false (default: the client's, on with
    /// --acks all).
    #[arg(long)]
    idempotence: Option<bool>,
    /// Send in transactions, each producer under its own transactional id,
    /// committing one every --txn-ms.
    #[arg(long)]
    transactional: bool,
    /// How long each transaction stays open before it is committed.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 100,
        requires = "transactional"
    )]
    txn_ms: u64,
}

pub async fn run(client: &ClientConfig, args: ProduceArgs) -> anyhow::Result<Report> {
    args.create.apply(client, &args.topic).await?;
    let value = payload(args.size_bytes);
    let bar = report::progress(args.messages);
    let mut producers = Vec::new();
    for _ in 0..args.producers {
        let mut builder = Producer::builder_for(client)
            .acks(args.acks)
            .compression(args.compression)
            .batch_bytes(args.batch_bytes)
            .linger(Duration::from_millis(args.linger_ms))
            .buffer_bytes(args.buffer_bytes)
            .in_flight_max(args.in_flight);
        if let Some(idempotence) = args.idempotence {
            builder = builder.idempotence(idempotence);
        }
        if args.transactional {
            let id = format!("logbench-{}-{}", std::process::id(), producers.len());
            builder = builder.transactional_id(&id);
        }
        let producer = builder.build().await?;
        producer.partitions_for(&args.topic).await?;
        if args.transactional {
            producer.init_transactions().await?;
        }
        producers.push(producer);
    }
    let transaction_length = args
        .transactional
        .then(|| Duration::from_millis(args.txn_ms));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (index, producer) in producers.into_iter().enumerate() {
        let share = args.messages / u64::from(args.producers)
            + u64::from((index as u64) < args.messages % u64::from(args.producers));
        let topic = args.topic.clone();
        let value = value.clone();
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let (sender, mut receiver) =
                mpsc::channel::<Vec<(Instant, Delivery)>>(DELIVERY_QUEUE_MAX / CHUNK_LEN);
            let collector = tokio::spawn(async move {
                let mut latency = report::histogram();
                while let Some(chunk) = receiver.recv().await {
                    // One clock read per chunk and per wait: deliveries found
                    // complete were acknowledged no later than `now`.
                    let mut now = Instant::now();
                    let count = chunk.len() as u64;
                    for (sent_at, mut delivery) in chunk {
                        let waker = std::task::Waker::noop();
                        let ready = Pin::new(&mut delivery).poll(&mut Context::from_waker(waker));
                        match ready {
                            Poll::Ready(outcome) => {
                                outcome?;
                            }
                            Poll::Pending => {
                                delivery.await?;
                                now = Instant::now();
                            }
                        }
                        report::record(&mut latency, now.saturating_duration_since(sent_at));
                    }
                    bar.inc(count);
                }
                anyhow::Ok(latency)
            });
            // With transactions: their length, and each commit's latency.
            let mut transactions = transaction_length.map(|length| (length, report::histogram()));
            let mut transaction_started = Instant::now();
            if transactions.is_some() {
                producer.begin_transaction().await?;
            }
            let mut chunk = Vec::with_capacity(CHUNK_LEN);
            for _ in 0..share {
                if let Some((length, commits)) = transactions.as_mut() {
                    if transaction_started.elapsed() >= *length {
                        let committing = Instant::now();
                        producer.commit_transaction().await?;
                        report::record(commits, committing.elapsed());
                        producer.begin_transaction().await?;
                        transaction_started = Instant::now();
                    }
                }
                let sent_at = Instant::now();
                let delivery = producer
                    .send(ProducerRecord::new(&topic).value(&value))
                    .await?;
                chunk.push((sent_at, delivery));
                if chunk.len() == CHUNK_LEN {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_LEN));
                    if sender.send(full).await.is_err() {
                        break;
                    }
                }
            }
            if !chunk.is_empty() {
                let _ = sender.send(chunk).await;
            }
            drop(sender);
            if let Some((_, commits)) = transactions.as_mut() {
                let committing = Instant::now();
                producer.commit_transaction().await?;
                report::record(commits, committing.elapsed());
            } else {
                producer.flush().await;
            }
            let latency = collector.await??;
            producer.close().await?;
            anyhow::Ok((latency, transactions.map(|(_, commits)| commits)))
        }));
    }
    let mut latency = report::histogram();
    let mut commits = transaction_length.map(|_| report::histogram());
    for task in tasks {
        let (producer_latency, producer_commits) = task.await??;
        latency.add(producer_latency)?;
        if let (Some(commits), Some(producer_commits)) = (commits.as_mut(), producer_commits) {
            commits.add(producer_commits)?;
        }
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
        commits,
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
