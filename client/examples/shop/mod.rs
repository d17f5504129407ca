//! What the four saga example services share: the order saga's
//! definition, their command-line switches and the failures they inject.
//!
//! The order saga: the order service places an order (step 0) and starts
//! the saga; payment charges the card, inventory reserves the stock,
//! shipping ships. A failure undoes what came before, in reverse.

#![allow(dead_code)] // Each example uses its own part.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strata_client::saga::{Participant, ParticipantConfig, SagaDefinition, Service, Step};

/// The order saga; `step_timeout` bounds payment, inventory and shipping.
pub fn order_saga(step_timeout: Duration) -> SagaDefinition {
    SagaDefinition::new("order")
        .step(
            Step::new("order")
                .succeeded("OrderPlaced")
                .failed("OrderRejected")
                .compensated("OrderCancelled"),
        )
        .step(
            Step::new("payment")
                .succeeded("PaymentCharged")
                .failed("PaymentDeclined")
                .compensated("PaymentRefunded")
                .timeout(step_timeout),
        )
        .step(
            Step::new("inventory")
                .succeeded("StockReserved")
                .failed("OutOfStock")
                .compensated("StockReleased")
                .timeout(step_timeout),
        )
        .step(
            Step::new("shipping")
                .succeeded("OrderShipped")
                .failed("ShippingFailed")
                .compensated("ShipmentCancelled")
                .timeout(step_timeout),
        )
}

/// The switches every service takes.
pub struct Options {
    pub bootstrap: String,
    pub instance: String,
    /// Fraction of steps that fail for a business reason (declined card,
    /// no stock): the saga is compensated.
    pub fail_rate: f64,
    /// Fraction of handler calls whose first try fails (a flaky
    /// dependency): retried.
    pub error_rate: f64,
    /// Fraction of handler calls after which the process dies at once, as
    /// with kill -9.
    pub crash_rate: f64,
    /// Fraction of sagas whose handlers here always fail (a poison event):
    /// dead-lettered after the retries, the saga stuck until its deadline.
    pub poison_rate: f64,
    pub step_timeout: Duration,
    pub stats_every: Option<Duration>,
    /// Every other `--name value` switch, for the service's own.
    pub rest: HashMap<String, String>,
}

const USAGE: &str = "switches: --bootstrap HOST:PORT (127.0.0.1:9092) --instance ID \
--fail-rate F --error-rate F --crash-rate F --poison-rate F (fractions, 0) \
--step-timeout-ms MS (10000) --stats-every-secs S";

impl Options {
    /// Reads `--name value` switches; `extra` names the service's own.
    pub fn parse(service: &str, extra: &[&str]) -> Options {
        let mut values: HashMap<String, String> = HashMap::new();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let Some(name) = arg.strip_prefix("--") else {
                usage_error(service, &format!("unexpected argument {arg:?}"));
            };
            if name == "help" {
                println!(
                    "{service}: {USAGE} {}",
                    extra
                        .iter()
                        .map(|e| format!("--{e}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                std::process::exit(0);
            }
            let Some(value) = args.next() else {
                usage_error(service, &format!("--{name} needs a value"));
            };
            values.insert(name.to_string(), value);
        }
        let known = [
            "bootstrap",
            "instance",
            "fail-rate",
            "error-rate",
            "crash-rate",
            "poison-rate",
            "step-timeout-ms",
            "stats-every-secs",
        ];
        if let Some(unknown) = values
            .keys()
            .find(|name| !known.contains(&name.as_str()) && !extra.contains(&name.as_str()))
        {
            usage_error(service, &format!("unknown switch --{unknown}"));
        }
        let fraction = |name: &str| -> f64 {
            values
                .get(name)
                .map_or(0.0, |value| match value.parse::<f64>() {
                    Ok(f) if (0.0..=1.0).contains(&f) => f,
                    _ => usage_error(
                        service,
                        &format!("--{name} takes a fraction from 0 to 1, not {value:?}"),
                    ),
                })
        };
        let number = |name: &str, default: u64| -> u64 {
            values.get(name).map_or(default, |value| {
                value.parse().unwrap_or_else(|_| {
                    usage_error(service, &format!("--{name} takes a number, not {value:?}"))
                })
            })
        };
        Options {
            bootstrap: values
                .get("bootstrap")
                .cloned()
                .unwrap_or_else(|| "127.0.0.1:9092".into()),
            instance: values
                .get("instance")
                .cloned()
                .unwrap_or_else(|| format!("{service}-1")),
            fail_rate: fraction("fail-rate"),
            error_rate: fraction("error-rate"),
            crash_rate: fraction("crash-rate"),
            poison_rate: fraction("poison-rate"),
            step_timeout: Duration::from_millis(number("step-timeout-ms", 10_000)),
            stats_every: values
                .contains_key("stats-every-secs")
                .then(|| Duration::from_secs(number("stats-every-secs", 0))),
            rest: values,
        }
    }

    pub fn number(&self, name: &str, default: u64) -> u64 {
        self.rest.get(name).map_or(default, |value| {
            value.parse().unwrap_or_else(|_| {
                eprintln!("--{name} takes a number, not {value:?}");
                std::process::exit(2)
            })
        })
    }
}

fn usage_error(service: &str, message: &str) -> ! {
    eprintln!("{service}: {message}\n{USAGE}");
    std::process::exit(2)
}

/// A number in [0, 1) that depends only on its inputs: the same saga fails
/// the same way however often its step is tried or the service restarted.
pub fn fraction_of(saga_id: &str, salt: &str) -> f64 {
    // FNV-1a, then a final mix so that nearby ids spread.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in saga_id.bytes().chain(salt.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// A fresh random number in [0, 1) (xorshift, seeded from the clock and the
/// process id): for crashes, which must not repeat on every restart.
pub fn random() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64;
        x = nanos ^ (u64::from(std::process::id()) << 32) | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The injected failures of one handler call, before its real work: a
/// crash, a poison event that fails every try, or a failed first try.
/// (Deadlines are missed by stopping a service for longer than the step
/// timeout.)
pub async fn inject(
    options: &Options,
    saga_id: &str,
    step: &str,
    attempt: u32,
) -> anyhow::Result<()> {
    if random() < options.crash_rate {
        eprintln!(
            "{}: crashing in step {step} of {saga_id} (injected)",
            options.instance
        );
        std::process::abort();
    }
    if fraction_of(saga_id, &format!("{step}/poison")) < options.poison_rate {
        anyhow::bail!("{step} of {saga_id}: injected poison, fails every time");
    }
    if attempt == 1 && fraction_of(saga_id, &format!("{step}/error")) < options.error_rate {
        anyhow::bail!("{step} of {saga_id}: injected error on the first try");
    }
    Ok(())
}

/// Whether `step` of `saga_id` fails for a business reason.
pub fn fails(options: &Options, saga_id: &str, step: &str) -> bool {
    fraction_of(saga_id, step) < options.fail_rate
}

/// Runs `service` as this instance until it fails; prints its counters
/// every `--stats-every-secs`.
pub async fn run(service: Service, options: &Options) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let name = service.name().to_string();
    let mut config = ParticipantConfig::new(&options.bootstrap, &options.instance);
    config.deadline_grace = (options.step_timeout / 2).min(Duration::from_secs(5));
    let participant = Participant::new(service, config);
    let metrics = participant.metrics();
    if let Some(every) = options.stats_every.filter(|every| !every.is_zero()) {
        let name = name.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                print!("{}", metrics.prometheus(&name));
            }
        });
    }
    if let Err(error) = participant.run().await {
        eprintln!("{name}: {error}");
        std::process::exit(1);
    }
}
