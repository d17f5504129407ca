//! The order service of the order saga: places orders and starts their
//! sagas (step 0), and cancels an order when a later step fails.
//!
//! `cargo run --release -p strata-client --example saga_order -- --create true --sagas 1000`
//! creates the saga's topics, starts 1 000 sagas and keeps running as the
//! order service. Switches: `--sagas N` `--rate PER_SECOND` (0: as fast as
//! it can) `--create true` with `--partitions P` `--replication R`, and those
//! every service takes (`--help`).

#[path = "shop/mod.rs"]
mod shop;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use strata_client::saga::{create_topics, Compensated, SagaStarter, Service};
use strata_client::Admin;

#[tokio::main]
async fn main() {
    let options = shop::Options::parse(
        "saga_order",
        &[
            "sagas",
            "rate",
            "create",
            "partitions",
            "replication",
            "id-prefix",
        ],
    );
    let saga = shop::order_saga(options.step_timeout);
    if options
        .rest
        .get("create")
        .is_some_and(|value| value != "false")
    {
        let admin = Admin::connect(&options.bootstrap)
            .await
            .unwrap_or_else(|error| fail(&error));
        let partitions = options.number("partitions", 6) as i32;
        let replication = options.number("replication", 1) as i16;
        create_topics(
            &admin,
            &saga,
            &["order", "payment", "inventory", "shipping"],
            partitions,
            replication,
        )
        .await
        .unwrap_or_else(|error| fail(&error));
        println!("created the topics of saga {:?}", saga.name);
    }
    let options = Arc::new(options);
    let injected = Arc::clone(&options);
    let service =
        Service::new(&saga, "order")
            .owns("order")
            .compensation("order", move |context| {
                let options = Arc::clone(&injected);
                async move {
                    shop::inject(&options, &context.saga_id, "order-cancel", context.attempt)
                        .await?;
                    Ok(Compensated::new(
                        json!({"order": context.saga_id, "status": "cancelled"}),
                    ))
                }
            });
    let sagas = options.number("sagas", 0);
    if sagas > 0 {
        let rate = options.number("rate", 0);
        let prefix = options.rest.get("id-prefix").cloned().unwrap_or_else(|| {
            let millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_millis();
            format!("o{millis}-")
        });
        let starter = SagaStarter::new(&options.bootstrap, &saga, "order")
            .await
            .unwrap_or_else(|error| fail(&error));
        tokio::spawn(async move {
            let started = Instant::now();
            let mut deliveries = Vec::new();
            for index in 0..sagas {
                if rate > 0 {
                    let due = started + Duration::from_secs_f64(index as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let id = format!("{prefix}{index}");
                let order = json!({"order": id, "amount": 10 + index % 90, "sku": format!("sku-{}", index % 17), "quantity": 1 + index % 3});
                match starter.start(&id, order).await {
                    Ok(delivery) => deliveries.push(delivery),
                    Err(error) => fail(&error),
                }
            }
            for delivery in deliveries {
                if let Err(error) = delivery.await {
                    fail(&error);
                }
            }
            println!(
                "started {sagas} sagas in {:.2} s",
                started.elapsed().as_secs_f64()
            );
        });
    }
    shop::run(service, &options).await;
}

fn fail(error: &dyn std::fmt::Display) -> ! {
    eprintln!("saga_order: {error}");
    std::process::exit(1)
}
