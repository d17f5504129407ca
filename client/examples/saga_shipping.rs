//! The shipping service of the order saga: ships the order (the last
//! step), and cancels the shipment should it have shipped after its
//! deadline failed the step. `--fail-rate` finds no courier for that
//! fraction of orders; see `--help` for the other switches.

#[path = "shop/mod.rs"]
mod shop;

use std::sync::Arc;

use serde_json::json;
use strata_client::saga::{Compensated, Service, StepOutcome};

#[tokio::main]
async fn main() {
    let options = Arc::new(shop::Options::parse("saga_shipping", &[]));
    let saga = shop::order_saga(options.step_timeout);
    let (ship, cancel) = (Arc::clone(&options), Arc::clone(&options));
    let service = Service::new(&saga, "shipping")
        .action("shipping", move |context| {
            let options = Arc::clone(&ship);
            async move {
                shop::inject(&options, &context.saga_id, "shipping", context.attempt).await?;
                if shop::fails(&options, &context.saga_id, "shipping") {
                    return Ok(StepOutcome::failed("no courier available"));
                }
                let tracking = format!("track-{}", context.saga_id);
                Ok(StepOutcome::succeeded(
                    json!({"order": context.payload["order"], "tracking": tracking}),
                )
                .with_data(json!({"tracking": tracking})))
            }
        })
        .compensation("shipping", move |context| {
            let options = Arc::clone(&cancel);
            async move {
                shop::inject(
                    &options,
                    &context.saga_id,
                    "shipping-cancel",
                    context.attempt,
                )
                .await?;
                Ok(Compensated::new(
                    json!({"cancelled": context.data["tracking"]}),
                ))
            }
        });
    shop::run(service, &options).await;
}
