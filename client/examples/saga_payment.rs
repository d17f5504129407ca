//! The payment service of the order saga: charges the order's amount, and
//! refunds it when a later step fails. `--fail-rate` declines that
//! fraction of cards; see `--help` for the other switches.

#[path = "shop/mod.rs"]
mod shop;

use std::sync::Arc;

use serde_json::json;
use strata_client::saga::{Compensated, Service, StepOutcome};

#[tokio::main]
async fn main() {
    let options = Arc::new(shop::Options::parse("saga_payment", &[]));
    let saga = shop::order_saga(options.step_timeout);
    let (charge, refund) = (Arc::clone(&options), Arc::clone(&options));
    let service = Service::new(&saga, "payment")
        .action("payment", move |context| {
            let options = Arc::clone(&charge);
            async move {
                shop::inject(&options, &context.saga_id, "payment", context.attempt).await?;
                if shop::fails(&options, &context.saga_id, "payment") {
                    return Ok(StepOutcome::failed("card declined"));
                }
                let amount = context.payload["amount"].as_u64().unwrap_or(0);
                let mut order = context.payload;
                order["payment"] = json!(format!("pay-{}", context.saga_id));
                Ok(StepOutcome::succeeded(order).with_data(json!({"charged": amount})))
            }
        })
        .compensation("payment", move |context| {
            let options = Arc::clone(&refund);
            async move {
                shop::inject(
                    &options,
                    &context.saga_id,
                    "payment-refund",
                    context.attempt,
                )
                .await?;
                let charged = context.data["charged"].as_u64().unwrap_or(0);
                Ok(Compensated::new(json!({"refunded": charged}))
                    .with_data(json!({"charged": charged, "refunded": charged})))
            }
        });
    shop::run(service, &options).await;
}
