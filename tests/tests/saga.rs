//! The saga bus, black-box: the four example services of the order saga
//! (client/examples/saga_*.rs) run as separate processes against a
//! 3-broker cluster, RF 3, and are failed every way they can be: business
//! failures, flaky handlers, deadlines missed while a service is down,
//! kill -9. The checker then reads the event log.

#[path = "../../client/examples/shop/mod.rs"]
mod shop;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_client::saga::{create_topics, Envelope, SagaDefinition, SagaStarter, SagaView};
use strata_client::Admin;
use strata_tests::{client_example, one_cluster_at_a_time, saga_checker, Cluster, Rng};

const SERVICES: [&str; 4] = ["order", "payment", "inventory", "shipping"];
const PARTITIONS: i32 = 6;

/// One instance of an example service, restartable.
struct ServiceProcess {
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// Kept down by the test until then.
    down_until: Option<Instant>,
    starts: u32,
}

impl ServiceProcess {
    fn start(
        service: &str,
        instance: &str,
        bootstrap: &str,
        dir: &Path,
        extra: &[&str],
    ) -> ServiceProcess {
        let mut args: Vec<String> = ["--bootstrap", bootstrap, "--instance", instance]
            .iter()
            .map(|arg| arg.to_string())
            .collect();
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let mut process = ServiceProcess {
            program: client_example(&format!("saga_{service}")),
            args,
            log: dir.join(format!("{instance}.log")),
            child: None,
            down_until: None,
            starts: 0,
        };
        process.launch();
        process
    }

    fn launch(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("service log");
        let child = Command::new(&self.program)
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start a saga service");
        self.child = Some(child);
        self.down_until = None;
        self.starts += 1;
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again if it died (an injected crash) or its time down is
    /// over.
    fn keep_up(&mut self) {
        let exited = match &mut self.child {
            Some(child) => child.try_wait().expect("try_wait").is_some(),
            None => true,
        };
        if exited && self.down_until.is_none_or(|until| Instant::now() >= until) {
            self.launch();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn create_saga_topics(runtime: &tokio::runtime::Runtime, bootstrap: &str, saga: &SagaDefinition) {
    runtime
        .block_on(async {
            let admin = Admin::connect(bootstrap).await?;
            create_topics(&admin, saga, &SERVICES, PARTITIONS, 3).await
        })
        .expect("create the saga's topics");
}

/// Starts `count` sagas `prefix0..` at `rate` per second (0: at once).
fn start_sagas(
    runtime: &tokio::runtime::Runtime,
    bootstrap: &str,
    saga: &SagaDefinition,
    prefix: &str,
    count: u64,
    rate: u64,
) -> tokio::task::JoinHandle<()> {
    let (bootstrap, saga, prefix) = (bootstrap.to_string(), saga.clone(), prefix.to_string());
    runtime.spawn(async move {
        let starter = SagaStarter::new(&bootstrap, &saga, "order").await.expect("starter");
        let started = Instant::now();
        let mut deliveries = Vec::new();
        for index in 0..count {
            if rate > 0 {
                let due = started + Duration::from_secs_f64(index as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            let id = format!("{prefix}{index}");
            let order = serde_json::json!({"order": id, "amount": 10 + index % 90, "sku": "sku-1", "quantity": 1});
            deliveries.push(starter.start(&id, order).await.expect("start"));
        }
        for delivery in deliveries {
            delivery.await.expect("a start is acknowledged");
        }
    })
}

/// The saga view once all `count` sagas are completed or compensated,
/// calling `tick` between looks; after `timeout`, what is wrong, with the
/// timeline of one that is not.
fn wait_until_final(
    runtime: &tokio::runtime::Runtime,
    bootstrap: &str,
    count: usize,
    timeout: Duration,
    mut tick: impl FnMut(),
) -> Result<SagaView, String> {
    let deadline = Instant::now() + timeout;
    loop {
        tick();
        let view = runtime
            .block_on(SagaView::read(
                &strata_client::ClientConfig::new(bootstrap),
                &["order".to_string()],
            ))
            .expect("read the saga view");
        let unfinished: Vec<_> = view
            .sagas()
            .filter(|saga| !saga.status().is_final())
            .collect();
        if view.sagas().count() == count && unfinished.is_empty() {
            return Ok(view);
        }
        if Instant::now() > deadline {
            let example = unfinished.first().map(|saga| {
                saga.timeline
                    .iter()
                    .map(|entry| {
                        format!(
                            "{}@{} {} {} {:?}",
                            entry.partition,
                            entry.offset,
                            entry.event.event_type,
                            entry.event.service,
                            entry.event.reason
                        )
                    })
                    .collect::<Vec<_>>()
            });
            let mut stalled: std::collections::BTreeMap<(i32, &str), usize> = Default::default();
            for saga in &unfinished {
                let last = saga.timeline.last().expect("a saga has events");
                *stalled
                    .entry((last.partition, last.event.event_type.as_str()))
                    .or_default() += 1;
            }
            return Err(format!(
                "after {timeout:?}: {} of {count} sagas seen, {} not final, by (partition, last event): {stalled:?}; one: {example:#?}",
                view.sagas().count(),
                unfinished.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every event of the view, each saga's in log order.
fn events_of(view: &SagaView) -> Vec<Envelope> {
    view.sagas()
        .flat_map(|saga| saga.timeline.iter().map(|entry| entry.event.clone()))
        .collect()
}

fn dead_lettered(runtime: &tokio::runtime::Runtime, bootstrap: &str, saga: &SagaDefinition) -> i64 {
    runtime.block_on(async {
        let admin = Admin::connect(bootstrap).await.expect("admin");
        let description = admin
            .describe_topic(&saga.dead_letter_topic())
            .await
            .expect("describe the dead-letter topic");
        description
            .offsets
            .iter()
            .map(|offsets| offsets.as_ref().expect("offsets").high_watermark)
            .sum()
    })
}

#[test]
fn ten_thousand_sagas_end_completed_or_compensated_through_failures_deadlines_and_kill9() {
    let _one = one_cluster_at_a_time();
    let cluster = Cluster::start(3);
    let bootstrap = cluster.bootstrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let step_timeout = Duration::from_secs(6);
    let saga = shop::order_saga(step_timeout);
    create_saga_topics(&runtime, &bootstrap, &saga);
    let dir = tempfile::tempdir().unwrap();
    let failures = [
        "--step-timeout-ms",
        "6000",
        "--fail-rate",
        "0.05",
        "--error-rate",
        "0.1",
        "--crash-rate",
        "0.0002",
    ];
    let mut services: Vec<ServiceProcess> = [
        ("order", "order-1"),
        ("payment", "payment-1"),
        ("payment", "payment-2"),
        ("inventory", "inventory-1"),
        ("shipping", "shipping-1"),
    ]
    .iter()
    .map(|(service, instance)| {
        ServiceProcess::start(service, instance, &bootstrap, dir.path(), &failures)
    })
    .collect();

    const SAGAS: u64 = 10_000;
    let starting = start_sagas(&runtime, &bootstrap, &saga, "f-", SAGAS, 1_000);
    // Faults for 20 s: a kill -9 of a random instance every 1-2.5 s, down
    // for 0.2-1 s; and once, shipping down for 10 s, past its deadline
    // (6 s, and 3 s of grace).
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let began = Instant::now();
    let mut next_kill = began + Duration::from_secs(1);
    let mut kills = 0;
    let mut outage = false;
    while began.elapsed() < Duration::from_secs(20) {
        if Instant::now() >= next_kill {
            let victim = &mut services[rng.below(5) as usize];
            if victim.down_until.is_none() {
                victim.kill9();
                victim.down_until =
                    Some(Instant::now() + Duration::from_millis(200 + rng.below(800)));
                kills += 1;
            }
            next_kill = Instant::now() + Duration::from_millis(1_000 + rng.below(1_500));
        }
        if !outage && began.elapsed() > Duration::from_secs(6) {
            outage = true;
            let shipping = &mut services[4];
            shipping.kill9();
            shipping.down_until = Some(Instant::now() + Duration::from_secs(10));
            kills += 1;
        }
        for service in &mut services {
            service.keep_up();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for service in &mut services {
        service.down_until = None;
        service.keep_up();
    }
    runtime.block_on(starting).expect("every saga started");
    // Injected crashes go on: the services are kept up until the end.
    let keep_up = || services.iter_mut().for_each(ServiceProcess::keep_up);
    let view = wait_until_final(
        &runtime,
        &bootstrap,
        SAGAS as usize,
        Duration::from_secs(150),
        keep_up,
    )
    .unwrap_or_else(|error| {
        runtime.block_on(async {
            let admin = Admin::connect(&bootstrap).await.unwrap();
            for service in SERVICES {
                let group = saga.group_id(service);
                eprintln!(
                    "--- group {group}: {:?}",
                    admin.describe_group(&group).await
                );
                eprintln!("    committed: {:?}", admin.group_offsets(&group).await);
            }
            eprintln!(
                "--- events: {:?}",
                admin
                    .describe_topic(&saga.events_topic())
                    .await
                    .map(|d| d.offsets)
            );
        });
        for service in &services {
            let log = service.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- {}:\n{}",
                service.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        panic!("{error}")
    });

    assert_eq!((view.malformed, view.orphaned), (0, 0));
    let report = saga_checker::check(&events_of(&view));
    report.assert_safe();
    let crashes: usize = services
        .iter()
        .map(|service| service.log_text().matches("(injected)").count())
        .sum();
    let starts: u32 = services.iter().map(|service| service.starts).sum();
    println!(
        "{} sagas: {} completed, {} compensated, steps failed by their deadline {:?} (by step), {} late steps; {kills} kill -9, {crashes} injected crashes, {starts} process starts",
        report.sagas, report.completed, report.compensated, report.deadlines, report.late_steps
    );
    assert_eq!(report.sagas, SAGAS as usize);
    assert!(
        report.unfinished.is_empty(),
        "{:?}",
        &report.unfinished[..report.unfinished.len().min(10)]
    );
    assert!(report.completed > 0 && report.compensated > 0);
    assert!(
        report.deadlines.contains_key(&3),
        "the shipping outage outlasted its deadline"
    );
    assert!(kills >= 8, "only {kills} kills");
    assert_eq!(
        dead_lettered(&runtime, &bootstrap, &saga),
        0,
        "nothing was given up on"
    );
}

#[test]
fn sagas_of_four_steps_run_at_thousands_per_second_on_three_brokers() {
    let _one = one_cluster_at_a_time();
    let cluster = Cluster::start(3);
    let bootstrap = cluster.bootstrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let saga = shop::order_saga(Duration::from_secs(30));
    create_saga_topics(&runtime, &bootstrap, &saga);
    let dir = tempfile::tempdir().unwrap();
    let _services: Vec<ServiceProcess> = SERVICES
        .iter()
        .map(|service| {
            ServiceProcess::start(
                service,
                &format!("{service}-1"),
                &bootstrap,
                dir.path(),
                &["--step-timeout-ms", "30000"],
            )
        })
        .collect();
    // Warm up: every service has joined its group once these complete.
    runtime
        .block_on(start_sagas(&runtime, &bootstrap, &saga, "warm-", 100, 0))
        .unwrap();
    wait_until_final(&runtime, &bootstrap, 100, Duration::from_secs(60), || {}).unwrap();

    const SAGAS: usize = 10_000;
    runtime
        .block_on(start_sagas(
            &runtime,
            &bootstrap,
            &saga,
            "t-",
            SAGAS as u64,
            0,
        ))
        .unwrap();
    let view = wait_until_final(
        &runtime,
        &bootstrap,
        SAGAS + 100,
        Duration::from_secs(120),
        || {},
    )
    .unwrap();
    let measured: Vec<_> = view
        .sagas()
        .filter(|saga| saga.saga_id.starts_with("t-"))
        .collect();
    let first_ms = measured
        .iter()
        .map(|saga| saga.progress.started_ms)
        .min()
        .unwrap();
    let last_ms = measured
        .iter()
        .map(|saga| saga.progress.last_event_ms)
        .max()
        .unwrap();
    let rate = SAGAS as f64 / ((last_ms - first_ms).max(1) as f64 / 1000.0);
    let mut took: Vec<i64> = measured
        .iter()
        .map(|saga| saga.progress.last_event_ms - saga.progress.started_ms)
        .collect();
    took.sort_unstable();
    println!(
        "{SAGAS} sagas of 4 steps in {} ms: {rate:.0} sagas/s; saga duration p50 {} ms, p99 {} ms",
        last_ms - first_ms,
        strata_client::saga::percentile(&took, 0.5),
        strata_client::saga::percentile(&took, 0.99)
    );
    saga_checker::check(&events_of(&view)).assert_safe();
    assert!(measured
        .iter()
        .all(|saga| saga.status() == strata_client::saga::SagaStatus::Completed));
    // The target is 2 000 sagas/s on a 2-core machine (3 000-5 000 measured
    // there); machines differ twofold, so the test fails only at half of it.
    assert!(rate >= 1_000.0, "{rate:.0} sagas/s");
}
