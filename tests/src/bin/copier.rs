//! An exactly-once copier, the consume-transform-produce loop the
//! transaction tests kill, freeze and restart: it reads `INPUT` in consumer
//! group `GROUP` (read_committed, static membership under the transactional
//! id, so a restarted instance takes its predecessor's place at once) and
//! writes each record to the same partition of `OUTPUT`, committing the
//! input offsets in the same transaction, one transaction per `TXN_MS`.
//!
//! Usage: `copier BOOTSTRAP INPUT OUTPUT GROUP TRANSACTIONAL_ID TXN_MS`.
//! Prints `committed N` after each commit; exits 3 once fenced.

use std::time::{Duration, Instant};

use strata_client::{Consumer, Isolation, OffsetReset, Producer, ProducerRecord};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, bootstrap, input, output, group, transactional_id, txn_ms] = &args[..] else {
        eprintln!("usage: copier BOOTSTRAP INPUT OUTPUT GROUP TRANSACTIONAL_ID TXN_MS");
        std::process::exit(2);
    };
    let txn = Duration::from_millis(txn_ms.parse().expect("TXN_MS is a number"));
    let producer = Producer::builder(bootstrap)
        .transactional_id(transactional_id)
        .transaction_timeout(Duration::from_secs(10))
        .linger(Duration::from_millis(2))
        .build()
        .await
        .expect("producer");
    producer
        .init_transactions()
        .await
        .expect("init_transactions");
    let mut consumer = Consumer::builder(bootstrap)
        .group_id(group)
        .group_instance_id(transactional_id)
        .session_timeout(Duration::from_secs(6))
        .isolation(Isolation::ReadCommitted)
        .offset_reset(OffsetReset::Earliest)
        .auto_commit(None)
        .build()
        .await
        .expect("consumer");
    consumer.subscribe(&[input.as_str()]).expect("subscribe");
    let mut committed = 0u64;
    loop {
        let started = Instant::now();
        let mut batch = Vec::new();
        while started.elapsed() < txn {
            match consumer.poll(Duration::from_millis(50)).await {
                Ok(records) => batch.extend(records),
                Err(error) => {
                    eprintln!("poll: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let Some(group_metadata) = consumer.group_metadata() else {
            continue;
        };
        let copied = async {
            producer.begin_transaction().await?;
            let mut deliveries = Vec::with_capacity(batch.len());
            for record in &batch {
                let mut out = ProducerRecord::new(output).partition(record.partition);
                if let Some(key) = &record.key {
                    out = out.key(key);
                }
                if let Some(value) = &record.value {
                    out = out.value(value);
                }
                deliveries.push(producer.send(out).await?);
            }
            producer
                .send_offsets_to_transaction(&consumer.assigned_positions(), &group_metadata)
                .await?;
            producer.commit_transaction().await?;
            for delivery in deliveries {
                delivery.await?;
            }
            Ok::<_, strata_client::Error>(())
        }
        .await;
        match copied {
            Ok(()) => {
                committed += batch.len() as u64;
                println!("committed {committed}");
            }
            Err(error) => {
                eprintln!("transaction failed: {error}");
                if is_fenced(&error) {
                    std::process::exit(3);
                }
                let _ = producer.abort_transaction().await;
                // Read again from the committed offsets: what this
                // transaction copied was aborted.
                for (topic, partition) in consumer.assignment() {
                    let committed = consumer.committed(&topic, partition).await.ok().flatten();
                    let offset = committed
                        .map_or(strata_client::Offset::Beginning, strata_client::Offset::At);
                    let _ = consumer.seek(&topic, partition, offset);
                }
            }
        }
    }
}

fn is_fenced(error: &strata_client::Error) -> bool {
    use strata_client::ResponseError;
    matches!(
        error,
        strata_client::Error::Broker {
            error: ResponseError::ProducerFenced
                | ResponseError::InvalidProducerEpoch
                | ResponseError::FencedInstanceId,
            ..
        }
    )
}
