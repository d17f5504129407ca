//! The inventory service of the order saga: reserves the order's stock,
//! and releases it when a later step fails. `--fail-rate` makes that
//! fraction of orders out of stock; see `--help` for the other switches.

#[path = "shop/mod.rs"]
mod shop;

use std::sync::Arc;

use serde_json::json;
use strata_client::saga::{Compensated, Service, StepOutcome};

#[tokio::main]
async fn main() {
    let options = Arc::new(shop::Options::parse("saga_inventory", &[]));
    let saga = shop::order_saga(options.step_timeout);
    let (reserve, release) = (Arc::clone(&options), Arc::clone(&options));
    let service = Service::new(&saga, "inventory")
        .action("inventory", move |context| {
            let options = Arc::clone(&reserve);
            async move {
                shop::inject(&options, &context.saga_id, "inventory", context.attempt).await?;
                if shop::fails(&options, &context.saga_id, "inventory") {
                    return Ok(StepOutcome::failed("out of stock"));
                }
                let reserved =
                    json!({"sku": context.payload["sku"], "quantity": context.payload["quantity"]});
                Ok(StepOutcome::succeeded(context.payload).with_data(reserved))
            }
        })
        .compensation("inventory", move |context| {
            let options = Arc::clone(&release);
            async move {
                shop::inject(
                    &options,
                    &context.saga_id,
                    "inventory-release",
                    context.attempt,
                )
                .await?;
                Ok(Compensated::new(json!({"released": context.data})))
            }
        });
    shop::run(service, &options).await;
}
